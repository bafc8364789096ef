"""Readers and writers of defect data sets; every reader yields :class:`Sample`.

Sources
-------
generator store (:mod:`.generator_store`)
    ``DIR/samples.extxyz`` + ``DIR/hosts.extxyz`` (see :mod:`..generate`):
    :func:`load_store`.
2DMD layout (:mod:`.twodmd`)
    ``high_density_defects/`` and ``low_density_defects/`` as the reference
    code reads them: :func:`read_2dmd`, :func:`write_2dmd`.
compact single file (:mod:`.compact`)
    ``NAME.extxyz.gz`` + ``NAME.hosts.extxyz.gz`` + ``NAME.manifest.json``:
    :func:`write_compact`, :func:`read_compact`.
DFT output (:mod:`.dft`)
    anything :func:`ase.io.read` reads as several frames (ASE trajectory,
    extxyz, ``vasprun.xml``, ``OUTCAR``): :func:`read_relaxation`, and explicit
    (unrelaxed, relaxed) file pairs: :func:`read_pairs`.

:func:`load_dataset` (:mod:`.dispatch`) picks the reader from the path.
Readers of many samples return a :class:`LoadResult`: one bad sample is skipped
with a reason naming its file, and the rest still loads.
"""
from .cif_files import PBC_2D
from .compact import COMPACT_FORMAT, COMPACT_SUFFIX, read_compact, write_compact
from .dft import read_pairs, read_relaxation
from .dispatch import load_dataset
from .generator_store import STORE_HOSTS, STORE_SAMPLES, load_store
from .result import LoadResult, PathLike
from .twodmd import (CIF_DIRS, DENSITY_DIRS, HIGH_DENSITY_C, HIGH_DIR, LOW_DIR,
                     MATERIAL_DIRS, UNIT_CELL_FILES, read_2dmd, write_2dmd)

__all__ = ["CIF_DIRS", "COMPACT_FORMAT", "COMPACT_SUFFIX", "DENSITY_DIRS", "HIGH_DENSITY_C",
           "HIGH_DIR", "LOW_DIR", "LoadResult", "MATERIAL_DIRS", "PBC_2D", "PathLike",
           "STORE_HOSTS", "STORE_SAMPLES", "UNIT_CELL_FILES", "load_dataset", "load_store",
           "read_2dmd", "read_compact", "read_pairs", "read_relaxation", "write_2dmd",
           "write_compact"]
