"""Pre-relaxation of many structures from files, in batches.

Used by ``definet relax``: reads any ASE format (multi-frame files included),
predicts in batches of ``batch_size``, optionally finishes each structure with
a calculator, and writes any ASE format. Frames are written as each batch
finishes when the output format can append (extxyz, traj), so an interrupted
run keeps what it finished.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator

from ase import Atoms
from ase.io import iread, write
from ase.io.formats import filetype, ioformats

from .inference import Predictor


def iter_structures(paths: Iterable[str | Path]) -> Iterator[Atoms]:
    """Every frame of every input file, in order."""
    for p in paths:
        yield from iread(str(p), index=":")


def relax_many(structures: Iterable[Atoms], host, predictor: Predictor,
               batch_size: int = 8, calculator=None, fmax: float = 0.05,
               steps: int = 1000, optimizer: str = "BFGS") -> Iterator[list[Atoms]]:
    """Yield batches of pre-relaxed structures (copies; inputs are not modified).

    With ``calculator`` (a name for :func:`~ase_definet.data.oracle.make_calculator`
    or an ASE calculator), each prediction is finished with residual
    ``optimizer`` steps to ``fmax``; ``atoms.info`` records the steps taken.
    """
    from .relax import DefiNetRelaxer
    calc = calculator
    if isinstance(calculator, str):
        from .data.oracle import make_calculator
        calc = make_calculator(calculator, device=str(predictor.device))
    batch: list[Atoms] = []

    def finish(items):
        if calc is None:
            preds = predictor.predict(items, host, batch_size=len(items))
            out = [a.copy() for a in items]
            for a, p in zip(out, preds):
                a.set_positions(p.positions)
                a.info["definet"] = "predicted"
            return out
        out = []
        for a in items:       # the calculator dominates: one structure at a time
            a = a.copy()
            a.calc = calc
            r = DefiNetRelaxer(a, host, model=predictor, logfile=None, optimizer=optimizer)
            a.info["definet_converged"] = r.run(fmax=fmax, steps=steps)
            a.info["definet_residual_steps"] = r.nsteps
            out.append(a)
        return out

    for atoms in structures:
        batch.append(atoms)
        if len(batch) == batch_size:
            yield finish(batch)
            batch = []
    if batch:
        yield finish(batch)


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
            write(self.path, frames, format=self.fmt, append=True)
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
