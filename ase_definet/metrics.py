"""Coordinate errors of predicted relaxed structures (pure numpy).

Definitions (NOTES.md §3, paper "Metrics"):

* **MAE** of one structure: mean absolute error over x, y and z of all real
  atoms. Vacancy placeholders never count.
* **A_x** (x = 3, 4, 5, 6 Å): the same mean over the real atoms within x Å of
  any defect site (the ideal host position of a substitution or a vacancy).

Two choices differ from the reference code, on purpose:

* Distances to defect sites are taken under periodic boundary conditions
  (nearest periodic image along the periodic axes). The reference ignored
  images, so a defect near a cell face lost its neighbours across the face.
* Predicted and true positions are compared through the minimum image of
  ``pred - true``: an atom wrapped to the other side of the cell is not a
  cell-length error.

Distances are measured from the *unrelaxed* positions of the atoms, so the
atoms counted in A_x do not depend on the prediction and are the same for the
model and for the Dummy baseline.

When no real atom lies within x Å of a defect site (possible only for small
x and no substitution, e.g. an isolated vacancy in a sparse host), A_x of that
structure is ``NaN`` and :func:`average_metrics` skips it.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from ase import Atoms

from .data.sample import minimum_image

#: Radii (Å) of the localised metrics A_3 … A_6.
RADII: tuple[float, ...] = (3.0, 4.0, 5.0, 6.0)


def radius_key(radius: float) -> str:
    """Metric name of a radius: 3 → ``"a3"``, 3.5 → ``"a3.5"``."""
    return f"a{radius:g}"


def metric_keys(radii: Sequence[float] = RADII) -> list[str]:
    """``["mae", "a3", "a4", "a5", "a6"]`` for the default radii."""
    return ["mae"] + [radius_key(r) for r in radii]


def absolute_errors(pred: np.ndarray, true: np.ndarray, cell: np.ndarray | None = None,
                    pbc=False) -> np.ndarray:
    """Per-component absolute errors ``|pred - true|``, shape ``(n, 3)``.

    With a ``cell``, the difference is reduced to its minimum image along the
    periodic axes first, so wrapping never shows up as an error.
    """
    delta = np.asarray(pred, float) - np.asarray(true, float)
    if cell is not None and np.any(pbc):
        delta = minimum_image(delta, np.asarray(cell, float), _pbc3(pbc))
    return np.abs(delta)


def mae(pred: np.ndarray, true: np.ndarray, cell: np.ndarray | None = None,
        pbc=False, mask: np.ndarray | None = None) -> float:
    """Coordinate MAE (mean over atoms and x, y, z) in Å.

    Parameters
    ----------
    pred, true : numpy.ndarray
        Positions, ``(n, 3)``.
    cell, pbc : optional
        Compare through the minimum image of ``pred - true``.
    mask : numpy.ndarray of bool, optional
        Atoms to include (e.g. real atoms only); ``NaN`` when it selects none.
    """
    err = absolute_errors(pred, true, cell, pbc)
    if mask is not None:
        err = err[np.asarray(mask, bool)]
    return float(err.mean()) if err.size else float("nan")


def _pbc3(pbc) -> np.ndarray:
    """Periodicity as three booleans (accepts a scalar or a triple)."""
    return np.broadcast_to(np.asarray(pbc, bool), 3).copy()


def _image_shifts(pbc) -> np.ndarray:
    """Integer lattice shifts -1, 0, 1 along the periodic axes, ``(3^d, 3)``."""
    axes = [(-1, 0, 1) if p else (0,) for p in _pbc3(pbc)]
    grid = np.meshgrid(*axes, indexing="ij")
    return np.stack([g.ravel() for g in grid], axis=1).astype(float)


def defect_distances(positions: np.ndarray, defect_positions: np.ndarray,
                     cell: np.ndarray, pbc) -> np.ndarray:
    """Distance in Å from every position to the nearest periodic image of any
    defect site; ``inf`` for every atom when there are no defect sites.

    The minimum image by rounding fractional coordinates is exact only for
    distances below half the smallest cell height; checking the neighbouring
    images as well makes it exact for the small cells used in tests too.
    """
    pos = np.asarray(positions, float).reshape(-1, 3)
    sites = np.asarray(defect_positions, float).reshape(-1, 3)
    if len(sites) == 0:
        return np.full(len(pos), np.inf)
    cell = np.asarray(cell, float)
    delta = (pos[:, None, :] - sites[None, :, :]).reshape(-1, 3)
    if np.any(pbc):
        delta = minimum_image(delta, cell, _pbc3(pbc))
    images = delta[:, None, :] + (_image_shifts(pbc) @ cell)[None, :, :]
    dist = np.linalg.norm(images, axis=-1).min(axis=1)
    return dist.reshape(len(pos), len(sites)).min(axis=1)


def structure_metrics(pred: np.ndarray, true: np.ndarray, atoms: Atoms,
                      defect_positions: np.ndarray,
                      radii: Sequence[float] = RADII) -> dict[str, float]:
    """MAE and A_x of one structure.

    Parameters
    ----------
    pred, true : numpy.ndarray
        Predicted and reference relaxed positions. Either one row per real
        atom of ``atoms`` or one row per graph node; extra rows are vacancy
        placeholders (they come after the real atoms) and are ignored.
    atoms : ase.Atoms
        The unrelaxed structure: cell, periodicity, and the positions from
        which distances to the defect sites are measured.
    defect_positions : numpy.ndarray
        Ideal positions of all substitution and vacancy sites, ``(k, 3)``
        (``HostMatch.defect_positions``).
    radii : sequence of float
        Radii x of the A_x metrics in Å.

    Returns
    -------
    dict
        ``mae`` and ``a3``, ``a4``, ``a5``, ``a6`` (for the default radii) in
        Å; an A_x is ``NaN`` when no real atom lies within x Å of a defect site.
    """
    n = len(atoms)
    pred = np.asarray(pred, float)[:n]
    true = np.asarray(true, float)[:n]
    if pred.shape != (n, 3) or true.shape != (n, 3):
        raise ValueError(f"need at least {n} positions for {n} atoms, got "
                         f"{pred.shape} and {true.shape}")
    cell, pbc = atoms.cell.array, atoms.pbc
    per_atom = absolute_errors(pred, true, cell, pbc).mean(axis=1)
    dist = defect_distances(atoms.get_positions(), defect_positions, cell, pbc)
    out = {"mae": float(per_atom.mean()) if n else float("nan")}
    for r in radii:
        near = dist <= r
        out[radius_key(r)] = float(per_atom[near].mean()) if near.any() else float("nan")
    return out


def average_metrics(rows: Iterable[Mapping[str, float]],
                    keys: Sequence[str] | None = None) -> dict[str, float]:
    """Per-structure average of each metric, skipping ``NaN`` entries.

    A metric that is ``NaN`` for every structure stays ``NaN``.
    """
    rows = list(rows)
    if keys is None:
        keys = list(rows[0]) if rows else metric_keys()
    table = np.array([[r.get(k, np.nan) for k in keys] for r in rows], float)
    table = table.reshape(len(rows), len(keys))
    counts = np.isfinite(table).sum(axis=0)
    sums = np.where(np.isfinite(table), table, 0.0).sum(axis=0)
    means = np.divide(sums, counts, out=np.full(len(keys), np.nan), where=counts > 0)
    return {k: float(v) for k, v in zip(keys, means)}


def improvement(model: Mapping[str, float], dummy: Mapping[str, float]) -> dict[str, float]:
    """Improvement over the Dummy in %: ``100 (dummy - model) / dummy``.

    ``NaN`` where the Dummy error is zero or undefined.
    """
    out = {}
    for k, m in model.items():
        d = dummy.get(k, np.nan)
        ok = np.isfinite(d) and np.isfinite(m) and d != 0
        out[k] = float(100.0 * (d - m) / d) if ok else float("nan")
    return out
