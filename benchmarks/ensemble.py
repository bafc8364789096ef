"""Ensemble cost: a K-member ensemble against one member, side by side in one run.

    python benchmarks/ensemble.py [MEMBER.pt ...] [--members 4] [--config default]
                                  [--sizes 8,12,16] [--repeats 10] [--threads 1]
                                  [--device cpu]

Issue #31's rule: an ensemble prediction costs at most K times one member's.
Both arms are the pattern of a user script, a fresh ``DefiNetRelaxer(atoms,
host=...).run()`` per structure (the model comes from the process-wide cache
after the first call): (i) one member, the first checkpoint; (ii) the ensemble of
all of them (``ensemble_of``, saved as one checkpoint). With no paths, K untrained
members of ``--config`` (seeded) are saved to a temporary folder, so the script
runs anywhere; the timings do not depend on the weights. Structures: MoS2 n×n
with mixed defects (``benchmarks/inference.py``). The arms alternate call by call
so that load on the machine hits both alike; medians after warm-up.

Columns: end-to-end time of each arm and their ratio; the network alone
(``timings["network"]``, the batched forward pass) of each and its ratio, since
host matching and the graph are done once for all members; the bound K; and,
as a correctness check, the largest difference between the ensemble's prediction
and the mean of its members' own predictions (Å).
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

PARTS = ("total", "match", "graph", "network")


def _config(text: str):
    """A preset name or a JSON object of configuration fields."""
    return json.loads(text) if text.lstrip().startswith("{") else text


def member_files(paths: list[str], k: int, config, folder: Path) -> tuple[list[Path], str]:
    """The member checkpoints and a label: ``paths``, or ``k`` untrained members of
    ``config`` (seeds 0 … k-1) saved into ``folder``."""
    if paths:
        return [Path(p) for p in paths], "given checkpoints"
    import torch

    from ase_definet import DefiNet
    from ase_definet.weights import save_checkpoint
    if k < 2:
        raise SystemExit(f"--members: an ensemble needs at least 2 members, got {k}")
    out = []
    for seed in range(k):
        torch.manual_seed(seed)
        out.append(folder / f"member-{seed}.pt")
        save_checkpoint(out[-1], DefiNet(config))
    return out, f"untrained {config if isinstance(config, str) else 'custom'} members"


def ensemble_file(members: list[Path], folder: Path) -> Path:
    """The members joined (``ensemble_of``) and saved as one ensemble checkpoint."""
    from ase_definet.weights import ensemble_of, save_checkpoint
    path = folder / "ensemble.pt"
    save_checkpoint(path, ensemble_of(members))
    return path


def time_arms(arms: dict[str, Path], atoms0, host, repeats: int, warmup: int,
              device: str) -> dict[str, dict[str, float]]:
    """Median seconds of each part per arm, a fresh relaxer per call, arms alternating."""
    from inference import _sync

    from ase_definet.relax import DefiNetRelaxer
    times = {name: {p: [] for p in PARTS} for name in arms}
    for k in range(warmup + repeats):
        for name, model in arms.items():
            atoms = atoms0.copy()
            _sync(device)
            t0 = time.perf_counter()
            r = DefiNetRelaxer(atoms, host=host, model=str(model), device=device,
                               logfile=None, strict=False)
            r.run()
            _sync(device)
            t = time.perf_counter() - t0
            if k >= warmup:
                times[name]["total"].append(t)
                for p in PARTS[1:]:
                    times[name][p].append(r.timings[p])
    return {name: {p: statistics.median(v) for p, v in parts.items()}
            for name, parts in times.items()}


def mean_check(members: list[Path], ensemble: Path, atoms, host,
               device: str) -> tuple[float, float]:
    """(max |ensemble − mean of the members' predictions| in Å, mean raw sigma in Å).

    Raw predictions (before the sanity checks a relaxer applies) and no
    uncertainty policy, so the two sides are the same quantity.
    """
    from ase_definet.inference import Predictor
    own = [Predictor(str(m), device=device, strict=False).predict([atoms], host)[0].positions
           for m in members]
    ens = Predictor(str(ensemble), device=device, strict=False,
                    uncertainty_policy="none").predict([atoms], host)[0]
    return float(np.abs(ens.raw_positions - np.mean(own, axis=0)).max()), \
        float(ens.sigma.mean())


def run(paths: list[str], k: int, config, sizes: list[int], repeats: int, warmup: int,
        device: str, folder: Path) -> dict:
    """Measure every size; the result behind the printed table."""
    from inference import structure
    members, label = member_files(paths, k, config, folder)
    ensemble = ensemble_file(members, folder)
    rows = []
    for n in sizes:
        atoms0, host = structure(n)
        t = time_arms({"single": members[0], "ensemble": ensemble}, atoms0, host,
                      repeats, warmup, device)
        dev, sigma = mean_check(members, ensemble, atoms0, host, device)
        rows.append({"supercell": f"{n}x{n}", "atoms": len(atoms0), "single": t["single"],
                     "ensemble": t["ensemble"],
                     "ratio": t["ensemble"]["total"] / t["single"]["total"],
                     "network_ratio": t["ensemble"]["network"] / t["single"]["network"],
                     "max_dev": dev, "mean_sigma": sigma})
    return {"members": len(members), "model": label, "device": device,
            "repeats": repeats, "rows": rows}


def format_table(result: dict) -> str:
    """The markdown table of :func:`run`'s result."""
    k = result["members"]
    lines = ["| MoS2 | atoms | single ms | ensemble ms | ratio | network single ms | "
             "network ensemble ms | network ratio | bound K | ratio ≤ K | "
             "ensemble − member mean, max Å |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        s, e = r["single"], r["ensemble"]
        ok = "yes" if r["ratio"] <= k else "no"
        lines.append(f"| {r['supercell']} | {r['atoms']} | {1e3 * s['total']:.1f} | "
                     f"{1e3 * e['total']:.1f} | {r['ratio']:.2f} | {1e3 * s['network']:.1f} | "
                     f"{1e3 * e['network']:.1f} | {r['network_ratio']:.2f} | {k} | {ok} | "
                     f"{r['max_dev']:.1e} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoints", nargs="*",
                    help="member checkpoints (at least 2; default: untrained members)")
    ap.add_argument("--members", type=int, default=4, help="K without checkpoints")
    ap.add_argument("--config", default="default",
                    help="preset or JSON object of the untrained members")
    ap.add_argument("--sizes", default="8,12,16", help="MoS2 supercells n×n (n >= 6)")
    ap.add_argument("--repeats", type=int, default=10, help="timed calls per arm and size")
    ap.add_argument("--warmup", type=int, default=2, help="untimed calls per arm first")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    if len(args.checkpoints) == 1:
        ap.error("give at least 2 member checkpoints, or none for untrained members")
    import torch
    torch.set_num_threads(args.threads)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    with tempfile.TemporaryDirectory() as tmp:
        result = run(args.checkpoints, args.members, _config(args.config), sizes,
                     max(1, args.repeats), max(0, args.warmup), args.device, Path(tmp))
    result["threads"] = torch.get_num_threads()
    print(f"\nMachine: {platform.processor() or platform.machine()}, torch "
          f"{torch.__version__}, {result['threads']} thread(s), device {args.device}; "
          f"K = {result['members']} {result['model']}; fresh DefiNetRelaxer per call, "
          f"median of {result['repeats']} per arm, arms alternating\n")
    print(format_table(result))
    return result


if __name__ == "__main__":
    main()
