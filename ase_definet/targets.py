"""The shipped model's targets (issue #5) and the card's verdicts against them."""
from __future__ import annotations

from .data.sample import density_of
from .textfmt import fmt_num

#: Targets of the shipped 2DMD weights (issue #5): minimum improvement over the
#: Dummy in % (MAE of all atoms and A3) per density, for the never-trained 12×12
#: set, and for the residual steps (median, fewer steps) with the largest
#: allowed energy difference between the two end points.
TARGETS = {"low": 85.0, "high": 70.0, "holdout": 80.0, "residual": 85.0, "dE_meV": 5.0}


def meets_target(improvement: dict, target: float) -> bool:
    """Both the MAE and the A3 improvement (%) reach ``target``; a missing or NaN
    value misses it."""
    return all(v is not None and v == v and v >= target
               for v in (improvement.get("mae"), improvement.get("a3")))


def group_order(group: str) -> tuple[bool, str]:
    """Sort key of ``material/density`` groups: low density first, then by name."""
    return density_of(group) != "low", group


def _verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


def targets_markdown(card: dict) -> str:
    """Measured improvements against :data:`TARGETS`, one row per test group."""
    lines = ["| set | n | MAE improvement | A3 improvement | target | verdict |",
             "|---|---|---|---|---|---|"]

    def row(name: str, block: dict, target: float) -> None:
        imp = block["improvement"]
        mae, a3 = imp.get("mae"), imp.get("a3")
        ok = meets_target(imp, target)
        lines.append(f"| {name} | {block.get('n', '')} | {fmt_num(mae)} % | {fmt_num(a3)} % "
                     f"| ≥ {target:.0f} % | {_verdict(ok)} |")

    for g, block in sorted(card["test"]["groups"].items(), key=lambda kv: group_order(kv[0])):
        density = density_of(g)
        if density in TARGETS:
            row(g, block, TARGETS[density])
    if "scalability_holdout" in card:
        row("MoS2 12×12, never trained on", card["scalability_holdout"]["overall"],
            TARGETS["holdout"])
    sets = [("", card.get("residual_steps") or {}, card.get("residual_steps_n", ""))]
    sets += [(f", {d} density", r["summary"], r["n"])
             for d, r in (card.get("residual_steps_by_density") or {}).items()]
    for label, summary, n in sets:
        for fmax, r in summary.items():
            red, de = r.get("reduction_pct"), r.get("dE_meV_max")
            ok = (red is not None and red >= TARGETS["residual"] and de is not None
                  and de <= TARGETS["dE_meV"])
            lines.append(f"| residual steps to fmax {fmax} eV/Å{label} | {n} | "
                         f"{fmt_num(red)} % fewer (medians; per structure "
                         f"{fmt_num(r.get('median_reduction_pct'))} %) | "
                         f"max abs(ΔE) {fmt_num(de)} meV "
                         f"(median {fmt_num(r.get('dE_meV_median'))}) | "
                         f"≥ {TARGETS['residual']:.0f} %, ≤ {TARGETS['dE_meV']:.0f} meV | "
                         f"{_verdict(ok)} |")
    return "\n".join(lines)
