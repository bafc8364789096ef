"""The 2DMD layout (``high_density_defects/``, ``low_density_defects/``) as the
reference code reads it: :func:`read_2dmd` and :func:`write_2dmd`."""
from __future__ import annotations

import csv
import os
import re
from collections import Counter
from pathlib import Path
from collections.abc import Iterable, Sequence

import numpy as np
from ase import Atoms

from ...errors import DataFormatError, DefiNetInputError
from ...match import resolve_host, supercell_matrix
from ..hosts import host_spec, unit_cell
from ..sample import Sample
from ..splits import SPLITS, read_split, split_samples
from .cif_files import read_cif_atoms, write_cif_atoms
from .result import LoadResult, PathLike

HIGH_DIR = "high_density_defects"
LOW_DIR = "low_density_defects"
DENSITY_DIRS = {"high": HIGH_DIR, "low": LOW_DIR}
#: Material folder names of 2DMD (high density appends ``_500``).
MATERIAL_DIRS = {"MoS2": "MoS2", "WSe2": "WSe2", "hBN": "hBN_spin",
                 "GaSe": "GaSe_spin", "InSe": "InSe_spin", "BP": "BP_spin"}
#: Unit-cell file names of 2DMD, one per material, in each density folder.
UNIT_CELL_FILES = {"MoS2": "MoS2.cif", "WSe2": "WSe2.cif", "hBN": "BN.cif",
                   "GaSe": "GaSe.cif", "InSe": "InSe.cif", "BP": "P.cif"}
CIF_DIRS = {"high": "CIF", "low": "CIF_POSCAR"}
#: 2DMD's high-density structures have c reset to this length (Å).
HIGH_DENSITY_C = 20.0


# ------------------------------------------------------------ reader
def _material_name(folder: str) -> str:
    """Built-in material of a 2DMD folder name (``hBN_spin_500`` -> ``hBN``)."""
    return host_spec(re.sub(r"_\d+$", "", folder)).name


def _density_roots(root: Path, densities: Sequence[str]) -> list[tuple[str, Path]]:
    """(density, folder) pairs under ``root`` (or ``root`` itself)."""
    for density, name in DENSITY_DIRS.items():
        if root.name == name:
            return [(density, root)] if density in densities else []
    return [(d, root / DENSITY_DIRS[d]) for d in densities
            if (root / DENSITY_DIRS[d]).is_dir()]


def _cif_dir(material_dir: Path, density: str) -> Path | None:
    for name in (CIF_DIRS[density], *CIF_DIRS.values()):
        if (material_dir / name).is_dir():
            return material_dir / name
    return None


def _unit_cell_host(density_root: Path, material: str, density: str) -> Atoms | None:
    """The 2DMD unit cell as matching host; None when the folder has no file.

    High density resets c to 20 Å as 2DMD does before tiling; low density
    keeps the unit cell's c. ``match_host`` detects the integer supercell, so
    the unit cell itself serves as host.
    """
    path = density_root / UNIT_CELL_FILES[material]
    if not path.exists():
        path = density_root / f"{material}.cif"
    if not path.exists():
        return None
    uc = read_cif_atoms(path)
    if density == "high":
        cell = uc.cell.array.copy()
        cell[2] = cell[2] / np.linalg.norm(cell[2]) * HIGH_DENSITY_C
        uc.set_cell(cell, scale_atoms=False)
    return uc


def _csv_ids(path: Path) -> list[str]:
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if "atoms_id" not in (reader.fieldnames or []):
            raise DataFormatError(f"{path}: no atoms_id column")
        return [row["atoms_id"].strip() for row in reader if row["atoms_id"].strip()]


def _split_ids(material_dir: Path) -> tuple[dict[str, str], list[str], list[tuple[str, str]]]:
    """Id -> split from the csv files, the duplicated ids and unreadable csvs.

    An id listed in several splits is kept in one: test over val over train.
    Keeping it where it is evaluated leaves the published test set intact and
    still keeps it out of training.
    """
    listed: dict[str, list[str]] = {}
    bad = []
    for split in SPLITS:
        path = material_dir / f"{split}.csv"
        if not path.exists():
            continue
        try:
            ids = _csv_ids(path)
        except (DataFormatError, OSError, csv.Error, UnicodeDecodeError) as err:
            bad.append((str(path), f"{path}: unreadable split file ({err})"))
            continue
        for i in ids:
            listed.setdefault(i, []).append(split)
    chosen = {i: max(s, key=SPLITS.index) for i, s in listed.items()}
    dups = [i for i, s in listed.items() if len(s) > 1]
    return chosen, dups, bad


def _read_2dmd_pair(cif_dir: Path, atoms_id: str, material: str, density: str,
                    split: str | None, host: Atoms | None) -> Sample:
    u = cif_dir / f"{atoms_id}_unrelaxed.cif"
    r = cif_dir / f"{atoms_id}_relaxed.cif"
    if not u.exists():
        where = f" (listed in {split}.csv)" if split else ""
        raise DataFormatError(f"{u}: file missing{where}")
    if not r.exists():
        raise DataFormatError(f"{u}: no relaxed partner ({r.name} is missing)")
    unrelaxed, relaxed = read_cif_atoms(u), read_cif_atoms(r)
    host = host if host is not None else resolve_host(material, unrelaxed)
    try:
        supercell_matrix(unrelaxed.cell.array, host.cell.array)
    except DefiNetInputError as err:
        raise DataFormatError(f"{u}: cell does not tile the {material} unit cell: "
                              f"{err}") from err
    info = {"id": atoms_id, "material": material, "density": density,
            "source": str(u)}
    if split:
        info["split"] = split
    return Sample.from_pair(unrelaxed, relaxed, host, info, name=f"{u} / {r.name}")


def _read_material_dir(material_dir: Path, density: str, density_root: Path,
                       result: LoadResult) -> None:
    try:
        material = _material_name(material_dir.name)
        host = _unit_cell_host(density_root, material, density)
    except DefiNetInputError as err:
        result.skipped.append((str(material_dir), f"{material_dir}: {err}"))
        return
    cif_dir = _cif_dir(material_dir, density)
    if cif_dir is None:
        result.skipped.append((str(material_dir), f"{material_dir}: no "
                               f"{CIF_DIRS[density]} folder"))
        return
    chosen, dups, bad = _split_ids(material_dir)
    result.duplicates += dups
    result.skipped += bad
    ids = dict(chosen)
    # Structures on disk that no csv lists still load, without a split.
    for path in sorted(cif_dir.glob("*_unrelaxed.cif")):
        ids.setdefault(path.name[: -len("_unrelaxed.cif")], None)
    for atoms_id, split in ids.items():
        try:
            result.samples.append(_read_2dmd_pair(cif_dir, atoms_id, material,
                                                  density, split, host))
        except DefiNetInputError as err:
            result.skipped.append((atoms_id, str(err)))


def read_2dmd(root: PathLike, densities: Sequence[str] = ("high", "low")) -> LoadResult:
    """Read a 2DMD tree (``high_density_defects`` / ``low_density_defects``).

    Parameters
    ----------
    root : path
        The folder holding the density folders, or one density folder.
    densities : sequence of {"high", "low"}
        Which densities to read.

    Returns
    -------
    LoadResult
        Samples with info ``id``, ``material`` (built-in name), ``density``,
        ``split`` (from the csv files) and ``source``. Structures are periodic
        in-plane only (``pbc = (True, True, False)``); the host is the 2DMD
        unit cell (c = 20 Å at high density). An id in several csv files is
        kept in one split (test over val over train) and reported in
        ``duplicates``. A missing or unreadable file, or an unrelaxed/relaxed
        pair that disagrees in atom count, species or cell, is skipped with a
        reason naming the file.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataFormatError(f"{root}: not a folder")
    result = LoadResult()
    roots = _density_roots(root, densities)
    if not roots:
        raise DataFormatError(f"{root}: no {' or '.join(DENSITY_DIRS[d] for d in densities)}"
                              " folder")
    for density, droot in roots:
        for material_dir in sorted(p for p in droot.iterdir() if p.is_dir()):
            _read_material_dir(material_dir, density, droot, result)
    return result


# ------------------------------------------------------------ writer
def _sample_id(sample: Sample) -> str:
    sid = sample.info.get("id")
    if sid is None or str(sid) == "":
        raise DataFormatError("every sample needs info['id'] to be written "
                              f"(source {sample.info.get('source', '?')})")
    sid = str(sid)
    if "/" in sid or os.sep in sid or sid.startswith("."):
        raise DataFormatError(f"sample id {sid!r} cannot be used as a file name")
    return sid


def _material_of(sample: Sample) -> str:
    name = sample.info.get("material") or sample.host.info.get("host")
    if name is None:
        raise DataFormatError(f"sample {sample.info.get('id')}: no info['material']")
    return host_spec(str(name)).name


def _assign_splits(samples: Sequence[Sample], split) -> dict[str, str]:
    """Id -> split name for :func:`write_2dmd` (see its ``split`` parameter)."""
    if isinstance(split, (str, os.PathLike)):
        split = read_split(split)
    if split is not None:
        out = {}
        for name in SPLITS:
            for item in split.get(name, []):
                out[_sample_id(item) if isinstance(item, Sample) else str(item)] = name
        missing = [_sample_id(s) for s in samples if _sample_id(s) not in out]
        if missing:
            raise DataFormatError(f"{len(missing)} samples are in no split, e.g. "
                                  f"{missing[:3]}")
        return out
    out = {_sample_id(s): s.info["split"] for s in samples
           if s.info.get("split") in SPLITS}
    rest = [s for s in samples if _sample_id(s) not in out]
    for name, members in split_samples(rest).items():
        out.update({_sample_id(s): name for s in members})
    return out


def _folder_unit_cell(material: str, density: str, members: list[Sample]) -> Atoms:
    """The unit cell written beside the folder; every structure must tile it."""
    if density == "high":
        c = HIGH_DENSITY_C
    else:
        cs = {round(float(s.atoms.cell.lengths()[2]), 6) for s in members}
        if len(cs) > 1:
            raise DataFormatError(f"{material} low density: structures have different "
                                  f"c lengths {sorted(cs)}; 2DMD has one unit cell")
        c = cs.pop()
    uc = unit_cell(material, vacuum=c)
    for s in members:
        try:
            supercell_matrix(s.atoms.cell.array, uc.cell.array)
        except DefiNetInputError as err:
            raise DataFormatError(
                f"sample {_sample_id(s)}: its cell is not a supercell of the built-in "
                f"{material} unit cell with c = {c} Å, as the 2DMD layout needs: {err}"
            ) from err
    return uc


def write_2dmd(samples: Iterable[Sample], root: PathLike, split=None) -> Path:
    """Write samples in the 2DMD layout.

    Parameters
    ----------
    samples : iterable of Sample
        Each needs info ``id``, ``material`` (a built-in host) and ``density``
        (``"high"`` or ``"low"``); ids become file names.
    root : path
        Created; gets ``high_density_defects/`` and/or ``low_density_defects/``.
    split : mapping, path or None
        ``{"train": [...], "val": [...], "test": [...]}`` of ids or samples (the
        output of :func:`~.splits.split_samples` or :func:`~.splits.read_split`),
        or a split JSON file. None: each sample's ``info["split"]`` where set,
        the rest split by :func:`~.splits.split_samples` with its defaults.

    Returns
    -------
    pathlib.Path
        ``root``.

    Notes
    -----
    The layout keeps positions and species only: CIF stores the cell as
    lengths and angles (standard orientation, a along x), and the host is the
    built-in unit cell (c = 20 Å at high density, the structures' c at low
    density), not a relaxed pristine supercell. The csv files of a written
    folder list exactly the samples given.
    """
    samples = list(samples)
    root = Path(root)
    assigned = _assign_splits(samples, split)
    folders: dict[tuple[str, str], list[Sample]] = {}
    for s in samples:
        density = s.info.get("density")
        if density not in DENSITY_DIRS:
            raise DataFormatError(f"sample {_sample_id(s)}: density must be 'high' or "
                                  f"'low', got {density!r}")
        folders.setdefault((density, _material_of(s)), []).append(s)
    for (density, material), members in sorted(folders.items()):
        _write_folder(root, density, material, members, assigned)
    return root


def _write_folder(root: Path, density: str, material: str, members: list[Sample],
                  assigned: dict[str, str]) -> None:
    ids = [_sample_id(s) for s in members]
    dup = [i for i, n in Counter(ids).items() if n > 1]
    if dup:
        raise DataFormatError(f"{material} {density}: ids used twice: {dup[:5]}")
    uc = _folder_unit_cell(material, density, members)
    droot = root / DENSITY_DIRS[density]
    folder = droot / (MATERIAL_DIRS[material] + ("_500" if density == "high" else ""))
    cif_dir = folder / CIF_DIRS[density]
    cif_dir.mkdir(parents=True, exist_ok=True)
    write_cif_atoms(droot / UNIT_CELL_FILES[material], uc)
    for sid, s in zip(ids, members):
        relaxed = s.atoms.copy()
        relaxed.positions = s.relaxed
        write_cif_atoms(cif_dir / f"{sid}_unrelaxed.cif", s.atoms)
        write_cif_atoms(cif_dir / f"{sid}_relaxed.cif", relaxed)
    for name in SPLITS:
        with open(folder / f"{name}.csv", "w", newline="", encoding="utf-8") as fh:
            out = csv.writer(fh)
            out.writerow(["atoms_id"])
            out.writerows([i] for i in ids if assigned[i] == name)
