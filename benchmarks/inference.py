"""Inference benchmark: prints one markdown table, all rows from one run.

    python benchmarks/inference.py [--device cpu|cuda] [--repeats 20] [--rounds 3]
                                   [--no-chgnet] [--configs default,paper]

Rows: end-to-end ``DefiNetRelaxer(atoms, host).run()`` (matching + graph +
network + write-back) for MoS2 8×8, 12×12 and 16×16 supercells with mixed
defects, for the "default" and "paper" configurations, split into its parts;
batched throughput at batch 1, 8 and 32; peak memory; bf16 autocast (CPU) for
the paper configuration with its deviation from fp32; and, in the same run,
the CHGNet + FIRE (fmax 0.01 eV/Å) relaxation of the 192-atom structure.
Each configuration is measured in a fresh subprocess so that peak memory
(max RSS, or CUDA peak allocation) belongs to it alone. Medians after warm-up.
These subprocesses opt in to ``keep_freed_memory`` (as the ``definet`` command does).

The loop table is the pattern of a user script: ``DefiNetRelaxer(atoms,
host=...).run()`` with a fresh relaxer per structure (the model comes from the
process-wide cache after the first call) beside one reused ``Predictor``,
interleaved call by call so that load on the machine hits both alike; once with
glibc's default malloc (what a library user gets: ``Predictor`` no longer tunes
it) and once after ``keep_freed_memory()``. Ratios are against the reused
Predictor of the same subprocess, and the CHGNet + FIRE line against it too.
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time

import numpy as np

SIZES = (8, 12, 16)


def structure(n: int):
    """MoS2 n×n with 2 S vacancies, 1 Mo vacancy, 2 Se and 1 W substitutions."""
    from ase_definet.data.defects import apply_defects
    from ase_definet.data.hosts import build_host
    host = build_host("MoS2", n)
    sym = host.get_chemical_symbols()
    s_sites = [i for i, s in enumerate(sym) if s == "S"]
    mo_sites = [i for i, s in enumerate(sym) if s == "Mo"]
    picks = {s_sites[3]: ("vacancy", "S", None), s_sites[40]: ("vacancy", "S", None),
             mo_sites[10]: ("vacancy", "Mo", None), s_sites[21]: ("substitution", "S", "Se"),
             s_sites[33]: ("substitution", "S", "Se"), mo_sites[30]: ("substitution", "Mo", "W")}
    order = sorted(picks)
    return apply_defects(host, order, [picks[k] for k in order]), host


def _sync(device):
    import torch
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def measure(config: str, device: str, repeats: int, dtype: str = "fp32") -> dict:
    """Run in a subprocess: times of one configuration."""
    import torch
    from ase_definet import DefiNet
    from ase_definet.inference import Predictor
    from ase_definet.process import keep_freed_memory
    from ase_definet.relax import DefiNetRelaxer
    keep_freed_memory()
    torch.manual_seed(0)
    try:
        from ase_definet.weights import load_model
        net = load_model(None) if config == "default" else DefiNet(config)
        if net.config != DefiNet(config).config:
            net = DefiNet(config)
    except Exception:
        net = DefiNet(config)
    pred = Predictor(net, device=device, strict=False)
    out = {"config": config, "device": device, "dtype": dtype, "rows": {}}
    autocast = torch.autocast(device_type=pred.device.type, dtype=torch.bfloat16,
                              enabled=dtype == "bf16")
    for n in SIZES:
        atoms0, host = structure(n)
        parts = {"total": [], "match": [], "graph": [], "network": []}
        with autocast:
            for k in range(repeats + 3):
                atoms = atoms0.copy()
                _sync(device)
                t0 = time.perf_counter()
                r = DefiNetRelaxer(atoms, host=host, model=pred, logfile=None)
                r.run()
                _sync(device)
                t = time.perf_counter() - t0
                if k >= 3:
                    parts["total"].append(t)
                    for key in ("match", "graph", "network"):
                        parts[key].append(r.timings[key])
        out["rows"][n] = {k: statistics.median(v) for k, v in parts.items()}
        out["rows"][n]["atoms"] = len(atoms0)
    # batched throughput on the 192-atom structure
    atoms0, host = structure(8)
    thr = {}
    with autocast:
        for bs in (1, 8, 32):
            structs = [atoms0.copy() for _ in range(bs)]
            pred.predict(structs, host, batch_size=bs)
            times = []
            for _ in range(max(3, repeats // max(1, bs // 4))):
                _sync(device)
                t0 = time.perf_counter()
                pred.predict(structs, host, batch_size=bs)
                _sync(device)
                times.append(time.perf_counter() - t0)
            thr[bs] = bs / statistics.median(times)
    out["throughput"] = thr
    if dtype == "bf16":
        with torch.autocast(device_type=pred.device.type, dtype=torch.bfloat16):
            lo = pred.predict([atoms0], host)[0].positions
        hi = pred.predict([atoms0], host)[0].positions
        out["bf16_max_dev"] = float(np.abs(lo - hi).max())
        out["bf16_rel_dev"] = float(np.abs(lo - hi).max() /
                                    max(np.abs(hi - atoms0.positions).max(), 1e-12))
    if pred.device.type == "cuda":
        out["peak_mem_mb"] = torch.cuda.max_memory_allocated() / 2**20
    else:
        out["peak_mem_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out["threads"] = torch.get_num_threads()
    return out


def _loop_model():
    """The shipped default (name ``None``), or a checkpoint of an untrained default
    network when none is installed: fresh relaxers need a name or path to cache."""
    from ase_definet.errors import NoWeightsError
    from ase_definet.weights import default_model_name
    try:
        default_model_name()
        return None, "shipped default"
    except NoWeightsError:
        import tempfile
        from ase_definet import DefiNet
        from ase_definet.weights import save_checkpoint
        path = tempfile.mkdtemp() + "/default.pt"
        save_checkpoint(path, DefiNet("default"))
        return path, "untrained default (no shipped weights)"


def measure_loop(device: str, repeats: int, heap: bool) -> dict:
    """Fresh DefiNetRelaxer per call vs one reused Predictor, interleaved (subprocess)."""
    from ase_definet.process import keep_freed_memory
    accepted = keep_freed_memory() if heap else False
    from ase_definet.inference import Predictor
    from ase_definet.relax import DefiNetRelaxer
    model, label = _loop_model()
    atoms0, host = structure(8)
    t0 = time.perf_counter()
    DefiNetRelaxer(atoms0.copy(), host=host, model=model, device=device, logfile=None).run()
    first = time.perf_counter() - t0                  # includes the one model load
    pred = Predictor(model, device=device)
    times = {"fresh": [], "reused": []}
    for k in range(repeats + 3):
        for kind in ("fresh", "reused"):
            atoms = atoms0.copy()
            _sync(device)
            t0 = time.perf_counter()
            DefiNetRelaxer(atoms, host=host, model=model if kind == "fresh" else pred,
                           device=device, logfile=None).run()
            _sync(device)
            if k >= 3:
                times[kind].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"model": label, "heap": bool(accepted), "first": first, **med,
            "ratio": med["fresh"] / med["reused"]}


def measure_chgnet(threads: int) -> dict:
    import torch
    torch.set_num_threads(threads)
    from ase_definet.calculators import make_calculator
    from ase_definet.data.oracle import relax
    atoms, _ = structure(8)
    calc = make_calculator("chgnet")
    res = relax(atoms, calc, fmax=0.01, steps=1000)
    return {"time": res.wall_time, "steps": res.steps, "converged": res.converged}


def _sub(args: list[str]) -> dict:
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-chgnet", action="store_true")
    ap.add_argument("--rounds", type=int, default=3,
                    help="alternating subprocess pairs of the loop table (medians)")
    ap.add_argument("--configs", default="default,paper")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--dtype", default="fp32", help=argparse.SUPPRESS)
    args = ap.parse_args()
    import torch
    torch.set_num_threads(args.threads)
    if args.one == "chgnet":
        print(json.dumps(measure_chgnet(args.threads)))
        return
    if args.one in ("loop", "loop-heap"):
        print(json.dumps(measure_loop(args.device, args.repeats, args.one == "loop-heap")))
        return
    if args.one:
        print(json.dumps(measure(args.one, args.device, args.repeats, args.dtype)))
        return
    common = ["--device", args.device, "--repeats", str(args.repeats),
              "--threads", str(args.threads)]
    # the two malloc settings alternate, subprocess by subprocess, so that changing
    # load on the machine hits both; each number is the median over the rounds
    rounds = [[_sub(["--one", k, *common]) for k in ("loop", "loop-heap")]
              for _ in range(max(1, args.rounds))]
    loops = [{key: (statistics.median(r[i][key] for r in rounds)
                    if isinstance(rounds[0][i][key], float) else rounds[0][i][key])
              for key in rounds[0][i]} for i in range(2)]
    runs = [_sub(["--one", c, *common]) for c in args.configs.split(",") if c]
    if "paper" in args.configs:
        runs.append(_sub(["--one", "paper", "--dtype", "bf16", *common]))
    chg = None if args.no_chgnet else _sub(["--one", "chgnet", "--threads", str(args.threads)])
    print(f"\nMachine: {platform.processor() or platform.machine()}, "
          f"torch {torch.__version__}, {args.threads} threads, device {args.device}\n")
    print(f"Loop of one 192-atom MoS2 structure, {loops[0]['model']}, median of "
          f"{len(rounds)} alternating subprocess pairs:\n")
    print("| pattern | malloc | first call ms | ms per call | vs reused Predictor |")
    print("|---|---|---|---|---|")
    for lp in loops:
        heap = "keep_freed_memory" if lp["heap"] else "glibc default"
        print(f"| reused Predictor | {heap} | | {1e3 * lp['reused']:.1f} | 1.00× |")
        print(f"| fresh DefiNetRelaxer(atoms, host) | {heap} | {1e3 * lp['first']:.0f} | "
              f"{1e3 * lp['fresh']:.1f} | {lp['ratio']:.2f}× |")
    base = loops[0]["reused"]
    print(f"\nmalloc: reused Predictor {1e3 * base:.1f} ms with glibc's default, "
          f"{1e3 * loops[1]['reused']:.1f} ms after keep_freed_memory "
          f"({loops[1]['reused'] / base:.2f}×)")
    if chg:
        print(f"CHGNet 0.3.0 + FIRE (fmax 0.01), same structure: {chg['time']:.1f} s, "
              f"{chg['steps']} steps = {chg['time'] / base:.0f}× the reused Predictor, "
              f"{chg['time'] / loops[0]['fresh']:.0f}× a fresh relaxer (glibc default)")
    if not runs:
        return
    print()
    print("| config | dtype | atoms | end-to-end ms | match ms | graph ms | network ms |"
          " vs 192 atoms |")
    print("|---|---|---|---|---|---|---|---|")
    for r in runs:
        base = r["rows"]["8"]["total"]
        for n in map(str, SIZES):
            row = r["rows"][n]
            print(f"| {r['config']} | {r['dtype']} | {row['atoms']} | {1e3 * row['total']:.1f} | "
                  f"{1e3 * row['match']:.1f} | {1e3 * row['graph']:.1f} | "
                  f"{1e3 * row['network']:.1f} | {row['total'] / base:.2f}× |")
    print("\n| config | dtype | batch 1 struct/s | batch 8 struct/s | batch 32 struct/s |"
          " peak memory MB |")
    print("|---|---|---|---|---|---|")
    for r in runs:
        t = r["throughput"]
        print(f"| {r['config']} | {r['dtype']} | {t['1']:.1f} | {t['8']:.1f} | {t['32']:.1f} | "
              f"{r['peak_mem_mb']:.0f} |")
    for r in runs:
        if "bf16_max_dev" in r:
            print(f"\nbf16 autocast ({r['config']}): max deviation from fp32 "
                  f"{r['bf16_max_dev']:.2e} Å ({100 * r['bf16_rel_dev']:.1f} % of the largest "
                  "predicted displacement)")
    if chg:
        d = runs[0]["rows"]["8"]["total"]
        print(f"\nCHGNet 0.3.0 + FIRE (fmax 0.01) on the same 192-atom structure: "
              f"{chg['time']:.1f} s, {chg['steps']} steps; DefiNet {runs[0]['config']} "
              f"end-to-end {1e3 * d:.1f} ms → {chg['time'] / d:.0f}× faster")


if __name__ == "__main__":
    main()
