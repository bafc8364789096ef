"""The residual steps of batch relaxation as engine jobs (``definet relax --calculator``).

:func:`~ase_definet.batch.relax_many` predicts here, in batches (milliseconds per
structure); each prediction is then one job of :func:`residual_job`, which runs the
calculator's residual steps on a worker of :mod:`ase_definet.data.engine`: in this
process (``workers=0``), on a ``LocalCluster`` or on the cluster of a scheduler.
The same function runs in all three, so they give the same structures.

Jobs finish in any order; :func:`finish_on_engine` hands them back in input order,
batch by batch, so the caller writes each structure once, in input order. A lost
worker costs the structure it was relaxing, which the scheduler gives to another.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import closing
from functools import partial

import numpy as np
from ase import Atoms
from ase.calculators.calculator import all_properties
from ase.calculators.singlepoint import SinglePointCalculator

from .calculators import CalculatorLike, make_calculator
from .data.engine import check_shippable, in_process, map_jobs
from .data.worker import tune_worker
from .optimizers import optimizer_class
from .process import torch_threads

_WORKER: dict = {}


def _init_worker(calculator: CalculatorLike, device: str, threads: int | None,
                 own_process: bool = False) -> None:
    """Engine setup: the calculator of this worker, its tuning and torch threads."""
    if own_process:     # a worker's process is ours to tune; a caller's is not
        tune_worker()
        if threads:
            import torch
            torch.set_num_threads(threads)
    # in this process, the jobs run under the predictor's threads, then restore them
    _WORKER["threads"] = None if own_process else threads
    _WORKER["calc"] = make_calculator(calculator, device)


def residual_steps(atoms: Atoms, unrelaxed: np.ndarray, calc, fmax: float, steps: int,
                   optimizer: str | type = "BFGS", start: str = "prediction") -> Atoms:
    """Relax a predicted structure in place with ``calc``; returns it.

    As :class:`~ase_definet.relax.DefiNetRelaxer` after its prediction:
    ``start="lower"`` first evaluates the unrelaxed input (``unrelaxed``, the
    positions before the prediction) and starts from the lower in energy
    (``definet_start``, ``definet_energy_prediction``, ``definet_energy_unrelaxed``);
    ``definet_converged`` and ``definet_residual_steps`` record the run. The
    calculator's last results stay attached as a ``SinglePointCalculator``.
    """
    atoms.calc = calc
    if start == "lower":
        predicted = atoms.get_positions()
        atoms.set_positions(unrelaxed)
        e_unrelaxed = float(atoms.get_potential_energy())
        atoms.set_positions(predicted)      # last, so the first step reuses its energy
        e_pred = float(atoms.get_potential_energy())
        chosen = "prediction" if e_pred <= e_unrelaxed else "unrelaxed"
        if chosen == "unrelaxed":
            atoms.set_positions(unrelaxed)
        atoms.info.update(definet_start=chosen, definet_energy_prediction=e_pred,
                          definet_energy_unrelaxed=e_unrelaxed)
    opt = optimizer_class(optimizer)(atoms, logfile=None)
    converged = opt.run(fmax=fmax, steps=steps)
    atoms.info["definet_converged"] = bool(converged)
    atoms.info["definet_residual_steps"] = int(opt.nsteps)
    atoms.get_potential_energy()            # cached after the run: no extra call
    atoms.get_forces()
    results = {k: v for k, v in calc.results.items() if k in all_properties}
    atoms.calc = SinglePointCalculator(atoms, **results)
    return atoms


def residual_job(task: tuple) -> tuple[int, Atoms]:
    """One engine job: the residual steps of the ``k``-th predicted structure."""
    k, atoms, unrelaxed, fmax, steps, optimizer, start = task
    with torch_threads(_WORKER.get("threads")):
        return k, residual_steps(atoms, unrelaxed, _WORKER["calc"], fmax, steps,
                                 optimizer, start)


def finish_on_engine(batches: Iterable[tuple[list[Atoms], list[Atoms]]],
                     calculator: CalculatorLike, device: str, threads: int | None,
                     fmax: float, steps: int, optimizer: str | type = "BFGS",
                     start: str = "prediction", workers: int = 0,
                     scheduler: str | None = None) -> Iterator[list[Atoms]]:
    """Residual steps of predicted batches on the engine, yielded in input order.

    Parameters
    ----------
    batches : iterable of (inputs, predicted)
        Each batch's unrelaxed structures and their predicted copies, drawn
        lazily: a batch is predicted when workers are free for it.
    calculator, device
        The calculator each worker builds (a name or factory when the jobs leave
        this process), on ``device``.
    threads : int, optional
        torch threads of jobs run in this process (workers use one each).
    fmax, steps, optimizer, start
        Of :func:`residual_steps`.
    workers, scheduler
        Where the jobs run (:func:`~ase_definet.data.engine.map_jobs`).

    Yields
    ------
    list of Atoms
        Each input batch, once all its structures are relaxed, in input order.
        An error while reading or predicting a batch is raised after every
        earlier batch has been relaxed and yielded, so nothing finished is lost.
    """
    check_shippable(calculator, workers, scheduler)
    sizes: list[int] = []       # sizes of the batches predicted but not yet yielded
    failed: list[Exception] = []

    def tasks() -> Iterator[tuple]:
        k = 0
        try:
            for inputs, predicted in batches:
                sizes.append(len(predicted))
                for a, p in zip(inputs, predicted):
                    yield k, p, a.get_positions(), fmax, steps, optimizer, start
                    k += 1
        except Exception as err:        # the jobs in flight finish first, then it is raised
            failed.append(err)

    setup = partial(_init_worker, calculator, device,
                    threads if in_process(workers, scheduler) else 1)
    done: dict[int, Atoms] = {}
    head = 0                    # index of the first structure not yet yielded
    results = map_jobs(residual_job, tasks(), setup, workers, scheduler)
    with closing(results):
        for k, atoms in results:
            done[k] = atoms
            while sizes and all(head + i in done for i in range(sizes[0])):
                n = sizes.pop(0)
                yield [done.pop(head + i) for i in range(n)]
                head += n
    if failed:
        raise failed[0]
