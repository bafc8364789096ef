"""ase_definet: one-step pre-relaxation of crystal point defects (DefiNet) for ASE.

>>> from ase_definet import DefiNetRelaxer
>>> DefiNetRelaxer(atoms, host=pristine).run()      # doctest: +SKIP
"""
__version__ = "0.1.0"

from .errors import DefiNetInputError
from .match import HostMatch, match_host
from .model import DefiNet, DefiNetConfig
from .relax import DefiNetRelaxer
from .weights import load_model

__all__ = ["DefiNet", "DefiNetConfig", "DefiNetRelaxer", "DefiNetInputError",
           "HostMatch", "load_model", "match_host", "__version__"]
