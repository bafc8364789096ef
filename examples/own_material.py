"""A DefiNet model for your own material: diamond Si with CHGNet, one call.

Writes the Si host (8-atom conventional cell) to a POSCAR, then runs
:func:`ase_definet.fit.fit` (the same as ``definet fit``): CHGNet relaxes
--count defect structures of the 2x2x2 supercell (64 sites; Si vacancies and
Ge-on-Si substitutions, 1-3 per structure), DefiNet trains on the training
split for --max-time seconds, and the best model is scored against the Dummy
on the test split. Finally the model pre-relaxes a new structure and CHGNet
finishes it. Rerun the same command to resume. The command-line equivalent::

    definet fit --host Si.vasp --supercell 2x2x2 --defects vacancy:Si,substitution:Si>Ge \\
        --calculator chgnet --count 40 --max-time 180 --out si_model

With the small defaults this takes minutes on two cores; the model it gives is
a demonstration, not a useful one: accuracy grows with --count (about five
points of improvement over the Dummy per doubling of the training structures).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--count", type=int, default=40, help="defect structures to relax")
    parser.add_argument("--max-time", type=float, default=180.0,
                        help="training time budget in seconds")
    parser.add_argument("--workers", type=int, default=2,
                        help="CHGNet relaxation processes (0: this process)")
    parser.add_argument("--out", default="si_model", help="fit folder (resumes if it exists)")
    parser.add_argument("--fmax", type=float, default=0.05,
                        help="force criterion of the final CHGNet steps, eV/Å")
    args = parser.parse_args(argv)

    # imported here, so that --help is instant
    import torch
    from ase.build import bulk
    from ase.io import write

    from ase_definet import DefiNetRelaxer
    from ase_definet.calculators import make_calculator
    from ase_definet.data.defects import apply_defects
    from ase_definet.evaluate import format_table
    from ase_definet.fit import fit
    from ase_definet.train import TrainConfig

    torch.set_num_threads(1)        # two cores: leave one for the CHGNet workers
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    host_file = out / "Si.vasp"
    write(host_file, bulk("Si", "diamond", a=5.43, cubic=True), format="vasp")
    recipe = {"host": str(host_file), "supercell": "2x2x2",
              "defects": "vacancy:Si,substitution:Si>Ge", "density": "low",
              "count": args.count, "calculator": "chgnet"}
    result = fit(out, recipe, TrainConfig(lr=1e-3, max_time=args.max_time),
                 workers=args.workers)
    print(format_table(result["report"]))
    print(f"model: {result['model']}  (definet relax POSCAR --host HOST --model {out})")

    # A new structure: one vacancy and one Ge, pre-relaxed by the model, then CHGNet.
    host = bulk("Si", "diamond", a=5.43, cubic=True) * (2, 2, 2)
    atoms = apply_defects(host, [0, 37], [("vacancy", "Si", None),
                                          ("substitution", "Si", "Ge")])
    atoms.calc = make_calculator("chgnet")
    relaxer = DefiNetRelaxer(atoms, host=host, model=str(out), logfile=None)
    converged = relaxer.run(fmax=args.fmax, steps=500)
    print(f"V_Si + Ge_Si: DefiNet prediction, then {relaxer.nsteps} CHGNet steps "
          f"({'converged' if converged else 'NOT converged'}), "
          f"E = {atoms.get_potential_energy():.4f} eV")
    return 0


if __name__ == "__main__":
    sys.exit(main())
