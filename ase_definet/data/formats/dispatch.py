"""Pick the reader of a data source from its path: :func:`load_dataset`."""
from __future__ import annotations

from pathlib import Path

from ...errors import DataFormatError
from .compact import COMPACT_SUFFIX, compact_paths, read_compact
from .dft import read_relaxation
from .generator_store import STORE_HOSTS, STORE_SAMPLES, load_store
from .result import LoadResult, PathLike
from .twodmd import DENSITY_DIRS, HIGH_DIR, LOW_DIR, read_2dmd


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
    if path.name.endswith(COMPACT_SUFFIX) and compact_paths(path)[2].exists():
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
