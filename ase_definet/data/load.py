"""Load the samples of one or more data sources, filtered by their provenance."""
from __future__ import annotations

from pathlib import Path
from collections.abc import Callable, Sequence

from .formats import LoadResult, PathLike, load_dataset
from .sample import info_matches


def load_samples(sources: PathLike | Sequence[PathLike], host=None,
                 progress_note: Callable[[str], object] = print,
                 where: list[str] | None = None,
                 exclude: list[str] | None = None) -> LoadResult:
    """Load and concatenate samples from one or more data sources.

    Parameters
    ----------
    sources : path or sequence of paths
        Anything :func:`.formats.load_dataset` reads.
    host : ase.Atoms, path or str, optional
        Passed to :func:`.formats.load_dataset` (needed for relaxation files).
    progress_note : callable
        Receives the load summary when something was skipped or duplicated.
    where : list of str, optional
        Keep samples whose ``info`` matches every ``KEY=VALUE``.
    exclude : list of str, optional
        Drop samples matching any one ``KEY=VALUE`` (e.g. a held-out
        ``supercell=12x12`` scalability set).

    Returns
    -------
    LoadResult
    """
    result = LoadResult([])
    for src in ([sources] if isinstance(sources, (str, Path)) else sources):
        result.extend(load_dataset(src, host=host))
    if result.skipped or result.duplicates:
        progress_note(result.summary())
    if where:
        result.samples = [s for s in result.samples if info_matches(s.info, where)]
    if exclude:
        result.samples = [s for s in result.samples
                          if not any(info_matches(s.info, [c]) for c in exclude)]
    return result
