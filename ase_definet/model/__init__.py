"""The DefiNet network (pure torch; no ASE)."""
from .config import PRESETS, DefiNetConfig, get_config
from .definet import DefiNet

__all__ = ["DefiNet", "DefiNetConfig", "PRESETS", "get_config"]
