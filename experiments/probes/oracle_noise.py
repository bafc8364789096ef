"""How reproducible, and how converged, are the oracle's labels?

Each selected structure is relaxed again by the oracle (CHGNet 0.3.0, FIRE,
fixed cell) and the rerun's end point is scored against the stored label
exactly as a model prediction is (``definet evaluate`` metrics, improvement over
the Dummy), next to the shipped model on the same structures. Two kinds of rerun:

- ``--start input`` (default): from the unrelaxed positions moved by a random
  ``sigma`` Å per coordinate (seeded per structure), to the protocol's fmax
  0.01 eV/Å. Reproducibility: a ceiling for any one-shot model.
- ``--start label --fmax 0.001``: from the stored label on, to a tighter fmax.
  Convergence: how far the label sits from the minimum it is heading for. The
  model is then also scored against these end points (``model_vs_endpoint.json``)
  and the shift is split into its part along the sheet normal and in plane.

If the potential-energy surface has one basin reachable from the input, the
rerun lands on the label (improvement ~100 %). Where a perturbation of 1e-3 Å
sends FIRE to another minimum (a symmetry the defects leave nearly intact, a
flat landscape), the label is partly a coin toss that no function of the
unrelaxed input can predict, and the rerun's score estimates how much of the
Dummy error is predictable at all.

    python experiments/probes/oracle_noise.py --out experiments/runs/oracle-noise/sigma1e-3 \
        [--per-group 6] [--sigma 0.001] [--workers 2]
    python experiments/probes/oracle_noise.py --out experiments/runs/label-convergence/val \
        --start label --fmax 0.001 --subset val --per-group 3

``--subset all`` skips the split file; ``--where supercell=12x12`` selects by
``info`` (the MoS2 12×12 holdout is in no split subset). Resumable: finished
structures are read back from ``OUT/relaxed.jsonl`` (a folder holds one kind of
rerun). Writes ``OUT/oracle_rerun.json`` and ``OUT/model.json`` (``definet
evaluate`` reports; no model with ``--model none``) and prints them side by side
with ``compare_reports.py``; ``--start label`` adds ``model_vs_endpoint.json``.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

_WORKER: dict = {}


def _init(calculator: str) -> None:
    import torch
    torch.set_num_threads(1)
    from ase_definet.data.worker import tune_worker
    from ase_definet.calculators import make_calculator
    tune_worker()
    _WORKER["calc"] = make_calculator(calculator)


def _rerun(task: tuple) -> dict:
    from ase_definet.data.oracle import MAX_STEPS, relax
    sid, atoms, start, sigma, fmax, seed = task
    work = atoms.copy()
    if start is not None:
        work.positions = start
    if sigma > 0:
        work.positions += np.random.default_rng(seed).normal(0.0, sigma, work.positions.shape)
    # continuing from a label to a tighter fmax crawls along soft modes: allow more steps
    r = relax(work, _WORKER["calc"], fmax=fmax, steps=MAX_STEPS if start is None else 4 * MAX_STEPS)
    return {"id": sid, "sigma": sigma, "fmax": fmax, "start": "input" if start is None else "label",
            "steps": r.steps, "converged": r.converged, "energy_start": r.energy_initial,
            "energy": r.energy_final, "wall_s": round(r.wall_time, 1),
            "positions": r.positions.round(6).tolist()}


def shift_parts(sample, positions: np.ndarray) -> tuple[float, float]:
    """Mean |shift| of the real atoms from the label along the sheet normal and in plane.

    The in-plane part is the length of the rest over sqrt(2), per component, so
    both compare with each other and with the per-component MAE.
    """
    from ase_definet.geometry import sheet_normal
    normal = sheet_normal(sample.atoms.cell.array)
    d = positions - sample.relaxed
    out = d @ normal
    rest = np.linalg.norm(d - out[:, None] * normal, axis=1) / np.sqrt(2)
    return float(np.abs(out).mean()), float(rest.mean())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="weights/data/chgnet-2dmd")
    ap.add_argument("--split-file", default="experiments/runs/definet-2dmd-v10-seed1/split.json")
    ap.add_argument("--subset", default="test", choices=("all", "train", "val", "test"))
    ap.add_argument("--where", action="append", default=None, metavar="KEY=VALUE",
                    help="keep samples whose info matches (repeatable)")
    ap.add_argument("--per-group", type=int, default=6)
    ap.add_argument("--start", default="input", choices=("input", "label"),
                    help="rerun from the unrelaxed input or continue from the label")
    ap.add_argument("--sigma", type=float, default=None,
                    help="Å per coordinate (default 1e-3 from the input, 0 from the label)")
    ap.add_argument("--fmax", type=float, default=None,
                    help="eV/Å (default: the protocol's 0.01 from the input, 0.001 from the label)")
    ap.add_argument("--calculator", default="chgnet")
    ap.add_argument("--model", default=None,
                    help="weights to compare (default: shipped; 'none': no model column)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    from tqdm.auto import tqdm

    from ase_definet.data.oracle import FMAX, MAX_STEPS
    from ase_definet.data.splits import apply_split, first_per_group
    from ase_definet.evaluate import evaluate, evaluate_predictions, save_report
    from ase_definet.inference import Predictor
    from ase_definet.data.load import load_samples

    from_label = args.start == "label"
    if args.sigma is None:
        args.sigma = 0.0 if from_label else 1e-3
    if args.fmax is None:
        args.fmax = 0.001 if from_label else FMAX
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    samples = load_samples(args.data, progress_note=lambda *a: None, where=args.where).samples
    if args.subset != "all":
        samples = apply_split(samples, args.split_file, unassigned="drop")[args.subset]
    chosen = first_per_group(samples, args.per_group)
    if not chosen:
        ap.error("no structures selected (check --data, --subset, --where)")
    log = out / "relaxed.jsonl"
    done = {}
    if log.exists():
        for line in log.read_text().splitlines():
            if line.strip():
                rec = json.loads(line)
                # records before --start/--fmax existed were input reruns to the protocol fmax
                kind = (rec.get("start", "input"), rec.get("sigma"), rec.get("fmax", FMAX))
                if kind != (args.start, args.sigma, args.fmax):
                    ap.error(f"{log} holds reruns with start {kind[0]}, sigma {kind[1]}, "
                             f"fmax {kind[2]}, not start {args.start}, sigma {args.sigma}, "
                             f"fmax {args.fmax}: use another --out")
                done[rec["id"]] = rec
    tasks = [(s.info["id"], s.atoms, s.relaxed if from_label else None, args.sigma,
              args.fmax, k) for k, s in enumerate(chosen) if s.info["id"] not in done]
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
    parts = [shift_parts(s, np.array(r["positions"])) for s, r in zip(chosen, recs)]
    rerun["settings"] = {
        "start": args.start, "sigma_A": args.sigma, "calculator": args.calculator,
        "protocol": f"FIRE, fixed cell, fmax {args.fmax} eV/Å, "
                    f"{(4 if from_label else 1) * MAX_STEPS} steps",
        "steps": {r["id"]: r["steps"] for r in recs},
        "wall_s": {r["id"]: r.get("wall_s") for r in recs},
        "energy_diff_meV": {
            s.info["id"]: 1000 * (r["energy"] - s.info["energy_final"])
            for s, r in zip(chosen, recs) if "energy_final" in s.info},
        "shift_out_of_plane_A": {s.info["id"]: p[0] for s, p in zip(chosen, parts)},
        "shift_in_plane_A": {s.info["id"]: p[1] for s, p in zip(chosen, parts)}}
    save_report(rerun, out / "oracle_rerun.json")
    columns = [f"oracle_rerun={out / 'oracle_rerun.json'}"]
    if args.model != "none":
        predictor = Predictor(args.model)
        save_report(evaluate(predictor, chosen, progress=False), out / "model.json")
        columns.insert(0, f"model={out / 'model.json'}")
        if from_label:
            ends = [replace(s, relaxed=np.array(r["positions"])) for s, r in zip(chosen, recs)]
            save_report(evaluate(predictor, ends, progress=False),
                        out / "model_vs_endpoint.json")
            columns.append(f"model_vs_endpoint={out / 'model_vs_endpoint.json'}")
    print(f"mean |shift| from the label: {np.mean([p[0] for p in parts]):.4f} Å along the "
          f"sheet normal, {np.mean([p[1] for p in parts]):.4f} Å in plane (per component)")
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    from compare_reports import main as compare
    return compare(columns)


if __name__ == "__main__":
    raise SystemExit(main())
