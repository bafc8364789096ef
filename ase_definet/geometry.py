"""Periodic geometry helpers shared by matching, data and metrics."""
from __future__ import annotations

import numpy as np


def minimum_image(delta: np.ndarray, cell: np.ndarray, pbc) -> np.ndarray:
    """Shortest periodic image of each displacement vector (rows of ``delta``).

    Rounds fractional components along periodic axes; exact for displacements
    shorter than half the cell's heights (enough for unwrapping and matching).
    """
    pbc = np.asarray(pbc, dtype=bool)
    frac = np.asarray(delta, dtype=float) @ np.linalg.inv(cell)
    frac[:, pbc] -= np.rint(frac[:, pbc])
    return frac @ cell
