"""Where a model fails: an evaluation report broken down by concentration.

A group's mean hides its mix: the improvement over the Dummy falls steeply with
the defect concentration, so a test split that holds more dilute structures
scores better without a better model. This module splits every
``material/density`` group of an evaluation report into strata:

* high density: the defect concentration (2.5, 5, 7.5, 10, 12.5 % of the
  sites in 2DMD), labelled ``"2.5 %"`` …: ``info["fraction"]`` where the data
  recorded it, else defect sites per host site (the record's ``fraction``);
* low density: the number of defect sites (1–3 in 2DMD), labelled
  ``"1 defect"``, ``"2 defects"`` …: its concentrations are all below 1.6 %;
* a record without a fraction (a report older than the strata): one stratum,
  ``"all"``.

Per group it gives the **concentration-balanced mean**: the mean over the
group's strata of each stratum's improvement over the Dummy (every stratum
counts once, however many structures it holds), and it counts the structures
whose model MAE exceeds the Dummy's (``worse_than_dummy``).

Low density is one concentration class: its rows by number of defects are
detail, and its balanced mean is the group's plain mean (``"over": "group"``).
Balancing over them would give the rare single-defect structures (one or two
per test split; nearly all single defects are symmetry twins of each other)
the weight of all the others, and their Dummy MAE (~0.0003 Å) lies far below
the labels' own uncertainty (:mod:`ase_definet.label_drift`).

Report keys (added to the report by :func:`ase_definet.evaluate.evaluate_predictions`)::

    "strata": {"MoS2/high": {"by": "concentration",
                             "rows": {"2.5 %": {summary}, ...},
                             "balanced": {"improvement": {...}, "model": {...},
                                          "dummy": {...}, "n_strata": 5,
                                          "over": "strata"}}, ...}

where a ``summary`` is :func:`ase_definet.evaluate.summarize`'s block.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from .data.sample import density_of
from .textfmt import fmt_num, fmt_share


def stratum_of(record: dict) -> tuple[str, str, float]:
    """``(by, label, sort key)`` of one per-structure record of a report."""
    if record.get("density") == "low" or density_of(record.get("group", "")) == "low":
        k = int(record.get("n_defects", 0))
        return "defects", f"{k} defect" + ("" if k == 1 else "s"), float(k)
    fraction = record.get("fraction")
    if fraction is None:
        return "none", "all", 0.0
    pct = round(100.0 * float(fraction), 2)
    return "concentration", f"{pct:g} %", pct


def worse_than_dummy(records: Sequence[dict]) -> dict:
    """How many structures the model predicts worse than the Dummy (MAE of all atoms).

    A structure whose model or Dummy MAE is undefined is not counted as worse.
    """
    worse = sum(1 for r in records
                if _finite(r["model"].get("mae")) and _finite(r["dummy"].get("mae"))
                and r["model"]["mae"] > r["dummy"]["mae"])
    n = len(records)
    return {"n": int(worse), "share": worse / n if n else float("nan")}


def _finite(x) -> bool:
    return x is not None and bool(np.isfinite(x))


def strata(records: Sequence[dict], summarize: Callable[[Sequence[dict]], dict]) -> dict:
    """Per group: a summary per stratum and the concentration-balanced means.

    Parameters
    ----------
    records : sequence of dict
        ``per_structure`` records of an evaluation report.
    summarize : callable
        Turns a list of records into a summary block (``model``, ``dummy``,
        ``improvement``, ``n``, ``worse_than_dummy``).
    """
    by_group: dict[str, dict[str, list[dict]]] = {}
    keys: dict[str, float] = {}
    kinds: dict[str, set[str]] = {}
    for r in records:
        by, label, key = stratum_of(r)
        by_group.setdefault(r["group"], {}).setdefault(label, []).append(r)
        keys[label] = key
        kinds.setdefault(r["group"], set()).add(by)
    out = {}
    for group in sorted(by_group):
        rows = {label: summarize(rs)
                for label, rs in sorted(by_group[group].items(), key=lambda kv: keys[kv[0]])}
        kind = sorted(kinds[group])
        by = kind[0] if len(kind) == 1 else "mixed"
        if by == "defects":         # one concentration class: the group mean
            pooled = summarize([r for rs in by_group[group].values() for r in rs])
            mean = {"n_strata": len(rows), "over": "group",
                    **{part: pooled[part] for part in ("improvement", "model", "dummy")}}
        else:
            mean = dict(balanced(rows.values()), over="strata")
        out[group] = {"by": by, "rows": rows, "balanced": mean}
    return out


def balanced(rows) -> dict:
    """Mean over strata of each stratum's improvement (and model and Dummy errors).

    Stratum means that are undefined (``NaN``) are left out of the mean.
    """
    rows = list(rows)
    out: dict = {"n_strata": len(rows)}
    for part in ("improvement", "model", "dummy"):
        keys = list(rows[0][part]) if rows else []
        out[part] = {k: _nanmean([r[part].get(k) for r in rows]) for k in keys}
    return out


def _nanmean(values) -> float:
    nums = [float(v) for v in values if _finite(v)]
    return float(np.mean(nums)) if nums else float("nan")


# ---------------------------------------------------------------- tables
_HEAD = ["group", "stratum", "n", "MAE model", "MAE Dummy", "MAE impr. %",
         "A3 model", "A3 Dummy", "A3 impr. %", "worse than Dummy"]


def _cells(name: str, label: str, block: dict) -> list[str]:
    m, d, imp = block["model"], block["dummy"], block["improvement"]
    worse = block.get("worse_than_dummy")
    return [name, label, str(block.get("n", "")),
            fmt_num(m.get("mae"), ".4f"), fmt_num(d.get("mae"), ".4f"),
            fmt_num(imp.get("mae"), "+.1f"),
            fmt_num(m.get("a3"), ".4f"), fmt_num(d.get("a3"), ".4f"),
            fmt_num(imp.get("a3"), "+.1f"),
            fmt_share(worse["n"], block["n"]) if worse else "n/a"]


def balanced_improvements(report: dict, metric: str = "mae") -> dict[str, float]:
    """Group → its concentration-balanced improvement over the Dummy (%) in
    ``metric``, from an evaluation report; groups without a value are left out."""
    out = {}
    for group, block in (report.get("strata") or {}).items():
        value = block["balanced"]["improvement"].get(metric)
        if value is not None:
            out[group] = float(value)
    return out


def strata_rows(report: dict) -> list[list[str]]:
    """Table rows: every stratum of every group, then the group's balanced mean."""
    rows = []
    for group, block in (report.get("strata") or {}).items():
        for label, summary in block["rows"].items():
            rows.append(_cells(group, label, summary))
        bal = block["balanced"]
        imp = bal["improvement"]
        label = ("balanced = group mean" if bal.get("over") == "group"
                 else f"balanced ({bal['n_strata']} strata)")
        rows.append([group, label, "", "", "",
                     fmt_num(imp.get("mae"), "+.1f"), "", "", fmt_num(imp.get("a3"), "+.1f"),
                     ""])
    return rows


def worse_lines(report: dict) -> list[str]:
    """``worse than the Dummy: k of n (x %)`` overall and per group."""
    out = []
    for name, block in [("overall", report["overall"]), *report.get("groups", {}).items()]:
        w = block.get("worse_than_dummy")
        if w is not None:
            out.append(f"{name}: {fmt_share(w['n'], block['n'])}")
    return out


def strata_text(report: dict) -> str:
    """Plain-text table of :func:`strata_rows` (errors in Å, improvements in %)."""
    rows = [_HEAD] + strata_rows(report)
    width = [max(len(r[c]) for r in rows) for c in range(len(_HEAD))]
    lines = ["per concentration (low density: per number of defects); balanced = mean "
             "over strata of the stratum improvements (low density: the group mean)"]
    lines += ["  ".join(c.rjust(w) if k >= 2 else c.ljust(w)
                        for k, (c, w) in enumerate(zip(r, width))) for r in rows]
    lines.append("structures whose model MAE exceeds the Dummy's: "
                 + "; ".join(worse_lines(report)))
    return "\n".join(lines)


def strata_markdown(report: dict) -> str:
    """Markdown table of :func:`strata_rows`."""
    lines = ["| " + " | ".join(_HEAD) + " |", "|" + "---|" * len(_HEAD)]
    lines += ["| " + " | ".join(r) + " |" for r in strata_rows(report)]
    return "\n".join(lines)
