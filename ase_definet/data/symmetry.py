"""Site permutations of a host supercell under its space group; canonical keys.

A defect configuration is a set of (host site, defect) pairs. Two
configurations related by an operation of the pristine supercell's space group
(a lattice translation, a rotation, a mirror, a glide) are the same sample to
an E(3)-equivariant model. :func:`site_permutations` turns the operations that
spglib finds into a table ``P[g, s]`` (the site that site ``s`` moves to under
operation ``g``), and :func:`canonical_key` maps every image of a
configuration under that table to one key.
"""
from __future__ import annotations

import numpy as np
from ase import Atoms
from scipy.spatial import cKDTree

#: spglib's tolerance in Å. The oracle-relaxed pristine hosts of the shipped
#: store keep their space group at 1e-5 Å already; 1e-3 Å leaves room.
SYMPREC = 1e-3


def site_permutations(host: Atoms, symprec: float = SYMPREC) -> np.ndarray:
    """``P[g, s]``: the site that host site ``s`` moves to under operation ``g``.

    Parameters
    ----------
    host : ase.Atoms
        A pristine supercell (any origin). On an axis without periodicity
        (the vacuum of a 2D layer) only operations that keep that axis apart
        from the periodic ones are used, so the layer maps onto itself.
    symprec : float
        spglib tolerance in Å.

    Returns
    -------
    numpy.ndarray of int, ``(n_operations, len(host))``
        Row 0 is the identity; rows are distinct permutations that keep
        every site's element.

    Raises
    ------
    ValueError
        If an operation spglib reports does not map the sites onto themselves.
    """
    frac = host.get_scaled_positions(wrap=True)
    # Keyed on positions relative to site 0: hosts that differ by a rigid shift
    # (each sample's match registers its own) share one table.
    rel = (frac - frac[0]) % 1.0
    key = (np.round(np.where(rel > 1 - 5e-5, 0.0, rel), 4).tobytes(), host.numbers.tobytes(),
           np.round(host.cell.array, 4).tobytes(), tuple(bool(p) for p in host.pbc),
           float(symprec))
    if key not in _CACHE:
        if len(_CACHE) >= 64:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = _compute(host.cell.array, frac, host.numbers,
                               np.asarray(host.pbc, bool), symprec)
    return _CACHE[key].copy()


# One table per host geometry: every sample of a store shares its host.
_CACHE: dict[tuple, np.ndarray] = {}


def _compute(cell: np.ndarray, frac: np.ndarray, numbers: np.ndarray,
             pbc: np.ndarray, symprec: float) -> np.ndarray:
    import warnings

    import spglib
    with warnings.catch_warnings():
        # spglib 2.5+ announces a change of its error handling on every call;
        # both ways (None or SpglibError) are handled here.
        warnings.filterwarnings("ignore", message=".*OLD_ERROR_HANDLING.*")
        try:
            ops = spglib.get_symmetry((cell, frac, numbers), symprec=symprec)
        except getattr(getattr(spglib, "error", None), "SpglibError", RuntimeError) as err:
            raise ValueError(f"spglib found no symmetry ({err})") from err
    if ops is None:
        raise ValueError("spglib found no symmetry of the host")
    rots, trans = ops["rotations"], ops["translations"]
    flat = ~pbc
    if flat.any():
        # An operation that mixes a vacuum axis with a periodic one would map
        # the layer onto a periodic image of itself across the vacuum.
        mixes = (np.abs(rots[:, flat][:, :, ~flat]).sum(axis=(1, 2))
                 + np.abs(rots[:, ~flat][:, :, flat]).sum(axis=(1, 2)))
        rots, trans = rots[mixes == 0], trans[mixes == 0]
    moved = np.einsum("gij,sj->gsi", rots, frac) + trans[:, None, :]
    # Nearest site in fractional space on a unit torus: every axis is wrapped,
    # which is harmless along a vacuum axis (the layer sits inside the cell).
    tree = cKDTree(frac % 1.0, boxsize=1.0 + 1e-12)
    _, idx = tree.query(moved.reshape(-1, 3) % 1.0)
    idx = idx.reshape(len(rots), len(frac))
    d_cart = _cartesian_error(cell, moved, frac[idx])
    tol = max(10 * symprec, 1e-4)
    bad = ((d_cart > tol).any(axis=1) | (numbers[idx] != numbers[None, :]).any(axis=1)
           | (np.sort(idx, axis=1) != np.arange(len(frac))).any(axis=1))
    if bad.any():
        raise ValueError(f"{int(bad.sum())} of {len(rots)} space-group operations do "
                         f"not map the host sites onto themselves within {tol} Å")
    table = np.unique(idx, axis=0)
    ident = np.arange(len(frac))
    rest = table[(table != ident).any(axis=1)]
    return np.vstack([ident[None, :], rest]).astype(np.int64)


def _cartesian_error(cell: np.ndarray, moved: np.ndarray, target: np.ndarray
                     ) -> np.ndarray:
    """Å between each image and the site it was mapped to (minimum image)."""
    delta = moved - target
    delta -= np.rint(delta)
    return np.linalg.norm(delta @ cell, axis=-1)


def canonical_key(table: np.ndarray, sites, labels) -> tuple:
    """A key shared by every image of a configuration under ``table``.

    Parameters
    ----------
    table : numpy.ndarray of int, ``(n_operations, n_sites)``
        From :func:`site_permutations` (or any set of site permutations, e.g.
        the lattice translations of
        :func:`~ase_definet.data.defects.translation_table`).
    sites : sequence of int
        Host sites that carry a defect.
    labels : sequence of hashable
        What sits on each site (a defect tuple, a marker code, ...).

    Returns
    -------
    tuple
        ``(label vocabulary, lexicographically smallest sorted image)``.
    """
    vocab = sorted(set(labels), key=str)
    codes = {lab: k for k, lab in enumerate(vocab)}
    lab = np.array([codes[x] for x in labels], dtype=np.int64)
    sites = np.asarray(sites, dtype=np.int64)
    if sites.size == 0:
        return tuple(vocab), ()
    images = np.sort(table[:, sites] * len(vocab) + lab[None, :], axis=1)
    best = images[np.lexsort(images.T[::-1])[0]]
    return tuple(vocab), tuple(int(v) for v in best)
