"""Defect labels and counts of a :class:`~ase_definet.match.HostMatch`.

Shared by prediction (model-card checks, per-structure records) and by the
model card's coverage, so neither imports the other.
"""
from __future__ import annotations

from .match import PRISTINE, SUBSTITUTION, HostMatch


def defect_labels(match: HostMatch) -> set[str]:
    """Defect types present, as ``V_X`` (vacancy of X) and ``Y_X`` (Y on an X site)."""
    labels = {f"V_{s}" for s, _ in match.vacancies}
    labels |= {f"{new}_{old}" for _, old, new in match.substitutions}
    return labels


def marker_counts(match: HostMatch) -> dict[str, int]:
    """Numbers of pristine atoms, substitutions and vacancies."""
    m = match.markers
    return {"pristine": int((m == PRISTINE).sum()),
            "substitutions": int((m == SUBSTITUTION).sum()),
            "vacancies": int(len(match.vacancies))}
