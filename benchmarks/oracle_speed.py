"""Oracle step time with glibc's default malloc against ``keep_freed_memory``.

Each run is a fresh spawned process (malloc settings cannot be undone inside
one) with one torch thread that relaxes the same stored unrelaxed structure
with CHGNet + FIRE for a fixed number of steps (fmax 0: no early stop). Arms
alternate (default, tuned, default, ...) so drift on a noisy machine hits both;
``--concurrent 2`` runs two copies of the arm at once, as the generator's two
workers do. Prints seconds per step and the kernel's share of CPU time.

    python benchmarks/oracle_speed.py [--data weights/data/chgnet-2dmd]
        [--where material=MoS2 --where density=high --where supercell=8x8]
        [--steps 40] [--repeats 3] [--concurrent 2]
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import statistics
import time
from pathlib import Path


def _run(args: tuple) -> dict:
    frame, steps, tuned = args
    import torch
    torch.set_num_threads(1)
    from ase.optimize import FIRE
    from ase_definet.data.heap import keep_freed_memory
    from ase_definet.data.oracle import make_calculator
    accepted = keep_freed_memory() if tuned else None
    atoms = frame.copy()
    atoms.calc = make_calculator("chgnet")
    atoms.get_potential_energy()  # model load and first graph outside the timing
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    FIRE(atoms, logfile=None).run(fmax=0.0, steps=steps)
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    user, sys_ = r1.ru_utime - r0.ru_utime, r1.ru_stime - r0.ru_stime
    return {"s_per_step": wall / steps, "sys_share": sys_ / max(user + sys_, 1e-9),
            "accepted": accepted}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="weights/data/chgnet-2dmd")
    p.add_argument("--where", action="append",
                   default=None, help="KEY=VALUE on the stored info (repeatable)")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--concurrent", type=int, default=1)
    args = p.parse_args(argv)
    from ase_definet.data.tighten import select_frames
    where = args.where or ["material=MoS2", "density=high", "supercell=8x8"]
    frames, _ = select_frames(Path(args.data), where)
    if not frames:
        raise SystemExit(f"no converged frame in {args.data} matches {where}")
    frame = frames[0]
    frame.arrays.pop("relaxed_positions", None)
    print(f"{frame.info.get('id')}: {len(frame)} atoms, {args.steps} FIRE steps, "
          f"{args.concurrent} process(es) at once, {args.repeats} repeats per arm")
    results: dict[str, list[dict]] = {"default": [], "keep_freed_memory": []}
    ctx = mp.get_context("spawn")
    for _ in range(args.repeats):
        for arm in results:
            task = (frame, args.steps, arm != "default")
            with ctx.Pool(args.concurrent, maxtasksperchild=1) as pool:
                results[arm] += pool.map(_run, [task] * args.concurrent)
    print("| malloc | runs | s/step median | s/step min | kernel share of CPU |")
    print("|---|---|---|---|---|")
    for arm, rows in results.items():
        steps = [r["s_per_step"] for r in rows]
        kern = statistics.median(r["sys_share"] for r in rows)
        print(f"| {arm} | {len(rows)} | {statistics.median(steps):.3f} | {min(steps):.3f} "
              f"| {100 * kern:.1f} % |")
    base = statistics.median(r["s_per_step"] for r in results["default"])
    tuned = statistics.median(r["s_per_step"] for r in results["keep_freed_memory"])
    accepted = all(r["accepted"] for r in results["keep_freed_memory"])
    print(f"ratio default / tuned (medians, same run): {base / tuned:.2f}"
          f"; mallopt accepted: {accepted}")


if __name__ == "__main__":
    main()
