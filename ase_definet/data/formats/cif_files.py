"""CIF structure files of the 2DMD layout: read as written, write without wrapping."""
from __future__ import annotations

from pathlib import Path

from ase import Atoms
from ase.io import write

from ...errors import DataFormatError
from ..cif import read_cif

#: 2DMD holds monolayers with vacuum along c: periodic in-plane only.
PBC_2D = (True, True, False)


def read_cif_atoms(path: Path, pbc=PBC_2D) -> Atoms:
    """One structure from a CIF file, positions as written (not wrapped).

    P1 files (2DMD, ours) are read site by site (:func:`.cif.read_cif`), so
    coordinates outside [0, 1) survive. CIF has no notion of vacuum, so
    ``pbc`` is set by the caller.
    """
    try:
        atoms = read_cif(path)
    except StopIteration:
        raise DataFormatError(f"{path}: no structure in this CIF file") from None
    except Exception as err:  # ASE's parser raises many types on garbage input
        raise DataFormatError(f"{path}: unreadable CIF ({type(err).__name__}: {err})") \
            from err
    if len(atoms) == 0:
        raise DataFormatError(f"{path}: the CIF file holds no atoms")
    atoms.pbc = pbc
    return atoms


def write_cif_atoms(path: Path, atoms: Atoms) -> None:
    # wrap=False keeps coordinates outside [0, 1) so the round trip is exact.
    plain = Atoms(numbers=atoms.numbers, positions=atoms.get_positions(),
                  cell=atoms.cell, pbc=atoms.pbc)
    write(path, plain, format="cif", wrap=False)
