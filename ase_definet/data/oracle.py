"""Reference relaxations with an ASE calculator (the "oracle").

Protocol (NOTES.md §5): FIRE, fixed cell, fmax 0.01 eV/Å, at most 1,000 steps.
The calculator is chosen by name (``chgnet``, ``sevenn``, ``emt``) or by an
importable factory ``"module:function"`` that returns an ASE calculator.
"""
from __future__ import annotations

import importlib
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator

from ..optimizers import optimizer_class

FMAX = 0.01
MAX_STEPS = 1000
OPTIMIZER = "FIRE"


def chgnet_task(properties: list[str] | None) -> str:
    """CHGNet prediction task that covers ``properties`` and nothing more.

    Energy and forces always come together (every caller here needs forces, and the
    energy is the forward pass they are differentiated from); stress and magnetic
    moments only when asked for. ``None`` means everything, as in ASE.
    """
    props = set(properties if properties is not None else ["stress", "magmoms"])
    if "magmoms" in props:
        return "efsm"  # CHGNet has no "efm" task
    return "efs" if "stress" in props else "ef"


def _chgnet(device: str = "cpu") -> Calculator:
    from chgnet.model import CHGNet, CHGNetCalculator

    class OnDemandCHGNetCalculator(CHGNetCalculator):
        """CHGNet computing only what ASE asks for.

        The stock calculator always runs task ``"efsm"``; its stress is a second
        backward pass through the whole graph, about a third of a step's time, which
        a fixed-cell relaxation throws away. Energies and forces are bit-identical.
        """

        def calculate(self, atoms=None, properties=None, system_changes=None,
                      task=None) -> None:
            super().calculate(atoms, properties, system_changes,
                              task=task or chgnet_task(properties))

    model = CHGNet.load(model_name="0.3.0", use_device=device, verbose=False)
    return OnDemandCHGNetCalculator(model=model, use_device=device)


def _sevenn(device: str = "cpu") -> Calculator:
    from sevenn.calculator import SevenNetCalculator
    return SevenNetCalculator("7net-0", device=device)


def _emt(device: str = "cpu") -> Calculator:
    from ase.calculators.emt import EMT
    return EMT()


CALCULATORS: dict[str, Callable[..., Calculator]] = {
    "chgnet": _chgnet, "sevenn": _sevenn, "emt": _emt}


def make_calculator(name: str, device: str = "cpu") -> Calculator:
    """Create an ASE calculator from a name or a ``module:function`` factory.

    Raises
    ------
    ValueError
        For an unknown name or a factory that cannot be imported.
    ImportError
        If the calculator's package (e.g. ``chgnet``) is not installed; the
        message names the pip extra that provides it.
    """
    if ":" in name:
        module, _, func = name.partition(":")
        try:
            factory = getattr(importlib.import_module(module), func)
        except (ImportError, AttributeError) as err:
            raise ValueError(f"cannot import calculator factory {name!r}: {err}") from err
        return factory()
    if name not in CALCULATORS:
        raise ValueError(f"unknown calculator {name!r}; use one of "
                         f"{', '.join(CALCULATORS)} or 'module:function'")
    try:
        return CALCULATORS[name](device)
    except ImportError as err:
        raise ImportError(f"calculator {name!r} needs its package: "
                          f"pip install 'ase_definet[{name}]' ({err})") from err


def calculator_version(name: str) -> str:
    """Package and model version string recorded with every relaxation."""
    if name == "chgnet":
        import chgnet
        return f"chgnet {chgnet.__version__}, model 0.3.0"
    if name == "sevenn":
        import sevenn
        return f"sevenn {sevenn.__version__}, model 7net-0"
    if name == "emt":
        import ase
        return f"ase {ase.__version__} EMT"
    module = name.partition(":")[0]
    mod = importlib.import_module(module.split(".")[0])
    return f"{module} {getattr(mod, '__version__', 'unknown')}"


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
