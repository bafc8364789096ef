"""Does bf16 autocast on CPU keep DefiNet's accuracy? Prints one markdown table.

    python benchmarks/bf16_accuracy.py [--threads 2] [--n 40]

For fp32 and bf16 autocast, side by side in one run:
- rotation equivariance error: max |R·f(x) − f(R·x)| over atoms for a random
  rotation R of a 192-atom MoS2 defect structure and its host, for the shipped
  default model and an untrained "paper" configuration (seeded);
- test MAE and A3 of the shipped default model on the first ``n`` structures of
  its test split, and the largest deviation between the fp32 and bf16 predictions.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from e3nn import o3

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


def _autocast(bf16: bool):
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)


def equivariance_error(pred, bf16: bool, seed: int = 0) -> float:
    """max |R f(x) - f(R x)| in Å for one random rotation (structure and host rotated)."""
    from inference import structure
    atoms, host = structure(8)
    torch.manual_seed(seed)
    rot = o3.rand_matrix().double().numpy()
    turned, turned_host = atoms.copy(), host.copy()
    for a in (turned, turned_host):
        a.set_cell(a.cell.array @ rot.T, scale_atoms=False)
        a.positions = a.positions @ rot.T
    with _autocast(bf16):
        p0 = pred.predict([atoms], host)[0].positions
        p1 = pred.predict([turned], turned_host)[0].positions
    return float(np.abs(p0 @ rot.T - p1).max())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n", type=int, default=40, help="test structures for the MAE")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from ase_definet import DefiNet
    from ase_definet.data.splits import apply_split
    from ase_definet.evaluate import evaluate_predictions
    from ase_definet.inference import Predictor
    from ase_definet.data.load import load_samples
    from ase_definet.weights import default_model_name

    name = default_model_name()
    shipped = Predictor(name, device="cpu")
    torch.manual_seed(0)
    paper = Predictor(DefiNet("paper"), device="cpu", strict=False)
    samples = load_samples(ROOT / "weights" / "data" / "chgnet-2dmd",
                           progress_note=lambda m: None).samples
    test = apply_split(samples, ROOT / "weights" / f"{name}.split.json",
                       unassigned="drop")["test"][: args.n]
    rows, preds = [], {}
    for bf16 in (False, True):
        with _autocast(bf16):
            preds[bf16] = shipped.predict([s.atoms for s in test], [s.host for s in test])
        m = evaluate_predictions(test, preds[bf16])["overall"]["model"]
        rows.append((("bf16" if bf16 else "fp32"), equivariance_error(shipped, bf16),
                     equivariance_error(paper, bf16), m["mae"], m["a3"]))
    diff = np.concatenate([np.abs(a.positions - b.positions).ravel()
                           for a, b in zip(preds[False], preds[True])])
    print(f"\nbf16 autocast on CPU, torch {torch.__version__}, {args.threads} threads; "
          f"shipped model `{name}`, {len(test)} test structures\n")
    print("| dtype | equivariance error, shipped (Å) | equivariance error, paper config (Å) "
          "| test MAE (Å) | test A3 (Å) |")
    print("|---|---|---|---|---|")
    for dtype, e_ship, e_paper, mae, a3 in rows:
        print(f"| {dtype} | {e_ship:.2e} | {e_paper:.2e} | {mae:.6f} | {a3:.6f} |")
    print(f"\nfp32 − bf16 difference of predicted coordinates: mean {diff.mean():.2e} Å, "
          f"99.9th percentile {np.percentile(diff, 99.9):.2e} Å, max {diff.max():.2e} Å")


if __name__ == "__main__":
    main()
