"""Configuration of the DefiNet network, with named presets."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields


@dataclass(frozen=True)
class DefiNetConfig:
    """Hyper-parameters of :class:`~ase_definet.model.DefiNet`.

    Attributes
    ----------
    hidden : int
        Feature width F of scalars and vectors.
    num_layers : int
        Graph-convolution layers (4 in the paper).
    num_rbf : int
        Gaussian radial basis functions on [0, cutoff].
    cutoff : float
        Graph radius D in Å.
    max_neighbors : int
        At most N neighbours per node (whole shells are dropped at the limit).
    avg_neighbors : float
        Messages are summed and divided by this constant, which keeps feature
        scales independent of the neighbour count (not in the paper; harmless
        for equivariance and it stabilises training of small models).
    max_elements : int
        Size of the atomic-number embedding table.
    residual : bool
        Message passing and self-update *add* their updates to the node state
        (``x = (x + dx)/sqrt(2)``, ``v = v + dv``, vector messages scaled by
        ``1/sqrt(F)``) instead of replacing it, as the public reference
        implementation does (issue #30, lever 1). Off: the paper's equations
        3-4 as the shipped weights were trained with.
    zero_mean : bool
        Subtract each structure's mean predicted displacement over its real
        atoms (issue #30, lever 2): relaxed labels keep the centroid.
    long_range : int
        Long-range reciprocal channel (issue #30, lever 4): the shortest
        wavelength ``2π/|G|`` in Å of the structure factors it reads, i.e.
        every reciprocal vector of the cell's periodic axes with
        ``0 < |G| <= 2π / long_range`` (see
        :class:`~ase_definet.model.long_range.ReciprocalChannel`). A Cartesian
        cutoff, so the set of physical modes does not depend on the choice of
        lattice basis; larger cells get more (and longer) modes. 0: off.
    force_input : bool
        Oracle forces at the unrelaxed structure as an equivariant input
        (issue #30, lever 6; :class:`~ase_definet.model.force_input.ForceEmbedding`):
        ``forward`` then needs ``forces=``.
    """

    hidden: int = 64
    num_layers: int = 4
    num_rbf: int = 16
    cutoff: float = 5.0
    max_neighbors: int = 32
    avg_neighbors: float = 16.0
    max_elements: int = 100
    # Off by default, so configs saved before these keys existed build the
    # network they were trained as.
    residual: bool = False
    zero_mean: bool = False
    long_range: int = 0
    force_input: bool = False

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> DefiNetConfig:
        names = {f.name for f in fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown DefiNet config keys: {sorted(unknown)}")
        return cls(**data)

    def __post_init__(self):
        if self.long_range < 0:
            raise ValueError(f"long_range is a wavelength in Å (0: off), got {self.long_range}")


PRESETS: dict[str, DefiNetConfig] = {
    # The published model: hidden 512, 128 RBFs, 6 Å, 50 neighbours (~29 M params).
    "paper": DefiNetConfig(hidden=512, num_layers=4, num_rbf=128, cutoff=6.0,
                           max_neighbors=50, avg_neighbors=25.0),
    # CPU-friendly default (see README, "Choice of the default configuration").
    "default": DefiNetConfig(),
}


def get_config(name_or_config: str | DefiNetConfig | dict) -> DefiNetConfig:
    """Resolve a preset name, a dict or a config into a :class:`DefiNetConfig`."""
    if isinstance(name_or_config, DefiNetConfig):
        return name_or_config
    if isinstance(name_or_config, dict):
        return DefiNetConfig.from_dict(name_or_config)
    if name_or_config not in PRESETS:
        raise ValueError(f"unknown DefiNet preset {name_or_config!r}; "
                         f"presets: {', '.join(PRESETS)}")
    return PRESETS[name_or_config]
