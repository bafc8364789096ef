"""The generator store: ``DIR/samples.extxyz`` + ``DIR/hosts.extxyz`` (see :mod:`..generate`)."""
from __future__ import annotations

from pathlib import Path

from ase import Atoms

from ...errors import DataFormatError
from ..sample import Sample, unwrap_relaxed
from ..store import read_frames
from .result import LoadResult, PathLike

STORE_SAMPLES = ("samples.extxyz", "samples.extxyz.gz")
STORE_HOSTS = ("hosts.extxyz", "hosts.extxyz.gz")


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
