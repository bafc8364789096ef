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


def sheet_normal(cell: np.ndarray) -> np.ndarray:
    """Unit normal ``a1 × a2`` of a 2D sheet's cell(s), ``(3,)`` or ``(n, 3)`` for ``(n, 3, 3)``."""
    cell = np.asarray(cell, dtype=float)
    n = np.cross(cell[..., 0, :], cell[..., 1, :])
    return n / np.linalg.norm(n, axis=-1, keepdims=True)
