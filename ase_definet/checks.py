"""Physical sanity checks of a predicted structure.

Two checks, both cheap and O(N):

* no pair of atoms closer than ``min_distance_fraction`` × the host's shortest
  bond (default 0.6), which catches collapsed or overlapping atoms;
* no atom displaced by more than ``max_displacement`` Å (default 6.0 Å: in the
  2,419 converged CHGNet relaxations of the data set in ``weights/data`` the largest
  single-atom relaxation is 4.4 Å, and 11 of the 381 validation, test and holdout
  structures move an atom by more than 3 Å, so a tighter bound flags correct
  predictions).

A violation never passes silently: it is reported and :func:`apply_prediction`
applies the caller's policy (by default it restores the unrelaxed positions; it can
also keep and flag the prediction, or hand straight to the calculator). That one
function serves :class:`~ase_definet.relax.DefiNetRelaxer` and batch relaxation
(:func:`~ase_definet.batch.relax_many`, ``definet relax``) alike. Measured with the v6 weights
on those 381 structures: 4 predictions put two atoms too close, and one (an InSe
sheet with 13 of 72 In sites vacant) moved an atom by 7e7 Å, the network's
coordinate updates feeding on themselves far outside its training data.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
from ase import Atoms
from matscipy.neighbours import neighbour_list

from .labels import marker_counts
from .match import HostMatch

MIN_DISTANCE_FRACTION = 0.6
MAX_DISPLACEMENT = 6.0
#: What to do with a prediction that fails a check (see :func:`apply_prediction`).
POLICIES = ("keep", "revert", "calculator")
_ACTIONS = {"keep": "kept the prediction",
            "revert": "restored the unrelaxed positions",
            "calculator": "restored the unrelaxed positions for the calculator"}


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


def uncertainty_note(info: dict) -> str:
    """``", sigma mean 0.012 / max 0.080 Å (shrink:1)"`` from a structure's
    ``atoms.info``, or ``""`` when the prediction carries no uncertainty."""
    if "definet_sigma_mean" not in info:
        return ""
    policy = info.get("definet_policy", "none")
    held = ", withheld: input kept" if info.get("definet_withheld") else ""
    return (f", sigma mean {info['definet_sigma_mean']:.3f} / max "
            f"{info['definet_sigma_max']:.3f} Å ({policy}{held})")


def check_policy(on_violation: str) -> str:
    """Return ``on_violation`` if it is one of :data:`POLICIES`, else raise ValueError."""
    if on_violation not in POLICIES:
        raise ValueError(f"on_violation must be one of {POLICIES}, got {on_violation!r}")
    return on_violation


@dataclass
class Applied:
    """Outcome of :func:`apply_prediction` for one structure."""

    report: SanityReport
    #: positions left in ``atoms`` (the prediction, or the unrelaxed ones if reverted)
    positions: np.ndarray
    #: the warning text issued, or None when the checks passed
    warning: str | None = None


def apply_prediction(atoms: Atoms, predicted: np.ndarray, match: HostMatch,
                     on_violation: str = "revert",
                     min_distance_fraction: float = MIN_DISTANCE_FRACTION,
                     max_displacement: float = MAX_DISPLACEMENT,
                     stacklevel: int = 2, sigma: np.ndarray | None = None,
                     policy: str = "none", withheld: bool = False) -> Applied:
    """Write a prediction into ``atoms``, check it and apply the violation policy.

    The one place where a DefiNet prediction reaches a structure: positions are
    set with ``Atoms.set_positions`` (constraints such as ``FixAtoms`` hold), the
    checks run on the result, and a failure warns (``UserWarning``) and follows
    ``on_violation``: ``"keep"`` the flagged prediction, or ``"revert"`` /
    ``"calculator"`` to the unrelaxed positions.

    ``atoms.info`` records, per structure:

    ``definet``
        ``"predicted"``, ``"kept"`` (flagged but kept) or ``"reverted"``;
    ``definet_vacancies``, ``definet_substitutions``
        defects found by host matching;
    ``definet_max_move``
        largest displacement of the prediction in Å (also when reverted);
    ``definet_warnings``
        list of the failed checks, present only when there is one (extxyz cannot
        store an empty list; :class:`~ase_definet.batch.FrameWriter` writes it to
        (ext)xyz files as one "; "-joined string);
    ``definet_sigma_mean``, ``definet_sigma_max``, ``definet_policy``, ``definet_withheld``
        an ensemble's uncertainty summary (Å) and policy, present only with
        ``sigma``; the per-atom sigma goes to ``atoms.arrays["definet_sigma"]``.

    Parameters
    ----------
    atoms : ase.Atoms
        The unrelaxed structure; modified in place.
    predicted : numpy.ndarray
        Predicted positions of its atoms, ``(len(atoms), 3)``.
    match : HostMatch
        The host match of the prediction (defect counts, host bond).
    on_violation : {"keep", "revert", "calculator"}
    min_distance_fraction, max_displacement : float
        Bounds of :func:`check_prediction`.
    stacklevel : int
        Of the warning, counted from the caller of this function.
    sigma : numpy.ndarray, optional
        Per-atom uncertainty (Å) of an ensemble prediction, ``(len(atoms),)``.
    policy : str
        Name of the uncertainty policy that made ``predicted``.
    withheld : bool
        The policy kept the input positions.
    """
    check_policy(on_violation)
    unrelaxed = atoms.get_positions()
    atoms.set_positions(predicted)                 # honours FixAtoms & co.
    report = check_prediction(atoms, unrelaxed, match.host_bond,
                              min_distance_fraction, max_displacement)
    counts = marker_counts(match)
    # stale records from an earlier run
    for key in ("definet_warnings", "definet_sigma_mean", "definet_sigma_max",
                "definet_policy", "definet_withheld"):
        atoms.info.pop(key, None)
    atoms.arrays.pop("definet_sigma", None)
    if sigma is not None:
        sigma = np.asarray(sigma, dtype=float)
        if sigma.shape != (len(atoms),):
            raise ValueError(f"sigma has shape {sigma.shape}, expected ({len(atoms)},)")
        atoms.arrays["definet_sigma"] = sigma
        atoms.info.update(definet_sigma_mean=float(sigma.mean()) if len(sigma) else 0.0,
                          definet_sigma_max=float(sigma.max()) if len(sigma) else 0.0,
                          definet_policy=policy, definet_withheld=bool(withheld))
    atoms.info.update(definet="predicted", definet_vacancies=counts["vacancies"],
                      definet_substitutions=counts["substitutions"],
                      definet_max_move=report.max_displacement)
    if report.ok:
        return Applied(report, atoms.get_positions())
    text = (f"DefiNet prediction failed sanity checks ({'; '.join(report.problems)}); "
            f"{_ACTIONS[on_violation]}")
    warnings.warn(text, stacklevel=stacklevel + 1)
    atoms.info["definet_warnings"] = list(report.problems)
    if on_violation == "keep":
        atoms.info["definet"] = "kept"
    else:
        atoms.set_positions(unrelaxed)
        atoms.info["definet"] = "reverted"
    return Applied(report, atoms.get_positions(), text)
