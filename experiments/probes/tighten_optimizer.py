"""Does another optimizer continue the labels to the same end points in fewer steps?

The relabel (``definet tighten``) continues each protocol label from fmax 0.01 to
fmax 0.001 with FIRE. This script continues the same labels again with another ASE
optimizer (BFGS by default) and compares, structure by structure, with the FIRE
continuation already in the tightened store: continuation steps, distance between
the two end points (mean and max over atoms, Å; the mean split into its part along
the sheet normal and in plane) and energy difference (meV). Each
group's mean end-point distance is set against the shipped model's MAE on that
group (a ``definet evaluate`` report against the continued labels), because a label
difference far below the model's error changes nothing a model can learn.

The sample is fixed: the first ``--per-group`` training structures (split file) of
every group in the order of the tightened store, 12×12 excluded. Rule and result:
``experiments/runs/tighten_optimizer.md``.

    python experiments/probes/tighten_optimizer.py [--optimizer BFGS] [--per-group 4] \\
        [--out /tmp/tighten-bfgs] [--json experiments/runs/tighten-optimizer/bfgs.json]

Resumable (the continuation is a ``definet tighten`` store in ``--out``). Steps are
the measure of cost: the calculator's time per step is the same for both optimizers,
and the wall times printed alongside depend on what else the machine runs.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]


def pick(tight: list, split: Path, per_group: int) -> list[str]:
    """First ``per_group`` training ids of each 8×8/6×6 group, in store order."""
    from ase_definet.data.splits import first_per_group
    train = set(json.loads(split.read_text())["train"])
    frames = [f for f in tight
              if f.info["id"] in train and f.info.get("supercell") != "12x12"]
    def group(f) -> str:
        return f"{f.info['material']}/{f.info['density']}"

    # grouped, groups sorted (a stable sort): the order the study's tables were written in
    chosen = first_per_group(frames, per_group, key=group)
    return [f.info["id"] for f in sorted(chosen, key=group)]


def compare(tight: list, other: list, ids: list[str]) -> list[dict]:
    """Per structure: both continuations' steps, end-point distance, energy gap.

    ``tight`` and ``other`` are the frames of the two continued stores.
    """
    from ase_definet.geometry import sheet_normal
    a = {f.info["id"]: f for f in tight}
    b = {f.info["id"]: f for f in other}
    rows = []
    for sid in ids:
        fa, fb = a[sid], b[sid]
        diff = fb.arrays["relaxed_positions"] - fa.arrays["relaxed_positions"]
        d = np.linalg.norm(diff, axis=1)
        normal = sheet_normal(fa.cell.array)
        along = diff @ normal
        rows.append({
            "id": sid, "group": f"{fa.info['material']}/{fa.info['density']}",
            "atoms": len(fa),
            "steps_ref": int(fa.info["steps"]) - int(fa.info["label_steps"]),
            "steps_new": int(fb.info["steps"]) - int(fb.info["label_steps"]),
            "converged_new": bool(fb.info["converged"]),
            "fmax_new": float(fb.info["fmax_final"]),
            "distance_mean": float(d.mean()), "distance_max": float(d.max()),
            "distance_normal_mean": float(np.abs(along).mean()),
            "distance_inplane_mean": float(np.linalg.norm(
                diff - np.outer(along, normal), axis=1).mean()),
            "denergy_meV": 1000 * (float(fb.info["energy_final"])
                                   - float(fa.info["energy_final"])),
        })
    return rows


def verdict(rows: list[dict], model_mae: dict[str, float], step_ratio: float = 0.5,
            share: float = 0.10, energy_meV: float = 1.0) -> dict:
    """The four conditions of the rule in ``tighten_optimizer.md``."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        groups[r["group"]].append(r)
    per_group = {}
    for g, rs in sorted(groups.items()):
        dist = float(np.mean([r["distance_mean"] for r in rs]))
        normal = float(np.mean([r.get("distance_normal_mean", np.nan) for r in rs]))
        inplane = float(np.mean([r.get("distance_inplane_mean", np.nan) for r in rs]))
        per_group[g] = {
            "n": len(rs), "steps_ref": int(sum(r["steps_ref"] for r in rs)),
            "steps_new": int(sum(r["steps_new"] for r in rs)),
            "distance_mean": dist,
            "distance_max": float(max(r["distance_max"] for r in rs)),
            "distance_normal_mean": normal, "distance_inplane_mean": inplane,
            "max_abs_denergy_meV": float(max(abs(r["denergy_meV"]) for r in rs)),
            "model_mae": model_mae.get(g),
            "distance_share_of_model_mae": (dist / model_mae[g]) if g in model_mae else None,
        }
    ref = sum(r["steps_ref"] for r in rows)
    new = sum(r["steps_new"] for r in rows)
    checks = {
        "all_converged": all(r["converged_new"] for r in rows),
        "steps_at_most_half": new <= step_ratio * ref,
        "distance_below_share_of_model_mae": all(
            v["distance_share_of_model_mae"] is not None
            and v["distance_share_of_model_mae"] <= share for v in per_group.values()),
        "energies_within_1meV": all(abs(r["denergy_meV"]) <= energy_meV for r in rows),
    }
    return {"groups": per_group, "steps_ref": ref, "steps_new": new,
            "checks": checks, "switch": all(checks.values())}


def table(result: dict, name: str) -> str:
    lines = [f"| group | n | FIRE steps | {name} steps | end-point distance mean / max (Å) "
             "| of which along normal / in plane (Å) | max abs(ΔE) meV | v8 MAE (Å) "
             "| distance / v8 MAE |",
             "|---|---|---|---|---|---|---|---|---|"]
    for g, v in result["groups"].items():
        share = v["distance_share_of_model_mae"]
        mae = "?" if v["model_mae"] is None else f"{v['model_mae']:.4f}"
        lines.append(
            f"| {g} | {v['n']} | {v['steps_ref']} | {v['steps_new']} | "
            f"{v['distance_mean']:.5f} / {v['distance_max']:.4f} | "
            f"{v['distance_normal_mean']:.5f} / {v['distance_inplane_mean']:.5f} | "
            f"{v['max_abs_denergy_meV']:.3f} | {mae} | "
            + ("? |" if share is None else f"{100 * share:.1f} % |"))
    lines.append(f"| all | {sum(v['n'] for v in result['groups'].values())} | "
                 f"{result['steps_ref']} | {result['steps_new']} "
                 f"({100 * result['steps_new'] / max(result['steps_ref'], 1):.0f} %) "
                 "| | | | | |")
    lines += [f"- {k}: {v}" for k, v in result["checks"].items()]
    lines.append(f"switch to {name}: {result['switch']}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--source", default=str(ROOT / "weights/data/chgnet-2dmd"))
    p.add_argument("--tight", default=str(ROOT / "weights/data/chgnet-2dmd-tight"))
    p.add_argument("--split-file",
                   default=str(ROOT / "experiments/runs/definet-2dmd-v9-data/split.json"))
    p.add_argument("--model-report", default=str(
        ROOT / "experiments/runs/tighten-relabel/val_v8_vs_continued.json"),
        help="definet evaluate JSON of the shipped model against the continued labels")
    p.add_argument("--optimizer", default="BFGS")
    p.add_argument("--per-group", type=int, default=4)
    p.add_argument("--out", default="/tmp/tighten-bfgs", help="continuation store (resumes)")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--json", default=None, help="write rows and verdict here")
    args = p.parse_args(argv)

    from ase_definet.data.store import read_frames
    from ase_definet.data.tighten import tighten
    tight, out = Path(args.tight), Path(args.out)
    tight_frames = read_frames(tight / "samples.extxyz")
    ids = pick(tight_frames, Path(args.split_file), args.per_group)
    if not ids:
        raise SystemExit(f"{tight}: no training structures of the split are continued yet")
    held = json.loads((tight / "manifest.json").read_text())["tightened"]
    tighten(args.source, out, fmax=held["fmax"], steps=held["max_steps"],
            optimizer=args.optimizer, ids=ids, workers=args.workers, threads=1)
    report = json.loads(Path(args.model_report).read_text())
    model_mae = {g: v["model"]["mae"] for g, v in report["groups"].items()}
    rows = compare(tight_frames, read_frames(out / "samples.extxyz"), ids)
    result = verdict(rows, model_mae)
    print(table(result, args.optimizer))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"optimizer": args.optimizer, "ids": ids,
                                               "rows": rows, **result}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
