"""One scheduler for calculator jobs: dask.distributed, on this machine or a cluster.

:func:`run_jobs` hands jobs to the workers of a ``dask.distributed`` cluster and
appends each result to the store as it arrives. Without a scheduler it starts a
``LocalCluster`` of ``workers`` processes with one thread each; with one
(``tcp://HOST:PORT`` or a scheduler file) the same jobs run on that cluster's
workers. ``workers=0`` runs them in this process (tests, debugging). :func:`map_jobs` is
the same scheduling without a store: it yields each result to the caller, which
writes it (``definet residual``'s report, ``definet relax``'s outputs).

Why a lost worker loses nothing: this process (the client) is the only writer
of the store and writes a result once, when it arrives. A worker lost mid-job
costs that job, which the scheduler hands to another worker; a stopped run
(Ctrl-C, SIGTERM, a failing job) leaves complete frames only, and a rerun skips
them.

Why no run hangs silently: every worker runs a setup plugin
(:class:`WorkerSetup`: worker tuning, torch threads, the oracle) before its first
job, also a worker that joins or is restarted later; an error there (a calculator
that fails at import) is raised here at once. A job that kills its worker (a
crash, the nanny's memory limit) is retried elsewhere and, after
``distributed.scheduler.allowed-failures`` deaths, stops the run naming it. A
cluster without workers (at the start, or when all are gone) is an error after
:data:`WAIT_FOR_WORKERS` seconds.
"""
from __future__ import annotations

import itertools
import logging
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path

try:
    from distributed import Client, LocalCluster, WorkerPlugin, wait
    from distributed.scheduler import KilledWorker
except ImportError:     # the dask extra is not installed: only workers=0 can run
    Client = LocalCluster = wait = KilledWorker = None
    WorkerPlugin = object

from .manifest import SAMPLES, write_manifest
from .store import append_frames

#: seconds an existing cluster may take to show its first worker
WAIT_FOR_WORKERS = 60.0
#: seconds to wait for a scheduler to answer
CONNECT_TIMEOUT = 20.0
PLUGIN = "ase-definet-setup"
_NONE = object()


class WorkerSetup(WorkerPlugin):
    """Runs ``setup(own_process=True)`` on every worker before it takes a job."""

    def __init__(self, setup: Callable[..., None]):
        self.fn = setup

    def setup(self, worker) -> None:
        self.fn(own_process=True)


def run_jobs(out: Path, tasks: list, work: Callable, record: Callable,
             setup: Callable[..., None], workers: int, desc: str,
             progress: bool = True, manifest_extra: dict | None = None,
             manifest_every: float = 300.0, scheduler: str | None = None) -> dict:
    """Run ``work(task)`` for every task and append ``record(*result)`` frames.

    Parameters
    ----------
    out : Path
        Store folder; ``samples.extxyz`` grows, ``manifest.json`` is rewritten at
        the start, every ``manifest_every`` seconds while frames arrive (a SIGKILL
        leaves it at most that stale) and on the way out, after an error too.
    tasks : list
        Picklable arguments of ``work``, which returns ``(key, result)`` with
        ``result["converged"]`` and ``result["steps"]``.
    setup : callable
        ``setup(own_process=...)`` prepares a worker (True on cluster workers,
        False in this process when ``workers`` is 0).
    workers : int
        Local worker processes (one thread each); 0 runs here. Unused with
        ``scheduler``.
    scheduler : str, optional
        ``tcp://HOST:PORT`` (any dask address) or a scheduler file.

    Returns
    -------
    dict
        ``new``, ``not_converged`` and ``wall_time`` (s).
    """
    from tqdm.auto import tqdm
    _terminate_cleanly()
    bar = tqdm(total=len(tasks), disable=not progress, desc=desc, unit="struct",
               smoothing=0.05)
    counts = {"new": 0, "not_converged": 0}
    t0 = last_manifest = time.time()
    write_manifest(out, manifest_extra)
    try:
        with closing(map_jobs(work, tasks, setup, workers, scheduler)) as results:
            for key, res in results:
                append_frames(out / SAMPLES, [record(key, res)])
                counts["new"] += 1
                counts["not_converged"] += int(not res["converged"])
                bar.update(1)
                bar.set_postfix(steps=res["steps"], nc=counts["not_converged"])
                if time.time() - last_manifest >= manifest_every:
                    write_manifest(out, manifest_extra)
                    last_manifest = time.time()
    finally:
        bar.close()
        write_manifest(out, manifest_extra)
    counts["wall_time"] = round(time.time() - t0, 1)
    return counts


def map_jobs(work: Callable, tasks: Iterable, setup: Callable[..., None], workers: int = 0,
             scheduler: str | None = None) -> Iterator:
    """``work(task)`` for every task, on dask workers; the results as they finish.

    Parameters
    ----------
    work : callable
        A module-level function (workers import it by name).
    tasks : iterable
        Picklable arguments of ``work``; an iterator is drawn lazily, as workers
        get free, so the caller may compute tasks while earlier ones run.
    setup : callable
        ``setup(own_process=...)``: run by every worker before its first job
        (True), or once here when the jobs run in this process (False).
    workers : int
        Local worker processes, one thread each (a ``LocalCluster``); 0 runs the
        jobs here, in task order. Unused with ``scheduler``.
    scheduler : str, optional
        ``tcp://HOST:PORT`` (any dask address) or a scheduler file.

    Yields
    ------
    object
        ``work(task)``, in the order the jobs finish. Close the generator
        (``contextlib.closing``) to cancel the jobs in flight and shut a local
        cluster down when the caller stops early.
    """
    todo = iter(tasks)
    first = next(todo, _NONE)
    if first is _NONE:  # nothing to do: start no cluster (each worker loads the oracle)
        return
    todo = itertools.chain([first], todo)
    if in_process(workers, scheduler):
        setup(own_process=False)
        yield from map(work, todo)
        return
    if Client is None:
        raise ImportError("worker processes and clusters run on dask.distributed: "
                          "pip install 'ase_definet[dask]' (or run with workers=0)")
    with connect(workers, scheduler) as client:
        client.register_plugin(WorkerSetup(setup), name=PLUGIN)
        yield from _stream(client, work, todo)


def in_process(workers: int, scheduler: str | None) -> bool:
    """Whether jobs run in this process (``workers`` 0 and no scheduler)."""
    return workers <= 0 and scheduler is None


def check_shippable(calculator, workers: int, scheduler: str | None) -> None:
    """Refuse a calculator instance for jobs that run on workers.

    Each worker builds its own calculator from a name or a factory; an instance
    (with its state, and possibly unpicklable) cannot be sent to them.

    Raises
    ------
    ValueError
        ``calculator`` is an instance and ``workers``/``scheduler`` ask for workers.
    """
    if not in_process(workers, scheduler) and not isinstance(calculator, type) \
            and hasattr(calculator, "get_potential_energy"):
        raise ValueError("worker processes and clusters need a calculator name or "
                         "factory (each worker builds its own), not an instance")


def _stream(client: Client, work: Callable, tasks: Iterable) -> Iterator:
    """Results in the order they finish, with a bounded number of jobs in flight.

    The bound (two per worker thread, at least 4) is taken again after every
    result, so workers that join later (a SLURM job that starts) get work. A
    cluster left without any worker for :data:`WAIT_FOR_WORKERS` seconds (every
    SLURM job ended) stops the run instead of waiting for ever.
    """
    todo = iter(tasks)
    pending: set = set()

    def top_up() -> None:
        limit = max(4, 2 * sum(client.nthreads().values()))
        while len(pending) < limit:
            task = next(todo, None)
            if task is None:
                return
            pending.add(client.submit(work, task, pure=False))

    top_up()
    try:
        while pending:
            try:
                done, _ = wait(pending, timeout=WAIT_FOR_WORKERS,
                               return_when="FIRST_COMPLETED")
            except TimeoutError:
                if client.nthreads():
                    continue        # long jobs, but workers are there
                raise TimeoutError(
                    f"no job finished in {WAIT_FOR_WORKERS:.0f} s and the cluster has no "
                    f"worker left; {len(pending)} jobs were waiting (finished work is "
                    "saved: rerun to resume)") from None
            for fut in done:
                pending.discard(fut)
                try:
                    result = fut.result()
                except KilledWorker as err:
                    raise RuntimeError(
                        f"a job killed every worker that ran it (a crash or the memory "
                        f"limit): {err}") from None
                fut.release()
                yield result
            top_up()
    finally:        # an error, Ctrl-C or a closed generator: drop what is in flight
        client.cancel(list(pending))


@contextmanager
def connect(workers: int, scheduler: str | None = None) -> Iterator[Client]:
    """A client of a new ``LocalCluster`` (``workers`` processes) or of ``scheduler``.

    Raises
    ------
    ValueError
        If ``scheduler`` is neither an address nor an existing scheduler file.
    TimeoutError
        If the cluster shows no worker within :data:`WAIT_FOR_WORKERS` seconds.
    """
    if scheduler is None:
        try:
            cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                   dashboard_address=None, silence_logs=logging.ERROR)
        except RuntimeError as err:
            raise RuntimeError(
                f"local dask workers failed to start ({err}; a worker's own error is "
                "printed above). Each worker process imports the script that started "
                "the run: run it under `if __name__ == \"__main__\":`, or start the "
                "workers yourself (dask scheduler, dask worker) and pass scheduler=") from err
        with cluster, Client(cluster) as client:
            yield client
        return
    if "://" in scheduler:
        where = {"address": scheduler}
    elif Path(scheduler).is_file():
        where = {"scheduler_file": scheduler}
    else:
        raise ValueError(f"scheduler {scheduler!r} is neither an address "
                         "(tcp://HOST:PORT) nor an existing scheduler file")
    with Client(**where, timeout=CONNECT_TIMEOUT) as client:
        try:
            client.wait_for_workers(1, timeout=WAIT_FOR_WORKERS)
        except TimeoutError:
            raise TimeoutError(f"the cluster at {scheduler} has no worker after "
                               f"{WAIT_FOR_WORKERS:.0f} s") from None
        yield client


def _terminate_cleanly() -> None:
    """Turn SIGTERM into SystemExit so the manifest is rewritten on the way out."""
    import signal
    import threading
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
