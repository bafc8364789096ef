"""Lattices of hosts that may be sheets: open axes, primitive and reduced cells, strain.

An axis is *open* when it is not periodic or when the atoms leave more than
:data:`VACUUM_GAP` Å of empty space along it (a sheet in a periodic box, as in
2DMD). Open axes are replaced by long perpendicular vectors before spglib looks
for the primitive cell, so the vacuum size never enters a reduced lattice.
"""
from __future__ import annotations

import itertools
import warnings
from functools import cache

import numpy as np
import spglib
from ase import Atoms
from ase.cell import Cell
from ase.geometry import minkowski_reduce

#: Å of empty space along an axis that make it a vacuum axis (2DMD: ~15 Å;
#: interlayer gaps of layered bulk crystals: ~3 Å).
VACUUM_GAP = 5.0
#: spglib tolerances in Å, tried in turn: the smallest primitive cell wins, so a
#: host relaxed to ~0.01 Å noise (a DFT or MLIP relaxation without symmetry
#: constraints; 0.005 Å random displacements already defeat 0.01) is still
#: recognised as a supercell. 0.1 Å stays below real distortions (1T' vs 1T).
SYMPRECS = (0.01, 0.05, 0.1)
#: Length added to the extent of the atoms along an open axis (images apart).
_OPEN_PADDING = 25.0


def complete_basis(cell: np.ndarray, keep: list[int]) -> np.ndarray:
    """Orthonormal directions spanning the complement of the ``keep`` rows."""
    if not keep:
        return np.eye(3)
    vt = np.linalg.svd(cell[keep])[2]
    return vt[len(keep):]


def open_cell(atoms: Atoms, periodic: list[int]) -> np.ndarray:
    """The cell with every non-``periodic`` axis replaced by a long perpendicular one."""
    cell = atoms.cell.array.copy()
    pos = atoms.get_positions()
    normals = complete_basis(cell, periodic)
    others = [i for i in range(3) if i not in periodic]
    for i, n in zip(others, normals):
        extent = float(np.ptp(pos @ n)) if len(pos) else 0.0
        cell[i] = n * (extent + _OPEN_PADDING)
    return cell


def open_axes(atoms: Atoms, pbc=None, min_gap: float = VACUUM_GAP) -> list[int]:
    """Cell axes that are not periodic or carry more than ``min_gap`` Å of vacuum.

    The gap along axis ``i`` is the largest empty interval of the atoms'
    fractional coordinate ``i`` (periodically), times the spacing of the
    lattice planes normal to it.
    """
    pbc = atoms.pbc if pbc is None else np.asarray(pbc, bool)
    periodic = [i for i in range(3) if pbc[i]]
    cell = open_cell(atoms, periodic)
    recip = np.linalg.inv(cell).T                   # rows: reciprocal vectors / 2π
    frac = atoms.get_positions() @ recip.T
    out = [i for i in range(3) if not pbc[i]]
    for i in periodic:
        f = np.sort(frac[:, i] % 1.0)
        gaps = np.diff(np.r_[f, f[0] + 1.0])
        if gaps.max() / np.linalg.norm(recip[i]) > min_gap:
            out.append(i)
    return sorted(out)


def primitive_cell(atoms: Atoms, cell: np.ndarray) -> Atoms:
    """spglib's primitive cell of ``atoms`` in ``cell``: the smallest found over
    :data:`SYMPRECS` (the cell itself if spglib finds none)."""
    scaled = atoms.get_positions() @ np.linalg.inv(cell)
    best = Atoms(atoms.numbers, scaled_positions=scaled % 1.0, cell=cell, pbc=True)
    for symprec in SYMPRECS:
        try:
            with warnings.catch_warnings():     # spglib 2.x: its error-handling deprecation
                warnings.simplefilter("ignore", DeprecationWarning)
                found = spglib.standardize_cell((cell, scaled, atoms.numbers),
                                                to_primitive=True, no_idealize=True,
                                                symprec=symprec)
        except Exception:  # SpglibError, where its new error handling is on
            found = None
        if found is not None and len(found[2]) < len(best):
            best = Atoms(found[2], scaled_positions=found[1], cell=found[0], pbc=True)
    return best


def reduced_lattice(prim: Atoms, dims: int, open_dirs: np.ndarray) -> dict:
    """Lengths (Å) and angles (°) of the reduced cell of the periodic axes.

    Sheets: the Gauss-reduced pair ``a <= b`` with ``gamma`` in [60°, 90°];
    bulk: the Niggli cell; wires: one length; molecules: nothing.
    """
    if dims == 3:
        par = Cell(prim.cell.array).niggli_reduce()[0].cellpar()
        return {"lengths": [float(x) for x in par[:3]], "angles": [float(x) for x in par[3:]]}
    if dims == 0:
        return {"lengths": [], "angles": []}
    reduced = minkowski_reduce(prim.cell.array)[0]
    along = np.abs(reduced @ open_dirs.T).max(axis=1)
    vecs = reduced[np.argsort(along)[:dims]]        # the in-plane (in-line) vectors
    vecs = vecs[np.argsort(np.linalg.norm(vecs, axis=1))]
    lengths = [float(x) for x in np.linalg.norm(vecs, axis=1)]
    if dims == 1:
        return {"lengths": lengths, "angles": []}
    cos = abs(float(vecs[0] @ vecs[1])) / (lengths[0] * lengths[1])
    return {"lengths": lengths, "angles": [float(np.degrees(np.arccos(min(cos, 1.0))))]}


def gram(lattice: dict) -> np.ndarray:
    """Metric tensor of a reduced cell given by lengths and angles."""
    ln = np.asarray(lattice["lengths"], float)
    if len(ln) == 3:
        return Cell.fromcellpar(list(ln) + list(lattice["angles"])).array @ \
            Cell.fromcellpar(list(ln) + list(lattice["angles"])).array.T
    if len(ln) == 2:
        c = np.cos(np.radians(lattice["angles"][0]))
        return np.array([[ln[0] ** 2, ln[0] * ln[1] * c], [ln[0] * ln[1] * c, ln[1] ** 2]])
    return np.diag(ln ** 2)


@cache
def _unimodular(d: int) -> np.ndarray:
    """Integer d×d matrices with entries in {-1, 0, 1} and determinant ±1."""
    mats = np.array(list(itertools.product((-1, 0, 1), repeat=d * d))).reshape(-1, d, d)
    det = np.rint(np.linalg.det(mats))
    return mats[np.abs(det) == 1].astype(float)


def lattice_strain(a: dict, b: dict) -> float:
    """Largest principal strain taking reduced cell ``b`` onto ``a`` (0.03 = 3 %).

    Both cells are compared through their metric tensors, so orientation does
    not matter; the best of the nearby equivalent bases of ``b`` is used, so
    the choice among near-equal reduced cells does not either. ``inf`` when
    the dimensionalities differ.
    """
    if len(a["lengths"]) != len(b["lengths"]):
        return float("inf")
    if not a["lengths"]:
        return 0.0
    ga, gb = gram(a), gram(b)
    u = _unimodular(len(a["lengths"]))
    gas = u @ ga @ u.transpose(0, 2, 1)
    # stretches squared: eigenvalues of gb^-1 ga' (a generalised symmetric problem)
    inv = np.linalg.inv(np.linalg.cholesky(gb))
    ev = np.linalg.eigvalsh(inv @ gas @ inv.T)
    strain = np.abs(np.sqrt(np.clip(ev, 0, None)) - 1.0).max(axis=1)
    return float(strain.min())
