"""The ensemble's ship rule (README.md): both models on the split-v2 validation
structures that v10s1 never trained on.

    python experiments/ensemble/ship_rule.py ENSEMBLE_VAL.json V10S1_VAL.json OLD_SPLIT

Both reports come from `definet evaluate --subset val` on split-v2; OLD_SPLIT is
v10s1's own split (experiments/runs/definet-2dmd-v10-seed1/split.json). The
structures in its training part are dropped from both reports, and on the rest each model's
concentration-balanced MAE improvement over the Dummy is averaged over the
material/density groups. Rule: ship the ensemble as definet-2dmd when its mean is at
least v10s1's minus 1.0 point; exit 0 then, 1 otherwise. No model run.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from ase_definet.breakdown import balanced_improvements
from ase_definet.data.splits import read_split
from ase_definet.evaluate import report_from_records

MARGIN = 1.0


def unseen(report: dict, trained: set[str]) -> dict:
    records = [r for r in report["per_structure"] if str(r["id"]) not in trained]
    return report_from_records(records, report["radii"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("ensemble")
    ap.add_argument("v10s1")
    ap.add_argument("old_split")
    a = ap.parse_args()
    trained = {str(i) for i in read_split(a.old_split)["train"]}
    ens, old = (unseen(json.loads(Path(p).read_text()), trained) for p in (a.ensemble, a.v10s1))
    be, bo = balanced_improvements(ens), balanced_improvements(old)
    print(f"split-v2 val structures v10s1 never trained on: {ens['overall']['n']}")
    print("| group | n | ensemble | v10s1 |\n|---|---|---|---|")
    for g in sorted(be):
        print(f"| {g} | {ens['groups'][g]['n']} | {be[g]:.1f} | {bo[g]:.1f} |")
    me, mo = float(np.mean(list(be.values()))), float(np.mean(list(bo.values())))
    ship = me >= mo - MARGIN
    print(f"| mean over groups | | {me:.1f} | {mo:.1f} |")
    print(f"rule: ensemble >= v10s1 - {MARGIN:g} points: {me:.1f} vs {mo - MARGIN:.1f}: "
          + ("SHIP as definet-2dmd" if ship else "keep v10s1; ship as definet-2dmd-ensemble"))
    return 0 if ship else 1


if __name__ == "__main__":
    raise SystemExit(main())
