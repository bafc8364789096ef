"""ASE optimizers by name, for every place that takes one (relaxer, oracle, residual study)."""
from __future__ import annotations

from ase.optimize.optimize import Optimizer


def optimizer_class(optimizer: str | type[Optimizer]) -> type[Optimizer]:
    """The ASE optimizer class named ``optimizer`` (e.g. ``"BFGS"``), or the class itself.

    Raises
    ------
    ValueError
        No optimizer of that name in :mod:`ase.optimize`.
    """
    if not isinstance(optimizer, str):
        return optimizer
    import ase.optimize
    found = getattr(ase.optimize, optimizer, None)
    if not (isinstance(found, type) and issubclass(found, Optimizer)):
        raise ValueError(f"unknown ASE optimizer {optimizer!r}")
    return found
