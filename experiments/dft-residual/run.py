"""DFT residual study (issue #33): does a CHGNet-trained DefiNet guess save GPAW steps?

Hosts: MoS2 and WSe2 3x3 and hBN 4x4 monolayers (c = 15 Å), positions relaxed by GPAW
itself (BFGS to 0.01 eV/Å, fixed cell) and cached in ``hosts_gpaw.extxyz``. Defects: single
vacancies, single substitutions and pairs (``STRUCTURES``). From each unrelaxed
structure, from the shipped model's prediction and from a CHGNet + FIRE pre-relaxation
to 0.01 eV/Å, GPAW + BFGS relaxes to fmax 0.05 and 0.02 eV/Å
(:func:`ase_definet.residual.residual_study`). Resumable: finished structures are read
back from ``report.json`` and skipped.

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python experiments/dft-residual/run.py

GPAW settings: :data:`ase_definet.calculators.GPAW_SETTINGS` (recorded in the report).
Odd-electron structures get 1 μB of initial moment on the atom nearest the defect
(GPAW is then spin-polarised); even ones are run spin-paired.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.io import read, write

from ase_definet.calculators import calculator_version, make_calculator
from ase_definet.data.defects import apply_defects
from ase_definet.data.hosts import build_host
from ase_definet.geometry import minimum_image

HERE = Path(__file__).resolve().parent
HOSTS = {"MoS2": 3, "WSe2": 3, "hBN": 4}
VACUUM = 15.0

#: (material, defects as (element, kind, new)); a pair takes two nearest sites.
#: Interleaved across materials so that a partial study covers all three.
STRUCTURES = [
    ("MoS2", [("S", "vacancy", None)]),
    ("hBN", [("N", "vacancy", None)]),
    ("WSe2", [("Se", "vacancy", None)]),
    ("MoS2", [("Mo", "substitution", "W")]),
    ("hBN", [("B", "substitution", "C")]),
    ("WSe2", [("W", "vacancy", None)]),
    ("MoS2", [("S", "vacancy", None), ("S", "vacancy", None)]),
    ("hBN", [("B", "substitution", "C"), ("N", "substitution", "C")]),
    ("WSe2", [("Se", "substitution", "S")]),
    ("MoS2", [("Mo", "vacancy", None)]),
    ("hBN", [("B", "vacancy", None)]),
    ("WSe2", [("Se", "vacancy", None), ("Se", "substitution", "S")]),
    ("MoS2", [("S", "substitution", "Se"), ("S", "vacancy", None)]),
    ("hBN", [("N", "substitution", "C")]),
    ("WSe2", [("W", "substitution", "Mo")]),
]


@dataclass
class Structure:
    """What :func:`residual_study` reads of a sample (no relaxed labels exist here)."""

    atoms: Atoms
    host: Atoms
    info: dict = field(default_factory=dict)

    @property
    def group(self) -> str:
        return f"{self.info['material']}/{self.info['density']}"


def relaxed_host(material: str, n: int, calc_name: str = "gpaw") -> Atoms:
    """The GPAW-relaxed pristine host, relaxed once and cached in hosts.extxyz."""
    path = HERE / f"hosts_{calc_name}.extxyz"
    key = f"{material}_{n}x{n}"
    if path.exists():
        for h in read(path, ":"):
            if h.info.get("host_key") == key:
                # extxyz reads integers back as numpy scalars, which json cannot write
                h.info = {k: v.item() if isinstance(v, np.generic) else v
                          for k, v in h.info.items()}
                return h
    from ase.optimize import BFGS
    host = build_host(material, n, vacuum=VACUUM)
    for k in ("cell_index", "basis_index"):
        host.arrays.pop(k, None)
    work = host.copy()
    work.calc = make_calculator(calc_name)
    t0 = time.time()
    opt = BFGS(work, logfile=str(HERE / f"host_{key}_{calc_name}.log"))
    converged = opt.run(fmax=0.01, steps=200)
    out = host.copy()
    out.positions = work.positions
    out.info = {"host_key": key, "material": material, "steps": opt.nsteps,
                "converged": bool(converged),
                "energy": float(work.get_potential_energy()),
                "wall_time": round(time.time() - t0, 1),
                "calculator": calculator_version(calc_name)}
    write(path, out, format="extxyz", append=path.exists())
    return out


def pick_sites(host: Atoms, defects: list) -> list[int]:
    """The first site of the first defect's element, then each next defect on the
    nearest free site of its element (a pair of neighbours)."""
    symbols = np.array(host.get_chemical_symbols())
    sites: list[int] = []
    for el, _, _ in defects:
        cand = [i for i in np.flatnonzero(symbols == el) if i not in sites]
        if not sites:
            sites.append(int(cand[0]))
            continue
        d = minimum_image(host.positions[cand] - host.positions[sites[0]],
                          host.cell.array, host.pbc)
        sites.append(int(cand[int(np.argmin(np.linalg.norm(d, axis=1)))]))
    return sites


def make_structure(k: int, material: str, defects: list, host: Atoms) -> Structure:
    sites = pick_sites(host, defects)
    triples = [(kind, el, new) for el, kind, new in defects]
    atoms = apply_defects(host, sites, triples)
    label = ",".join(f"V_{el}" if kind == "vacancy" else f"{new}_{el}"
                     for el, kind, new in defects)
    if int(atoms.numbers.sum()) % 2:
        # an odd electron count: one unpaired electron, on the atom nearest the defect
        centre = host.positions[sites[0]]
        d = np.linalg.norm(minimum_image(atoms.positions - centre, atoms.cell.array,
                                         atoms.pbc), axis=1)
        moments = np.zeros(len(atoms))
        moments[int(np.argmin(d))] = 1.0
        atoms.set_initial_magnetic_moments(moments)
    n = HOSTS[material]
    info = {"id": f"{k:02d}-{material}_{n}x{n}-{label}", "material": material,
            "density": "dft", "defects": label}
    return Structure(atoms, host, info)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default=str(HERE / "report.json"))
    p.add_argument("--calculator", default="gpaw", help="gpaw; emt for a dry run")
    p.add_argument("--pre", default="chgnet", help="pre-relaxation calculator")
    p.add_argument("--fmax", default="0.05,0.02")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("-n", type=int, default=None, help="first N structures only")
    p.add_argument("--model", default=None,
                   help="checkpoint or shipped name (default: the shipped default); a "
                        "resumed study must use the model it started with")
    args = p.parse_args(argv)
    import torch
    torch.set_num_threads(1)
    from ase_definet.inference import Predictor
    from ase_definet.residual import residual_study, resume_records
    from ase_definet.residual_report import format_residual
    hosts = {m: relaxed_host(m, n, args.calculator) for m, n in HOSTS.items()}
    todo = STRUCTURES[:args.n] if args.n else STRUCTURES
    structures = [make_structure(k, m, d, hosts[m]) for k, (m, d) in enumerate(todo)]
    out = Path(args.out)
    done = resume_records(json.loads(out.read_text())) if out.exists() else []
    # one model for the whole study: the shipped default may change between sessions
    from ase_definet.weights import checkpoint_source, sha256
    model_path = checkpoint_source(args.model)[0]
    digest = sha256(model_path)
    before = json.loads(out.read_text()).get("model_sha256") if out.exists() else None
    if before and before != digest:
        raise SystemExit(f"{out} was made with the model of sha256 {before[:12]}…, not "
                         f"{model_path} ({digest[:12]}…): pass --model with the study's "
                         "own checkpoint (named in the report), or another --out")

    def save(report: dict) -> None:
        report = dict(report, model=str(model_path), model_sha256=digest,
                      calculator_settings=calculator_version(args.calculator),
                      hosts={m: {k: v for k, v in h.info.items()} for m, h in hosts.items()})
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps(report, indent=1) + "\n")
        os.replace(tmp, out)

    report = residual_study(Predictor(args.model), structures, calculator=args.calculator,
                            fmax=[float(f) for f in args.fmax.split(",")],
                            steps=args.steps, optimizer="BFGS", done=done, on_record=save,
                            on_error="record",
                            pre_relax={"calculator": args.pre, "fmax": 0.01,
                                       "optimizer": "FIRE"})
    save(report)
    print(format_residual(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
