"""Readers and writers of defect data sets; every reader yields :class:`Sample`.

Sources
-------
generator store
    ``DIR/samples.extxyz`` + ``DIR/hosts.extxyz`` (see :mod:`.generate`):
    :func:`load_store`.
2DMD layout
    ``high_density_defects/`` and ``low_density_defects/`` as the reference
    code reads them: :func:`read_2dmd`, :func:`write_2dmd`.
compact single file
    ``NAME.extxyz.gz`` (one frame per sample, per-atom array
    ``relaxed_positions``, provenance in the frame info, ``host_ref`` = index of
    the host frame), ``NAME.hosts.extxyz.gz`` (each distinct host once) and
    ``NAME.manifest.json`` (counts per material/density and the sha256 of both
    data files): :func:`write_compact`, :func:`read_compact`.
DFT output
    anything :func:`ase.io.read` reads as several frames (ASE trajectory,
    extxyz, ``vasprun.xml``, ``OUTCAR``): :func:`read_relaxation`, and explicit
    (unrelaxed, relaxed) file pairs: :func:`read_pairs`.

:func:`load_dataset` picks the reader from the path. Readers of many samples
return a :class:`LoadResult`: one bad sample is skipped with a reason naming
its file, and the rest still loads.
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Sequence

import numpy as np
from ase import Atoms
from ase.io import read, write
from ase.io.extxyz import key_val_dict_to_str, key_val_str_to_dict

from ..errors import DataFormatError, DefiNetInputError
from ..match import resolve_host, supercell_matrix
from .cif import read_cif
from .hosts import host_spec, unit_cell
from .sample import Sample, unwrap_relaxed
from .splits import SPLITS, read_split, split_samples
from .store import read_frames, write_gz

PathLike = str | os.PathLike

# ------------------------------------------------------------ 2DMD names
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
#: 2DMD holds monolayers with vacuum along c: periodic in-plane only.
PBC_2D = (True, True, False)

COMPACT_SUFFIX = ".extxyz.gz"
COMPACT_FORMAT = "ase_definet compact v1"
STORE_SAMPLES = ("samples.extxyz", "samples.extxyz.gz")
STORE_HOSTS = ("hosts.extxyz", "hosts.extxyz.gz")
# Files whose name says nothing about the structure: the id is the folder name.
_GENERIC_NAMES = {"OUTCAR", "vasprun.xml", "XDATCAR", "CONTCAR", "POSCAR"}


@dataclass
class LoadResult:
    """What a reader loaded, what it skipped and why.

    Attributes
    ----------
    samples : list of Sample
        The samples that loaded.
    skipped : list of (str, str)
        (name, reason) of each sample kept out; the reason names the file.
    duplicates : list of str
        Ids that the source listed more than once (each loaded once).
    """

    samples: list[Sample] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.samples)

    def __iter__(self) -> Iterator[Sample]:
        return iter(self.samples)

    def extend(self, other: "LoadResult") -> "LoadResult":
        """Append another result's samples, skips and duplicates; returns self."""
        self.samples += other.samples
        self.skipped += other.skipped
        self.duplicates += other.duplicates
        return self

    @property
    def not_converged(self) -> int:
        """Number of samples kept out because the oracle did not converge."""
        return sum(reason.startswith("not converged") for _, reason in self.skipped)

    def summary(self, max_reasons: int = 5) -> str:
        """A few lines for logs: counts per group, skips with reasons, duplicates."""
        groups = Counter(s.group for s in self.samples)
        parts = ", ".join(f"{g} {n}" for g, n in sorted(groups.items()))
        lines = [f"loaded {len(self.samples)} samples" + (f" ({parts})" if parts else "")]
        if self.skipped:
            other = len(self.skipped) - self.not_converged
            lines.append(f"skipped {len(self.skipped)}: {self.not_converged} not "
                         f"converged, {other} unreadable or inconsistent")
            shown = [(n, r) for n, r in self.skipped if not r.startswith("not converged")]
            lines += [f"  {n}: {r}" for n, r in shown[:max_reasons]]
            if len(shown) > max_reasons:
                lines.append(f"  ... and {len(shown) - max_reasons} more")
        if self.duplicates:
            head = ", ".join(self.duplicates[:max_reasons])
            more = "" if len(self.duplicates) <= max_reasons else ", ..."
            lines.append(f"{len(self.duplicates)} ids listed more than once, each "
                         f"loaded once: {head}{more}")
        return "\n".join(lines)


# ------------------------------------------------------------ generator store
def _store_files(path: Path) -> tuple[Path, Path]:
    """(samples file, hosts file) of a store folder or a samples file."""
    if path.is_dir():
        found = [path / n for n in STORE_SAMPLES if (path / n).exists()]
        if not found:
            raise DataFormatError(f"{path}: no {' or '.join(STORE_SAMPLES)} in this folder")
        samples, folder = found[0], path
    else:
        samples, folder = path, path.parent
    hosts = [folder / n for n in STORE_HOSTS if (folder / n).exists()]
    if not hosts:
        raise DataFormatError(f"{samples}: no {' or '.join(STORE_HOSTS)} beside it "
                              "(the relaxed pristine hosts)")
    return samples, hosts[0]


def load_store(path: PathLike) -> LoadResult:
    """Load a generator store: converged frames become samples.

    Parameters
    ----------
    path : path
        A folder holding ``samples.extxyz`` (or ``.gz``) and ``hosts.extxyz``,
        or a samples file with ``hosts.extxyz`` beside it.

    Returns
    -------
    LoadResult
        Non-converged frames are skipped with the reason ``"not converged ..."``;
        an id met twice is loaded once and listed in ``duplicates``.
    """
    samples_file, hosts_file = _store_files(Path(path))
    hosts = {}
    for h in read_frames(hosts_file):
        h.calc = None
        hosts.setdefault(h.info.get("host_key"), h)
    result = LoadResult()
    seen: set[str] = set()
    for k, frame in enumerate(read_frames(samples_file)):
        name = str(frame.info.get("id", f"{samples_file}#{k}"))
        if name in seen:
            result.duplicates.append(name)
            continue
        seen.add(name)
        try:
            result.samples.append(_store_sample(frame, hosts, samples_file, hosts_file))
        except DataFormatError as err:
            result.skipped.append((name, str(err)))
    return result


def _store_sample(frame: Atoms, hosts: dict, samples_file: Path,
                  hosts_file: Path) -> Sample:
    info = dict(frame.info)
    if not info.get("converged", False):
        raise DataFormatError(f"not converged after {info.get('steps', '?')} steps "
                              f"({samples_file})")
    key = info.get("host_key")
    if key not in hosts:
        raise DataFormatError(f"{samples_file}: host_key {key!r} is not in {hosts_file}")
    if "relaxed_positions" not in frame.arrays:
        raise DataFormatError(f"{samples_file}: frame has no relaxed_positions array")
    atoms = frame.copy()
    atoms.calc = None
    relaxed = atoms.arrays.pop("relaxed_positions")
    info["source"] = str(samples_file)
    atoms.info = {}
    return Sample(atoms, unwrap_relaxed(atoms, relaxed), hosts[key], info)


# ------------------------------------------------------------ CIF
def _read_cif(path: Path, pbc=PBC_2D) -> Atoms:
    """One structure from a CIF file, positions as written (not wrapped).

    P1 files (2DMD, ours) are read site by site (:func:`.cif.read_cif`), so
    coordinates outside [0, 1) survive. CIF has no notion of vacuum, so
    ``pbc`` is set by the caller.
    """
    try:
        atoms = read_cif(path)
    except StopIteration:
        raise DataFormatError(f"{path}: no structure in this CIF file") from None
    except Exception as err:  # ASE's parser raises many types on garbage input
        raise DataFormatError(f"{path}: unreadable CIF ({type(err).__name__}: {err})") \
            from err
    if len(atoms) == 0:
        raise DataFormatError(f"{path}: the CIF file holds no atoms")
    atoms.pbc = pbc
    return atoms


def _write_cif(path: Path, atoms: Atoms) -> None:
    # wrap=False keeps coordinates outside [0, 1) so the round trip is exact.
    plain = Atoms(numbers=atoms.numbers, positions=atoms.get_positions(),
                  cell=atoms.cell, pbc=atoms.pbc)
    write(path, plain, format="cif", wrap=False)


# ------------------------------------------------------------ 2DMD reader
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
    uc = _read_cif(path)
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
    unrelaxed, relaxed = _read_cif(u), _read_cif(r)
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


# ------------------------------------------------------------ 2DMD writer
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
    _write_cif(droot / UNIT_CELL_FILES[material], uc)
    for sid, s in zip(ids, members):
        relaxed = s.atoms.copy()
        relaxed.positions = s.relaxed
        _write_cif(cif_dir / f"{sid}_unrelaxed.cif", s.atoms)
        _write_cif(cif_dir / f"{sid}_relaxed.cif", relaxed)
    for name in SPLITS:
        with open(folder / f"{name}.csv", "w", newline="", encoding="utf-8") as fh:
            out = csv.writer(fh)
            out.writerow(["atoms_id"])
            out.writerows([i] for i in ids if assigned[i] == name)


# ------------------------------------------------------------ compact form
def _compact_paths(path: PathLike) -> tuple[Path, Path, Path]:
    """(samples, hosts, manifest) paths of a compact data set."""
    path = Path(path)
    name = path.name
    if name.endswith(".manifest.json"):
        stem = name[: -len(".manifest.json")]
    elif name.endswith(COMPACT_SUFFIX):
        stem = name[: -len(COMPACT_SUFFIX)]
    else:
        raise DataFormatError(f"{path}: a compact data set is NAME{COMPACT_SUFFIX} "
                              "(or NAME.manifest.json)")
    d = path.parent
    return (d / f"{stem}{COMPACT_SUFFIX}", d / f"{stem}.hosts{COMPACT_SUFFIX}",
            d / f"{stem}.manifest.json")


def _roundtrips(value: str) -> bool:
    """Whether extxyz reads this string back as the same string."""
    try:
        back = key_val_str_to_dict(key_val_dict_to_str({"k": value})).get("k")
    except Exception:  # any parse failure means: encode it
        return False
    return isinstance(back, str) and back == value


def _encode_info(info: Mapping) -> dict:
    """Info values extxyz can carry losslessly.

    Strings extxyz would turn into numbers or booleans ("00012", "T"), empty
    strings, None, lists and dicts are stored as ``_JSON ...`` strings, which
    ASE's reader decodes (numeric lists come back as numpy arrays, ASE's
    convention).
    """
    out = {}
    for key, v in info.items():
        if isinstance(v, np.generic):
            v = v.item()
        if isinstance(v, (bool, int, float, np.ndarray)):
            out[key] = v
        elif isinstance(v, str) and _roundtrips(v):
            out[key] = v
        elif isinstance(v, (str, list, tuple, dict)) or v is None:
            out[key] = "_JSON " + json.dumps(v, default=str)
        else:
            out[key] = str(v)
    return out


def _decode_info(info: Mapping) -> dict:
    return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in info.items()}


def _content_key(atoms: Atoms) -> bytes:
    return b"".join(np.ascontiguousarray(a, dtype=float).tobytes() for a in
                    (atoms.numbers, atoms.get_positions(), atoms.cell.array, atoms.pbc))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_compact(samples: Iterable[Sample], path: PathLike) -> Path:
    """Write samples as one compact, deterministic data set.

    Parameters
    ----------
    samples : iterable of Sample
    path : path
        ``NAME.extxyz.gz``. Beside it: ``NAME.hosts.extxyz.gz`` (each distinct
        host once; a sample's info ``host_ref`` is the index of its host there)
        and ``NAME.manifest.json`` (format, counts per material/density, sha256
        of both data files).

    Returns
    -------
    pathlib.Path
        The manifest path.
    """
    samples = list(samples)
    spath, hpath, mpath = _compact_paths(path)
    hosts: list[Atoms] = []
    refs: dict[bytes, int] = {}
    frames = []
    for s in samples:
        ref = refs.setdefault(_content_key(s.host), len(hosts))
        if ref == len(hosts):
            h = s.host.copy()
            h.calc = None
            h.info = _encode_info(s.host.info)
            hosts.append(h)
        atoms = s.atoms.copy()
        atoms.calc = None
        atoms.arrays["relaxed_positions"] = np.asarray(s.relaxed, float)
        atoms.info = _encode_info({**s.info, "host_ref": ref})
        frames.append(atoms)
    spath.parent.mkdir(parents=True, exist_ok=True)
    write_gz(spath, frames)
    write_gz(hpath, hosts)
    manifest = {
        "format": COMPACT_FORMAT, "samples": spath.name, "hosts": hpath.name,
        "structures": len(frames), "distinct_hosts": len(hosts),
        "groups": dict(sorted(Counter(s.group for s in samples).items())),
        "sha256": {spath.name: _sha256(spath), hpath.name: _sha256(hpath)},
    }
    tmp = mpath.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, mpath)
    return mpath


def read_compact(path: PathLike) -> LoadResult:
    """Read a data set written by :func:`write_compact`.

    Parameters
    ----------
    path : path
        ``NAME.extxyz.gz`` or ``NAME.manifest.json``.

    Raises
    ------
    DataFormatError
        If a file is missing or its sha256 differs from the manifest (modified
        or truncated data).
    """
    spath, hpath, mpath = _compact_paths(path)
    for p in (spath, hpath, mpath):
        if not p.exists():
            raise DataFormatError(f"{p}: missing (part of the compact data set {spath})")
    manifest = json.loads(mpath.read_text(encoding="utf-8"))
    for p in (spath, hpath):
        want = manifest.get("sha256", {}).get(p.name)
        if want is not None and want != _sha256(p):
            raise DataFormatError(f"{p}: sha256 differs from {mpath.name}; the file was "
                                  "modified or truncated")
    hosts = []
    for h in read_frames(hpath):
        h.calc = None
        h.info = _decode_info(h.info)
        hosts.append(h)
    result = LoadResult()
    for k, frame in enumerate(read_frames(spath)):
        info = _decode_info(frame.info)
        ref = info.pop("host_ref", None)
        name = str(info.get("id", f"{spath}#{k}"))
        if not isinstance(ref, int) or not 0 <= ref < len(hosts):
            result.skipped.append((name, f"{spath}: frame {k} has no valid host_ref"))
            continue
        atoms = frame.copy()
        atoms.calc = None
        atoms.info = {}
        relaxed = atoms.arrays.pop("relaxed_positions")
        info.setdefault("source", str(spath))
        result.samples.append(Sample(atoms, relaxed, hosts[ref], info))
    if len(result.samples) + len(result.skipped) != manifest.get("structures", -1):
        raise DataFormatError(f"{spath}: holds {len(result.samples) + len(result.skipped)} "
                              f"frames, {mpath.name} says {manifest.get('structures')}")
    return result


# ------------------------------------------------------------ DFT output
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
        return _read_cif(path, pbc=True)
    try:
        return read(path, index=index)
    except Exception as err:  # ASE raises many types on unreadable input
        raise DataFormatError(f"{path}: unreadable ({type(err).__name__}: {err})") from err


# ------------------------------------------------------------ dispatch
def _is_2dmd(path: Path) -> bool:
    return path.name in DENSITY_DIRS.values() or any(
        (path / d).is_dir() for d in DENSITY_DIRS.values())


def load_dataset(source: PathLike, host=None) -> LoadResult:
    """Load any supported source, chosen from the path.

    =====================================================  ===================
    source                                                  reader
    =====================================================  ===================
    folder with ``samples.extxyz``                          :func:`load_store`
    folder with / named ``high_density_defects`` or         :func:`read_2dmd`
    ``low_density_defects``
    ``NAME.extxyz.gz`` with ``NAME.manifest.json``          :func:`read_compact`
    samples file with ``hosts.extxyz`` beside it            :func:`load_store`
    any other file (needs ``host``)                         :func:`read_relaxation`
    =====================================================  ===================
    """
    path = Path(source)
    if not path.exists():
        raise DataFormatError(f"{path}: no such file or folder")
    if path.is_dir():
        if any((path / n).exists() for n in STORE_SAMPLES):
            return load_store(path)
        if _is_2dmd(path):
            return read_2dmd(path)
        raise DataFormatError(
            f"{path}: not a data folder (expected {STORE_SAMPLES[0]}, {HIGH_DIR} or "
            f"{LOW_DIR})")
    if path.name.endswith(COMPACT_SUFFIX) and _compact_paths(path)[2].exists():
        return read_compact(path)
    if path.name.endswith(".manifest.json"):
        return read_compact(path)
    if path.name in STORE_SAMPLES and any((path.parent / n).exists() for n in STORE_HOSTS):
        return load_store(path)
    if host is None:
        raise DataFormatError(
            f"{path}: not a data set this package recognises (store, 2DMD, compact); "
            "to read it as a relaxation trajectory, give the host")
    return LoadResult([read_relaxation(path, host)])
