"""Resumable generation of defect data sets with an oracle calculator.

Layout of an output folder::

    DIR/hosts.extxyz     oracle-relaxed pristine hosts (info: host_key)
    DIR/samples.extxyz   one frame per relaxed defect structure (append-only)
    DIR/manifest.json    what exists: counts, oracle, protocol, versions

The job list is a pure function of the arguments (hosts, density, count,
supercell, seed, seed scheme), and each job has a stable id, so rerunning the
same command skips finished ids and resumes; raising ``count`` extends the same
list. The seed scheme is recorded in every frame (``info["seed_scheme"]``) and
in the manifest; a store resumes under the scheme it was made with.

A host is a built-in name or a :class:`~ase_definet.data.hosts.HostSpec` read
from any file (:func:`~ase_definet.data.hosts.file_host`, or a recipe:
:mod:`ase_definet.data.recipe`). Each task carries its oracle-relaxed host
(kept once in ``hosts.extxyz`` under its key), so a worker needs nothing but the
task: no host registry, on this machine or another. The jobs run on
dask.distributed (:mod:`ase_definet.data.engine`); this process is the only writer.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator

from ..calculators import calculator_version, make_calculator
from .defects import HIGH_DENSITY_FRACTIONS, DefectConfig, apply_defects, generate_configs
from .hosts import HostSpec, build_host, host_spec
from .manifest import HOSTS, MANIFEST, SAMPLES, write_manifest
from .oracle import FMAX, MAX_STEPS, relax
from .sample import unwrap_relaxed
from .seeding import SEED_SCHEMES, store_scheme, stream_base
from .store import append_frames, read_frames
from .worker import tune_worker

__all__ = ["HOSTS", "MANIFEST", "SAMPLES", "Job", "done_ids", "generate", "plan_jobs",
           "run_jobs", "worker_calculator", "write_manifest"]

MANIFEST_EVERY = 300.0  # s between rewrites in a run (a 2,400-frame store reads in ~3 s)


def defect_string(defects) -> str:
    """Kröger–Vink-like label: ``V_S`` vacancy, ``Se_S`` substitution, comma-joined."""
    return ",".join(f"V_{a}" if k == "vacancy" else f"{b}_{a}" for k, a, b in defects)


@dataclass(frozen=True)
class Job:
    """One structure to relax."""

    id: str
    host_key: str
    material: str
    supercell: tuple[int, int]
    density: str
    fraction: float
    sites: tuple[int, ...]
    defects: tuple
    seed: int
    seed_scheme: str = "v2"


def host_key(material: str | HostSpec, supercell: tuple[int, ...]) -> str:
    """``MoS2_8x8`` for a built-in host; a file's host adds its content hash."""
    spec = host_spec(material)
    return "_".join(filter(None, (spec.name, _sc(supercell), spec.digest)))


def _sc(supercell) -> str:
    """``8x8`` (2D) or ``3x3x3`` labels; a trailing 1 of a 2D host is dropped."""
    s = [int(v) for v in supercell]
    return "x".join(map(str, s[:2] if len(s) == 3 and s[2] == 1 else s))


def plan_jobs(materials: Iterable[str | HostSpec], density: str, count: int,
              supercell: int | tuple[int, ...] | None, seed: int,
              seed_scheme: str = "v2",
              fractions: tuple[float, ...] = HIGH_DENSITY_FRACTIONS) -> list[Job]:
    """Deterministic job list, interleaved across materials and concentrations.

    Order: rank within a group, then concentration, then material, so a
    partial run covers every material first and every concentration next.
    Each concentration of each material draws from its own seeded stream, so a
    larger ``count`` extends the list without changing existing jobs.
    ``seed_scheme`` is one of :data:`SEED_SCHEMES` (``"legacy"`` reproduces
    stores made before ``"v2"``). ``fractions``: the high-density concentrations
    (defects per host site; 2DMD's by default).
    """
    if seed_scheme not in SEED_SCHEMES:
        raise ValueError(f"seed_scheme must be one of {SEED_SCHEMES}, got {seed_scheme!r}")
    legacy = seed_scheme == "legacy"
    symmetry = "translations" if legacy else "full"
    groups: dict[tuple[int, int], list[Job]] = {}
    for m_idx, mat in enumerate(materials):
        spec = host_spec(mat)
        host = build_host(spec, spec.supercell if supercell is None else supercell)
        sc = tuple(host.info["supercell"])
        key = host_key(spec, sc)
        base = stream_base(seed, spec.name, seed_scheme)
        job = partial(_job, key, seed=seed, seed_scheme=seed_scheme)
        if density == "high":
            for k, frac in enumerate(fractions):
                stream = int(np.random.SeedSequence(base + [k]).generate_state(1)[0])
                cfgs = generate_configs(host, "high", count, stream, fractions=(frac,),
                                        symmetry=symmetry, spec=spec)
                groups[(k, m_idx)] = [job(c, f"c{round(frac * 1000):03d}", i)
                                      for i, c in enumerate(cfgs)]
        else:
            stream = seed if legacy else int(
                np.random.SeedSequence(base).generate_state(1)[0])
            cfgs = generate_configs(host, "low", count, stream, symmetry=symmetry,
                                    spec=spec)
            groups[(0, m_idx)] = [job(c, "n", i) for i, c in enumerate(cfgs)]
    ordered = [groups[k] for k in sorted(groups)]
    jobs = []
    for rank in range(max((len(g) for g in ordered), default=0)):
        jobs += [g[rank] for g in ordered if rank < len(g)]
    return jobs


def _job(key: str, cfg: DefectConfig, tag: str, i: int, seed: int,
         seed_scheme: str) -> Job:
    return Job(f"{key}-{cfg.density}-{tag}-{i:05d}", key, cfg.host, cfg.supercell,
               cfg.density, float(cfg.fraction), cfg.sites, cfg.defects, seed,
               seed_scheme)


# ---------------------------------------------------------------- workers
_CALC = None   # this worker's oracle, set by _init_worker


def _init_worker(calculator: str, threads: int, own_process: bool = False) -> None:
    """Set up a worker: tuning (only in a worker's own process), torch threads, oracle."""
    global _CALC
    import torch
    if own_process:     # a spawned worker's process is ours to tune; a caller's is not
        tune_worker()
    torch.set_num_threads(threads)
    _CALC = make_calculator(calculator)


def worker_calculator() -> Calculator:
    """The oracle calculator of this worker (set up by :func:`run_jobs`)."""
    return _CALC


def _relax_job(args) -> tuple[Job, dict]:
    job, host, fmax, steps = args
    unrelaxed = apply_defects(host, job.sites, job.defects)
    res = relax(unrelaxed, worker_calculator(), fmax=fmax, steps=steps)
    out = asdict(res)
    out.update(fmax_target=fmax, max_steps=steps)
    out["unrelaxed"] = unrelaxed
    out["positions"] = unwrap_relaxed(unrelaxed, res.positions)
    return job, out


def _record(job: Job, out: dict, calculator: str, version: str) -> Atoms:
    atoms = out["unrelaxed"].copy()
    atoms.arrays["relaxed_positions"] = out["positions"]
    atoms.info = {
        "id": job.id, "material": job.material, "density": job.density,
        "fraction": job.fraction, "supercell": _sc(job.supercell),
        "host_key": job.host_key, "defects": defect_string(job.defects),
        "steps": out["steps"], "converged": out["converged"],
        "energy_initial": out["energy_initial"], "energy_final": out["energy_final"],
        "fmax_final": out["fmax_final"], "fmax_target": out["fmax_target"],
        "max_steps": out["max_steps"], "wall_time": round(out["wall_time"], 3),
        "calculator": calculator, "calculator_version": version, "seed": job.seed,
        "seed_scheme": job.seed_scheme,
    }
    return atoms


def relaxed_host(out: Path, material: str | HostSpec, supercell: tuple[int, ...],
                 calculator: str, threads: int = 1, fmax: float = FMAX,
                 steps: int = MAX_STEPS) -> Atoms:
    """The oracle-relaxed pristine host, relaxed once and cached in ``hosts.extxyz``."""
    spec = host_spec(material)
    key = host_key(spec, supercell)
    for h in read_frames(out / HOSTS, repair=True):
        if h.info.get("host_key") == key:
            return _with_labels(h, spec, supercell)
    import torch
    torch.set_num_threads(threads)
    host = build_host(spec, supercell)
    res = relax(host, make_calculator(calculator), fmax=fmax, steps=steps)
    relaxed = host.copy()
    relaxed.positions = res.positions
    for k in ("cell_index", "basis_index"):
        relaxed.arrays.pop(k, None)
    relaxed.info = {"host_key": key, "material": spec.name,
                    "supercell": _sc(supercell),
                    "steps": res.steps, "converged": res.converged,
                    "energy_final": res.energy_final, "calculator": calculator}
    append_frames(out / HOSTS, [relaxed])
    return _with_labels(relaxed, spec, supercell)


def _with_labels(h: Atoms, spec: HostSpec, supercell) -> Atoms:
    ref = build_host(spec, supercell)
    h = h.copy()
    h.arrays["cell_index"] = ref.arrays["cell_index"]
    h.arrays["basis_index"] = ref.arrays["basis_index"]
    h.info.update(host=ref.info["host"], supercell=ref.info["supercell"])
    return h


def done_ids(out: Path) -> set[str]:
    """Ids already in the store (a truncated last frame is repaired away)."""
    return {a.info["id"] for a in read_frames(Path(out) / SAMPLES, repair=True)}


def generate(out: str | Path, materials: Iterable[str | HostSpec], density: str,
             count: int, supercell: int | tuple[int, ...] | None = None,
             calculator: str = "chgnet", workers: int = 1, threads: int = 1,
             seed: int = 0, fmax: float = FMAX, steps: int = MAX_STEPS,
             progress: bool = True, limit: int | None = None,
             seed_scheme: str | None = None,
             fractions: tuple[float, ...] = HIGH_DENSITY_FRACTIONS,
             scheduler: str | None = None, manifest_extra: dict | None = None) -> dict:
    """Generate (or resume) a data set; returns the run summary.

    Parameters
    ----------
    out : path
        Output folder; created only once the job list is planned, so arguments
        that cannot be planned leave no folder.
    materials : iterable of str or HostSpec
        Built-in host names, or specs of hosts read from files
        (:func:`~ase_definet.data.hosts.file_host`).
    density : {"low", "high"}
    count : int
        Low density: structures per material; high: per concentration.
    supercell : int or tuple of int, optional
        Default: each host's own (the 2DMD supercell of a built-in one).
    calculator : str
        Oracle name or ``module:function``.
    workers : int
        Local worker processes (a dask ``LocalCluster``, one thread each); 0
        relaxes in this process (tests, debugging). Unused with ``scheduler``.
    threads : int
        Torch threads per worker.
    limit : int, optional
        Stop after this many new structures (time-boxed increments).
    seed_scheme : {"v2", "legacy"}, optional
        Default: the scheme the store was made with, ``"v2"`` for a new one.
        ``"legacy"`` remakes a store planned before ``"v2"`` from scratch.
    fractions : tuple of float
        High-density concentrations (defects per host site).
    scheduler : str, optional
        A dask scheduler (``tcp://HOST:PORT`` or a scheduler file) whose workers
        relax the structures.
    manifest_extra : dict, optional
        Added to the manifest (e.g. ``{"recipe": ...}``).
    """
    out = Path(out)
    specs = [host_spec(m) for m in materials]
    frames = read_frames(out / SAMPLES, repair=True)
    scheme = store_scheme(frames, seed_scheme, out)
    jobs = plan_jobs(specs, density, count, supercell, seed, scheme, fractions=fractions)
    version = calculator_version(calculator)
    out.mkdir(parents=True, exist_ok=True)
    finished = {a.info["id"] for a in frames}
    todo = [j for j in jobs if j.id not in finished]
    if limit is not None:
        todo = todo[:limit]
    by_name = {s.name: s for s in specs}
    hosts = {}
    for j in todo:
        if j.host_key not in hosts:
            hosts[j.host_key] = relaxed_host(out, by_name[j.material], j.supercell,
                                             calculator, threads=max(1, threads),
                                             fmax=fmax, steps=steps)
    tasks = [(j, hosts[j.host_key], fmax, steps) for j in todo]
    summary = {"planned": len(jobs), "seed_scheme": scheme,
               "already_done": len(jobs) - len([j for j in jobs if j.id not in finished])}
    summary.update(run_jobs(out, tasks, _relax_job,
                            partial(_record, calculator=calculator, version=version),
                            calculator, workers, threads, f"relax {density}", progress,
                            manifest_extra=manifest_extra, scheduler=scheduler))
    return summary


def run_jobs(out: Path, tasks: list, work: Callable, record: Callable, calculator: str,
             workers: int, threads: int, desc: str, progress: bool = True,
             manifest_extra: dict | None = None, manifest_every: float | None = None,
             scheduler: str | None = None) -> dict:
    """Run oracle ``tasks`` through ``work`` and append ``record(key, result)`` frames.

    ``work`` runs on dask workers (:func:`ase_definet.data.engine.run_jobs`: a
    ``LocalCluster`` of ``workers`` processes, or the cluster of ``scheduler``;
    ``workers=0``: in this process), each set up with ``calculator`` as
    :func:`worker_calculator` and ``threads`` torch threads. It returns
    ``(key, result)`` with ``result["converged"]`` and ``result["steps"]``; this
    process is the only writer. The manifest is rewritten at the start, every
    ``manifest_every`` seconds (default :data:`MANIFEST_EVERY`) and on the way
    out. Returns ``new``, ``not_converged`` and ``wall_time``.
    """
    from .engine import run_jobs as run
    every = MANIFEST_EVERY if manifest_every is None else manifest_every
    return run(out, tasks, work, record, partial(_init_worker, calculator, max(1, threads)),
               workers, desc, progress, manifest_extra, every, scheduler)
