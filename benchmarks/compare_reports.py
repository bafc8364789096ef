"""Print evaluation reports side by side: improvement over the Dummy per group.

    python benchmarks/compare_reports.py NAME=report.json NAME=report.json ...

Reports are ``definet evaluate --json`` files. The last rows give each report's
mean over groups (every group counts once, as the model card's targets do) and
how many groups reach the card's targets.
"""
from __future__ import annotations

import json
import sys

from ase_definet.card import TARGETS, group_order, meets_target
from ase_definet.data.sample import density_of


def main(argv: list[str]) -> int:
    if not argv or any("=" not in a for a in argv):
        print(__doc__.strip())
        return 2
    reports = {name: json.load(open(path)) for name, path in (a.split("=", 1) for a in argv)}
    groups = sorted({g for r in reports.values() for g in r["groups"]}, key=group_order)
    head = " | ".join(f"{n} MAE % | {n} A3 %" for n in reports)
    print(f"| group | n | {head} |")
    print("|---|---|" + "---|---|" * len(reports))
    for g in groups:
        cells, ns = [], []
        for r in reports.values():
            block = r["groups"].get(g) or {}
            ns.append(str(block.get("n", 0)))
            imp = block.get("improvement", {})
            cells.append(f"{imp.get('mae', float('nan')):.1f} | {imp.get('a3', float('nan')):.1f}")
        n = ns[0] if len(set(ns)) == 1 else "/".join(ns)   # reports on different sets
        print(f"| {g} | {n} | {' | '.join(cells)} |")
    means, met = [], []
    for r in reports.values():
        imps = {g: r["groups"][g]["improvement"] for g in groups if g in r["groups"]}
        means.append(f"{sum(i['mae'] for i in imps.values()) / len(imps):.1f} | "
                     f"{sum(i['a3'] for i in imps.values()) / len(imps):.1f}")
        at = sum(meets_target(i, TARGETS.get(density_of(g), 100.0)) for g, i in imps.items())
        met.append(f"{at} of {len(imps)} | ")
    print(f"| mean over groups | | {' | '.join(means)} |")
    print(f"| groups at target | | {' | '.join(met)} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
