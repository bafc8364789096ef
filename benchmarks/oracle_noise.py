"""How reproducible are the oracle's labels? A ceiling for any one-shot model.

Each selected structure is relaxed again by the oracle protocol of the data set
(CHGNet 0.3.0, FIRE, fixed cell, fmax 0.01 eV/Å), starting from its unrelaxed
positions moved by a random ``sigma`` Å per coordinate (seeded per structure).
The rerun's end point is then scored against the stored label exactly as a
model prediction is (``definet evaluate`` metrics, improvement over the Dummy),
next to the shipped model on the same structures.

If the potential-energy surface has one basin reachable from the input, the
rerun lands on the label (improvement ~100 %). Where a perturbation of 1e-3 Å
sends FIRE to another minimum (a symmetry the defects leave nearly intact, a
flat landscape), the label is partly a coin toss that no function of the
unrelaxed input can predict, and the rerun's score estimates how much of the
Dummy error is predictable at all.

    python benchmarks/oracle_noise.py --out weights/train/oracle-noise \
        [--per-group 6] [--sigma 0.001] [--workers 2]

Resumable: finished structures are read back from ``OUT/relaxed.jsonl``.
Writes ``OUT/oracle_rerun.json`` and ``OUT/model.json`` (``definet evaluate``
reports; no model with ``--model none``) and prints them side by side with
``compare_reports.py``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

_WORKER: dict = {}


def _init(calculator: str) -> None:
    import torch
    torch.set_num_threads(1)
    from ase_definet.data.oracle import make_calculator
    _WORKER["calc"] = make_calculator(calculator)


def _rerun(task: tuple) -> dict:
    from ase_definet.data.oracle import relax
    sid, atoms, sigma, seed = task
    work = atoms.copy()
    if sigma > 0:
        work.positions += np.random.default_rng(seed).normal(0.0, sigma, work.positions.shape)
    r = relax(work, _WORKER["calc"])
    return {"id": sid, "sigma": sigma, "steps": r.steps, "converged": r.converged,
            "energy": r.energy_final, "positions": r.positions.round(6).tolist()}


def select(samples: list, per_group: int) -> list:
    """The first ``per_group`` samples of each ``material/density`` group, in order."""
    taken: dict[str, int] = {}
    out = []
    for s in samples:
        if taken.get(s.group, 0) < per_group:
            taken[s.group] = taken.get(s.group, 0) + 1
            out.append(s)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="weights/data/chgnet-2dmd")
    ap.add_argument("--split-file", default="weights/definet-2dmd.split.json")
    ap.add_argument("--subset", default="test")
    ap.add_argument("--per-group", type=int, default=6)
    ap.add_argument("--sigma", type=float, default=1e-3, help="Å per coordinate")
    ap.add_argument("--calculator", default="chgnet")
    ap.add_argument("--model", default=None,
                    help="weights to compare (default: shipped; 'none': no model column)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    from tqdm.auto import tqdm

    from ase_definet.data.oracle import FMAX, MAX_STEPS
    from ase_definet.data.splits import apply_split
    from ase_definet.evaluate import evaluate, evaluate_predictions, save_report
    from ase_definet.inference import Predictor
    from ase_definet.train import load_samples

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    samples = load_samples(args.data, progress_note=lambda *a: None).samples
    chosen = select(apply_split(samples, args.split_file, unassigned="drop")[args.subset],
                    args.per_group)
    log = out / "relaxed.jsonl"
    done = {}
    if log.exists():
        for line in log.read_text().splitlines():
            if line.strip():
                rec = json.loads(line)
                if rec.get("sigma", args.sigma) != args.sigma:
                    ap.error(f"{log} holds reruns with sigma {rec['sigma']}, not "
                             f"{args.sigma}: use another --out")
                done[rec["id"]] = rec
    tasks = [(s.info["id"], s.atoms, args.sigma, k) for k, s in enumerate(chosen)
             if s.info["id"] not in done]
    if tasks:
        import multiprocessing as mp
        with mp.get_context("spawn").Pool(args.workers, initializer=_init,
                                          initargs=(args.calculator,)) as pool, \
                log.open("a") as fh:
            for rec in tqdm(pool.imap_unordered(_rerun, tasks), total=len(tasks),
                            desc="oracle rerun", unit="struct"):
                fh.write(json.dumps(rec) + "\n")
                fh.flush()
                done[rec["id"]] = rec
    recs = [done[s.info["id"]] for s in chosen]
    unconverged = [r["id"] for r in recs if not r["converged"]]
    if unconverged:
        print(f"not converged (scored anyway): {', '.join(unconverged)}")
    rerun = evaluate_predictions(chosen, [np.array(r["positions"]) for r in recs])
    rerun["settings"] = {"sigma_A": args.sigma, "calculator": args.calculator,
                         "protocol": f"FIRE, fixed cell, fmax {FMAX} eV/Å, {MAX_STEPS} steps",
                         "steps": {r["id"]: r["steps"] for r in recs},
                         "energy_diff_meV": {
                             s.info["id"]: 1000 * (r["energy"] - s.info["energy_final"])
                             for s, r in zip(chosen, recs) if "energy_final" in s.info}}
    save_report(rerun, out / "oracle_rerun.json")
    columns = [f"oracle_rerun={out / 'oracle_rerun.json'}"]
    if args.model != "none":
        save_report(evaluate(Predictor(args.model), chosen, progress=False),
                    out / "model.json")
        columns.insert(0, f"model={out / 'model.json'}")
    sys.path.insert(0, str(Path(__file__).parent))
    from compare_reports import main as compare
    return compare(columns)


if __name__ == "__main__":
    raise SystemExit(main())
