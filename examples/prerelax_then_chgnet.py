"""Pre-relax a defect structure with DefiNet, finish with CHGNet + BFGS.

Compares the residual ionic steps with a CHGNet + BFGS relaxation from the
unrelaxed structure: MoS2 n×n with one S vacancy and one Se-on-S substitution.

    python examples/prerelax_then_chgnet.py --supercell 8 --fmax 0.05
"""
from __future__ import annotations

import argparse
import sys
import time

from ase.optimize import BFGS

from ase_definet import DefiNetRelaxer
from ase_definet.data.defects import apply_defects
from ase_definet.data.hosts import build_host
from ase_definet.calculators import make_calculator
from ase_definet.errors import NoWeightsError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--supercell", type=int, default=8, help="n of the n×n MoS2 host")
    parser.add_argument("--fmax", type=float, default=0.05, help="force criterion, eV/Å")
    parser.add_argument("--steps", type=int, default=1000, help="most BFGS steps")
    args = parser.parse_args(argv)

    host = build_host("MoS2", args.supercell)
    s = [k for k, el in enumerate(host.get_chemical_symbols()) if el == "S"]
    # An S vacancy and, half the cell away, a Se substitution.
    unrelaxed = apply_defects(host, [s[0], s[len(s) // 2]],
                              [("vacancy", "S", None), ("substitution", "S", "Se")])
    print(f"MoS2 {args.supercell}x{args.supercell}: {len(unrelaxed)} atoms, "
          "1 S vacancy, 1 Se substitution")

    # 1. DefiNet prediction (shipped weights), then residual BFGS steps with CHGNet.
    atoms = unrelaxed.copy()
    try:
        relaxer = DefiNetRelaxer(atoms, host="MoS2", logfile=None)
    except NoWeightsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    calc = make_calculator("chgnet")        # CHGNet 0.3.0 on the CPU
    atoms.calc = calc                       # the relaxer's fallback BFGS uses it
    t0 = time.perf_counter()
    ok_definet = relaxer.run(fmax=args.fmax, steps=args.steps)
    t_definet = time.perf_counter() - t0
    e_definet = atoms.get_potential_energy()

    # 2. The same relaxation from scratch.
    scratch = unrelaxed.copy()
    scratch.calc = calc
    t0 = time.perf_counter()
    opt = BFGS(scratch, logfile=None)
    ok_scratch = opt.run(fmax=args.fmax, steps=args.steps)
    t_scratch = time.perf_counter() - t0
    e_scratch = scratch.get_potential_energy()

    flag = {True: "", False: " (NOT converged)"}
    print(f"DefiNet + BFGS: {relaxer.nsteps:4d} residual steps{flag[ok_definet]}, "
          f"E = {e_definet:.4f} eV ({t_definet:.1f} s; prediction "
          f"{1e3 * relaxer.timings['total']:.0f} ms)")
    print(f"BFGS only:      {opt.nsteps:4d} steps{flag[ok_scratch]}, "
          f"E = {e_scratch:.4f} eV ({t_scratch:.1f} s)")
    print(f"E(DefiNet + BFGS) - E(BFGS) = {1e3 * (e_definet - e_scratch):+.1f} meV")
    return 0


if __name__ == "__main__":
    sys.exit(main())
