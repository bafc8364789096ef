"""Pre-relaxation of many structures from files, in batches.

Used by ``definet relax``: reads any ASE format (multi-frame files included),
predicts in batches of ``batch_size``, optionally finishes each structure with
a calculator, and writes any ASE format. Frames are written as each batch
finishes when the output format can append (extxyz, traj), so an interrupted
run keeps what it finished.
"""
from __future__ import annotations

from pathlib import Path
from collections.abc import Iterable, Iterator

from ase import Atoms
from ase.io import iread, write
from ase.io.formats import filetype, ioformats

from .checks import MAX_DISPLACEMENT, MIN_DISTANCE_FRACTION, apply_prediction, check_policy
from .inference import Predictor


def iter_structures(paths: Iterable[str | Path]) -> Iterator[Atoms]:
    """Every frame of every input file, in order."""
    for p in paths:
        yield from iread(str(p), index=":")


def relax_many(structures: Iterable[Atoms], host, predictor: Predictor,
               batch_size: int = 8, calculator=None, fmax: float = 0.05,
               steps: int = 1000, optimizer: str = "BFGS", on_violation: str = "revert",
               min_distance_fraction: float = MIN_DISTANCE_FRACTION,
               max_displacement: float = MAX_DISPLACEMENT,
               start: str = "prediction", workers: int = 0,
               scheduler: str | None = None) -> Iterator[list[Atoms]]:
    """Yield batches of pre-relaxed structures (copies; inputs are not modified).

    Predictions pass the same sanity checks and ``on_violation`` policy as
    :class:`~ase_definet.relax.DefiNetRelaxer` (:func:`~ase_definet.checks.apply_prediction`),
    which records per structure in ``atoms.info``: ``definet`` (``"predicted"``,
    ``"kept"`` or ``"reverted"``), ``definet_vacancies``, ``definet_substitutions``,
    ``definet_max_move`` (Å) and, only when a check failed, ``definet_warnings``.

    With ``calculator`` (anything :func:`~ase_definet.calculators.make_calculator`
    accepts), each prediction is finished with residual ``optimizer`` steps to
    ``fmax``; ``atoms.info`` then also holds ``definet_residual_steps`` and
    ``definet_converged``; ``start="lower"`` begins those steps from the lower in
    energy of the prediction and the unrelaxed input (one extra calculator call;
    ``definet_start`` and both energies recorded, see ``DefiNetRelaxer``). Without
    a calculator, the outputs are the predictions.

    Predictions are made here, ``batch_size`` at a time, with or without a
    calculator. The residual steps run as jobs of :mod:`ase_definet.data.engine`
    (:mod:`ase_definet.relax_jobs`): in this process (``workers=0``), on a dask
    ``LocalCluster`` of ``workers`` processes with one thread each, or on the
    cluster of ``scheduler`` (``tcp://HOST:PORT`` or a scheduler file), which then
    need a calculator name or factory. Batches are yielded in input order either way.
    """
    from .relax import STARTS
    check_policy(on_violation)
    if start not in STARTS:
        raise ValueError(f"start must be one of {STARTS}, got {start!r}")
    if calculator is None and (workers > 0 or scheduler is not None):
        raise ValueError("workers and a scheduler run the calculator's residual steps: "
                         "give a calculator (--calculator), or neither")
    limits = dict(min_distance_fraction=min_distance_fraction,
                  max_displacement=max_displacement)

    def predict(items: list[Atoms]) -> list[Atoms]:
        out = [a.copy() for a in items]
        preds = predictor.predict(out, host, batch_size=len(out))
        for a, p in zip(out, preds):
            apply_prediction(a, p.positions, p.match, on_violation, stacklevel=3,
                             **limits, **p.uncertainty())
        return out

    batches = ((b, predict(b)) for b in _batches(structures, batch_size))
    if calculator is None:
        yield from (predicted for _, predicted in batches)
        return
    from .relax_jobs import finish_on_engine
    yield from finish_on_engine(batches, calculator, str(predictor.device),
                                predictor.threads, fmax, steps, optimizer, start,
                                workers, scheduler)


def _batches(structures: Iterable[Atoms], size: int) -> Iterator[list[Atoms]]:
    batch: list[Atoms] = []
    for atoms in structures:
        batch.append(atoms)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _extxyz_safe(atoms: Atoms) -> Atoms:
    """``definet_warnings`` as one string ("; "-joined) for (ext)xyz files.

    ASE writes a list of strings there as JSON but reads it back without its
    escapes, so "Å" in a warning came back as "u00c5"; a plain string survives.
    """
    warns = atoms.info.get("definet_warnings")
    if not isinstance(warns, list):
        return atoms
    out = atoms.copy()
    out.calc = atoms.calc       # keep energies and forces of the residual steps
    out.info["definet_warnings"] = "; ".join(map(str, warns))
    return out


class FrameWriter:
    """Write frames to one file as they come (trajectory, extxyz/xyz) or, for
    single-frame formats with several structures, to ``stem_0001.ext`` ..."""

    def __init__(self, path: str | Path, fmt: str | None = None):
        self.path = Path(path)
        self.fmt = fmt or filetype(str(self.path), read=False)
        self.single = ioformats[self.fmt].single
        self.count = 0
        self.pending: list[Atoms] = []
        self.traj = None
        if self.fmt == "traj":
            from ase.io.trajectory import Trajectory
            self.traj = Trajectory(self.path, "w")
        elif self.streaming and self.path.exists():
            self.path.unlink()

    @property
    def streaming(self) -> bool:
        return self.fmt in ("traj", "extxyz", "xyz")

    def write(self, frames: list[Atoms]) -> None:
        if self.traj is not None:
            for a in frames:
                self.traj.write(a)
        elif self.streaming:
            write(self.path, [_extxyz_safe(a) for a in frames], format=self.fmt,
                  append=True)
        else:
            self.pending += frames
        self.count += len(frames)

    def close(self) -> list[Path]:
        if self.traj is not None:
            self.traj.close()
        if self.streaming:
            return [self.path]
        if self.single and len(self.pending) > 1:
            paths = []
            for k, a in enumerate(self.pending, 1):
                p = self.path.with_name(f"{self.path.stem}_{k:04d}{self.path.suffix}")
                write(p, a, format=self.fmt)
                paths.append(p)
            return paths
        write(self.path, self.pending[0] if self.single else self.pending, format=self.fmt)
        return [self.path]
