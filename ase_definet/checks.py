"""Physical sanity checks of a predicted structure.

Two checks, both cheap and O(N):

* no pair of atoms closer than ``min_distance_fraction`` × the host's shortest
  bond (default 0.6), which catches collapsed or overlapping atoms;
* no atom displaced by more than ``max_displacement`` Å (default 3.0 Å: in our
  CHGNet-relaxed high-density data the largest single-atom relaxation is 2.8 Å,
  at low density 0.2 Å).

A violation never passes silently: it is reported and the relaxer applies its
policy (keep and flag, revert to the unrelaxed positions, or hand straight to
the calculator).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from ase import Atoms
from matscipy.neighbours import neighbour_list

MIN_DISTANCE_FRACTION = 0.6
MAX_DISPLACEMENT = 3.0


@dataclass
class SanityReport:
    """Outcome of :func:`check_prediction`."""

    ok: bool
    problems: list[str] = field(default_factory=list)
    min_distance: float = float("inf")
    max_displacement: float = 0.0


def check_prediction(atoms: Atoms, unrelaxed_positions: np.ndarray, host_bond: float,
                     min_distance_fraction: float = MIN_DISTANCE_FRACTION,
                     max_displacement: float = MAX_DISPLACEMENT) -> SanityReport:
    """Check predicted positions (already in ``atoms``) against both bounds."""
    problems = []
    limit = min_distance_fraction * host_bond
    i, j, d = neighbour_list("ijd", atoms, max(limit, 1e-6))
    min_d = float(d.min()) if len(d) else float("inf")
    if len(d):
        k = int(np.argmin(d))
        problems.append(
            f"atoms {int(i[k])} and {int(j[k])} are {d[k]:.3f} Å apart, below "
            f"{min_distance_fraction:g} × the host's shortest bond ({host_bond:.3f} Å)")
    disp = np.linalg.norm(atoms.get_positions() - unrelaxed_positions, axis=1)
    max_disp = float(disp.max()) if len(disp) else 0.0
    if max_disp > max_displacement:
        k = int(np.argmax(disp))
        problems.append(f"atom {k} moved {max_disp:.3f} Å, more than "
                        f"max_displacement={max_displacement:g} Å")
    return SanityReport(not problems, problems, min_d, max_disp)
