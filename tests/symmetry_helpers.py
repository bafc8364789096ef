"""Host symmetry operations applied to structures, independently of the site tables."""
from __future__ import annotations

import warnings

import numpy as np
import spglib
from ase import Atoms

from ase_definet.data.defects import apply_defects
from ase_definet.data.sample import Sample


def host_operations(host: Atoms) -> list[tuple[np.ndarray, np.ndarray]]:
    """(rotation, translation) in fractional coordinates, from spglib directly."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*OLD_ERROR_HANDLING.*")
        ops = spglib.get_symmetry((host.cell.array, host.get_scaled_positions(),
                                   host.numbers), symprec=1e-5)
    return list(zip(ops["rotations"], ops["translations"]))


def pick(ops, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """The first operation of a kind: a proper rotation about z, a mirror, a translation.

    A rotation and a mirror are taken with a non-lattice translation part, so the
    image is not the configuration shifted by a lattice vector.
    """
    for rot, trans in ops:
        ident = np.array_equal(rot, np.eye(3, dtype=int))
        det = round(np.linalg.det(rot))
        if kind == "translation" and ident and np.abs(trans).sum() > 1e-6:
            return rot, trans
        if kind == "rotation" and not ident and det == 1 and rot[2, 2] == 1:
            return rot, trans
        if kind == "mirror" and det == -1:
            return rot, trans
    raise LookupError(kind)


def image(atoms: Atoms, rot: np.ndarray, trans: np.ndarray) -> Atoms:
    """``atoms`` moved by the operation ``x -> R x + t`` (fractional), wrapped."""
    out = atoms.copy()
    frac = atoms.get_scaled_positions(wrap=False) @ rot.T + trans
    frac[:, :2] %= 1.0
    out.set_scaled_positions(frac)
    return out


def fingerprint(atoms: Atoms) -> frozenset:
    """Species and wrapped fractional positions, rounded: equal for equal structures."""
    frac = np.round(atoms.get_scaled_positions(wrap=True), 4) % 1.0
    return frozenset((int(z), *map(float, f)) for z, f in zip(atoms.numbers, frac))


def defect_sample(host: Atoms, sites, defects, info: dict, atoms: Atoms | None = None
                  ) -> Sample:
    """A sample of ``host`` with the defects applied (relaxed = unrelaxed)."""
    atoms = apply_defects(host, sites, defects) if atoms is None else atoms
    clean = host.copy()
    for key in ("cell_index", "basis_index"):
        clean.arrays.pop(key, None)
    return Sample(atoms, atoms.get_positions(), clean, dict(info))
