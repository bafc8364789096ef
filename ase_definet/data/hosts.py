"""Built-in pristine hosts: the six 2DMD monolayers.

Each host is a unit cell (in-plane lattice from the 2DMD unit cells, which agree
with Table 1 of the DefiNet paper) plus a basis given as fractional in-plane
coordinates and Cartesian heights relative to the middle of the layer. The layer
is centred in a cell with ``vacuum`` Å along c (20 Å by default, as in 2DMD's
high-density set).

:func:`build_host` tiles it into an n×m supercell and records, for every atom,
the unit-cell index it came from, which the defect generator uses to recognise
configurations that differ only by a lattice translation.
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms

from ..errors import UnknownHostError


@dataclass(frozen=True)
class HostSpec:
    """A monolayer unit cell and the defects 2DMD makes in it.

    Attributes
    ----------
    name : str
        Built-in name (``"MoS2"``, ``"hBN"``, ...).
    a, b : numpy.ndarray
        In-plane lattice vectors in Å (z = 0).
    basis : tuple of (str, float, float, float)
        (symbol, fractional x, fractional y, height above the layer middle in Å).
    substitutions : tuple of (str, str)
        Allowed (host element, new element) substitutions.
    vacancies : tuple of str
        Elements that may be removed.
    supercell : tuple of int
        The 2DMD supercell (Table 1).
    unit : ase.Atoms, optional
        A ready unit cell (any crystal, 3D included) for hosts read from a file
        (:func:`file_host`) or registered with :func:`register_host`; the 2D fields
        ``a``, ``b``, ``basis`` are then unused.
    digest : str
        Content hash of a host read from a file (unit cell and defect types); it
        is part of the host's key in a store, so two files of one name never mix.
    """

    name: str
    a: tuple[float, float]
    b: tuple[float, float]
    basis: tuple[tuple[str, float, float, float], ...]
    substitutions: tuple[tuple[str, str], ...]
    vacancies: tuple[str, ...]
    supercell: tuple[int, ...]
    unit: Atoms | None = None
    digest: str = ""

    @property
    def defect_types(self) -> tuple[tuple[str, str, str | None], ...]:
        """All defect types as ``("substitution", from, to)`` / ``("vacancy", el, None)``."""
        subs = tuple(("substitution", f, t) for f, t in self.substitutions)
        vacs = tuple(("vacancy", e, None) for e in self.vacancies)
        return subs + vacs

    @property
    def elements(self) -> frozenset[str]:
        """Every element a defect structure of this host may contain."""
        return frozenset({s for s, *_ in self.basis} | {t for _, t in self.substitutions})


def _hex(a: float) -> tuple[tuple[float, float], tuple[float, float]]:
    # 2DMD's hexagonal cells: gamma = 120 degrees, a along x.
    return (a, 0.0), (-0.5 * a, 0.5 * np.sqrt(3.0) * a)


_T = 1.0 / 3.0
_TT = 2.0 / 3.0

HOSTS: dict[str, HostSpec] = {
    "MoS2": HostSpec(
        "MoS2", *_hex(3.1903),
        (("Mo", _T, _TT, 0.0), ("S", _TT, _T, -1.5649), ("S", _TT, _T, 1.5649)),
        (("S", "Se"), ("Mo", "W")), ("Mo", "S"), (8, 8)),
    "WSe2": HostSpec(
        "WSe2", *_hex(3.3271),
        (("W", _T, _TT, 0.0), ("Se", _TT, _T, 1.6813), ("Se", _TT, _T, -1.6813)),
        (("Se", "S"), ("W", "Mo")), ("W", "Se"), (8, 8)),
    "hBN": HostSpec(
        "hBN", *_hex(2.5124),
        (("B", _T, _TT, 0.0), ("N", _TT, _T, 0.0)),
        (("B", "C"), ("N", "C")), ("B", "N"), (8, 8)),
    "GaSe": HostSpec(
        "GaSe", *_hex(3.8191),
        (("Ga", _TT, _T, -1.2354), ("Ga", _TT, _T, 1.2354),
         ("Se", _T, _TT, 2.4087), ("Se", _T, _TT, -2.4087)),
        (("Ga", "In"), ("Se", "S")), ("Ga", "Se"), (6, 6)),
    "InSe": HostSpec(
        "InSe", *_hex(4.0965),
        (("In", _T, _TT, 1.4171), ("In", _T, _TT, -1.4171),
         ("Se", _TT, _T, 2.6846), ("Se", _TT, _T, -2.6846)),
        (("In", "Ga"), ("Se", "S")), ("In", "Se"), (6, 6)),
    "BP": HostSpec(
        "BP", (3.2999, 0.0), (0.0, 4.6009),
        (("P", 0.0, 0.588557, -1.0531), ("P", 0.0, 0.411443, 1.0531),
         ("P", 0.5, 0.088557, 1.0531), ("P", 0.5, 0.911443, -1.0531)),
        (("P", "N"),), ("P",), (6, 6)),
}

# Names users and 2DMD folders use for the same hosts.
ALIASES = {"h-BN": "hBN", "BN": "hBN", "P": "BP", "phosphorene": "BP",
           "black-P": "BP", "hBN_spin": "hBN", "BP_spin": "BP",
           "GaSe_spin": "GaSe", "InSe_spin": "InSe"}


def register_host(name: str, unit: Atoms, substitutions=(), vacancies=(),
                  supercell: tuple[int, ...] = (2, 2, 2)) -> HostSpec:
    """Add a host made from any unit cell to this process's built-in names.

    Only the planning process needs it: jobs carry their host, so workers never
    look it up. For a host in a file, :func:`file_host` needs no registry at all.

    Parameters
    ----------
    substitutions : iterable of (str, str)
        Allowed (host element, new element) pairs.
    vacancies : iterable of str
        Elements that may be removed.
    """
    spec = HostSpec(name, (0.0, 0.0), (0.0, 0.0), (), tuple(map(tuple, substitutions)),
                    tuple(vacancies), tuple(supercell), unit.copy())
    HOSTS[name] = spec
    return spec


def file_host(path: str | Path, supercell: tuple[int, ...],
              defects: Iterable[tuple[str, str, str | None]],
              name: str | None = None) -> HostSpec:
    """A host read from any ASE-readable file, with the defect types asked for.

    The spec carries its unit cell, so nothing needs registering: a job built
    from it runs on any worker.

    Parameters
    ----------
    path : path
        Unit cell (or any cell to tile): CIF, POSCAR, extxyz, ... (``ase.io.read``).
    supercell : tuple of int
        Two repetitions make a 2D sheet: the cell is tiled in-plane and is not
        periodic along c (the file's c is kept as the vacuum). Three tile a bulk
        crystal, periodic along all three axes.
    defects : iterable of ``("vacancy", el, None)`` / ``("substitution", el, new)``
    name : str, optional
        Host name in ids and labels (default: the file's stem).

    Raises
    ------
    ValueError
        If the file cannot be read as a structure, or ``supercell`` does not have
        2 or 3 entries.
    """
    from ase.io import read
    path = Path(path)
    try:
        unit = read(path)
    except Exception as err:    # ASE raises many types for a file it cannot parse
        raise ValueError(f"host file {str(path)!r} cannot be read as a structure: "
                         f"{type(err).__name__}: {err}") from None
    if len(supercell) not in (2, 3):
        raise ValueError(f"supercell must be 2 (a sheet) or 3 (bulk) integers, "
                         f"got {supercell!r}")
    unit = Atoms(unit.numbers, positions=unit.positions, cell=unit.cell,
                 pbc=(True, True, len(supercell) == 3))   # drop calculator, info, arrays
    defects = tuple(defects)
    return HostSpec(name or path.stem, (0.0, 0.0), (0.0, 0.0), (),
                    tuple((a, b) for k, a, b in defects if k == "substitution"),
                    tuple(a for k, a, _ in defects if k == "vacancy"),
                    tuple(int(v) for v in supercell), unit, _digest(unit, defects))


def _digest(unit: Atoms, defects: tuple) -> str:
    """Hash of what a host's job list depends on: its cell, sites and defect types."""
    h = hashlib.sha256()
    for part in (unit.numbers.astype(np.int64), np.round(unit.cell.array, 6),
                 np.round(unit.positions, 6), np.asarray(unit.pbc, bool)):
        h.update(np.ascontiguousarray(part).tobytes())
    h.update(repr(sorted(defects, key=repr)).encode())
    return h.hexdigest()[:10]


def host_spec(name: str | HostSpec) -> HostSpec:
    """Return the :class:`HostSpec` of a built-in host name or alias.

    A :class:`HostSpec` (e.g. from :func:`file_host`) is returned as it is.

    Raises
    ------
    UnknownHostError
        If the name is not a built-in host.
    """
    if isinstance(name, HostSpec):
        return name
    key = ALIASES.get(name, name)
    if key not in HOSTS:
        raise UnknownHostError(
            f"unknown host {name!r}; built-in hosts are {', '.join(HOSTS)}")
    return HOSTS[key]


def unit_cell(name: str | HostSpec, vacuum: float = 20.0) -> Atoms:
    """The unit cell of a built-in host, layer centred in ``vacuum`` Å along c."""
    spec = host_spec(name)
    if spec.unit is not None:
        return spec.unit.copy()
    cell = np.array([[*spec.a, 0.0], [*spec.b, 0.0], [0.0, 0.0, vacuum]])
    frac_xy = np.array([[x, y] for _, x, y, _ in spec.basis])
    pos = frac_xy @ cell[:2, :2]
    z = np.array([h for *_, h in spec.basis]) + 0.5 * vacuum
    symbols = [s for s, *_ in spec.basis]
    return Atoms(symbols, positions=np.column_stack([pos, z]), cell=cell,
                 pbc=(True, True, False))


def build_host(name: str | HostSpec, supercell: tuple[int, int] | int | None = None,
               vacuum: float = 20.0, unit: Atoms | str | None = None) -> Atoms:
    """Pristine n×m supercell of a built-in host.

    Parameters
    ----------
    name : str or HostSpec
        Built-in host name or alias (MoS2, WSe2, hBN, GaSe, InSe, BP), or a spec
        (:func:`file_host`).
    supercell : int, (int, int) or (int, int, int), optional
        Repetitions along a, b (and c); default the 2DMD supercell of Table 1.
    vacuum : float
        Cell length along c in Å.
    unit : ase.Atoms or path, optional
        Tile this unit cell instead of the built-in one, e.g. the 2DMD
        ``MoS2.cif`` (its c is kept as given; 2DMD's high-density set resets it
        to 20 Å first). The defect types stay those of ``name``.

    Returns
    -------
    ase.Atoms
        ``pbc = (True, True, False)`` for the 2D hosts; ``atoms.arrays["cell_index"]``
        holds the (i, j, k) unit-cell index of every atom and ``atoms.arrays["basis_index"]``
        its basis site, ``atoms.info["host"]`` the canonical name.
    """
    spec = host_spec(name)
    if supercell is None:
        supercell = spec.supercell
    reps = [int(supercell)] * 2 if np.isscalar(supercell) else [int(v) for v in supercell]
    if len(reps) == 2:
        reps.append(1)
    if min(reps) < 1 or len(reps) != 3:
        raise ValueError(f"supercell must be 2 or 3 positive integers, got {supercell!r}")
    if unit is None:
        uc = unit_cell(spec, vacuum)
    else:
        from .cif import read_cif
        uc = unit.copy() if isinstance(unit, Atoms) else read_cif(unit)
        uc.pbc = (True, True, False) if spec.unit is None else uc.pbc
    atoms = uc.repeat(reps)
    nb = len(uc)
    idx = np.arange(len(atoms))
    # ASE's repeat loops over a outermost, then b, then c, basis innermost.
    c = idx // nb
    atoms.arrays["basis_index"] = idx % nb
    atoms.arrays["cell_index"] = np.column_stack(
        [c // (reps[1] * reps[2]), (c // reps[2]) % reps[1], c % reps[2]])
    atoms.info["host"] = spec.name
    two_d = reps[2] == 1 and (spec.unit is None or not spec.unit.pbc[2])
    atoms.info["supercell"] = reps[:2] if two_d else reps
    return atoms
