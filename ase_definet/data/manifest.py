"""The manifest of a generator store: what it holds, with which oracle and recipe.

``manifest.json`` is a summary rewritten from ``samples.extxyz`` (the store
itself), so a stale or missing manifest is repaired by rewriting it.
"""
from __future__ import annotations

import json
import os
import platform
from collections import Counter
from pathlib import Path

import numpy as np

from .oracle import FMAX, MAX_STEPS, OPTIMIZER
from .seeding import frame_scheme
from .store import read_frames

SAMPLES = "samples.extxyz"
HOSTS = "hosts.extxyz"
MANIFEST = "manifest.json"


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
