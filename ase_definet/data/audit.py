"""Audit a split: twins that sit in different splits, and the strata's counts.

For every relation of :mod:`.twins` (exact duplicates, symmetry twins,
cross-material pattern twins, cross-material id twins) and for their union
(the classes a split must keep whole), :func:`audit_split` counts the groups,
the groups whose members sit in more than one split, and the val and test
structures that have a twin in an earlier split. A leak-free split scores zero
on every crossing count.
"""
from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from collections.abc import Mapping, Sequence

from .assign import SPLITS
from .sample import Sample
from .splits import SAME_TOLERANCE, read_split, twin_classes
from .twins import RELATIONS

#: Row names of the audit table, in order.
ROWS = (*RELATIONS, "class")
COUNTS = ("groups", "crossing", "test~train", "val~train", "test~val")


def audit_split(samples: Sequence[Sample], split: Mapping | str | os.PathLike,
                tol: float = SAME_TOLERANCE) -> dict:
    """Cross-split twins of a data set under a split.

    Parameters
    ----------
    samples : sequence of Sample
        The store; samples the split does not list are left out (and counted).
    split : mapping or path
        A split file or the dict :func:`~.splits.read_split` returns.
    tol : float
        Å within which two structures are exact duplicates.

    Returns
    -------
    dict
        ``structures``, ``unlisted``, ``relations`` (per row of :data:`ROWS`:
        ``groups``; ``crossing``, groups in more than one split; ``test~train``,
        test structures with a twin in train; ``val~train``; ``test~val``) and
        ``strata`` (per stratum, its count in each split).
    """
    doc = read_split(split) if isinstance(split, (str, os.PathLike)) else split
    where = {str(i): name for name in SPLITS for i in doc.get(name, [])}
    listed = [s for s in samples if str(s.info.get("id")) in where]
    names = [where[str(s.info.get("id"))] for s in listed]
    cls, strata, groups = twin_classes(listed, tol)
    rows = {**groups, "class": [c for c in cls if len(c) > 1]}
    table = {row: _count(rows[row], names) for row in ROWS}
    per: dict[str, Counter] = {}
    for st, name in zip(strata, names):
        per.setdefault(st, Counter())[name] += 1
    return {"structures": len(listed), "unlisted": len(samples) - len(listed),
            "relations": table,
            "strata": {st: {n: c[n] for n in SPLITS} for st, c in sorted(per.items())}}


def _count(groups: list[list[int]], names: list[str]) -> dict[str, int]:
    out = dict.fromkeys(COUNTS, 0)
    for g in groups:
        present = Counter(names[i] for i in g)
        out["groups"] += 1
        out["crossing"] += len(present) > 1
        for late, early in (("test", "train"), ("val", "train"), ("test", "val")):
            if present[early]:
                out[f"{late}~{early}"] += present[late]
    return out


def format_audit(result: dict, strata: bool = True) -> str:
    """The audit as a small text table (and the strata's counts)."""
    head = f"{'relation':<10}" + "".join(f"{c:>11}" for c in COUNTS)
    lines = [f"{result['structures']} structures in the split"
             + (f", {result['unlisted']} in the store but in no split"
                if result["unlisted"] else ""), head]
    for row in ROWS:
        r = result["relations"][row]
        lines.append(f"{row:<10}" + "".join(f"{r[c]:>11}" for c in COUNTS))
    if strata:
        lines += ["", f"{'stratum':<24}" + "".join(f"{n:>7}" for n in SPLITS)]
        for st, c in result["strata"].items():
            lines.append(f"{st:<24}" + "".join(f"{c[n]:>7}" for n in SPLITS))
    return "\n".join(lines)


def run_audit(data: str | os.PathLike, split_file: str | os.PathLike,
              json_out: str | os.PathLike | None = None) -> tuple[dict, str]:
    """Load a data set, audit it under a split file; optionally write JSON.

    Returns
    -------
    (dict, str)
        :func:`audit_split`'s result and its :func:`format_audit` text.
    """
    from .load import load_samples
    samples = list(load_samples(data, progress_note=lambda _: None))
    result = audit_split(samples, split_file)
    result = {"data": str(data), "split_file": str(split_file), **result}
    if json_out is not None:
        Path(json_out).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    return result, format_audit(result)
