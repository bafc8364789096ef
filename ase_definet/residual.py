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
  structures where both runs converged, and how far apart the end points lie.

A third start may be added with ``pre_relax``: the unrelaxed structure relaxed
first by another, cheaper calculator (e.g. CHGNet + FIRE before DFT), what a user
would do instead of DefiNet; its own steps and seconds are recorded beside it.
Every start records its energy before the first step (``energy_start``), so a
report says whether a start is higher in energy than the unrelaxed input.
The statistics live in :mod:`ase_definet.residual_report`.
"""
from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import closing
from functools import partial

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator

from .calculators import CalculatorLike, make_calculator
from .data.engine import check_shippable, in_process, map_jobs
from .data.sample import Sample
from .data.worker import tune_worker
from .geometry import minimum_image
from .optimizers import optimizer_class
from .residual_report import (fmax_key, format_residual, lower_higher, summarize,
                              summarize_by_density, summarize_threshold)

__all__ = ["residual_study", "relax_to_thresholds", "format_residual", "fmax_key",
           "lower_higher", "summarize_by_density", "summarize_threshold"]

FMAX = 0.05
MAX_STEPS = 1000


def _thresholds(fmax: float | Sequence[float]) -> list[float]:
    values = [fmax] if np.isscalar(fmax) else list(fmax)
    if not values or min(values) <= 0:
        raise ValueError(f"fmax must be positive, got {fmax!r}")
    return sorted({float(f) for f in values}, reverse=True)


def relax_to_thresholds(atoms: Atoms, calc: Calculator, fmax: float | Sequence[float],
                        steps: int = MAX_STEPS, optimizer: str | type = "BFGS",
                        positions: bool = False) -> dict:
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
    positions : bool
        Also keep the positions at each threshold (``"positions"``), e.g. to
        measure how far two end points lie apart.

    Returns
    -------
    dict
        ``{"0.05": {"steps", "converged", "energy", "fmax_final"}, ...,
        "energy_start": eV before the first step, "wall_time": s}``; a threshold
        not reached within the cap has ``converged = False`` and the cap and end
        state of the run.
    """
    work = atoms.copy()
    work.calc = calc
    targets = _thresholds(fmax)
    opt = optimizer_class(optimizer)(work, logfile=None)
    out: dict = {}
    t0 = time.perf_counter()
    for _ in opt.irun(fmax=targets[-1], steps=steps):
        gradient = opt.optimizable.get_gradient()      # cached: no extra call
        if "energy_start" not in out:
            out["energy_start"] = float(work.get_potential_energy())
        for f in targets:
            if fmax_key(f) not in out and opt.optimizable.converged(gradient, f):
                out[fmax_key(f)] = _state(work, opt.nsteps, True, gradient, positions)
    gradient = opt.optimizable.get_gradient()
    for f in targets:
        out.setdefault(fmax_key(f), _state(work, opt.nsteps, False, gradient, positions))
    out["wall_time"] = time.perf_counter() - t0
    return out


def _state(atoms: Atoms, nsteps: int, converged: bool, gradient: np.ndarray,
           positions: bool = False) -> dict:
    out = {"steps": int(nsteps), "converged": bool(converged),
           "energy": float(atoms.get_potential_energy()),
           "fmax_final": float(np.linalg.norm(gradient.reshape(-1, 3), axis=1).max())}
    if positions:
        out["positions"] = atoms.get_positions()
    return out


def _end_distance(a: dict, b: dict, atoms: Atoms) -> float:
    """Largest distance (Å) of an atom between two end points, periodic images folded."""
    d = minimum_image(b.pop("positions") - a["positions"], atoms.cell.array, atoms.pbc)
    return float(np.linalg.norm(d, axis=1).max())


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
                 own_process: bool = False, pre_relax: dict | None = None) -> None:
    """Set up the calculators of :func:`_relax_pair` (the engine's worker setup)."""
    if own_process:     # a spawned worker's process is ours to tune; a caller's is not
        tune_worker()
    if threads:
        import torch
        torch.set_num_threads(threads)
    _WORKER["calc"] = make_calculator(calculator, device)
    _WORKER["pre"] = (make_calculator(pre_relax["calculator"], device)
                      if pre_relax else None)


def _relax_pair(task: tuple) -> tuple[int, dict]:
    """Every relaxation of one structure, as one engine job: from the unrelaxed
    input, from the prediction and (with ``pre_relax``) from a pre-relaxation.
    With ``on_error="record"`` a failing calculator (e.g. an SCF that does not
    converge) gives ``{"failed": "Type: message", "failed_start": start}``."""
    k, *rest, on_error = task
    where = ["pre_relax"]
    try:
        return k, _relax_starts(*rest, where)
    except Exception as err:        # the caller asked for failures to be recorded
        if on_error != "record":
            raise
        return k, {"failed": f"{type(err).__name__}: {err}".strip(), "failed_start": where[0]}


def _relax_starts(unrelaxed: Atoms, predicted: Atoms, targets: list[float], steps: int,
                  optimizer, pre_relax: dict | None, where: list[str]) -> dict:
    """The relaxations of :func:`_relax_pair`; ``where[0]`` names the one running."""
    calc = _WORKER["calc"]
    starts = {"unrelaxed": unrelaxed, "predicted": predicted}
    parts: dict = {}
    if pre_relax:
        pre = relax_to_thresholds(unrelaxed, _WORKER["pre"], pre_relax["fmax"],
                                  pre_relax.get("steps", MAX_STEPS),
                                  pre_relax.get("optimizer", "FIRE"), positions=True)
        state = pre.pop(fmax_key(pre_relax["fmax"]))
        start = unrelaxed.copy()
        start.set_positions(state.pop("positions"))
        starts["pre_relaxed"] = start
        parts["pre_relax"] = dict(state, wall_time=pre["wall_time"])
    for name, atoms in starts.items():
        where[0] = name
        parts[name] = relax_to_thresholds(atoms, calc, targets, steps, optimizer,
                                          positions=True)
    parts["end_distance"] = {
        fmax_key(f): {name: _end_distance(parts["unrelaxed"][fmax_key(f)],
                                          parts[name][fmax_key(f)], unrelaxed)
                      for name in starts if name != "unrelaxed"} for f in targets}
    for f in targets:
        parts["unrelaxed"][fmax_key(f)].pop("positions")
    return parts


def resume_records(report: dict) -> list[dict]:
    """The records of a saved study that a resumed one keeps: every finished
    structure, and every recorded failure (not retried; delete it to retry)."""
    return list(report.get("per_structure", [])) + list(report.get("failed", []))


def residual_study(predictor, samples: Iterable[Sample], calculator: CalculatorLike = "chgnet",
                   fmax: float | Sequence[float] = FMAX, steps: int = MAX_STEPS,
                   optimizer: str | type = "BFGS", n: int | None = None,
                   device: str = "cpu", progress: bool = True,
                   done: Sequence[dict] = (),
                   on_record: Callable[[dict], None] | None = None,
                   workers: int = 0, pre_relax: dict | None = None,
                   scheduler: str | None = None, on_error: str = "raise") -> dict:
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
        Called in this process with the report so far after every structure
        (e.g. to save it, so that an interrupted study loses at most the
        structures in flight).
    workers : int
        Relax on a dask ``LocalCluster`` of this many processes with one torch
        thread each (0: in this process). Needs a calculator name or a picklable
        factory, since each worker builds its own.
    pre_relax : dict, optional
        A third start: ``{"calculator": "chgnet", "fmax": 0.01, "optimizer":
        "FIRE", "steps": 1000}`` relaxes the unrelaxed input with that calculator
        first, then ``calculator`` relaxes from there (what a user would do
        instead of DefiNet). Its steps and seconds go into each record's
        ``pre_relax``, the runs from it into ``pre_relaxed``.
    scheduler : str, optional
        Relax on the workers of this dask cluster (``tcp://HOST:PORT`` or a
        scheduler file; :mod:`ase_definet.data.engine`) instead; ``workers`` is
        then unused. The predictions are made here, and only this process
        writes: a lost worker costs the structure it was relaxing, which
        another worker relaxes again.
    on_error : {"raise", "record"}
        What a calculator error in one structure does: ``"raise"`` ends the
        study (what is saved stays saved); ``"record"`` puts the structure in
        the report's ``failed`` list (id, group, the error and the start that
        failed), leaves it out of every statistic, and goes on. A resumed study
        keeps recorded failures (:func:`resume_records`) and does not retry them.

    Returns
    -------
    dict
        ``{"per_structure": [...], "summary": {"0.05": {...}}, "summary_by_start":
        {"predicted": {...}, "pre_relaxed": {...}}, "fmax": [...], "optimizer",
        "calculator", "max_steps", "n", "failed": [...]}``. Each record holds, per start, the
        steps, energies (``energy_start`` before the first step) and convergence
        at every threshold, and ``end_distance``: the largest atom distance (Å)
        between that start's end point and the unrelaxed input's.
    """
    from tqdm.auto import tqdm
    samples = list(samples if n is None else itertools.islice(samples, n))
    check_shippable(calculator, workers, scheduler)
    if on_error not in ("raise", "record"):
        raise ValueError(f"on_error is 'raise' or 'record', got {on_error!r}")
    targets = _thresholds(fmax)
    if pre_relax is not None:
        if "calculator" not in pre_relax or "fmax" not in pre_relax:
            raise ValueError(f"pre_relax needs 'calculator' and 'fmax', got {pre_relax!r}")
        pre_relax = {"optimizer": "FIRE", "steps": MAX_STEPS, **pre_relax}
    old = {r["id"]: r for r in done if r.get("id") is not None}
    todo = [k for k, s in enumerate(samples) if s.info.get("id") not in old]
    predicted, t_pred = _predicted_atoms(predictor, [samples[k] for k in todo]) \
        if todo else ([], 0.0)
    tasks = [(k, samples[k].atoms, start, targets, steps, optimizer, pre_relax, on_error)
             for k, start in zip(todo, predicted)]
    name = calculator if isinstance(calculator, str) else \
        getattr(calculator, "__name__", type(calculator).__name__)
    meta = {"calculator": name,
            "optimizer": optimizer if isinstance(optimizer, str) else optimizer.__name__,
            "max_steps": int(steps), "fmax": targets}
    if pre_relax is not None:
        meta["pre_relax"] = {k: (v if isinstance(v, (str, int, float)) else repr(v))
                             for k, v in pre_relax.items()}
    # each record carries its share of the batched prediction's time, so that the
    # total survives a resume (bug: a resumed report said 0 s, the time of no work)
    t_each = t_pred / len(todo) if todo else 0.0
    slots: list[dict | None] = [old.get(s.info.get("id")) for s in samples]

    def report() -> dict:
        records = [r for r in slots if r is not None and "failed" not in r]
        failed = [r for r in slots if r is not None and "failed" in r]
        by_start = summarize(records, targets)
        # "summary" is the prediction's row of by_start, kept under its old key
        summary = by_start.get("predicted") or {
            fmax_key(f): summarize_threshold(records, f) for f in targets}
        return {**meta, "n": len(records),
                "predict_time_s": sum(r.get("predict_time_s", 0.0) for r in records),
                "summary": summary, "summary_by_start": by_start,
                "by_density": summarize_by_density(records, targets),
                "per_structure": records, "failed": failed}

    # one scheduling path (data/engine.py): this process, a LocalCluster or a cluster
    setup = partial(_init_worker, calculator, device,
                    None if in_process(workers, scheduler) else 1, pre_relax=pre_relax)
    results = map_jobs(_relax_pair, tasks, setup, workers, scheduler)
    with closing(results):
        for k, parts in tqdm(results, total=len(tasks), disable=not progress,
                             desc="residual", unit="struct"):
            s = samples[k]
            slots[k] = {"id": s.info.get("id"), "group": s.group, "n_atoms": len(s.atoms),
                        **parts}
            if "failed" not in parts:
                slots[k]["predict_time_s"] = t_each
            if on_record is not None:
                on_record(report())
    return report()
