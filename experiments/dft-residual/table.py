"""The GPAW residual study's per-structure table and medians, as markdown, from
report.json (docs/dft-residual.md carries its output).

    python experiments/dft-residual/table.py [REPORT]
"""
from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

START_NAMES = {"unrelaxed": "unrelaxed input", "predicted": "DefiNet prediction",
               "pre_relaxed": "CHGNet + FIRE"}


def _label(sid: str) -> str:
    """``"00-MoS2_3x3-V_S"`` -> ``"MoS2 3×3, V_S"``."""
    material, rest = sid.split("-", 1)[1].split("_", 1)
    cell, defect = rest.split("-", 1)
    return f"{material} {cell.replace('x', '×')}, {defect}"


def rows(report: dict) -> list[str]:
    out = ["| structure | start | steps to 0.05 | steps to 0.02 | start energy vs input "
           "| end energy vs input's (0.02) | end point vs input's (0.02) |",
           "|---|---|---|---|---|---|---|"]
    for p in report["per_structure"]:
        e0 = p["unrelaxed"]["energy_start"]
        end0 = p["unrelaxed"]["0.02"]["energy"]
        for k, start in enumerate(("unrelaxed", "predicted", "pre_relaxed")):
            r = p.get(start)
            if r is None:
                continue
            name = START_NAMES[start]
            if start == "pre_relaxed" and p.get("pre_relax"):
                pr = p["pre_relax"]
                name += f" ({pr['steps']} CHGNet steps, {pr['wall_time']:.0f} s)"
            label = _label(p["id"]) if k == 0 else ""
            de = "0" if start == "unrelaxed" else f"{1000 * (r['energy_start'] - e0):+.1f} meV"
            dend = ("–" if start == "unrelaxed"
                    else f"{1000 * (r['0.02']['energy'] - end0):+.2f} meV")
            dist = ("–" if start == "unrelaxed"
                    else f"{p['end_distance']['0.02'][start]:.3f} Å")
            out.append(f"| {label} | {name} | {r['0.05']['steps']} | {r['0.02']['steps']} "
                       f"| {de} | {dend} | {dist} |")
    return out


def medians(report: dict) -> list[str]:
    out = ["| start | median steps to 0.05 | median steps to 0.02 | mean to 0.02 |",
           "|---|---|---|---|"]
    per = report["per_structure"]
    for start in ("unrelaxed", "predicted", "pre_relaxed"):
        s05 = [p[start]["0.05"]["steps"] for p in per if p.get(start)]
        s02 = [p[start]["0.02"]["steps"] for p in per if p.get(start)]
        out.append(f"| {START_NAMES[start]} | {statistics.median(s05):g} "
                   f"| {statistics.median(s02):g} | {statistics.mean(s02):.1f} |")
    return out


def main() -> int:
    path = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent / "report.json")
    report = json.loads(path.read_text())
    print(f"{len(report['per_structure'])} structures\n")
    print("\n".join(rows(report)) + "\n")
    print("\n".join(medians(report)))
    for f in report.get("failed") or []:
        print(f"\nfailed, left out of the tables: {_label(f['id'])}: {f['failed']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
