"""The one sample type every data source yields."""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
from ase import Atoms

from ..errors import DataFormatError
from ..geometry import minimum_image
from ..match import DEFAULT_TOLERANCE, HostMatch, match_host


def unwrap_relaxed(unrelaxed: Atoms, relaxed_positions: np.ndarray) -> np.ndarray:
    """Relaxed positions moved to the periodic image nearest each unrelaxed atom."""
    pos = unrelaxed.get_positions()
    return pos + minimum_image(np.asarray(relaxed_positions) - pos,
                               unrelaxed.cell.array, unrelaxed.pbc)


def info_matches(info: dict, conditions: list[str]) -> bool:
    """Whether ``info`` matches every ``KEY=VALUE`` condition (values compared as text)."""
    for cond in conditions:
        key, _, value = cond.partition("=")
        if str(info.get(key)) != value:
            return False
    return True


def density_of(group: str) -> str:
    """The density part of a ``material/density`` group (:attr:`Sample.group`)."""
    return group.rpartition("/")[2]


@dataclass
class Sample:
    """An unrelaxed defect structure with its relaxed positions and host.

    Attributes
    ----------
    atoms : ase.Atoms
        The unrelaxed defect structure.
    relaxed : numpy.ndarray
        Relaxed Cartesian positions, ``(len(atoms), 3)``, each unwrapped to the
        periodic image nearest its unrelaxed position.
    host : ase.Atoms
        The pristine host (supercell or a cell that tiles ``atoms.cell``).
    info : dict
        Provenance: ``id``, ``material``, ``density``, ``source`` and whatever
        the source recorded (oracle steps, energies, calculator, seed, ...).
    """

    atoms: Atoms
    relaxed: np.ndarray
    host: Atoms
    info: dict = field(default_factory=dict)
    tolerance: float = DEFAULT_TOLERANCE

    @classmethod
    def from_pair(cls, unrelaxed: Atoms, relaxed: Atoms, host: Atoms,
                  info: dict | None = None, name: str = "") -> Sample:
        """Build a sample from unrelaxed and relaxed structures, checking they pair up.

        Raises
        ------
        DataFormatError
            On a different atom count, species or cell; ``name`` labels the message.
        """
        label = f"{name}: " if name else ""
        if len(unrelaxed) != len(relaxed):
            raise DataFormatError(f"{label}unrelaxed has {len(unrelaxed)} atoms, "
                                  f"relaxed {len(relaxed)}")
        if (unrelaxed.numbers != relaxed.numbers).any():
            i = int(np.flatnonzero(unrelaxed.numbers != relaxed.numbers)[0])
            raise DataFormatError(f"{label}species differ at atom {i}: "
                                  f"{unrelaxed[i].symbol} vs {relaxed[i].symbol}")
        if not np.allclose(unrelaxed.cell.array, relaxed.cell.array, atol=1e-3):
            raise DataFormatError(f"{label}relaxed cell differs from the unrelaxed cell "
                                  "(only fixed-cell relaxations are supported)")
        return cls(unrelaxed, unwrap_relaxed(unrelaxed, relaxed.get_positions()),
                   host, dict(info or {}))

    @cached_property
    def match(self) -> HostMatch:
        """Markers and vacancy placeholders from :func:`~ase_definet.match.match_host`."""
        return match_host(self.atoms, self.host, tolerance=self.tolerance)

    @property
    def displacement(self) -> np.ndarray:
        """Relaxed minus unrelaxed positions."""
        return self.relaxed - self.atoms.get_positions()

    @property
    def group(self) -> str:
        """Stratum for splits and reports: ``material/density``."""
        return f"{self.info.get('material', '?')}/{self.info.get('density', '?')}"
