"""Make the doped and ShakeNBreak POSCAR trees under tests/data/defect_trees/.

Not run by the tests: the trees it wrote are committed, and the packages are not
test dependencies. To remake them (versions in README.md beside this file)::

    python -m venv /tmp/dtvenv && /tmp/dtvenv/bin/pip install doped shakenbreak
    /tmp/dtvenv/bin/python tests/data/defect_trees/make_trees.py

Host: diamond Si, conventional cell a = 5.431 Å tiled 2x2x2 (64 atoms), passed to
doped as the supercell (``generate_supercell=False``), with Ge as the extrinsic
species. doped writes its default rattled POSCARs (``poscar=True, vasp_gam=True``);
ShakeNBreak applies three bond distortions. Only POSCAR, INCAR, KPOINTS and
ShakeNBreak's distortion_metadata.json are kept (POTCARs need a licensed library;
the json.gz provenance files are large). Both packages seed their rattle, so a
rerun writes the same POSCARs byte for byte (checked with doped 3.2.1 and
shakenbreak 3.4.4).
"""
from __future__ import annotations

import shutil
import warnings
from pathlib import Path

from ase.build import bulk
from ase.io import write

HERE = Path(__file__).resolve().parent
KEEP = {"POSCAR", "INCAR", "KPOINTS", "distortion_metadata.json"}
#: doped folders: vacancies and substitutions in a few charge states, one interstitial
DOPED = ["v_Si_+1", "v_Si_0", "v_Si_-1", "Ge_Si_+1", "Ge_Si_0", "Si_i_Td_0"]
#: ShakeNBreak folders, and the bond distortions applied to each (plus Unperturbed
#: and Rattled, which ShakeNBreak writes itself)
SNB = ["v_Si_0", "v_Si_-1", "Ge_Si_0"]
BOND_DISTORTIONS = [-0.6, -0.3, 0.3]


def prune(root: Path) -> None:
    """Delete everything but the files in KEEP (and empty folders)."""
    for p in sorted(root.rglob("*"), reverse=True):
        if p.is_file() and p.name not in KEEP:
            p.unlink()
        elif p.is_dir() and not any(p.iterdir()):
            p.rmdir()


def main() -> None:
    warnings.filterwarnings("ignore")
    from doped.generation import DefectsGenerator
    from doped.vasp import DefectsSet
    from shakenbreak.input import Distortions

    si = bulk("Si", "diamond", a=5.431, cubic=True).repeat((2, 2, 2))
    gen = DefectsGenerator(si, extrinsic="Ge", generate_supercell=False)
    for name in ("doped", "shakenbreak"):
        if (HERE / name).exists():
            shutil.rmtree(HERE / name)
    DefectsSet({k: gen[k] for k in DOPED}).write_files(
        output_path=str(HERE / "doped"), poscar=True, vasp_gam=True, bulk=True)
    Distortions({k: gen[k] for k in SNB}, bond_distortions=BOND_DISTORTIONS
                ).write_vasp_files(output_path=str(HERE / "shakenbreak"))
    for name in ("doped", "shakenbreak"):
        prune(HERE / name)
    # the pristine 64-atom host the trees were made from, for --host
    write(HERE / "Si_host.vasp", si, format="vasp", direct=True)


if __name__ == "__main__":
    main()
