"""Load the samples of one or more data sources, filtered by their provenance."""
from __future__ import annotations

from pathlib import Path
from collections.abc import Callable, Sequence

import numpy as np

from .formats import LoadResult, PathLike, load_dataset
from .sample import info_matches


def load_samples(sources: PathLike | Sequence[PathLike], host=None,
                 progress_note: Callable[[str], object] = print,
                 where: list[str] | None = None,
                 exclude: list[str] | None = None,
                 input_forces: PathLike | None = None) -> LoadResult:
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
    input_forces : path, optional
        An ``.npz`` of the oracle's forces at each sample's unrelaxed positions,
        one ``(n_atoms, 3)`` array (eV/Å) per sample id, as
        ``experiments/force-input/forces.py`` writes it; attached to the samples
        kept as ``atoms.arrays["unrelaxed_forces"]``, which a ``force_input``
        network reads.

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
    if input_forces is not None:
        attach_input_forces(result.samples, input_forces)
    return result


def attach_input_forces(samples, path: PathLike) -> None:
    """Attach each sample's input forces from an ``.npz`` keyed by sample id.

    Raises
    ------
    ValueError
        A sample's id is missing from the file, or its array's shape does not
        match the sample's atoms (forces of another store or atom order).
    """
    from ..encoding import FORCES_ARRAY
    with np.load(path) as f:
        have = set(f.files)
        missing = [str(s.info.get("id")) for s in samples if str(s.info.get("id")) not in have]
        if missing:
            raise ValueError(f"{path}: no forces for {len(missing)} of {len(samples)} "
                             f"samples (first: {missing[0]!r}); compute them for this "
                             f"store first")
        for s in samples:
            forces = np.asarray(f[str(s.info["id"])], dtype=float)
            if forces.shape != (len(s.atoms), 3):
                raise ValueError(f"{path}: forces of {s.info['id']!r} have shape "
                                 f"{forces.shape}, the sample has {len(s.atoms)} atoms")
            s.atoms.arrays[FORCES_ARRAY] = forces
