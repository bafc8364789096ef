"""Exception hierarchy of ase_definet.

Every error caused by bad input derives from :class:`DefiNetInputError`, which
subclasses :class:`ValueError`, so ``except ValueError`` catches all of them.
"""
from __future__ import annotations


class DefiNetInputError(ValueError):
    """Base class of every input error raised by ase_definet."""


class EmptyStructureError(DefiNetInputError):
    """The structure (or host) holds no atoms."""


class NonFiniteError(DefiNetInputError):
    """Positions or cell contain NaN or inf."""


class SupercellError(DefiNetInputError):
    """The defect cell is not an integer supercell of the host cell."""


class UnmatchedAtomError(DefiNetInputError):
    """An atom lies farther than the tolerance from every host site (interstitial)."""


class SiteCollisionError(DefiNetInputError):
    """Two atoms were assigned to the same host site."""


class HostDefectError(DefiNetInputError):
    """The host itself is not pristine (two host atoms on one site, for example)."""


class UnknownHostError(DefiNetInputError):
    """A host name that is not in the built-in library."""


class UnsupportedStructureError(DefiNetInputError):
    """Elements or defect types outside a model's card."""


class StructureTooLargeError(DefiNetInputError):
    """The structure exceeds the configured size limit."""


class DeviceError(DefiNetInputError):
    """A device was requested that this machine does not have."""


class DataFormatError(DefiNetInputError):
    """A data file is missing, unreadable or inconsistent with its partner."""


class InputFileError(DataFormatError):
    """A structure file given to ``definet relax`` is missing or unreadable (named)."""


class CheckpointError(DefiNetInputError):
    """A checkpoint is corrupt, tampered with, or made by an incompatible version."""


class NoWeightsError(DefiNetInputError):
    """No shipped weights are installed under the requested name."""
