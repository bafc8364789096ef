"""Oracle forces at the unrelaxed structures (issue #30, lever 6: the input of the
``force_input`` variant), and what one such call costs against a full relaxation.

    OMP_NUM_THREADS=1 python experiments/force-input/forces.py [--data STORE] [--out DIR]

For every sample of the store (default: the shipped model's labels,
weights/data/chgnet-2dmd-tight) one CHGNet 0.3.0 call at the unrelaxed positions,
the calculator that made the labels. Written to ``DIR/forces.npz`` (one float32
(N, 3) array per sample id, eV/Å, in atom order) and ``DIR/timings.json`` (seconds
per call, and the store's own relaxation wall time of the same structure), every 100
structures and at the end; a rerun skips the ids already there. One torch thread.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def save(out: Path, forces: dict, timings: dict) -> None:
    tmp = out / "forces.tmp.npz"
    np.savez_compressed(tmp, **forces)
    os.replace(tmp, out / "forces.npz")
    (out / "timings.json").write_text(json.dumps(timings, indent=0) + "\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="weights/data/chgnet-2dmd-tight")
    ap.add_argument("--out", default=str(HERE))
    a = ap.parse_args()
    import torch
    torch.set_num_threads(1)
    from tqdm.auto import tqdm

    from ase_definet.calculators import make_calculator
    from ase_definet.data.load import load_samples
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    forces, timings = {}, {}
    # both files or neither: a run killed between the two writes starts again
    if (out / "forces.npz").exists() and (out / "timings.json").exists():
        with np.load(out / "forces.npz") as f:
            forces = {k: f[k] for k in f.files}
        timings = json.loads((out / "timings.json").read_text())
    samples = [s for s in load_samples(a.data, progress_note=lambda m: None).samples
               if s.info["id"] not in forces]
    calc = make_calculator("chgnet")
    for k, s in enumerate(tqdm(samples, desc="forces", unit="struct")):
        atoms = s.atoms.copy()
        atoms.calc = calc
        t0 = time.perf_counter()
        f = atoms.get_forces()
        wall, steps = s.info.get("wall_time"), s.info.get("steps")
        # the store's info values are numpy scalars, which json cannot write
        timings[s.info["id"]] = {"call_s": time.perf_counter() - t0,
                                 "n_atoms": len(atoms),
                                 "relaxation_s": None if wall is None else float(wall),
                                 "relaxation_steps": None if steps is None else int(steps)}
        forces[s.info["id"]] = f.astype(np.float32)
        if (k + 1) % 100 == 0:
            save(out, forces, timings)
    save(out, forces, timings)
    call = np.array([t["call_s"] for t in timings.values()])
    relax = np.array([t["relaxation_s"] for t in timings.values()
                      if t["relaxation_s"] is not None], float)
    print(f"{len(forces)} structures; one force call: median {np.median(call):.3f} s; "
          f"the store's relaxation of the same structure: median {np.median(relax):.1f} s "
          f"({np.median(relax) / np.median(call):.0f}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
