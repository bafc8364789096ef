"""Where a model's coordinate error sits: direction, size and distance to the defects.

For each ``material/density`` group of a data set (optionally one split subset)
the script predicts every structure once and prints, over all real atoms:

- in-plane and out-of-plane displacement of the label (the Dummy's error) and
  error of the model, averaged over atoms: out of plane the absolute component
  along the sheet normal ``a1 × a2`` of each cell, in plane the length of the rest
  over sqrt(2) (per in-plane component, so the two columns compare);
- the response ``Σ p·t / Σ t·t`` (p predicted, t true displacement): 1 when the
  model recovers the displacement along its true direction, < 1 when it predicts
  too little (the mean-regressing answer of a model that is unsure);
- Dummy and model error by distance to the nearest defect site (< 3, 3–6, ≥ 6 Å).

    python experiments/probes/error_anatomy.py [--model weights/definet-2dmd.pt] \
        [--data weights/data/chgnet-2dmd] \
        [--split-file experiments/runs/definet-2dmd-v10-seed1/split.json] \
        [--subset val]
"""
from __future__ import annotations

import argparse

import numpy as np

SHELLS = ((0.0, 3.0), (3.0, 6.0), (6.0, np.inf))
SHELL_KEYS = [f"{lo:g}-{hi:g}" if np.isfinite(hi) else f">={lo:g}" for lo, hi in SHELLS]


def sheet_normals(samples) -> np.ndarray:
    """Unit normal ``a1 × a2`` of each sample's cell, ``(n_samples, 3)``."""
    from ase_definet.geometry import sheet_normal
    return sheet_normal(np.array([s.atoms.cell.array for s in samples]))


def anatomy(disp, normals: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """Error anatomy of the atoms in ``mask`` (see module docstring).

    Parameters
    ----------
    disp : ase_definet.evaluate.Displacements
        Concatenated per-atom arrays of all structures.
    normals : numpy.ndarray
        Sheet normal per structure, indexed by ``disp.structure``.
    mask : numpy.ndarray of bool
        Atoms to include.
    """
    t, p = disp.true[mask], disp.pred[mask]
    nrm = normals[disp.structure[mask]]
    t_out, e_out = (t * nrm).sum(1), ((p - t) * nrm).sum(1)
    # in-plane: the two components left after removing the normal; mean over both
    t_in = np.linalg.norm(t - t_out[:, None] * nrm, axis=1) / np.sqrt(2)
    e_in = np.linalg.norm((p - t) - e_out[:, None] * nrm, axis=1) / np.sqrt(2)
    row = {"atoms": int(mask.sum()),
           "dummy_in": float(t_in.mean()), "model_in": float(e_in.mean()),
           "dummy_out": float(np.abs(t_out).mean()), "model_out": float(np.abs(e_out).mean()),
           "response": float((p * t).sum() / max((t * t).sum(), 1e-30))}
    d = disp.distance[mask]
    for (lo, hi), key in zip(SHELLS, SHELL_KEYS):
        m = (d >= lo) & (d < hi)
        row[f"share {key}"] = float(m.mean())
        row[f"dummy {key}"] = float(np.abs(t[m]).mean()) if m.any() else float("nan")
        row[f"model {key}"] = float(np.abs(p[m] - t[m]).mean()) if m.any() else float("nan")
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="weights (default: shipped)")
    ap.add_argument("--data", default="weights/data/chgnet-2dmd")
    ap.add_argument("--split-file", default="experiments/runs/definet-2dmd-v10-seed1/split.json")
    ap.add_argument("--subset", default="val", choices=("all", "train", "val", "test"))
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    import torch
    torch.set_num_threads(args.threads)
    from ase_definet.card import group_order
    from ase_definet.data.formats import load_dataset
    from ase_definet.data.splits import apply_split
    from ase_definet.evaluate import displacement_arrays, predict_samples
    from ase_definet.inference import Predictor

    samples = load_dataset(args.data).samples
    if args.subset != "all":
        samples = list(apply_split(samples, args.split_file, unassigned="drop")[args.subset])
    samples, preds = predict_samples(Predictor(args.model), samples)
    disp = displacement_arrays(samples, preds)
    normals = sheet_normals(samples)
    groups = np.array([s.group for s in samples])          # per structure

    print(f"{args.subset} subset, {len(samples)} structures; errors in Å, Dummy / model\n")
    print("| group | n | in-plane | out-of-plane | response | "
          + " | ".join(f"{k} Å (share)" for k in SHELL_KEYS) + " |")
    print("|---|---|---|---|---|" + "---|" * len(SHELL_KEYS))
    for g in sorted(set(groups), key=group_order):
        r = anatomy(disp, normals, groups[disp.structure] == g)
        cells = [f"{r[f'dummy {k}']:.4f} / {r[f'model {k}']:.4f} ({100 * r[f'share {k}']:.0f} %)"
                 for k in SHELL_KEYS]
        print(f"| {g} | {(groups == g).sum()} | {r['dummy_in']:.4f} / {r['model_in']:.4f} | "
              f"{r['dummy_out']:.4f} / {r['model_out']:.4f} | {r['response']:.2f} | "
              + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
