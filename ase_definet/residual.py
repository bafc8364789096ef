"""Residual-step study: how many optimizer steps does DefiNet save?

For each structure an ASE calculator (CHGNet by default) relaxes it with an
ASE optimizer (BFGS by default) twice: (a) from the unrelaxed structure and
(b) from the DefiNet prediction. Steps, convergence and final energy are
recorded for every force threshold ``fmax``. The paper's DFT version of this
study found ~87 % (low density) and ~47 % (high density) fewer ionic steps.

Several thresholds cost one relaxation per start: the optimizer's path does
not depend on ``fmax``, so the step at which the largest force first drops
below each threshold equals the step count of a separate run to it.

Statistics per threshold:

* median steps of both starts, over all structures (a run that hits the step
  cap counts as the cap, a lower bound: the converged counts are reported);
* reduction in %: ``100 (1 - median_pred / median_unrelaxed)``, and the median
  of the per-structure reductions ``100 (1 - steps_pred / steps_unrelaxed)``
  (structures needing no step from the unrelaxed start are skipped);
* ``|ΔE|`` in meV between the two end points, max and median, over the
  structures where both runs converged.
"""
from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable, Sequence

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator

from .calculators import CalculatorLike, make_calculator
from .data.worker import tune_worker
from .data.sample import Sample
from .optimizers import optimizer_class
from .textfmt import fmt_num

FMAX = 0.05
MAX_STEPS = 1000


def _thresholds(fmax: float | Sequence[float]) -> list[float]:
    values = [fmax] if np.isscalar(fmax) else list(fmax)
    if not values or min(values) <= 0:
        raise ValueError(f"fmax must be positive, got {fmax!r}")
    return sorted({float(f) for f in values}, reverse=True)


def fmax_key(fmax: float) -> str:
    """Report key of a threshold: 0.05 → ``"0.05"``."""
    return f"{fmax:g}"


def relax_to_thresholds(atoms: Atoms, calc: Calculator, fmax: float | Sequence[float],
                        steps: int = MAX_STEPS, optimizer: str | type = "BFGS") -> dict:
    """Relax a copy of ``atoms`` and record when each force threshold is reached.

    Parameters
    ----------
    atoms : ase.Atoms
        Start structure (not modified).
    calc : Calculator
        Attached to the working copy.
    fmax : float or sequence of float
        Force thresholds in eV/Å.
    steps : int
        Step cap of the whole run.
    optimizer : str or class
        ASE optimizer (name in ``ase.optimize`` or class).

    Returns
    -------
    dict
        ``{"0.05": {"steps", "converged", "energy", "fmax_final"}, ...,
        "wall_time": s}``; a threshold not reached within the cap has
        ``converged = False`` and the cap and end state of the run.
    """
    work = atoms.copy()
    work.calc = calc
    targets = _thresholds(fmax)
    opt = optimizer_class(optimizer)(work, logfile=None)
    out: dict = {}
    t0 = time.perf_counter()
    for _ in opt.irun(fmax=targets[-1], steps=steps):
        gradient = opt.optimizable.get_gradient()      # cached: no extra call
        for f in targets:
            if fmax_key(f) not in out and opt.optimizable.converged(gradient, f):
                out[fmax_key(f)] = _state(work, opt.nsteps, True, gradient)
    gradient = opt.optimizable.get_gradient()
    for f in targets:
        out.setdefault(fmax_key(f), _state(work, opt.nsteps, False, gradient))
    out["wall_time"] = time.perf_counter() - t0
    return out


def _state(atoms: Atoms, nsteps: int, converged: bool, gradient: np.ndarray) -> dict:
    return {"steps": int(nsteps), "converged": bool(converged),
            "energy": float(atoms.get_potential_energy()),
            "fmax_final": float(np.linalg.norm(gradient.reshape(-1, 3), axis=1).max())}


def _predicted_atoms(predictor, samples: list[Sample]) -> tuple[list[Atoms], float]:
    """Copies of the samples' structures at the predicted positions."""
    t0 = time.perf_counter()
    preds = predictor.predict([s.atoms for s in samples], [s.host for s in samples])
    dt = (time.perf_counter() - t0) / max(len(samples), 1)
    out = []
    for s, p in zip(samples, preds):
        a = s.atoms.copy()
        a.set_positions(np.asarray(getattr(p, "positions", p))[:len(a)])
        out.append(a)
    return out, dt


_WORKER: dict = {}


def _init_worker(calculator: CalculatorLike, device: str, threads: int | None,
                 own_process: bool = False) -> None:
    if own_process:     # a spawned worker's process is ours to tune; a caller's is not
        tune_worker()
    if threads:
        import torch
        torch.set_num_threads(threads)
    _WORKER["calc"] = make_calculator(calculator, device)


def _relax_pair(task: tuple) -> tuple[int, dict, dict]:
    """Both relaxations of one structure, in a worker process."""
    k, unrelaxed, predicted, targets, steps, optimizer = task
    calc = _WORKER["calc"]
    return (k, relax_to_thresholds(unrelaxed, calc, targets, steps, optimizer),
            relax_to_thresholds(predicted, calc, targets, steps, optimizer))


def residual_study(predictor, samples: Iterable[Sample], calculator: CalculatorLike = "chgnet",
                   fmax: float | Sequence[float] = FMAX, steps: int = MAX_STEPS,
                   optimizer: str | type = "BFGS", n: int | None = None,
                   device: str = "cpu", progress: bool = True,
                   done: Sequence[dict] = (),
                   on_record: Callable[[dict], None] | None = None,
                   workers: int = 0) -> dict:
    """Relax from the unrelaxed structure and from the DefiNet prediction.

    Parameters
    ----------
    predictor : Predictor or object with ``predict(atoms_list, hosts)``
    samples : iterable of Sample
    calculator : str, Calculator or callable
        ``"chgnet"``, ``"emt"``, ``"module:function"``, an instance, or a
        zero-argument factory. One instance serves every relaxation.
    fmax : float or sequence of float
        Force threshold(s) in eV/Å (e.g. ``(0.05, 0.01)``).
    steps : int
        Step cap per relaxation (default 1000).
    optimizer : str or class
        ASE optimizer used for both starts (default BFGS).
    n : int, optional
        Use only the first ``n`` samples.
    device : str
        Device of a named calculator.
    progress : bool
        tqdm progress bar.
    done : sequence of dict
        ``per_structure`` records of an interrupted run with the same settings:
        structures with these ids are not relaxed again (resume).
    on_record : callable, optional
        Called with the report so far after every structure (e.g. to save it,
        so that an interrupted study loses at most one structure per worker).
    workers : int
        Relax in this many processes with one torch thread each (0: in this
        process). Needs a calculator name or a picklable factory, since each
        worker builds its own.

    Returns
    -------
    dict
        ``{"per_structure": [...], "summary": {"0.05": {...}}, "fmax": [...],
        "optimizer", "calculator", "max_steps", "n"}``.
    """
    from tqdm.auto import tqdm
    samples = list(samples if n is None else itertools.islice(samples, n))
    if workers > 0 and hasattr(calculator, "get_potential_energy") \
            and not isinstance(calculator, type):
        raise ValueError("workers > 0 needs a calculator name or factory, not an instance")
    targets = _thresholds(fmax)
    old = {r["id"]: r for r in done if r.get("id") is not None}
    todo = [k for k, s in enumerate(samples) if s.info.get("id") not in old]
    predicted, t_pred = _predicted_atoms(predictor, [samples[k] for k in todo]) \
        if todo else ([], 0.0)
    tasks = [(k, samples[k].atoms, start, targets, steps, optimizer)
             for k, start in zip(todo, predicted)]
    name = calculator if isinstance(calculator, str) else \
        getattr(calculator, "__name__", type(calculator).__name__)
    meta = {"calculator": name,
            "optimizer": optimizer if isinstance(optimizer, str) else optimizer.__name__,
            "max_steps": int(steps), "fmax": targets}
    # each record carries its share of the batched prediction's time, so that the
    # total survives a resume (bug: a resumed report said 0 s, the time of no work)
    t_each = t_pred / len(todo) if todo else 0.0
    slots: list[dict | None] = [old.get(s.info.get("id")) for s in samples]

    def report() -> dict:
        records = [r for r in slots if r is not None]
        return {**meta, "n": len(records),
                "predict_time_s": sum(r.get("predict_time_s", 0.0) for r in records),
                "summary": {fmax_key(f): summarize_threshold(records, f) for f in targets},
                "by_density": summarize_by_density(records, targets),
                "per_structure": records}

    if workers > 0 and tasks:
        import multiprocessing as mp
        pool = mp.get_context("spawn").Pool(workers, initializer=_init_worker,
                                            initargs=(calculator, device, 1, True))
        results = pool.imap_unordered(_relax_pair, tasks)
    else:
        pool = None
        _init_worker(calculator, device, None)
        results = map(_relax_pair, tasks)
    try:
        for k, unrelaxed, from_pred in tqdm(results, total=len(tasks), disable=not progress,
                                            desc="residual", unit="struct"):
            s = samples[k]
            slots[k] = {"id": s.info.get("id"), "group": s.group, "n_atoms": len(s.atoms),
                        "unrelaxed": unrelaxed, "predicted": from_pred,
                        "predict_time_s": t_each}
            if on_record is not None:
                on_record(report())
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
    return report()


#: energy differences below this (meV) count as equal: float32 energies of a
#: ~200-atom cell (~1,400 eV) resolve ~0.2 meV
ENERGY_RESOLUTION_MEV = 0.5


def summarize_threshold(records: Sequence[dict], fmax: float) -> dict:
    """Median steps, reductions and energy differences at one threshold."""
    key = fmax_key(fmax)
    a = [r["unrelaxed"][key] for r in records]
    b = [r["predicted"][key] for r in records]
    s_a = np.array([x["steps"] for x in a], float)
    s_b = np.array([x["steps"] for x in b], float)
    both = np.array([x["converged"] and y["converged"] for x, y in zip(a, b)], bool)
    signed = 1e3 * np.array([y["energy"] - x["energy"] for x, y in zip(a, b)], float)
    de = np.abs(signed)
    med_a, med_b = _median(s_a), _median(s_b)
    per = np.divide(s_b, s_a, out=np.full(len(s_a), np.nan), where=s_a > 0)
    return {
        "median_steps_unrelaxed": med_a,
        "median_steps_predicted": med_b,
        "mean_steps_unrelaxed": _mean(s_a),
        "mean_steps_predicted": _mean(s_b),
        "reduction_pct": (100.0 * (1.0 - med_b / med_a)
                          if np.isfinite(med_a) and med_a > 0 else float("nan")),
        "median_reduction_pct": _median(100.0 * (1.0 - per[np.isfinite(per)])),
        "converged_unrelaxed": int(sum(x["converged"] for x in a)),
        "converged_predicted": int(sum(y["converged"] for y in b)),
        "converged_both": int(both.sum()),
        "dE_meV_max": float(de[both].max()) if both.any() else float("nan"),
        "dE_meV_median": _median(de[both]),
        # which start ends lower: at a loose fmax the run from the unrelaxed input
        # often stops farther above the minimum than the one from the prediction
        "predicted_lower": int((signed[both] < -ENERGY_RESOLUTION_MEV).sum()),
        "predicted_higher": int((signed[both] > ENERGY_RESOLUTION_MEV).sum()),
    }


def summarize_by_density(records: Sequence[dict], fmax: Sequence[float]) -> dict:
    """:func:`summarize_threshold` per density: ``{density: {"n": .., "summary": {fmax: ..}}}``.

    Low- and high-density structures behave differently: many defects make a
    rugged energy landscape where two starting points can reach different minima.
    """
    from .data.sample import density_of
    out: dict[str, dict] = {}
    for density in sorted({density_of(r["group"]) for r in records}):
        rs = [r for r in records if density_of(r["group"]) == density]
        out[density] = {"n": len(rs),
                        "summary": {fmax_key(f): summarize_threshold(rs, f) for f in fmax}}
    return out


def _median(x: np.ndarray) -> float:
    return float(np.median(x)) if len(x) else float("nan")


def _mean(x: np.ndarray) -> float:
    return float(np.mean(x)) if len(x) else float("nan")


def lower_higher(summary: dict) -> str | None:
    """``k/m``: structures whose run from the prediction ended lower / higher in energy
    than the run from the unrelaxed input; None for reports older than these counts."""
    if "predicted_lower" not in summary:
        return None
    return f"{summary['predicted_lower']}/{summary['predicted_higher']}"


def format_residual(report: dict) -> str:
    """A readable text table of a residual-step report (missing values: n/a)."""
    lines = [f"residual steps: {report['optimizer']} with {report['calculator']}, "
             f"cap {report['max_steps']} steps, n = {report['n']}",
             f"{'fmax':>7} {'med. unrel.':>12} {'med. pred.':>11} {'reduction':>10} "
             f"{'med. per-str.':>14} {'conv. u/p':>10} {'|dE| max':>10} {'|dE| med.':>10} "
             f"{'pred. end':>10}",
             f"{'eV/Å':>7} {'steps':>12} {'steps':>11} {'%':>10} {'%':>14} "
             f"{'':>10} {'meV':>10} {'meV':>10} {'lower/higher':>10}"]
    def rows(summary: dict) -> list[str]:
        out = []
        for key, s in summary.items():
            conv = f"{s['converged_unrelaxed']}/{s['converged_predicted']}"
            out.append(
                f"{key:>7} {fmt_num(s['median_steps_unrelaxed'], '.1f'):>12} "
                f"{fmt_num(s['median_steps_predicted'], '.1f'):>11} "
                f"{fmt_num(s['reduction_pct'], '.1f'):>10} "
                f"{fmt_num(s['median_reduction_pct'], '.1f'):>14} {conv:>10} "
                f"{fmt_num(s['dE_meV_max'], '.2f'):>10} {fmt_num(s['dE_meV_median'], '.2f'):>10} "
                f"{lower_higher(s) or 'n/a':>10}")
        return out

    lines += rows(report["summary"])
    # a mixed sample's medians hide how differently the densities behave
    by_density = report.get("by_density") or {}
    if len(by_density) > 1:
        for density, block in by_density.items():
            lines.append(f"{density} density (n = {block['n']})")
            lines += rows(block["summary"])
    return "\n".join(lines)
