"""Host ↔ defect-structure matching: markers, vacancy placeholders, errors.

Every atom of the defect structure is assigned to the nearest site of the
pristine host under periodic boundary conditions. An atom on a site of its own
element is pristine (marker 0), on a site of another element a substitution
(marker 1); a host site with no atom is a vacancy (marker 2) and becomes a
placeholder node at the ideal site, carrying the removed element.

The host may be the pristine supercell, a smaller cell that tiles the defect
cell by an integer matrix (the 2DMD unit cells), or a built-in host name. The
two structures need not share an origin: a rigid translation between them is
found by trying to lay a few atoms onto host sites, so atom order, wrapping and
the position of the layer along the vacuum axis do not matter.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from ase import Atoms
from ase.build import make_supercell
from scipy.spatial import cKDTree

from .errors import (EmptyStructureError, HostDefectError, NonFiniteError,
                     SiteCollisionError, SupercellError, UnmatchedAtomError)
from .geometry import minimum_image
from .host_cell import (CELL_TOLERANCE, STRAIN_HINT, _is_builtin, atoms_lengths,  # noqa: F401
                        lattice_strain, load_host,
                        resolve_host, strained_host_hint, supercell_matrix)

#: Default matching tolerance in Å: an atom farther than this from every host
#: site is an interstitial (or displaced too far to be recognised).
DEFAULT_TOLERANCE = 0.5

PRISTINE, SUBSTITUTION, VACANCY = 0, 1, 2


@dataclass
class HostMatch:
    """The result of :func:`match_host`.

    Attributes
    ----------
    markers : numpy.ndarray of int
        Length ``len(atoms) + n_vacancies``: input atoms in input order
        (0 pristine, 1 substitution), then one entry 2 per vacancy placeholder.
    numbers : numpy.ndarray of int
        Atomic numbers of all nodes; placeholders carry the removed host element.
    positions : numpy.ndarray
        Cartesian positions of all nodes, ``(len(markers), 3)``: the input
        positions unchanged, then placeholders at their ideal host site.
    sites : numpy.ndarray of int
        Host-site index of every node.
    site_positions : numpy.ndarray
        Ideal host position of every node in the frame of ``atoms``, unwrapped
        to the image nearest each input atom.
    vacancies : list of (str, numpy.ndarray)
        Host symbol and Cartesian position of each empty site.
    substitutions : list of (int, str, str)
        (atom index, host symbol, new symbol) of each substituted atom.
    host : ase.Atoms
        The host supercell the atoms were matched to (in the atoms' frame).
    supercell_matrix : numpy.ndarray
        Integer matrix ``M`` with ``atoms.cell ≈ M @ host_input.cell``.
    max_distance : float
        Largest atom-to-site distance found, in Å.
    host_bond : float
        Shortest distance between two host sites (periodic), in Å.
    """

    markers: np.ndarray
    numbers: np.ndarray
    positions: np.ndarray
    sites: np.ndarray
    site_positions: np.ndarray
    vacancies: list = field(default_factory=list)
    substitutions: list = field(default_factory=list)
    host: Atoms | None = None
    supercell_matrix: np.ndarray | None = None
    max_distance: float = 0.0
    host_bond: float = float("inf")

    @property
    def n_atoms(self) -> int:
        """Number of real atoms (input atoms)."""
        return int((self.markers != VACANCY).sum())

    @property
    def defect_positions(self) -> np.ndarray:
        """Ideal host positions of all substitution and vacancy sites."""
        return self.site_positions[self.markers != PRISTINE]

    def defect_records(self) -> list[dict]:
        """Defects in the 2DMD ``descriptors.csv`` spelling (vacancies first)."""
        out = [{"type": "vacancy", "element": s} for s, _ in self.vacancies]
        out += [{"type": "substitution", "from": a, "to": b}
                for _, a, b in self.substitutions]
        return out


def check_finite(atoms: Atoms, what: str = "structure") -> None:
    """Raise :class:`EmptyStructureError` / :class:`NonFiniteError` on bad input."""
    if len(atoms) == 0:
        raise EmptyStructureError(f"the {what} holds no atoms")
    pos = atoms.get_positions()
    bad = np.flatnonzero(~np.isfinite(pos).all(axis=1))
    if bad.size:
        raise NonFiniteError(
            f"the {what} has non-finite positions at atom(s) {bad[:10].tolist()} "
            f"(first: {pos[bad[0]].tolist()})")
    if not np.isfinite(atoms.cell.array).all():
        raise NonFiniteError(f"the {what} has a non-finite cell: {atoms.cell.array.tolist()}")


class _PeriodicSites:
    """Nearest-site queries under periodic boundary conditions (KD-tree on images)."""

    def __init__(self, positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray,
                 reach: float):
        self.cell = cell
        self.pbc = np.asarray(pbc, dtype=bool)
        self.inv = np.linalg.inv(cell)
        frac = positions @ self.inv
        frac[:, self.pbc] %= 1.0
        # Only image sites within `reach` Å of a cell face can be nearest to an
        # atom inside the cell, but copying all 3^d images keeps this simple
        # and O(N).
        ranges = [(-1, 0, 1) if p else (0,) for p in self.pbc]
        shifts = np.array([(a, b, c) for a in ranges[0] for b in ranges[1]
                           for c in ranges[2]], dtype=float)
        imgs = (frac[None, :, :] + shifts[:, None, :]).reshape(-1, 3)
        self.n = len(positions)
        self.base = (frac @ cell)
        self.tree = cKDTree(imgs @ cell)

    def wrap(self, positions: np.ndarray) -> np.ndarray:
        frac = positions @ self.inv
        frac[:, self.pbc] %= 1.0
        return frac @ self.cell

    def nearest(self, positions: np.ndarray, k: int = 1,
                upper: float = np.inf) -> tuple[np.ndarray, np.ndarray]:
        """Distances and site indices (``n`` when none within ``upper``)."""
        d, i = self.tree.query(self.wrap(positions), k=k, distance_upper_bound=upper)
        i = np.where(np.isfinite(d), i % self.n, self.n)
        return d, i


@lru_cache(maxsize=32)
def _host_sites(key: bytes, numbers: tuple, cell: bytes, pbc: tuple, matrix: tuple,
                target_cell: bytes, target_pbc: tuple, tol: float):
    """Tiled host sites in the defect cell, checked and indexed once per host.

    Returns (tiled host, site positions, site numbers, nearest-site finder,
    shortest host bond in Å).
    Exceptions are not cached, so a bad host fails every time.
    """
    h = Atoms(numbers=list(numbers), positions=np.frombuffer(key).reshape(-1, 3),
              cell=np.frombuffer(cell).reshape(3, 3), pbc=pbc)
    m = np.array(matrix).reshape(3, 3)
    tiled = h if (m == np.eye(3, dtype=int)).all() else make_supercell(h, m, wrap=True)
    target = np.frombuffer(target_cell).reshape(3, 3)
    # Absorb the rounding of the cell (e.g. 8 x 3.1903157 vs 25.5225256).
    site_pos = tiled.get_scaled_positions(wrap=False) @ target
    site_pos.flags.writeable = False
    _check_host_sites(Atoms(numbers=tiled.numbers, positions=site_pos, cell=target,
                            pbc=target_pbc), tol)
    finder = _PeriodicSites(site_pos, target, np.array(target_pbc), tol)
    d, _ = finder.nearest(site_pos, k=2)
    return tiled, site_pos, tiled.numbers, finder, float(d[:, 1].min())


def _check_host_sites(host: Atoms, tol: float) -> None:
    """Two host atoms closer than ``tol`` cannot both be lattice sites."""
    finder = _PeriodicSites(host.get_positions(), host.cell.array, host.pbc, tol)
    d, i = finder.nearest(host.get_positions(), k=2, upper=tol)
    close = np.flatnonzero(np.isfinite(d[:, 1]))
    if close.size:
        a = int(close[0])
        raise HostDefectError(
            f"host atoms {a} and {int(i[a, 1])} are {d[a, 1]:.3f} Å apart "
            f"(tolerance {tol} Å): the host is not a pristine crystal")


def match_host(atoms: Atoms, host: Atoms | str, tolerance: float = DEFAULT_TOLERANCE,
               cell_tolerance: float = CELL_TOLERANCE) -> HostMatch:
    """Match a defect structure to its pristine host.

    Parameters
    ----------
    atoms : ase.Atoms
        The defect structure (unrelaxed or lightly relaxed).
    host : ase.Atoms or str
        The pristine host: a supercell with the same cell, a smaller cell that
        tiles ``atoms.cell`` by an integer matrix, a file path, or a built-in
        host name (MoS2, WSe2, hBN, GaSe, InSe, BP).
    tolerance : float
        Largest atom-to-site distance in Å (default 0.5 Å).
    cell_tolerance : float
        Relative tolerance when testing that the cells are integer multiples.

    Returns
    -------
    HostMatch

    Raises
    ------
    EmptyStructureError, NonFiniteError, SupercellError, UnmatchedAtomError,
    SiteCollisionError, HostDefectError
        All subclasses of ``ValueError``; messages name the atom, site or cell.
    """
    check_finite(atoms)
    if abs(np.linalg.det(atoms.cell.array)) < 1e-9:
        zero = [ax for ax, n in zip("abc", atoms_lengths(atoms.cell.array)) if n < 1e-9]
        raise SupercellError(
            "the structure's cell is singular"
            + (f" (cell vector {', '.join(zero)} has zero length)" if zero else "")
            + ": a 2D layer needs a cell with vacuum along c, e.g. "
            "ase.build.mx2(..., vacuum=10) or atoms.center(vacuum=10, axis=2)")
    label = None if isinstance(host, Atoms) else str(host)     # a name or a file
    host = resolve_host(host, atoms)
    check_finite(host, "host")
    try:
        matrix = supercell_matrix(atoms.cell.array, host.cell.array, cell_tolerance)
    except SupercellError as err:
        hint = strained_host_hint(atoms.cell.array, host.cell.array, str(label or ""),
                                  builtin=_is_builtin(label))
        if hint is None:
            raise
        raise SupercellError(f"{err}; {hint}") from None
    pbc = atoms.pbc | host.pbc
    tiled, site_pos, site_num, finder, bond = _host_sites(
        np.ascontiguousarray(host.get_positions(), float).tobytes(),
        tuple(host.numbers.tolist()),
        np.ascontiguousarray(host.cell.array, float).tobytes(),
        tuple(bool(p) for p in host.pbc), tuple(matrix.ravel().tolist()),
        np.ascontiguousarray(atoms.cell.array, float).tobytes(),
        tuple(bool(p) for p in pbc), float(tolerance))
    pos = atoms.get_positions()
    shift = _register(finder, site_pos, site_num, pos, atoms.numbers, tolerance)

    d, site = finder.nearest(pos + shift, k=1, upper=tolerance)
    missing = np.flatnonzero(site == len(site_pos))
    if missing.size:
        d_all, _ = finder.nearest(pos[missing] + shift, k=1)
        a = int(missing[0])
        raise UnmatchedAtomError(
            f"atom {a} ({atoms[a].symbol} at {np.round(pos[a], 3).tolist()}) is "
            f"{d_all[0]:.3f} Å from the nearest host site (tolerance {tolerance} Å): "
            f"an interstitial or an atom displaced too far"
            + (f"; {missing.size} atoms in all" if missing.size > 1 else ""))
    counts = np.bincount(site, minlength=len(site_pos))
    if (counts > 1).any():
        s = int(np.flatnonzero(counts > 1)[0])
        who = np.flatnonzero(site == s).tolist()
        raise SiteCollisionError(
            f"atoms {who} are all assigned to host site {s} "
            f"({tiled[s].symbol} at {np.round(site_pos[s] - shift, 3).tolist()})")

    is_sub = site_num[site] != atoms.numbers
    markers = np.where(is_sub, SUBSTITUTION, PRISTINE)
    empty = np.flatnonzero(counts == 0)
    # Ideal positions in the atoms' frame, unwrapped next to each atom.
    wrapped = finder.wrap(pos + shift)
    delta = wrapped - finder.wrap(site_pos[site])
    delta = minimum_image(delta, atoms.cell.array, pbc)
    ideal_atoms = pos - delta
    vac_pos = site_pos[empty] - shift
    symbols = np.array(tiled.get_chemical_symbols())
    return HostMatch(
        markers=np.concatenate([markers, np.full(len(empty), VACANCY)]).astype(np.int64),
        numbers=np.concatenate([atoms.numbers, site_num[empty]]).astype(np.int64),
        positions=np.concatenate([pos, vac_pos]),
        sites=np.concatenate([site, empty]).astype(np.int64),
        site_positions=np.concatenate([ideal_atoms, vac_pos]),
        vacancies=[(str(symbols[s]), vac_pos[k]) for k, s in enumerate(empty)],
        substitutions=[(int(a), str(symbols[site[a]]), atoms[a].symbol)
                       for a in np.flatnonzero(is_sub)],
        host=Atoms(numbers=site_num, positions=site_pos - shift, cell=atoms.cell,
                   pbc=pbc),
        supercell_matrix=matrix,
        max_distance=float(d.max()),
        host_bond=bond,
    )


def _register(finder: _PeriodicSites, site_pos: np.ndarray, site_num: np.ndarray,
              pos: np.ndarray, numbers: np.ndarray, tol: float) -> np.ndarray:
    """Rigid shift that lays the atoms onto host sites (zero when they already are).

    Candidates: zero, then for a few reference atoms every shift that puts the
    reference on a host site. The first candidate that places every atom within
    ``tol`` wins; otherwise the one that places most atoms, so the caller can
    report the atoms that still match no site.
    """
    def score(shift):
        d, _ = finder.nearest(pos + shift, k=1, upper=tol)
        ok = np.isfinite(d)
        return int(ok.sum()), -float(np.square(d[ok]).sum())

    best_shift, best = np.zeros(3), score(np.zeros(3))
    if best[0] == len(pos):
        return best_shift
    # Host sites are a lattice: shifts onto the sites of one host unit cell
    # suffice, but the host cell is unknown here, so use the distinct sites
    # nearest to the reference atom (at most 64 tries per reference).
    for ref in np.linspace(0, len(pos) - 1, num=min(3, len(pos))).astype(int):
        d, idx = finder.tree.query(finder.wrap(pos[ref:ref + 1])[0],
                                   k=min(64, len(finder.tree.data)))
        for j in np.atleast_1d(idx):
            shift = finder.tree.data[j] - finder.wrap(pos[ref:ref + 1])[0]
            s = score(shift)
            if s > best:
                best_shift, best = shift, s
                if s[0] == len(pos):
                    return best_shift
    return best_shift
