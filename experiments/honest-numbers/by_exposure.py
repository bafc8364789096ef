"""The split-v2 test report cut by where each structure sat in the old split.

    python experiments/honest-numbers/by_exposure.py REPORT.json OLD_SPLIT [--json OUT]

Structures the shipped model trained on (old train) score better than those it
never saw (old val and test) when memorisation helps; the gap measures how
optimistic the full split-v2 numbers are. Summaries come from the report's own
per-structure records (``report_from_records``): no second model run.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ase_definet.data.splits import read_split
from ase_definet.evaluate import report_from_records, save_report
from ase_definet.textfmt import fmt_num


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("report")
    ap.add_argument("old_split")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    report = json.loads(Path(a.report).read_text())
    old = read_split(a.old_split)
    part_of = {str(i): p for p in ("train", "val", "test") for i in old.get(p, [])}
    parts = {p: [r for r in report["per_structure"] if part_of.get(str(r["id"])) == p]
             for p in ("train", "val", "test")}
    subsets = {p: report_from_records(rs, report["radii"]) for p, rs in parts.items() if rs}
    if a.json:
        save_report({p: {k: v for k, v in r.items() if k != "per_structure"}
                     for p, r in subsets.items()}, a.json)
    names = list(subsets)
    print("| group | " + " | ".join(f"old {p}: n | MAE % | A3 %" for p in names) + " |")
    print("|---|" + "---|---|---|" * len(names))
    groups = sorted({g for r in subsets.values() for g in r["groups"]})
    for g in [*groups, "all"]:
        cells = []
        for p in names:
            b = subsets[p]["overall"] if g == "all" else subsets[p]["groups"].get(g)
            imp = (b or {}).get("improvement", {})
            cells.append(f"{(b or {}).get('n', 0)} | {fmt_num(imp.get('mae'))} | "
                         f"{fmt_num(imp.get('a3'))}")
        print(f"| {g} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
