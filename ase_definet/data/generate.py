"""Resumable generation of defect data sets with an oracle calculator.

Layout of an output folder::

    DIR/hosts.extxyz     oracle-relaxed pristine hosts (info: host_key)
    DIR/samples.extxyz   one frame per relaxed defect structure (append-only)
    DIR/manifest.json    what exists: counts, oracle, protocol, versions

The job list is a pure function of the arguments (materials, density, count,
supercell, seed, seed scheme), and each job has a stable id, so rerunning the
same command skips finished ids and resumes; raising ``count`` extends the same
list. The seed scheme is recorded in every frame (``info["seed_scheme"]``) and
in the manifest; a store resumes under the scheme it was made with.
Worker processes relax structures in parallel; the parent is the only writer.
"""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import platform
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from functools import partial
from collections.abc import Callable, Iterable

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator

from .defects import DefectConfig, apply_defects, generate_configs
from .hosts import build_host, host_spec
from ..calculators import calculator_version, make_calculator
from .oracle import FMAX, MAX_STEPS, OPTIMIZER, relax
from .sample import unwrap_relaxed
from .seeding import SEED_SCHEMES, frame_scheme, store_scheme, stream_base
from .store import append_frames, read_frames
from .worker import tune_worker

SAMPLES = "samples.extxyz"
HOSTS = "hosts.extxyz"
MANIFEST = "manifest.json"
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


def host_key(material: str, supercell: tuple[int, ...]) -> str:
    return f"{host_spec(material).name}_{_sc(supercell)}"


def _sc(supercell) -> str:
    """``8x8`` (2D) or ``3x3x3`` labels; a trailing 1 of a 2D host is dropped."""
    s = [int(v) for v in supercell]
    return "x".join(map(str, s[:2] if len(s) == 3 and s[2] == 1 else s))


def plan_jobs(materials: Iterable[str], density: str, count: int,
              supercell: int | tuple[int, int] | None, seed: int,
              seed_scheme: str = "v2") -> list[Job]:
    """Deterministic job list, interleaved across materials and concentrations.

    Order: rank within a group, then concentration, then material, so a
    partial run covers every material first and every concentration next.
    Each concentration of each material draws from its own seeded stream, so a
    larger ``count`` extends the list without changing existing jobs.
    ``seed_scheme`` is one of :data:`SEED_SCHEMES` (``"legacy"`` reproduces
    stores made before ``"v2"``).
    """
    if seed_scheme not in SEED_SCHEMES:
        raise ValueError(f"seed_scheme must be one of {SEED_SCHEMES}, got {seed_scheme!r}")
    legacy = seed_scheme == "legacy"
    symmetry = "translations" if legacy else "full"
    groups: dict[tuple[int, int], list[Job]] = {}
    for m_idx, mat in enumerate(materials):
        spec = host_spec(mat)
        host = build_host(spec.name, spec.supercell if supercell is None else supercell)
        sc = tuple(host.info["supercell"])
        key = host_key(spec.name, sc)
        base = stream_base(seed, spec.name, seed_scheme)
        job = partial(_job, key, seed=seed, seed_scheme=seed_scheme)
        if density == "high":
            from .defects import HIGH_DENSITY_FRACTIONS
            for k, frac in enumerate(HIGH_DENSITY_FRACTIONS):
                stream = int(np.random.SeedSequence(base + [k]).generate_state(1)[0])
                cfgs = generate_configs(host, "high", count, stream, fractions=(frac,),
                                        symmetry=symmetry)
                groups[(k, m_idx)] = [job(c, f"c{round(frac * 1000):03d}", i)
                                      for i, c in enumerate(cfgs)]
        else:
            stream = seed if legacy else int(
                np.random.SeedSequence(base).generate_state(1)[0])
            cfgs = generate_configs(host, "low", count, stream, symmetry=symmetry)
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
_CALC = None


def _init_worker(calculator: str, threads: int, own_process: bool = False) -> None:
    global _CALC
    import torch
    if own_process:     # a spawned worker's process is ours to tune; a caller's is not
        tune_worker()
    torch.set_num_threads(threads)
    _CALC = make_calculator(calculator)


def worker_calculator() -> Calculator:
    """The oracle calculator of this worker process (set up by :func:`run_jobs`)."""
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


def relaxed_host(out: Path, material: str, supercell: tuple[int, int],
                 calculator: str, threads: int = 1, fmax: float = FMAX,
                 steps: int = MAX_STEPS) -> Atoms:
    """The oracle-relaxed pristine host, relaxed once and cached in ``hosts.extxyz``."""
    key = host_key(material, supercell)
    for h in read_frames(out / HOSTS, repair=True):
        if h.info.get("host_key") == key:
            return _with_labels(h, material, supercell)
    import torch
    torch.set_num_threads(threads)
    host = build_host(material, supercell)
    res = relax(host, make_calculator(calculator), fmax=fmax, steps=steps)
    relaxed = host.copy()
    relaxed.positions = res.positions
    for k in ("cell_index", "basis_index"):
        relaxed.arrays.pop(k, None)
    relaxed.info = {"host_key": key, "material": material,
                    "supercell": _sc(supercell),
                    "steps": res.steps, "converged": res.converged,
                    "energy_final": res.energy_final, "calculator": calculator}
    append_frames(out / HOSTS, [relaxed])
    return _with_labels(relaxed, material, supercell)


def _with_labels(h: Atoms, material: str, supercell) -> Atoms:
    ref = build_host(material, supercell)
    h = h.copy()
    h.arrays["cell_index"] = ref.arrays["cell_index"]
    h.arrays["basis_index"] = ref.arrays["basis_index"]
    h.info.update(host=ref.info["host"], supercell=ref.info["supercell"])
    return h


def done_ids(out: Path) -> set[str]:
    """Ids already in the store (a truncated last frame is repaired away)."""
    return {a.info["id"] for a in read_frames(Path(out) / SAMPLES, repair=True)}


def generate(out: str | Path, materials: Iterable[str], density: str, count: int,
             supercell: int | tuple[int, int] | None = None, calculator: str = "chgnet",
             workers: int = 1, threads: int = 1, seed: int = 0, fmax: float = FMAX,
             steps: int = MAX_STEPS, progress: bool = True,
             limit: int | None = None, seed_scheme: str | None = None) -> dict:
    """Generate (or resume) a data set; returns the run summary.

    Parameters
    ----------
    out : path
        Output folder (created).
    materials : iterable of str
        Built-in host names.
    density : {"low", "high"}
    count : int
        Low density: structures per material; high: per concentration.
    supercell : int or (int, int), optional
        Default: the 2DMD supercell of each material.
    calculator : str
        Oracle name or ``module:function``.
    workers : int
        Worker processes; 0 relaxes in this process (tests, debugging).
    threads : int
        Torch threads per worker.
    limit : int, optional
        Stop after this many new structures (time-boxed increments).
    seed_scheme : {"v2", "legacy"}, optional
        Default: the scheme the store was made with, ``"v2"`` for a new one.
        ``"legacy"`` remakes a store planned before ``"v2"`` from scratch.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    materials = [host_spec(m).name for m in materials]
    frames = read_frames(out / SAMPLES, repair=True)
    scheme = store_scheme(frames, seed_scheme, out)
    jobs = plan_jobs(materials, density, count, supercell, seed, scheme)
    finished = {a.info["id"] for a in frames}
    todo = [j for j in jobs if j.id not in finished]
    if limit is not None:
        todo = todo[:limit]
    version = calculator_version(calculator)
    hosts = {}
    for j in todo:
        if j.host_key not in hosts:
            hosts[j.host_key] = relaxed_host(out, j.material, j.supercell, calculator,
                                             threads=max(1, threads), fmax=fmax,
                                             steps=steps)
    tasks = [(j, hosts[j.host_key], fmax, steps) for j in todo]
    summary = {"planned": len(jobs), "seed_scheme": scheme,
               "already_done": len(jobs) - len([j for j in jobs if j.id not in finished])}
    summary.update(run_jobs(out, tasks, _relax_job,
                            partial(_record, calculator=calculator, version=version),
                            calculator, workers, threads, f"relax {density}", progress))
    return summary


def run_jobs(out: Path, tasks: list, work: Callable, record: Callable, calculator: str,
             workers: int, threads: int, desc: str, progress: bool = True,
             manifest_extra: dict | None = None,
             manifest_every: float | None = None) -> dict:
    """Run oracle ``tasks`` through ``work`` and append ``record(key, result)`` frames.

    ``work`` runs in ``workers`` spawned processes (0: in this one) whose
    calculator is :func:`worker_calculator`; it returns ``(key, result)`` with
    ``result["converged"]`` and ``result["steps"]``. The parent is the only writer,
    and the manifest is rewritten at the start (a store a killed run left behind
    is summarised again), every ``manifest_every`` seconds while frames arrive (a
    SIGKILL leaves it at most that stale) and on the way out, after an
    interruption too. Returns ``new``, ``not_converged`` and ``wall_time``.
    """
    from tqdm.auto import tqdm
    _terminate_cleanly()
    bar = tqdm(total=len(tasks), disable=not progress, desc=desc, unit="struct",
               smoothing=0.05)
    counts = {"new": 0, "not_converged": 0}
    every = MANIFEST_EVERY if manifest_every is None else manifest_every
    t0 = last_manifest = time.time()
    write_manifest(out, manifest_extra)
    pool = None
    try:
        if workers <= 0:
            _init_worker(calculator, max(1, threads))
            results = map(work, tasks)
        else:
            pool = mp.get_context("spawn").Pool(workers, initializer=_init_worker,
                                                initargs=(calculator, max(1, threads), True))
            results = pool.imap_unordered(work, tasks)
        for key, res in results:
            append_frames(out / SAMPLES, [record(key, res)])
            counts["new"] += 1
            counts["not_converged"] += int(not res["converged"])
            bar.update(1)
            bar.set_postfix(steps=res["steps"], nc=counts["not_converged"])
            if time.time() - last_manifest >= every:
                write_manifest(out, manifest_extra)
                last_manifest = time.time()
    finally:
        bar.close()
        if pool is not None:
            pool.terminate()
            pool.join()
        write_manifest(out, manifest_extra)
    counts["wall_time"] = round(time.time() - t0, 1)
    return counts


def _terminate_cleanly() -> None:
    """Turn SIGTERM into SystemExit so the manifest is rewritten on the way out."""
    import signal
    import threading
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def write_manifest(out: str | Path, extra: dict | None = None) -> dict:
    """Summarise the store into ``manifest.json`` and return it.

    ``extra`` entries are added to the manifest (e.g. where a tightened store's
    labels come from).
    """
    out = Path(out)
    frames = read_frames(out / SAMPLES)
    groups: dict[str, dict] = {}
    for a in frames:
        i = a.info
        g = groups.setdefault(f"{i['material']}/{i['density']}/{i['supercell']}",
                              {"structures": 0, "converged": 0, "steps": [],
                               "wall_time": 0.0})
        g["structures"] += 1
        g["converged"] += int(bool(i["converged"]))
        g["steps"].append(int(i["steps"]))
        g["wall_time"] += float(i["wall_time"])
    for g in groups.values():
        s = g.pop("steps")
        g["median_steps"] = float(np.median(s))
        g["wall_time"] = round(g["wall_time"], 1)
    calcs = sorted({a.info["calculator_version"] for a in frames})
    schemes = Counter(frame_scheme(a.info) for a in frames)
    # frames written before fmax_target/max_steps were recorded used the defaults
    fmaxes = sorted({float(a.info.get("fmax_target", FMAX)) for a in frames}) or [FMAX]
    caps = sorted({int(a.info.get("max_steps", MAX_STEPS)) for a in frames}) or [MAX_STEPS]
    # labels written before the optimizer was recorded used the protocol's
    optimizers = Counter(str(a.info.get("optimizer", OPTIMIZER)) for a in frames)
    # one name, or labels per optimizer when a store holds several
    optimizer = (dict(sorted(optimizers.items())) if len(optimizers) > 1
                 else next(iter(optimizers), OPTIMIZER))
    manifest = {
        "format": "ase_definet extxyz store v1",
        "samples": SAMPLES, "hosts": HOSTS,
        "structures": len(frames),
        "converged": sum(int(bool(a.info["converged"])) for a in frames),
        "groups": dict(sorted(groups.items())),
        "oracle": {"calculators": calcs, "optimizer": optimizer,
                   "fmax": fmaxes[0] if len(fmaxes) == 1 else fmaxes,
                   "max_steps": caps[0] if len(caps) == 1 else caps, "cell": "fixed",
                   "host": "pre-relaxed by the same oracle, positions only"},
        "seed_scheme": (dict(sorted(schemes.items())) if len(schemes) > 1
                        else next(iter(schemes), None)),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        **(extra or {}),
    }
    tmp = out / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1) + "\n")
    os.replace(tmp, out / MANIFEST)
    return manifest
