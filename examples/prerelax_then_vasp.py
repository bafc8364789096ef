"""Pre-relax a defect structure with DefiNet, then finish with VASP.

Two ways to finish, both starting from the DefiNet prediction:

(a) ASE's BFGS drives the relaxation; VASP only computes single points
    (NSW = 0, IBRION = -1) — the same as attaching the calculator before
    ``DefiNetRelaxer.run()``.
(b) VASP relaxes internally (IBRION = 2, NSW = 100); ASE reads the result.

Settings follow the DFT protocol of the DefiNet paper's Methods (2DMD):

    GGA = PE (PBE)      ENCUT  = 500        k-points: Gamma only
    EDIFF = 1E-6        EDIFFG = -0.01      ISPIN = 2 with unpaired electrons
    IBRION = 2          NSW    = 100 (path b) / 0 (path a)

ISMEAR = 0, SIGMA = 0.05 (Gaussian smearing, safe for these semiconductors)
and LWAVE = LCHARG = .FALSE. are our choices, not the paper's.

Needs VASP: set ASE_VASP_COMMAND (e.g. "mpirun -np 32 vasp_gam") and
VASP_PP_PATH (the folder holding potpaw_PBE/).

    python examples/prerelax_then_vasp.py --supercell 8 --from-scratch
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ase.calculators.vasp import Vasp
from ase.io import read
from ase.optimize import BFGS

from ase_definet import DefiNetRelaxer
from ase_definet.data.defects import apply_defects
from ase_definet.data.hosts import build_host
from ase_definet.errors import NoWeightsError

VASP_SETTINGS = dict(xc="PBE", encut=500, kpts=(1, 1, 1), gamma=True, ediff=1e-6,
                     ediffg=-0.01, ismear=0, sigma=0.05, lwave=False, lcharg=False)


def vasp_missing() -> list[str]:
    """Environment variables ASE's Vasp calculator needs but that are not set."""
    missing = []
    if not any(os.environ.get(v) for v in ("ASE_VASP_COMMAND", "VASP_COMMAND", "VASP_SCRIPT")):
        missing.append("ASE_VASP_COMMAND (e.g. 'mpirun -np 32 vasp_gam')")
    if not os.environ.get("VASP_PP_PATH"):
        missing.append("VASP_PP_PATH (folder with potpaw_PBE/)")
    return missing


def ionic_steps(directory: Path) -> int:
    """Ionic steps of a finished VASP run, read from its vasprun.xml."""
    return len(read(directory / "vasprun.xml", index=":"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--supercell", type=int, default=8, help="n of the n×n MoS2 host")
    parser.add_argument("--fmax", type=float, default=0.01,
                        help="force criterion of path (a), eV/Å (matches EDIFFG)")
    parser.add_argument("--ispin", choices=("auto", "1", "2"), default="auto",
                        help="auto: 2 when the electron count is odd")
    parser.add_argument("--workdir", type=Path, default=Path("vasp_runs"))
    parser.add_argument("--from-scratch", action="store_true",
                        help="also let VASP relax the unrelaxed structure, for comparison")
    args = parser.parse_args(argv)

    missing = vasp_missing()
    if missing:
        print("error: VASP is not configured; set " + " and ".join(missing) + ".",
              file=sys.stderr)
        return 1

    host = build_host("MoS2", args.supercell)
    s = [k for k, el in enumerate(host.get_chemical_symbols()) if el == "S"]
    unrelaxed = apply_defects(host, [s[0], s[len(s) // 2]],
                              [("vacancy", "S", None), ("substitution", "S", "Se")])
    # Closed-shell cores have even electron counts, so the parity of sum(Z) is
    # the parity of the valence electrons: odd means an unpaired electron.
    ispin = (2 if unrelaxed.numbers.sum() % 2 else 1) if args.ispin == "auto" else int(args.ispin)
    settings = dict(VASP_SETTINGS, ispin=ispin)

    # The DefiNet prediction, with no calculator attached: one forward pass.
    predicted = unrelaxed.copy()
    try:
        DefiNetRelaxer(predicted, host="MoS2", logfile="-").run()
    except NoWeightsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1

    # (a) ASE BFGS with VASP single points.
    args.workdir.mkdir(parents=True, exist_ok=True)
    atoms_a = predicted.copy()
    atoms_a.calc = Vasp(directory=str(args.workdir / "a_bfgs"), nsw=0, ibrion=-1, **settings)
    opt = BFGS(atoms_a, logfile="-", trajectory=str(args.workdir / "a_bfgs.traj"))
    opt.run(fmax=args.fmax, steps=200)
    print(f"(a) DefiNet + ASE BFGS:  {opt.nsteps} BFGS steps, "
          f"E = {atoms_a.get_potential_energy():.4f} eV")

    # (b) VASP relaxes internally; ASE copies the final CONTCAR into atoms_b.
    runs = {"(b) DefiNet + VASP:      ": (predicted, "b_vasp")}
    if args.from_scratch:
        runs["    VASP from scratch:   "] = (unrelaxed, "scratch_vasp")
    for label, (start, name) in runs.items():
        atoms_b = start.copy()
        atoms_b.calc = Vasp(directory=str(args.workdir / name), nsw=100, ibrion=2, **settings)
        energy = atoms_b.get_potential_energy()
        print(f"{label}{ionic_steps(args.workdir / name)} ionic steps, E = {energy:.4f} eV")
    return 0


if __name__ == "__main__":
    sys.exit(main())
