"""Summaries and text tables of a residual-step report (:mod:`ase_definet.residual`).

Every start other than the unrelaxed input (the DefiNet prediction, and where the
study ran one, a pre-relaxation by another calculator) is summarised against the
run from the unrelaxed input with the same statistics, so that the table answers
which start to hand the calculator.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .textfmt import fmt_num

#: energy differences below this (meV) count as equal: float32 energies of a
#: ~200-atom cell (~1,400 eV) resolve ~0.2 meV
ENERGY_RESOLUTION_MEV = 0.5

#: an end this much (meV) above the run from the input counts as a worse minimum
HIGHER_MEV = 5.0

#: starts a record may carry beside ``"unrelaxed"``, in table order
STARTS = ("predicted", "pre_relaxed")


def fmax_key(fmax: float) -> str:
    """Report key of a threshold: 0.05 → ``"0.05"``."""
    return f"{fmax:g}"


def summarize_threshold(records: Sequence[dict], fmax: float,
                        start: str = "predicted") -> dict:
    """Median steps, reductions and energy differences at one threshold.

    ``start`` names the start compared with the unrelaxed input; the keys say
    ``predicted`` for any start, so that every summary reads alike.
    """
    key = fmax_key(fmax)
    a = [r["unrelaxed"][key] for r in records]
    b = [r[start][key] for r in records]
    s_a = np.array([x["steps"] for x in a], float)
    s_b = np.array([x["steps"] for x in b], float)
    both = np.array([x["converged"] and y["converged"] for x, y in zip(a, b)], bool)
    signed = 1e3 * np.array([y["energy"] - x["energy"] for x, y in zip(a, b)], float)
    de = np.abs(signed)
    med_a, med_b = _median(s_a), _median(s_b)
    per = np.divide(s_b, s_a, out=np.full(len(s_a), np.nan), where=s_a > 0)
    out = {
        "median_steps_unrelaxed": med_a,
        "median_steps_predicted": med_b,
        "mean_steps_unrelaxed": _mean(s_a),
        "mean_steps_predicted": _mean(s_b),
        "reduction_pct": (100.0 * (1.0 - med_b / med_a)
                          if np.isfinite(med_a) and med_a > 0 else float("nan")),
        "median_reduction_pct": _median(100.0 * (1.0 - per[np.isfinite(per)])),
        "converged_unrelaxed": int(sum(x["converged"] for x in a)),
        "converged_predicted": int(sum(y["converged"] for y in b)),
        "converged_both": int(both.sum()),
        "dE_meV_max": float(de[both].max()) if both.any() else float("nan"),
        "dE_meV_median": _median(de[both]),
        # which start ends lower: at a loose fmax the run from the unrelaxed input
        # often stops farther above the minimum than the one from the prediction
        "predicted_lower": int((signed[both] < -ENERGY_RESOLUTION_MEV).sum()),
        "predicted_higher": int((signed[both] > ENERGY_RESOLUTION_MEV).sum()),
        # the issues' criterion: an end more than 5 meV above the input's
        "predicted_higher_5meV": int((signed[both] > HIGHER_MEV).sum()),
    }
    # where the two end points lie apart (Å, largest atom), when the study recorded it
    dist = [r.get("end_distance", {}).get(key, {}).get(start) for r in records]
    if any(d is not None for d in dist):
        d = np.array([np.nan if x is None else x for x in dist], float)
        out["end_distance_A_median"] = _median(d[both & np.isfinite(d)])
        out["end_distance_A_max"] = (float(np.nanmax(d[both])) if (both & np.isfinite(d)).any()
                                     else float("nan"))
    return out


def start_energy_gap(records: Sequence[dict], start: str = "predicted") -> dict:
    """Energy of a start minus that of the unrelaxed input (meV), before any step.

    Positive means the start is higher in energy than doing nothing. Only records
    that carry ``energy_start`` (studies run since it was recorded) count.
    """
    gaps = [1e3 * (r[start]["energy_start"] - r["unrelaxed"]["energy_start"])
            for r in records
            if "energy_start" in r.get(start, {}) and "energy_start" in r["unrelaxed"]]
    g = np.array(gaps, float)
    return {"n": len(g), "median_meV": _median(g), "max_meV": _max(g),
            "higher": int((g > ENERGY_RESOLUTION_MEV).sum())}


def with_lower_start(records: Sequence[dict]) -> list[dict] | None:
    """Records with a ``"lower"`` start: the run from whichever of the prediction and
    the unrelaxed input has the lower energy before the first step — what
    ``DefiNetRelaxer(start="lower")`` does, at one extra calculator call per
    structure (the energy at the input). None when a record lacks the energies."""
    out = []
    for r in records:
        p, u = r.get("predicted", {}), r.get("unrelaxed", {})
        if "energy_start" not in p or "energy_start" not in u:
            return None
        chosen = "predicted" if p["energy_start"] <= u["energy_start"] else "unrelaxed"
        dist = {k: dict(v, lower=v.get("predicted") if chosen == "predicted" else 0.0)
                for k, v in r.get("end_distance", {}).items()}
        out.append(dict(r, lower=r[chosen], lower_from=chosen, end_distance=dist))
    return out


def summarize(records: Sequence[dict], fmax: Sequence[float]) -> dict:
    """Per start (:data:`STARTS` present in the records, and the energy-guarded
    ``"lower"`` start where energies before the first step were recorded):
    ``{start: {fmax: summary}}``; ``"lower"`` also counts how often it took the
    unrelaxed input (``"from_unrelaxed"``) and its extra calculator calls."""
    starts = [s for s in STARTS if records and all(s in r for r in records)]
    out = {s: {fmax_key(f): summarize_threshold(records, f, s) for f in fmax}
           for s in starts}
    lower = with_lower_start(records) if records else None
    if lower is not None:
        n_u = sum(r["lower_from"] == "unrelaxed" for r in lower)
        out["lower"] = {fmax_key(f): dict(summarize_threshold(lower, f, "lower"),
                                          from_unrelaxed=n_u, extra_calls=len(lower))
                        for f in fmax}
    return out


def summarize_by_density(records: Sequence[dict], fmax: Sequence[float]) -> dict:
    """:func:`summarize_threshold` per density: ``{density: {"n": .., "summary": {fmax: ..}}}``.

    Low- and high-density structures behave differently: many defects make a
    rugged energy landscape where two starting points can reach different minima.
    """
    from .data.sample import density_of
    out: dict[str, dict] = {}
    for density in sorted({density_of(r["group"]) for r in records}):
        rs = [r for r in records if density_of(r["group"]) == density]
        out[density] = {"n": len(rs),
                        "summary": {fmax_key(f): summarize_threshold(rs, f) for f in fmax}}
    return out


def _median(x: np.ndarray) -> float:
    return float(np.median(x)) if len(x) else float("nan")


def _mean(x: np.ndarray) -> float:
    return float(np.mean(x)) if len(x) else float("nan")


def _max(x: np.ndarray) -> float:
    return float(np.max(x)) if len(x) else float("nan")


def lower_higher(summary: dict) -> str | None:
    """``k/m``: structures whose run from the prediction ended lower / higher in energy
    than the run from the unrelaxed input; None for reports older than these counts."""
    if "predicted_lower" not in summary:
        return None
    return f"{summary['predicted_lower']}/{summary['predicted_higher']}"


def format_residual(report: dict) -> str:
    """A readable text table of a residual-step report (missing values: n/a)."""
    lines = [f"residual steps: {report['optimizer']} with {report['calculator']}, "
             f"cap {report['max_steps']} steps, n = {report['n']}",
             f"{'fmax':>7} {'med. unrel.':>12} {'med. pred.':>11} {'reduction':>10} "
             f"{'med. per-str.':>14} {'conv. u/p':>10} {'|dE| max':>10} {'|dE| med.':>10} "
             f"{'pred. end':>10}",
             f"{'eV/Å':>7} {'steps':>12} {'steps':>11} {'%':>10} {'%':>14} "
             f"{'':>10} {'meV':>10} {'meV':>10} {'lower/higher':>10}"]

    def rows(summary: dict) -> list[str]:
        out = []
        for key, s in summary.items():
            conv = f"{s['converged_unrelaxed']}/{s['converged_predicted']}"
            out.append(
                f"{key:>7} {fmt_num(s['median_steps_unrelaxed'], '.1f'):>12} "
                f"{fmt_num(s['median_steps_predicted'], '.1f'):>11} "
                f"{fmt_num(s['reduction_pct'], '.1f'):>10} "
                f"{fmt_num(s['median_reduction_pct'], '.1f'):>14} {conv:>10} "
                f"{fmt_num(s['dE_meV_max'], '.2f'):>10} {fmt_num(s['dE_meV_median'], '.2f'):>10} "
                f"{lower_higher(s) or 'n/a':>10}")
        return out

    lines += rows(report["summary"])
    lower = (report.get("summary_by_start") or {}).get("lower")
    if lower:
        first = next(iter(lower.values()))
        lines.append(f"from the lower in energy of prediction and input (start=\"lower\"; "
                     f"took the input {first['from_unrelaxed']} of {report['n']} times, "
                     f"{first['extra_calls']} extra calculator calls):")
        lines += rows(lower)
    pre = (report.get("summary_by_start") or {}).get("pre_relaxed")
    if pre:
        p = report.get("pre_relax", {})
        lines.append(f"from a pre-relaxation ({p.get('calculator')} + {p.get('optimizer')} "
                     f"to fmax {p.get('fmax')}) instead of DefiNet:")
        lines += rows(pre)
    # a mixed sample's medians hide how differently the densities behave
    by_density = report.get("by_density") or {}
    if len(by_density) > 1:
        for density, block in by_density.items():
            lines.append(f"{density} density (n = {block['n']})")
            lines += rows(block["summary"])
    for r in report.get("failed") or []:
        lines.append(f"failed, left out of every statistic: {r['id']} (start "
                     f"{r.get('failed_start')}): {r['failed']}")
    return "\n".join(lines)


def residual_lines(card: dict) -> list[str]:
    """The model card's residual-step section (markdown lines)."""
    res = card.get("residual_steps")
    if not res:
        return ["Residual-step study: not run."]
    lines = [f"Residual steps with {card.get('residual_calculator', 'chgnet')} + BFGS on "
             f"{card.get('residual_steps_n', '?')} test structures"
             + (f" of `{card['residual_steps_split']}`" if card.get("residual_steps_split")
                else "")
             + (" (" + ", ".join(f"{g} {n}" for g, n in card["residual_steps_groups"].items())
                + ")" if card.get("residual_steps_groups") else "")
             + " (median; from the unrelaxed input vs from the DefiNet prediction):", "",
             "| fmax (eV/Å) | from unrelaxed | from DefiNet | reduction | "
             "median per-structure reduction | max abs(ΔE) (meV) | DefiNet's end lower / "
             "higher | ends > 5 meV higher |",
             "|---|---|---|---|---|---|---|---|"]
    for fmax, r in res.items():
        lines.append(
            f"| {fmax} | {r.get('median_steps_unrelaxed')} | {r.get('median_steps_predicted')} "
            f"| {fmt_num(r.get('reduction_pct'))} % | {fmt_num(r.get('median_reduction_pct'))} % "
            f"| {fmt_num(r.get('dE_meV_max'))} | {lower_higher(r) or 'n/a'} | "
            f"{r.get('predicted_higher_5meV', 'n/a')} |")
    lower = card.get("residual_steps_lower_start")
    if lower:
        first = next(iter(lower.values()))
        lines += ["", f"With `start=\"lower\"` (the residual steps start from the lower in "
                  f"energy of the prediction and the input: {first['extra_calls']} extra "
                  f"calculator calls, the input taken {first['from_unrelaxed']} times):", "",
                  *lines[2:4]]
        lines += [f"| {fmax} | {r.get('median_steps_unrelaxed')} | "
                  f"{r.get('median_steps_predicted')} | {fmt_num(r.get('reduction_pct'))} % | "
                  f"{fmt_num(r.get('median_reduction_pct'))} % | {fmt_num(r.get('dE_meV_max'))} "
                  f"| {lower_higher(r) or 'n/a'} | {r.get('predicted_higher_5meV', 'n/a')} |"
                  for fmax, r in lower.items()]
    return lines
