"""Probe: calibration of an ensemble of the members trained so far, on split-v2 validation.

    python experiments/ensemble/probe_calibration.py MEMBER.pt MEMBER.pt [...] --json OUT

Not the ship step (that needs four members and the rule in README.md): it measures
what sigma from the finished members says, with ``ase_definet.uncertainty``: Spearman
between per-structure mean sigma and MAE, 2-sigma coverage (raw sigma), the scale that
gives 95 % coverage, and the same per material/density group. One torch thread.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from ase_definet.data.load import load_samples
from ase_definet.data.splits import apply_split
from ase_definet.inference import Predictor
from ase_definet.uncertainty import calibration, fit_scale
from ase_definet.weights import ensemble_of

DATA = "weights/data/chgnet-2dmd-tight"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("members", nargs="+")
    ap.add_argument("--subset", default="val")
    ap.add_argument("--json", required=True)
    a = ap.parse_args()
    torch.set_num_threads(1)
    samples = load_samples(DATA, exclude=["supercell=12x12"]).samples
    samples = list(apply_split(samples, f"{DATA}/split-v2.json", unassigned="drop")[a.subset])
    pred = Predictor(ensemble_of(a.members), device="cpu", uncertainty_policy="none")
    errors, sigma, structure, groups = [], [], [], []
    for k in range(0, len(samples), 8):
        chunk = samples[k:k + 8]
        for j, (s, p) in enumerate(zip(chunk, pred.predict([s.atoms for s in chunk],
                                                             [s.host for s in chunk]))):
            errors.append(p.positions - s.relaxed)     # relaxed: nearest images
            sigma.append(p.sigma)
            structure.append(np.full(len(p.sigma), k + j))
            groups.append(np.full(len(p.sigma), f"{s.info['material']}/{s.info['density']}"))
    errors, sigma = np.concatenate(errors), np.concatenate(sigma)
    structure, groups = np.concatenate(structure), np.concatenate(groups)
    scale = fit_scale(errors, sigma)
    out = {"members": a.members, "subset": a.subset, "n_structures": len(samples),
           "raw": calibration(errors, sigma, structure),
           "scaled": calibration(errors, sigma, structure, scale=scale),
           "groups": {g: calibration(errors[groups == g], sigma[groups == g],
                                     structure[groups == g])
                      for g in sorted(set(groups))}}
    Path(a.json).write_text(json.dumps(out, indent=1) + "\n")
    print(f"K = {len(a.members)}, {a.subset}: {len(samples)} structures, "
          f"{len(errors)} atoms; scale for 95 % within 2 sigma: {scale:.2f}")
    print("| group | Spearman | within 2 sigma (raw) |\n|---|---|---|")
    for g, c in [("all", out["raw"]), *out["groups"].items()]:
        print(f"| {g} | {c['spearman']:.2f} | {100 * c['coverage_2sigma']:.1f} % |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
