"""Final verdict of an A/B of two validation reports (issue #30 rules).

Reads two ``definet evaluate --json`` reports (arm A, the control; arm B, the
lever) and prints per group the concentration-balanced MAE improvement over the
Dummy, the difference B − A, the high-density balanced mean of each, and the
largest drop of any group. The thresholds are the rule's, passed on the command
line, so the verdict printed is the one the rule file fixed before the run.

    python experiments/probes/ab_verdict.py A.json B.json --gain 5 --max-drop 3
"""
from __future__ import annotations

import argparse
import json

from ase_definet.breakdown import balanced_improvements


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", help="control report")
    ap.add_argument("b", help="lever report")
    ap.add_argument("--gain", type=float, default=5.0,
                    help="points the high-density mean must gain (default 5)")
    ap.add_argument("--max-drop", type=float, default=3.0,
                    help="points any group may lose (default 3)")
    args = ap.parse_args()
    a, b = (balanced_improvements(json.load(open(p))) for p in (args.a, args.b))
    groups = sorted(set(a) & set(b), key=lambda g: ("high" in g, g))
    print("| group | A | B | B − A |\n|---|---|---|---|")
    for g in groups:
        print(f"| {g} | {a[g]:.1f} | {b[g]:.1f} | {b[g] - a[g]:+.1f} |")
    high = [g for g in groups if g.endswith("/high")]
    ma = sum(a[g] for g in high) / len(high)
    mb = sum(b[g] for g in high) / len(high)
    worst = min(groups, key=lambda g: b[g] - a[g])
    drop = b[worst] - a[worst]
    print(f"| high-density mean ({len(high)} groups) | {ma:.2f} | {mb:.2f} | {mb - ma:+.2f} |")
    ok = mb - ma >= args.gain and drop >= -args.max_drop
    print(f"\nlargest drop: {worst} {drop:+.1f}; rule: gain >= {args.gain:g} and no group "
          f"below -{args.max_drop:g} -> {'B wins' if ok else 'B does not win'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
