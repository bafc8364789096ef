"""The host argument: built-in names, files, and how a defect cell tiles a host cell.

:func:`load_host` reads a host given as a file once (again when the file changes);
:func:`resolve_host` turns any host argument into ``Atoms`` for one structure;
:func:`supercell_matrix` finds the integer matrix that tiles the defect cell, and
:func:`strained_host_hint` explains a cell that would tile a slightly strained host.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
from ase import Atoms

from .errors import SupercellError

#: Relative tolerance on the integer supercell matrix between host and defect cell.
CELL_TOLERANCE = 1e-3


def resolve_host(host: Atoms | str, atoms: Atoms) -> Atoms:
    """Turn a host argument (Atoms, file path or built-in name) into ``Atoms``."""
    host = load_host(host)
    if isinstance(host, Atoms):
        return host
    uc = _builtin_unit_cell(host).copy()
    # Built-in hosts take the defect cell's c vector: only the in-plane
    # lattice must tile; the layer height is found by registration.
    uc.set_cell(np.vstack([uc.cell[:2], atoms.cell[2]]), scale_atoms=False)
    uc.pbc = atoms.pbc
    return uc


def load_host(host: Atoms | str) -> Atoms | str:
    """Read a host given as a file; keep ``Atoms`` and built-in names as they are.

    Call it once before matching many structures, so a bad ``--host`` is
    reported once, as the host's fault, and the file is read once.

    Raises
    ------
    DataFormatError
        The file exists but ASE cannot read it.
    UnknownHostError
        Neither a file nor a built-in host name.
    """
    if isinstance(host, Atoms):
        return host
    from pathlib import Path
    name = str(host)
    if _is_builtin(name):
        return name
    if Path(name).exists():
        st = Path(name).stat()
        try:   # a loop passing the same file reads it once (again when it changes)
            return _read_host_file(str(Path(name).resolve()), st.st_mtime_ns,
                                   st.st_size).copy()
        except Exception as err:   # ASE readers raise anything on a garbage file
            from .errors import DataFormatError
            raise DataFormatError(f"cannot read host file {name}: "
                                  f"{type(err).__name__}: {err}") from err
    from .data.hosts import HOSTS
    from .errors import UnknownHostError
    raise UnknownHostError(
        f"host {name!r} is neither a file nor a built-in host "
        f"({', '.join(HOSTS)})")


@lru_cache(maxsize=16)
def _read_host_file(path: str, mtime_ns: int, size: int) -> Atoms:
    from ase.io import read
    return read(path)


@lru_cache(maxsize=16)
def _builtin_unit_cell(name: str) -> Atoms:
    from .data.hosts import unit_cell
    return unit_cell(name)


def _is_builtin(name) -> bool:
    if not isinstance(name, str):
        return False
    from .data.hosts import ALIASES, HOSTS
    return name in HOSTS or name in ALIASES


def supercell_matrix(cell: np.ndarray, host_cell: np.ndarray,
                     rtol: float = CELL_TOLERANCE) -> np.ndarray:
    """Integer ``M`` with ``cell = M @ host_cell`` (rows are lattice vectors).

    Raises
    ------
    SupercellError
        If no integer matrix reproduces ``cell`` within ``rtol``.
    """
    try:
        m = cell @ np.linalg.inv(host_cell)
    except np.linalg.LinAlgError as err:
        raise SupercellError(f"the host cell {host_cell.tolist()} is singular") from err
    mi = np.rint(m)
    err = np.linalg.norm(cell - mi @ host_cell, axis=1)
    scale = np.linalg.norm(cell, axis=1)
    if abs(np.linalg.det(mi)) < 0.5 or (err > rtol * np.maximum(scale, 1.0)).any():
        raise SupercellError(
            "the structure's cell is not an integer supercell of the host cell: "
            f"cell @ inv(host cell) = {np.round(m, 4).tolist()} "
            f"(cell lengths {np.round(atoms_lengths(cell), 4).tolist()} Å, host "
            f"{np.round(atoms_lengths(host_cell), 4).tolist()} Å)")
    return mi.astype(int)


def atoms_lengths(cell: np.ndarray) -> np.ndarray:
    return np.linalg.norm(cell, axis=1)


#: Largest lattice strain (fraction) for which a failed supercell test says
#: "strained host" instead of only printing the matrix.
STRAIN_HINT = 0.02


def lattice_strain(cell: np.ndarray, host_cell: np.ndarray,
                   rtol: float = CELL_TOLERANCE) -> tuple[np.ndarray, np.ndarray] | None:
    """Integer ``M`` and strain ``e`` with ``cell[i] ≈ (1 + e[i]) (M @ host_cell)[i]``.

    Explains a cell that is an integer supercell of a stretched or compressed
    host (the same lattice vector directions, other lengths). Returns ``None``
    when no such ``M`` exists (other angles, a singular host).
    """
    try:
        m = np.rint(cell @ np.linalg.inv(host_cell))
    except np.linalg.LinAlgError:
        return None
    if abs(np.linalg.det(m)) < 0.5:
        return None
    ideal = m @ host_cell
    scale = atoms_lengths(cell) / np.maximum(atoms_lengths(ideal), 1e-12)
    off = np.linalg.norm(cell - scale[:, None] * ideal, axis=1)
    if (off > rtol * np.maximum(atoms_lengths(cell), 1.0)).any():
        return None
    return m.astype(int), scale - 1.0


def strained_host_hint(cell: np.ndarray, host_cell: np.ndarray, host_label: str,
                       builtin: bool) -> str | None:
    """A sentence for a cell that tiles a host strained by at most :data:`STRAIN_HINT`."""
    found = lattice_strain(cell, host_cell)
    if found is None:
        return None
    m, strain = found
    if np.abs(strain).max() > STRAIN_HINT:
        return None
    diagonal = bool((m == np.diag(np.diag(m))).all())
    size = "×".join(str(v) for v in np.diag(m)) if diagonal else f"M = {m.tolist()}"
    axes = [(i, ax, e) for i, (ax, e) in enumerate(zip("abc", strain)) if abs(e) > 1e-9]
    uniform = len({round(e, 6) for *_, e in axes}) == 1
    how = (f"{100 * axes[0][2]:+.2f} %" if uniform
           else ", ".join(f"{100 * e:+.2f} % along {ax}" for _, ax, e in axes))
    # lattice constants (diagonal M only): one line per distinct strain
    lengths = atoms_lengths(host_cell)
    consts = [f"{ax} = {lengths[i] * (1 + e):.4f} Å here, {lengths[i]:.4f} Å in the host"
              for i, ax, e in (axes[:1] if uniform else axes)] if diagonal else []
    what = (f"the built-in host {host_label}" if builtin
            else f"the host {host_label}" if host_label else "the host")
    text = (f"the structure is an integer supercell ({size}) of {what} strained by {how}"
            + (f" ({'; '.join(consts)})" if consts else ""))
    if builtin:
        return text + ("; the built-in lattice is fixed, so pass your own pristine cell "
                       "as the host (a file or Atoms, e.g. --host pristine.vasp)")
    return text + "; the host must be the pristine cell the structure was built from"
