"""Number formatting shared by the text and markdown tables of reports and cards.

A module of its own so that the card, the residual study and the evaluation
reports can all use it without importing one another.
"""
from __future__ import annotations


def fmt_num(value, spec: str = ".1f") -> str:
    """A number for a table; JSON null (NaN in the report) prints as n/a."""
    return "n/a" if value is None or value != value else format(value, spec)


def fmt_share(k: int, n: int) -> str:
    """``k of n (x %)``: a count and its share, ``n/a`` for the share of nothing."""
    return f"{k} of {n} ({fmt_num(100.0 * k / n if n else None)} %)"
