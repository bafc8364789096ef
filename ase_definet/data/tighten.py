"""Relax the labels of a generator store further, to a tighter fmax (resumable).

Why: FIRE stopped at fmax 0.01 eV/Å can sit far from the minimum it is heading
for where the energy landscape is flat (measured in
``experiments/runs/label_convergence.md``). Continuing each stored label with the
same oracle to a smaller fmax gives labels closer to that minimum.

The output is a generator store (``samples.extxyz``, ``hosts.extxyz``,
``manifest.json``) that every loader reads like the source. Each frame keeps its
id, unrelaxed positions and provenance; ``relaxed_positions`` becomes the new end
point and the info records the continuation:

- ``label_fmax``, ``label_steps``, ``label_energy``, ``label_optimizer``: the
  source label's target fmax, steps, energy and optimizer;
- ``optimizer``: the ASE optimizer of the continuation (FIRE by default, as the
  protocol; frames continued before it was recorded used FIRE);
- ``steps``, ``wall_time``: totals from the unrelaxed input (source + continuation);
- ``energy_final``, ``fmax_final``, ``converged``, ``fmax_target``, ``max_steps``:
  of the continuation.

Hosts are copied unchanged. Finished ids are skipped, so rerunning resumes; a
folder holds labels of one target fmax only.
"""
from __future__ import annotations

from functools import partial
from pathlib import Path
from collections.abc import Iterable

from ase import Atoms

from ..optimizers import optimizer_class
from . import generate as gen
from ..calculators import calculator_version
from .oracle import FMAX, OPTIMIZER, relax
from .sample import info_matches, unwrap_relaxed
from .store import append_frames, read_frames

#: default continuation: ten times tighter than the protocol, four times its step cap
TIGHT_FMAX = 0.001
TIGHT_STEPS = 4000


def _tighten_job(args) -> tuple[Atoms, dict]:
    frame, fmax, steps, optimizer = args
    work = frame.copy()
    work.positions = frame.arrays["relaxed_positions"]
    del work.arrays["relaxed_positions"]
    res = relax(work, gen.worker_calculator(), fmax=fmax, steps=steps, optimizer=optimizer)
    return frame, {"positions": unwrap_relaxed(frame, res.positions), "steps": res.steps,
                   "converged": res.converged, "energy_final": res.energy_final,
                   "fmax_final": res.fmax_final, "wall_time": res.wall_time}


def _record(frame: Atoms, res: dict, fmax: float, steps: int, optimizer: str,
            version: str) -> Atoms:
    atoms = frame.copy()
    atoms.arrays["relaxed_positions"] = res["positions"]
    old = frame.info
    atoms.info = dict(old)
    atoms.info.update(
        label_fmax=float(old.get("fmax_target", FMAX)), label_steps=int(old["steps"]),
        label_energy=float(old["energy_final"]),
        label_optimizer=str(old.get("optimizer", OPTIMIZER)), optimizer=optimizer,
        steps=int(old["steps"]) + res["steps"], converged=bool(res["converged"]),
        energy_final=res["energy_final"], fmax_final=res["fmax_final"],
        fmax_target=fmax, max_steps=steps, calculator_version=version,
        wall_time=round(float(old.get("wall_time", 0.0)) + res["wall_time"], 3))
    return atoms


def select_frames(src: str | Path, where: Iterable[str] | None = None,
                  ids: Iterable[str] | None = None) -> tuple[list[Atoms], int]:
    """Converged source frames matching ``where`` (``KEY=VALUE``) and ``ids``, in store order.

    Returns the frames and how many matching frames were left out because their
    source relaxation did not converge.
    """
    frames = read_frames(Path(src) / gen.SAMPLES)
    if not frames:
        raise ValueError(f"{src}: no {gen.SAMPLES} with frames (not a generator store?)")
    wanted = None if ids is None else {str(i) for i in ids}
    chosen = [f for f in frames if info_matches(f.info, list(where or []))
              and (wanted is None or str(f.info.get("id")) in wanted)]
    good = [f for f in chosen if f.info.get("converged")]
    return good, len(chosen) - len(good)


def tighten(src: str | Path, out: str | Path, fmax: float = TIGHT_FMAX,
            steps: int = TIGHT_STEPS, optimizer: str = OPTIMIZER,
            calculator: str | None = None,
            where: Iterable[str] | None = None, ids: Iterable[str] | None = None,
            workers: int = 1, threads: int = 1, limit: int | None = None,
            progress: bool = True, scheduler: str | None = None) -> dict:
    """Continue the selected labels of ``src`` to ``fmax``, writing a store in ``out``.

    Parameters
    ----------
    src, out : path
        Source generator store and output folder (created; resumes if it exists).
    fmax : float
        Target maximum force, eV/Å; must be below the source labels' fmax.
    steps : int
        Step cap of the continuation.
    optimizer : str
        ASE optimizer of the continuation, by name (default FIRE, the protocol's).
        It may differ between runs into one folder; each frame records its own.
    calculator : str, optional
        The oracle; default (and the only one accepted) is the source's own, so
        labels from two potentials are never mixed.
    where, ids : optional
        Keep frames whose info matches every ``KEY=VALUE``, and whose id is listed.
    workers, threads, limit, progress, scheduler
        As in :func:`~ase_definet.data.generate.generate`: a ``LocalCluster`` of
        ``workers`` processes (0: this process) or the cluster of ``scheduler``
        (``tcp://HOST:PORT`` or a scheduler file) relaxes; this process writes.

    Returns
    -------
    dict
        ``selected``, ``already_done``, ``new``, ``not_converged``,
        ``source_not_converged`` (matching frames left out) and ``wall_time``.

    Raises
    ------
    ValueError
        Same folder for source and output, a calculator other than the source's,
        an fmax not below the source's, an output holding another fmax, or an
        unknown optimizer.
    """
    src, out = Path(src), Path(out)
    optimizer = optimizer_class(optimizer).__name__  # unknown names fail before any work
    ids = None if ids is None else [str(i) for i in ids]
    if out.resolve() == src.resolve():
        raise ValueError("tighten writes a new store: --out must differ from the source")
    frames, skipped = select_frames(src, where, ids)
    if not frames:
        raise ValueError(f"{src}: no converged labels match the selection "
                         f"(where {list(where or [])}, {'no' if ids is None else len(ids)} ids)")
    names = sorted({str(f.info.get("calculator")) for f in frames})
    if len(names) > 1:
        raise ValueError(f"{src}: selected labels come from several oracles {names}; "
                         "select one with --where calculator=NAME")
    source_calc = names[0]
    if calculator is not None and calculator != source_calc:
        raise ValueError(f"{src}: labels come from {source_calc!r}; continuing them with "
                         f"{calculator!r} would mix two oracles")
    calculator = source_calc
    for f in frames:
        if fmax >= float(f.info.get("fmax_target", FMAX)):
            raise ValueError(f"fmax {fmax} is not below the source label's "
                             f"{f.info.get('fmax_target', FMAX)} ({f.info.get('id')})")
    out.mkdir(parents=True, exist_ok=True)
    existing = read_frames(out / gen.SAMPLES, repair=True)
    held = sorted({float(a.info.get("fmax_target", FMAX)) for a in existing})
    if held and held != [fmax]:
        raise ValueError(f"{out} holds labels tightened to fmax {held}, not {fmax}: "
                         "use another folder")
    if not (out / gen.HOSTS).exists():
        append_frames(out / gen.HOSTS, read_frames(src / gen.HOSTS))
    done = {a.info["id"] for a in existing}
    todo = [f for f in frames if f.info["id"] not in done]
    if limit is not None:
        todo = todo[:limit]
    summary = {"selected": len(frames),
               "already_done": sum(f.info["id"] in done for f in frames),
               "source_not_converged": skipped}
    extra = {"tightened": {"source": str(src), "fmax": fmax, "max_steps": steps,
                           "hosts": "copied from the source unchanged"}}
    if not todo:    # nothing to relax: do not start workers (each loads the oracle)
        gen.write_manifest(out, extra)
        return dict(summary, new=0, not_converged=0, wall_time=0.0)
    version = calculator_version(calculator)
    summary.update(gen.run_jobs(
        out, [(f, fmax, steps, optimizer) for f in todo], _tighten_job,
        partial(_record, fmax=fmax, steps=steps, optimizer=optimizer, version=version),
        calculator, workers, threads, f"tighten to {fmax} ({optimizer})", progress,
        manifest_extra=extra, scheduler=scheduler))
    return summary
