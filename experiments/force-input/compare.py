"""Matched-epoch table of arm F0 (force_input) against ensemble member 0, and the
interim verdict of the rule in README.md.

    python experiments/force-input/compare.py [--f0 DIR] [--a DIR]
"""
from __future__ import annotations

import argparse
import csv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def scores(run: Path) -> list[float]:
    with open(run / "metrics.csv") as f:
        return [float(r["val_score"]) for r in csv.DictReader(f)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--f0", default=str(ROOT / "experiments/force-input/f0"))
    ap.add_argument("--a", default=str(ROOT / "experiments/ensemble/member-0"))
    a = ap.parse_args()
    f0, m0 = scores(Path(a.f0)), scores(Path(a.a))
    n = min(len(f0), len(m0))
    print("| epoch | member 0 | F0 | best member 0 | best F0 | F0 − member 0 (best) |")
    print("|---|---|---|---|---|---|")
    for e in range(n):
        bm, bf = min(m0[:e + 1]), min(f0[:e + 1])
        print(f"| {e + 1} | {m0[e]:.4f} | {f0[e]:.4f} | {bm:.4f} | {bf:.4f} | {bf - bm:+.4f} |")
    if n < 5:
        print(f"\n{n} matched epochs: the rule decides from epoch 5")
        return 0
    d = min(f0[:n]) - min(m0[:n])
    verdict = ("F0 better by >= 0.03: continue to 30 epochs" if d <= -0.03 else
               "F0 worse by > 0.03: stop, the lever loses at this recipe" if d > 0.03 else
               "within 0.03: continue (undecided)")
    print(f"\nepoch {n}: best F0 - best member 0 = {d:+.4f} -> {verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
