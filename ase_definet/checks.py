"""Physical sanity checks of a predicted structure.

Two checks, both cheap and O(N):

* no pair of atoms closer than ``min_distance_fraction`` × the host's shortest
  bond (default 0.6), which catches collapsed or overlapping atoms;
* no atom displaced by more than ``max_displacement`` Å (default 6.0 Å: in the
  2,419 converged CHGNet relaxations of the data set in ``weights/data`` the largest
  single-atom relaxation is 4.4 Å, and 11 of the 381 validation, test and holdout
  structures move an atom by more than 3 Å, so a tighter bound flags correct
  predictions).

A violation never passes silently: it is reported and the relaxer applies its
policy (by default it restores the unrelaxed positions; it can also keep and flag
the prediction, or hand straight to the calculator). Measured with the v6 weights
on those 381 structures: 4 predictions put two atoms too close, and one (an InSe
sheet with 13 of 72 In sites vacant) moved an atom by 7e7 Å, the network's
coordinate updates feeding on themselves far outside its training data.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from ase import Atoms
from matscipy.neighbours import neighbour_list

MIN_DISTANCE_FRACTION = 0.6
MAX_DISPLACEMENT = 6.0


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
