"""A deep ensemble of DefiNet members behind one network interface.

The members share one configuration and see the same batched graph; the
ensemble's output is the mean of their displacements, and
:meth:`DefiNetEnsemble.forward_members` returns each member's, from which the
per-atom spread (sigma) is computed by :mod:`ase_definet.uncertainty`.

Why the members run one after another on the same batch rather than under
``torch.func.vmap``: the inference kernels write into a reusable workspace and
accumulate with in-place ``index_add_`` (:class:`~ase_definet.model.layers.Workspace`),
which vmap cannot batch; run in turn on one shared workspace, the second and later
members find its buffers already faulted in and warm in cache, and the host-side work (host
matching, neighbour list, collation) is done once for all of them. The cost of an
ensemble prediction against one member's is measured in ``benchmarks/ensemble.py``.
"""
from __future__ import annotations

import torch
from torch import nn

from .config import DefiNetConfig, get_config
from .definet import DefiNet
from .layers import Workspace


class DefiNetEnsemble(nn.Module):
    """K DefiNet members of one configuration; ``forward`` returns their mean.

    Parameters
    ----------
    config : DefiNetConfig, dict or str
        The members' configuration.
    members : int or list of DefiNet
        How many untrained members to build, or the trained members themselves
        (they must all have ``config``).
    """

    def __init__(self, config: DefiNetConfig | dict | str = "default",
                 members: int | list[DefiNet] = 4):
        super().__init__()
        self.config = get_config(config)
        if isinstance(members, int):
            if members < 2:
                raise ValueError(f"an ensemble needs at least 2 members, got {members}")
            members = [DefiNet(self.config) for _ in range(members)]
        members = list(members)
        if len(members) < 2:
            raise ValueError(f"an ensemble needs at least 2 members, got {len(members)}")
        for k, m in enumerate(members):
            if m.config != self.config:
                raise ValueError(f"member {k} has config {m.config}, not the ensemble's "
                                 f"{self.config}: members must share one configuration")
        self.members = nn.ModuleList(members)

    @property
    def size(self) -> int:
        """Number of members K."""
        return len(self.members)

    def forward_members(self, *args, **kwargs) -> torch.Tensor:
        """Each member's displacements, ``(K, N, 3)``; arguments as :meth:`DefiNet.forward`."""
        # one workspace for all members: the later ones find its buffers faulted in
        ws = None if torch.is_grad_enabled() else Workspace()
        return torch.stack([m(*args, workspace=ws, **kwargs) for m in self.members])

    def forward(self, *args, **kwargs) -> torch.Tensor:
        """Mean displacement of the members, ``(N, 3)``."""
        return self.forward_members(*args, **kwargs).mean(dim=0)
