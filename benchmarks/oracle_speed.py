"""Oracle step time: CHGNet's stock calculator against what the workers run.

Arms (``--arms``, in this order by default), each adding one change to the last:

- ``stock``: ``chgnet.model.CHGNetCalculator`` as shipped (task ``"efsm"`` on every
  call), glibc's default malloc;
- ``heap``: the same calculator in a process that keeps freed memory
  (``process.keep_freed_memory``);
- ``ondemand``: ``make_calculator("chgnet")`` (energy and forces only, unless
  stress is asked for), freed memory kept;
- ``ftz``: the same with subnormal floats flushed to zero: ``data.worker.tune_worker``
  and ``make_calculator``, what ``generate``, ``tighten`` and ``residual`` workers run.

Each run is a fresh spawned process (malloc and float settings cannot be undone
inside one) with one torch thread that relaxes the same stored unrelaxed structure
with CHGNet + FIRE for a fixed number of steps (fmax 0: no early stop). Arms
alternate (stock, heap, ondemand, ftz, stock, ...) so drift on a noisy machine hits
all; ``--concurrent 2`` runs two copies of the arm at once, as the generator's two
workers do. Prints seconds per step, the kernel's share of CPU time, and whether
each arm ended at the same positions as the first (bit for bit).

    python benchmarks/oracle_speed.py [--data weights/data/chgnet-2dmd]
        [--where material=MoS2 --where density=high --where supercell=8x8]
        [--steps 40] [--repeats 3] [--concurrent 2] [--arms stock,heap,ondemand,ftz]
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import statistics
import time
from pathlib import Path


ARMS = ("stock", "heap", "ondemand", "ftz")


def _run(args: tuple) -> dict:
    frame, steps, arm = args
    import torch
    torch.set_num_threads(1)
    from ase.optimize import FIRE
    from ase_definet.process import keep_freed_memory
    from ase_definet.calculators import make_calculator
    from ase_definet.data.worker import tune_worker
    if arm == "ftz":
        accepted = all(tune_worker().values())
    else:
        accepted = keep_freed_memory() if arm != "stock" else None
    atoms = frame.copy()
    calc = make_calculator("chgnet")
    if arm in ("stock", "heap"):
        from chgnet.model import CHGNetCalculator
        calc = CHGNetCalculator(model=calc.model, use_device="cpu")
    atoms.calc = calc
    atoms.get_potential_energy()  # model load and first graph outside the timing
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    FIRE(atoms, logfile=None).run(fmax=0.0, steps=steps)
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    user, sys_ = r1.ru_utime - r0.ru_utime, r1.ru_stime - r0.ru_stime
    return {"s_per_step": wall / steps, "sys_share": sys_ / max(user + sys_, 1e-9),
            "accepted": accepted, "end": atoms.positions.tobytes()}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="weights/data/chgnet-2dmd")
    p.add_argument("--where", action="append",
                   default=None, help="KEY=VALUE on the stored info (repeatable)")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--concurrent", type=int, default=1)
    p.add_argument("--arms", default=",".join(ARMS),
                   help="comma-separated subset of " + ",".join(ARMS))
    args = p.parse_args(argv)
    arms = args.arms.split(",")
    if not arms or set(arms) - set(ARMS):
        raise SystemExit(f"--arms: choose from {','.join(ARMS)}, got {args.arms!r}")
    from ase_definet.data.tighten import select_frames
    where = args.where or ["material=MoS2", "density=high", "supercell=8x8"]
    frames, _ = select_frames(Path(args.data), where)
    if not frames:
        raise SystemExit(f"no converged frame in {args.data} matches {where}")
    frame = frames[0]
    frame.arrays.pop("relaxed_positions", None)
    print(f"{frame.info.get('id')}: {len(frame)} atoms, {args.steps} FIRE steps, "
          f"{args.concurrent} process(es) at once, {args.repeats} repeats per arm")
    results: dict[str, list[dict]] = {arm: [] for arm in arms}
    ctx = mp.get_context("spawn")
    for _ in range(args.repeats):
        for arm in results:
            task = (frame, args.steps, arm)
            with ctx.Pool(args.concurrent, maxtasksperchild=1) as pool:
                results[arm] += pool.map(_run, [task] * args.concurrent)
    print(f"| arm | runs | s/step median | s/step min | kernel share of CPU "
          f"| {arms[0]} / arm (medians) | same end point as {arms[0]} |")
    print("|---|---|---|---|---|---|---|")
    ref = results[arms[0]][0]["end"]
    base = statistics.median(r["s_per_step"] for r in results[arms[0]])
    for arm, rows in results.items():
        steps = [r["s_per_step"] for r in rows]
        kern = statistics.median(r["sys_share"] for r in rows)
        print(f"| {arm} | {len(rows)} | {statistics.median(steps):.3f} | {min(steps):.3f} "
              f"| {100 * kern:.1f} % | {base / statistics.median(steps):.2f}× "
              f"| {'bit-identical' if all(r['end'] == ref for r in rows) else 'differs'} |")
    tuned = [r["accepted"] for arm in arms if arm != "stock" for r in results[arm]]
    if tuned:
        print(f"worker settings accepted (mallopt; flush-to-zero in ftz): {all(tuned)}")


if __name__ == "__main__":
    main()
