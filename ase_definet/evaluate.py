"""Test-set evaluation: DefiNet against the Dummy baseline (NOTES.md §3–4).

For every structure the coordinate MAE and A_3 … A_6 (:mod:`ase_definet.metrics`)
are computed for the model's prediction and for the Dummy (the unrelaxed
structure taken as the prediction). Metrics are averaged per structure
(``NaN`` entries skipped), overall and per ``material/density`` group, and the
improvement over the Dummy is ``100 (dummy - model) / dummy`` in %.

Report layout (plain dict, JSON-ready through :func:`save_report`)::

    {"overall": {"model": {"mae", "a3", "a4", "a5", "a6"}, "dummy": {...},
                 "improvement": {...}, "n": N,
                 "worse_than_dummy": {"n": k, "share": k / N}},
     "groups": {"MoS2/low": {same}, ...},
     "strata": {"MoS2/high": {"by", "rows": {"2.5 %": {same}, ...}, "balanced": {...}}},
     "per_structure": [{"id", "group", "fraction", "n_atoms", "n_defects",
                        "model": {...}, "dummy": {...}}, ...],
     "radii": [3, 4, 5, 6], "units": {...}, "timings": {...}}

``worse_than_dummy`` counts the structures whose model MAE exceeds the Dummy's;
``strata`` splits each group by concentration (:mod:`ase_definet.breakdown`).
"""
from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .breakdown import strata, strata_text, worse_than_dummy
from .data.sample import Sample, minimum_image
from .metrics import (RADII, average_metrics, defect_distances, improvement,
                      metric_keys, structure_metrics)
from .textfmt import fmt_num


# ---------------------------------------------------------------- prediction
def _batches(items: Iterable, size: int) -> Iterable[list]:
    it = iter(items)
    while chunk := list(itertools.islice(it, max(1, size))):
        yield chunk


def predict_samples(predictor, samples: Iterable[Sample], batch_size: int = 8,
                    progress: bool = True) -> tuple[list[Sample], list]:
    """Run ``predictor.predict`` over samples in batches, with a progress bar.

    Parameters
    ----------
    predictor : object with ``predict(atoms_list, hosts, batch_size=...)``
        Normally a :class:`~ase_definet.inference.Predictor`; it returns one
        object per structure with ``positions`` (and optionally ``match`` and
        ``timings``).
    samples : iterable of Sample
        May be lazy (a data source); it is consumed once.

    Returns
    -------
    samples, predictions : list, list
        The samples as a list and the matching prediction objects.
    """
    from tqdm.auto import tqdm
    total = len(samples) if hasattr(samples, "__len__") else None
    kept: list[Sample] = []
    preds: list = []
    with tqdm(total=total, disable=not progress, desc="evaluate", unit="struct") as bar:
        for chunk in _batches(samples, batch_size):
            preds += predictor.predict([s.atoms for s in chunk], [s.host for s in chunk],
                                       batch_size=batch_size)
            kept += chunk
            bar.update(len(chunk))
    return kept, preds


def _positions(pred) -> np.ndarray:
    return np.asarray(getattr(pred, "positions", pred), float)


def _fraction(sample: Sample, pred) -> float:
    """Defect concentration: the recorded ``info["fraction"]``, else defect sites per
    host site (2DMD's own files record no fraction)."""
    if sample.info.get("fraction") is not None:
        return float(sample.info["fraction"])
    match = getattr(pred, "match", None) or sample.match
    return len(match.defect_positions) / max(len(match.host), 1)


def _defect_positions(sample: Sample, pred) -> np.ndarray:
    # The predictor already matched the structure; reuse it rather than match twice.
    match = getattr(pred, "match", None) or sample.match
    return match.defect_positions


# ---------------------------------------------------------------- metrics
def structure_record(sample: Sample, pred, radii: Sequence[float] = RADII) -> dict:
    """Model and Dummy metrics of one structure, with its labels."""
    defects = _defect_positions(sample, pred)
    true = sample.relaxed
    return {
        "id": sample.info.get("id"),
        "material": sample.info.get("material"),
        "density": sample.info.get("density"),
        "group": sample.group,
        "fraction": _fraction(sample, pred),
        "n_atoms": len(sample.atoms),
        "n_defects": int(len(defects)),
        "model": structure_metrics(_positions(pred), true, sample.atoms, defects, radii),
        "dummy": structure_metrics(sample.atoms.get_positions(), true, sample.atoms,
                                   defects, radii),
    }


def summarize(records: Sequence[dict], keys: Sequence[str]) -> dict:
    """Per-structure averages of model and Dummy metrics, the improvement, and
    how many structures the model predicts worse than the Dummy."""
    model = average_metrics([r["model"] for r in records], keys)
    dummy = average_metrics([r["dummy"] for r in records], keys)
    return {"model": model, "dummy": dummy, "improvement": improvement(model, dummy),
            "n": len(records), "worse_than_dummy": worse_than_dummy(records)}


def _mean_timings(preds: Sequence) -> dict[str, float]:
    rows = [getattr(p, "timings", None) or {} for p in preds]
    names = sorted({k for r in rows for k in r})
    return {k: float(np.mean([r[k] for r in rows if k in r])) for k in names}


def evaluate_predictions(samples: Sequence[Sample], predictions: Sequence,
                         radii: Sequence[float] = RADII) -> dict:
    """Build the evaluation report from samples and their predictions.

    ``predictions`` holds prediction objects (with ``positions``) or plain
    position arrays, one per sample.
    """
    if len(samples) != len(predictions):
        raise ValueError(f"{len(samples)} samples but {len(predictions)} predictions")
    records = [structure_record(s, p, radii) for s, p in zip(samples, predictions)]
    return dict(report_from_records(records, radii), timings=_mean_timings(predictions))


def report_from_records(records: Sequence[dict], radii: Sequence[float] = RADII) -> dict:
    """The report's summaries from its ``per_structure`` records.

    Also how a saved report is summarized again by newer code without running
    the model again (the records hold every per-structure metric).
    """
    keys = metric_keys(radii)
    records = list(records)
    groups: dict[str, list[dict]] = {}
    for r in records:
        groups.setdefault(r["group"], []).append(r)
    return {
        "overall": summarize(records, keys),
        "groups": {g: summarize(rs, keys) for g, rs in sorted(groups.items())},
        "strata": strata(records, lambda rs: summarize(rs, keys)),
        "per_structure": records,
        "radii": [float(r) for r in radii],
        "units": {"mae": "Å", "a_x": "Å", "improvement": "%"},
    }


def evaluate(predictor, samples: Iterable[Sample], batch_size: int = 8,
             progress: bool = True, radii: Sequence[float] = RADII) -> dict:
    """Evaluate a predictor on samples against the Dummy baseline.

    Parameters
    ----------
    predictor : Predictor or object with the same ``predict`` method
    samples : iterable of Sample
    batch_size : int
        Structures per forward pass.
    progress : bool
        Show a tqdm progress bar.
    radii : sequence of float
        Radii of the A_x metrics in Å.

    Returns
    -------
    dict
        The report described in the module docstring.
    """
    kept, preds = predict_samples(predictor, samples, batch_size, progress)
    return evaluate_predictions(kept, preds, radii)


# ---------------------------------------------------------------- arrays for plots
@dataclass
class Displacements:
    """Per-atom arrays of many structures, concatenated (for parity/error plots).

    Attributes
    ----------
    true, pred : numpy.ndarray
        Reference and predicted displacements from the unrelaxed positions,
        ``(n, 3)``, minimum image.
    distance : numpy.ndarray
        Distance of each atom to the nearest defect site (periodic), ``(n,)``.
    numbers : numpy.ndarray
        Atomic numbers, ``(n,)``.
    structure : numpy.ndarray
        Index of the structure each atom belongs to, ``(n,)``.
    """

    true: np.ndarray
    pred: np.ndarray
    distance: np.ndarray
    numbers: np.ndarray
    structure: np.ndarray

    @property
    def model_error(self) -> np.ndarray:
        """Per-atom mean absolute error over x, y, z of the model."""
        return np.abs(self.pred - self.true).mean(axis=1)

    @property
    def dummy_error(self) -> np.ndarray:
        """Per-atom mean absolute error over x, y, z of the Dummy."""
        return np.abs(self.true).mean(axis=1)


def displacement_arrays(samples: Sequence[Sample], predictions: Sequence) -> Displacements:
    """Collect true/predicted displacements and defect distances of all real atoms."""
    parts = []
    for k, (s, p) in enumerate(zip(samples, predictions)):
        a = s.atoms
        x0 = a.get_positions()
        n = len(a)
        true = _displacement(s.relaxed[:n], x0, a)
        pred = _displacement(_positions(p)[:n], x0, a)
        dist = defect_distances(x0, _defect_positions(s, p), a.cell.array, a.pbc)
        parts.append((true, pred, dist, a.numbers, np.full(n, k)))
    if not parts:
        empty = np.zeros((0, 3))
        return Displacements(empty, empty, np.zeros(0), np.zeros(0, int), np.zeros(0, int))
    cols = list(zip(*parts))
    return Displacements(*(np.concatenate(c) for c in cols))


def _displacement(positions: np.ndarray, reference: np.ndarray, atoms) -> np.ndarray:
    """Minimum-image ``positions - reference``: never a jump by a lattice vector."""
    delta = np.asarray(positions, float) - reference
    return minimum_image(delta, atoms.cell.array, atoms.pbc) if atoms.pbc.any() else delta


# ---------------------------------------------------------------- output
def _clean(obj: Any) -> Any:
    """NaN/inf → None and numpy scalars → Python, so the JSON is strict."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.ndarray):
        return _clean(obj.tolist())
    return obj


def save_report(report: dict, path: str | Path) -> Path:
    """Write a report as strict JSON (``NaN`` becomes ``null``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")        # a kill never leaves half a file
    tmp.write_text(json.dumps(_clean(report), indent=1, ensure_ascii=False) + "\n",
                   encoding="utf-8")
    tmp.replace(path)
    return path


def _block(name: str, summary: dict, keys: Sequence[str]) -> list[str]:
    width = 10
    lines = [f"{name}  (n = {summary['n']})"]
    for label, part, pct in (("model", "model", False), ("dummy", "dummy", False),
                             ("improvement %", "improvement", True)):
        cells = "".join(f"{fmt_num(summary[part].get(k), '.1f' if pct else '.4f'):>{width}}"
                        for k in keys)
        lines.append(f"  {label:<14}{cells}")
    return lines


def format_table(report: dict) -> str:
    """A readable text table of a report: overall, then each group, then the
    per-concentration strata and the worse-than-Dummy counts (when the report has them).

    Errors in Å, improvements in %; ``n/a`` marks an undefined value.
    """
    keys = list(report["overall"]["model"])
    header = "  " + " " * 14 + "".join(f"{k.upper():>10}" for k in keys)
    lines = ["coordinate MAE (Å) vs the Dummy (unrelaxed input)", header]
    lines += _block("overall", report["overall"], keys)
    for name, summary in report.get("groups", {}).items():
        lines += _block(name, summary, keys)
    if report.get("strata"):
        lines += ["", strata_text(report)]
    return "\n".join(lines)
