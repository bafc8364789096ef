"""Fast CIF reading for P1 structures (2DMD writes every structure in P1).

ASE's ``read(..., format="cif")`` expands symmetry through
:func:`ase.spacegroup.crystal`, whose duplicate-site search is quadratic: about
1 s for a 192-atom 2DMD supercell. A P1 file has nothing to expand, so the
listed sites are the structure; other space groups go through ASE as usual.
"""
from __future__ import annotations

import io
from pathlib import Path

from ase import Atoms
from ase.io import read
from ase.io.cif import parse_cif

_P1_OPS = {"x,y,z"}


def read_cif(source: str | Path, text: bool = False) -> Atoms:
    """Read the first structure of a CIF file (or CIF text when ``text=True``).

    Periodic along all three axes, as CIF implies; in P1 the sites are taken
    as listed (fast), otherwise ASE's symmetry expansion is used.
    """
    data = source if text else Path(source).read_text()
    block = next(b for b in parse_cif(io.StringIO(data)) if b.has_structure())
    ops = block.get("_symmetry_equiv_pos_as_xyz") or block.get("_space_group_symop_operation_xyz")
    name = str(block.get("_symmetry_space_group_name_h-m")
               or block.get("_space_group_name_h-m_alt") or "").replace(" ", "")
    if ops is not None:
        p1 = {str(o).replace(" ", "").lower() for o in ops} == _P1_OPS
    else:
        p1 = name in ("P1", "")
    if not p1:
        return read(io.StringIO(data), format="cif")
    atoms = block.get_unsymmetrized_structure()
    atoms.pbc = True
    return atoms
