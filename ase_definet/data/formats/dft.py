"""DFT (or any oracle) output: relaxation trajectories and (unrelaxed, relaxed) file pairs."""
from __future__ import annotations

import re
from pathlib import Path
from collections.abc import Iterable, Mapping

from ase import Atoms
from ase.io import read

from ...errors import DataFormatError, DefiNetInputError
from ...match import resolve_host
from ..hosts import host_spec
from ..sample import Sample
from .cif_files import read_cif_atoms
from .result import LoadResult, PathLike

# Files whose name says nothing about the structure: the id is the folder name.
_GENERIC_NAMES = {"OUTCAR", "vasprun.xml", "XDATCAR", "CONTCAR", "POSCAR"}


def _id_from_path(path: Path) -> str:
    if path.name in _GENERIC_NAMES:
        return path.parent.resolve().name
    name = path.name.split(".")[0]
    return re.sub(r"_(unrelaxed|relaxed)$", "", name) or path.name


def _frame_energy(atoms: Atoms) -> float | None:
    try:
        return float(atoms.get_potential_energy())
    except Exception:  # no calculator or no energy stored: simply not recorded
        return None


def _material_hint(host) -> dict:
    if isinstance(host, str):
        try:
            return {"material": host_spec(host).name}
        except DefiNetInputError:
            return {}
    if isinstance(host, Atoms) and "host" in host.info:
        return {"material": str(host.info["host"])}
    return {}


def read_relaxation(path: PathLike, host: Atoms | PathLike, index_unrelaxed: int = 0,
                    index_relaxed: int = -1, info: Mapping | None = None,
                    format: str | None = None) -> Sample:
    """One sample from a relaxation trajectory (first frame unrelaxed, last relaxed).

    Parameters
    ----------
    path : path
        Any file :func:`ase.io.read` reads as several frames: ASE ``.traj``,
        extxyz, VASP ``vasprun.xml`` or ``OUTCAR``.
    host : ase.Atoms, path or str
        The pristine host: Atoms, a structure file or a built-in name.
    index_unrelaxed, index_relaxed : int
        Frames to pair (defaults: first and last).
    info : mapping, optional
        Extra provenance (``material``, ``density``, ``id``, ...).
    format : str, optional
        ASE format name when the file name does not tell.

    Returns
    -------
    Sample
        info: ``id`` (file stem, or folder name for ``OUTCAR``/``vasprun.xml``),
        ``source``, ``steps`` (frames − 1), energies where the file has them.

    Raises
    ------
    DataFormatError
        Unreadable file, a single frame, or frames that do not pair up.
    """
    path = Path(path)
    if host is None:
        raise DataFormatError(f"{path}: a host is needed to read a relaxation "
                              "(Atoms, a structure file or a built-in name)")
    try:
        frames = read(path, index=":", format=format)
    except Exception as err:  # ASE raises many types on unreadable input
        raise DataFormatError(f"{path}: unreadable ({type(err).__name__}: {err})") from err
    frames = frames if isinstance(frames, list) else [frames]
    n = len(frames)
    try:
        i0, i1 = range(n)[index_unrelaxed], range(n)[index_relaxed]
    except IndexError as err:
        raise DataFormatError(f"{path}: has {n} frames; cannot take frames "
                              f"{index_unrelaxed} and {index_relaxed}") from err
    if i0 == i1:
        raise DataFormatError(f"{path}: frames {index_unrelaxed} and {index_relaxed} are "
                              f"the same frame ({n} in the file); a relaxation needs two")
    return _pair_sample(frames[i0], frames[i1], host, path, path,
                        {"steps": abs(i1 - i0), **(info or {})})


def _pair_sample(unrelaxed: Atoms, relaxed: Atoms, host, path: Path, label,
                 extra: Mapping) -> Sample:
    meta = {"id": _id_from_path(path), "source": str(path), **_material_hint(host)}
    for key, frame in (("energy_initial", unrelaxed), ("energy_final", relaxed)):
        e = _frame_energy(frame)
        if e is not None:
            meta[key] = e
    meta.update(extra)
    u = unrelaxed.copy()
    u.calc = None
    h = resolve_host(host, u)
    return Sample.from_pair(u, relaxed, h, meta, name=str(label))


def read_pairs(pairs: Iterable[tuple[PathLike, PathLike]], host,
               info: Mapping | None = None) -> LoadResult:
    """Samples from explicit (unrelaxed file, relaxed file) pairs.

    The first frame of the unrelaxed file and the last frame of the relaxed
    file are paired (a relaxed ``OUTCAR`` or trajectory works as partner). A
    pair that fails is skipped with a reason naming its files.
    """
    if host is None:
        raise DataFormatError("read_pairs needs a host (Atoms, a structure file or a "
                              "built-in name)")
    result = LoadResult()
    for u, r in pairs:
        u, r = Path(u), Path(r)
        try:
            unrelaxed = _read_one(u, 0)
            relaxed = _read_one(r, -1)
            result.samples.append(_pair_sample(unrelaxed, relaxed, host, u,
                                               f"{u} / {r}", dict(info or {})))
        except DefiNetInputError as err:
            result.skipped.append((_id_from_path(u), str(err)))
    return result


def _read_one(path: Path, index: int) -> Atoms:
    if not path.exists():
        raise DataFormatError(f"{path}: file missing")
    if path.suffix.lower() == ".cif":
        return read_cif_atoms(path, pbc=True)
    try:
        return read(path, index=index)
    except Exception as err:  # ASE raises many types on unreadable input
        raise DataFormatError(f"{path}: unreadable ({type(err).__name__}: {err})") from err
