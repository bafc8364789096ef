"""Reference relaxations with an ASE calculator (the "oracle").

Protocol (NOTES.md §5): FIRE, fixed cell, fmax 0.01 eV/Å, at most 1,000 steps.
The calculator is resolved by :func:`ase_definet.calculators.make_calculator`
(a name such as ``chgnet``, ``sevenn``, ``emt``, or an importable factory
``"module:function"``).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator

from ..optimizers import optimizer_class

FMAX = 0.01
MAX_STEPS = 1000
OPTIMIZER = "FIRE"


@dataclass
class RelaxResult:
    """Outcome of one oracle relaxation."""

    positions: np.ndarray
    steps: int
    converged: bool
    energy_initial: float
    energy_final: float
    fmax_final: float
    wall_time: float


def relax(atoms: Atoms, calc: Calculator, fmax: float = FMAX,
          steps: int = MAX_STEPS, optimizer: str | type = OPTIMIZER) -> RelaxResult:
    """Relax positions at fixed cell; ``atoms`` is left untouched.

    ``optimizer`` is an ASE optimizer (name or class); the protocol's is FIRE.
    """
    work = atoms.copy()
    work.calc = calc
    t0 = time.perf_counter()
    e0 = float(work.get_potential_energy())
    opt = optimizer_class(optimizer)(work, logfile=None)
    converged = bool(opt.run(fmax=fmax, steps=steps))
    forces = work.get_forces()
    return RelaxResult(
        positions=work.get_positions(),
        steps=int(opt.nsteps),
        converged=converged,
        energy_initial=e0,
        energy_final=float(work.get_potential_energy()),
        fmax_final=float(np.sqrt((forces ** 2).sum(axis=1)).max()),
        wall_time=time.perf_counter() - t0,
    )
