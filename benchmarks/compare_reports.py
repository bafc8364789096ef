"""Print evaluation reports side by side: improvement over the Dummy per group.

    python benchmarks/compare_reports.py NAME=report.json NAME=report.json ...

Reports are ``definet evaluate --json`` files: the last rows give each report's
mean over groups (every group counts once, as the model card's targets do) and
how many groups reach the card's targets, both over the groups all reports
have. Reports that break groups down by concentration (``strata``) get a second
table: per group the concentration-balanced improvement and the share of
structures predicted worse than the Dummy. Or all are ``definet residual --json``
files: per fmax, overall and per density, the reduction in median steps and the
largest energy difference between the two end points.
"""
from __future__ import annotations

import json
import sys

from ase_definet.data.sample import density_of
from ase_definet.targets import TARGETS, group_order, meets_target
from ase_definet.textfmt import fmt_num, fmt_share


def main(argv: list[str]) -> int:
    if not argv or any("=" not in a for a in argv):
        print(__doc__.strip())
        return 2
    reports = {name: json.load(open(path)) for name, path in (a.split("=", 1) for a in argv)}
    kinds = {"groups" in r for r in reports.values()}   # evaluate reports have groups
    if len(kinds) > 1:
        print("compare_reports: mix of evaluate and residual reports")
        return 2
    if kinds == {False}:
        return _residual_table(reports)
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
            cells.append(f"{fmt_num(imp.get('mae'))} | {fmt_num(imp.get('a3'))}")
        print(f"| {g} | {_n_cell(ns)} | {' | '.join(cells)} |")
    # means and target counts over the groups every report has: like with like
    common = [g for g in groups if all(g in r["groups"] for r in reports.values())]
    means, met = [], []
    for r in reports.values():
        imps = {g: r["groups"][g]["improvement"] for g in common}
        means.append(f"{fmt_num(_mean(i.get('mae') for i in imps.values()))} | "
                     f"{fmt_num(_mean(i.get('a3') for i in imps.values()))}")
        at = sum(meets_target(i, TARGETS.get(density_of(g), 100.0)) for g, i in imps.items())
        met.append(f"{at} of {len(imps)} | ")
    scope = "" if len(common) == len(groups) else f" (the {len(common)} in all reports)"
    print(f"| mean over groups{scope} | | {' | '.join(means)} |")
    print(f"| groups at target{scope} | | {' | '.join(met)} |")
    if all(r.get("strata") for r in reports.values()):
        _balanced_table(reports, groups)
    return 0


def _balanced_table(reports: dict[str, dict], groups: list[str]) -> None:
    """Per group: concentration-balanced MAE and A3 improvement, share worse than Dummy."""
    head = " | ".join(f"{n} balanced MAE % | {n} balanced A3 % | {n} worse than Dummy"
                      for n in reports)
    print(f"\n| group | {head} |")
    print("|---|" + "---|---|---|" * len(reports))
    for g in groups:
        cells = []
        for r in reports.values():
            imp = ((r["strata"].get(g) or {}).get("balanced") or {}).get("improvement", {})
            block = r["groups"].get(g) or {}
            worse = block.get("worse_than_dummy")
            cells.append(f"{fmt_num(imp.get('mae'))} | {fmt_num(imp.get('a3'))} | "
                         + (fmt_share(worse["n"], block["n"]) if worse else "n/a"))
        print(f"| {g} | {' | '.join(cells)} |")


def _mean(values) -> float | None:
    """Mean of the numbers among ``values``; JSON nulls (NaN in a report) are left out."""
    nums = [v for v in values if v is not None and v == v]
    return sum(nums) / len(nums) if nums else None


def _n_cell(ns: list[str]) -> str:
    """One count where all reports agree; ``3/5`` where they cover different sets."""
    return ns[0] if len(set(ns)) == 1 else "/".join(ns)


def _residual_table(reports: dict[str, dict]) -> int:
    """Residual-step reports side by side: % fewer median steps, max abs(ΔE)."""
    head = " | ".join(f"{n} steps % fewer | {n} max abs(ΔE) meV" for n in reports)
    print(f"| set | fmax eV/Å | n | {head} |")
    print("|---|---|---|" + "---|---|" * len(reports))
    ids = {tuple(sorted(s["id"] for s in r["per_structure"])) for r in reports.values()}
    scopes = [("all", None)] + [(d, d) for d in ("low", "high")
                                if any(d in r.get("by_density", {}) for r in reports.values())]
    for fmax in next(iter(reports.values()))["summary"]:
        for label, density in scopes:
            cells, ns = [], []
            for r in reports.values():
                block = r.get("by_density", {}).get(density, {}) if density else r
                summary = (block.get("summary") or {}).get(fmax) or {}
                ns.append(str(block.get("n", 0)))
                cells.append(f"{fmt_num(summary.get('reduction_pct'))} | "
                             f"{fmt_num(summary.get('dE_meV_max'))}")
            print(f"| {label} | {fmax} | {_n_cell(ns)} | {' | '.join(cells)} |")
    if len(ids) > 1:
        print("(the reports cover different structures)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
