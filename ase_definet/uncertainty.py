"""Per-atom uncertainty of an ensemble prediction and the do-no-harm policy.

Sigma
    The sample standard deviation of the members' displacement vectors of an
    atom, ``sqrt(sum_k |d_k - d_mean|^2 / (K - 1))`` in Å, times the card's
    calibration ``scale`` (fitted on the validation split so that 95 % of atoms
    err by less than 2 sigma; 1 when the card has none). It is a length, so it
    is invariant under rotations and translations and follows a permutation of
    the atoms; a calibrated sigma is the root-mean-square error norm expected
    for the atom.

Policies (``uncertainty_policy``)
    ``"none"``
        the raw ensemble mean;
    ``"shrink:L"``
        each atom's displacement shortened by ``L`` sigma, and set to zero when it
        is shorter than that: ``d * max(0, 1 - L sigma / |d|)``;
    ``"withhold:T"``
        the whole structure keeps its input positions when its mean sigma exceeds
        ``T`` times its mean displacement length;
    ``"shrink:L+withhold:T"``
        both (withholding decided on the unshrunk prediction).

    No policy moves an atom farther than the raw prediction does. The shipped
    model's card names the policy chosen on its validation split
    (``experiments/ensemble/README.md`` has the rule).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

#: Coverage the calibration scale is fitted to (share of atoms within 2 sigma).
TARGET_COVERAGE = 0.95

_TERM = re.compile(r"^(shrink|withhold):([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)$")


@dataclass(frozen=True)
class Policy:
    """A parsed ``uncertainty_policy``: ``shrink`` = L, ``withhold`` = T (None: off)."""

    shrink: float | None = None
    withhold: float | None = None

    @property
    def name(self) -> str:
        terms = [f"{k}:{v:g}" for k, v in (("shrink", self.shrink),
                                           ("withhold", self.withhold)) if v is not None]
        return "+".join(terms) or "none"

    def apply(self, disp: np.ndarray, sigma: np.ndarray) -> tuple[np.ndarray, bool]:
        """The displacements after the policy, and whether the structure was withheld.

        Parameters
        ----------
        disp : (N, 3) array
            Raw (ensemble-mean) displacements of the real atoms.
        sigma : (N,) array
            Calibrated per-atom sigma in Å.
        """
        disp = np.asarray(disp, dtype=float)
        sigma = np.asarray(sigma, dtype=float)
        length = np.linalg.norm(disp, axis=1)
        if self.withhold is not None and len(sigma) and \
                sigma.mean() > self.withhold * length.mean():
            return np.zeros_like(disp), True
        if self.shrink is not None:
            with np.errstate(divide="ignore", invalid="ignore"):
                factor = np.where(length > 0, 1.0 - self.shrink * sigma / length, 0.0)
            disp = disp * np.clip(factor, 0.0, 1.0)[:, None]
        return disp, False


def parse_policy(spec: str | Policy | None) -> Policy:
    """Parse ``"none"``, ``"shrink:L"``, ``"withhold:T"`` or ``"shrink:L+withhold:T"``.

    Raises
    ------
    ValueError
        For any other text, or a negative parameter.
    """
    if isinstance(spec, Policy):
        return spec
    if spec is None or str(spec).strip() in ("", "none"):
        return Policy()
    values: dict[str, float] = {}
    for term in str(spec).replace(" ", "").split("+"):
        m = _TERM.match(term)
        if not m or m.group(1) in values:
            raise ValueError(
                f"unknown uncertainty_policy {spec!r}: use 'none', 'shrink:L', "
                "'withhold:T' or 'shrink:L+withhold:T' with numbers L, T >= 0")
        values[m.group(1)] = float(m.group(2))
    return Policy(values.get("shrink"), values.get("withhold"))


def member_sigma(member_disp: np.ndarray) -> np.ndarray:
    """Uncalibrated per-atom sigma (Å) of member displacements ``(K, N, 3)``."""
    d = np.asarray(member_disp, dtype=float)
    if d.ndim != 3 or d.shape[0] < 2 or d.shape[2] != 3:
        raise ValueError(f"member displacements must be (K >= 2, N, 3), got {d.shape}")
    spread = d - d.mean(axis=0, keepdims=True)
    return np.sqrt((spread ** 2).sum(axis=(0, 2)) / (d.shape[0] - 1))


# ------------------------------------------------------------------ calibration
def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation (average ranks for ties); NaN for fewer than 3 pairs."""
    from scipy.stats import spearmanr
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 3:
        return float("nan")
    return float(spearmanr(a, b).statistic)


def fit_scale(errors: np.ndarray, sigma: np.ndarray,
              coverage: float = TARGET_COVERAGE) -> float:
    """The factor s for which a share ``coverage`` of atoms has ``|error| <= 2 s sigma``.

    ``errors`` are (M, 3) error vectors; atoms with zero sigma are left out (no
    scale covers them).
    """
    errors = np.linalg.norm(np.asarray(errors, float).reshape(-1, 3), axis=1)
    sigma = np.asarray(sigma, float)
    ok = sigma > 0
    if not ok.any():
        raise ValueError("every sigma is zero: the members agree exactly; nothing to fit")
    return float(np.quantile(errors[ok] / (2.0 * sigma[ok]), coverage))


def calibration(errors: np.ndarray, sigma: np.ndarray, structure: np.ndarray,
                scale: float = 1.0, bins: int = 10) -> dict:
    """Calibration of per-atom sigma against per-atom error norms.

    Parameters
    ----------
    errors : (M, 3) array
        Error vector (predicted - relaxed) of every real atom (Å).
    sigma : (M,) array
        Uncalibrated sigma of the same atoms.
    structure : (M,) int array
        Index of each atom's structure.
    scale : float
        Calibration factor applied to sigma.
    bins : int
        Quantile bins of sigma for the reliability curve.

    Returns
    -------
    dict
        ``spearman`` (per-structure mean sigma against per-structure MAE, the
        mean absolute coordinate error), ``coverage_2sigma`` (share of atoms whose
        error norm is <= 2 scale sigma),
        ``scale``, ``n_atoms``, ``n_structures`` and ``reliability``: per bin the
        mean calibrated sigma and the root-mean-square error norm (equal when
        calibrated).
    """
    vectors = np.asarray(errors, float).reshape(-1, 3)
    errors = np.linalg.norm(vectors, axis=1)
    sigma = scale * np.asarray(sigma, float)
    structure = np.asarray(structure, int)
    if not (len(errors) == len(sigma) == len(structure)):
        raise ValueError("errors, sigma and structure must have one entry per atom")
    ids, inv = np.unique(structure, return_inverse=True)
    counts = np.bincount(inv)
    mean_sigma = np.bincount(inv, sigma) / counts
    mae = np.bincount(inv, np.abs(vectors).mean(axis=1)) / counts
    edges = np.unique(np.quantile(sigma, np.linspace(0, 1, bins + 1)))
    which = np.clip(np.searchsorted(edges, sigma, side="right") - 1, 0, len(edges) - 2)
    reliability = []
    for b in range(len(edges) - 1):
        sel = which == b
        if sel.any():
            reliability.append({"sigma": float(sigma[sel].mean()),
                                "rms_error": float(np.sqrt((errors[sel] ** 2).mean())),
                                "n": int(sel.sum())})
    return {"spearman": spearman(mean_sigma, mae),
            "coverage_2sigma": float((errors <= 2.0 * sigma).mean()),
            "scale": float(scale), "n_atoms": int(len(errors)),
            "n_structures": int(len(ids)), "reliability": reliability}
