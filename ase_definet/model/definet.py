"""DefiNet: defect-informed equivariant network for one-step relaxation.

The network sees tensors only (no ASE): atomic numbers, markers, directed edges
with their unrelaxed bond vectors, and the graph index of each node. It returns
the displacement of every node; relaxed positions are unrelaxed + displacement.
Working on displacements keeps float32 exact to ~1e-6 Å for any cell size and
makes the output translation-invariant by construction.
"""
from __future__ import annotations

import torch
from torch import nn

from .config import DefiNetConfig, get_config
from .layers import DefiNetLayer, RadialBasis, Workspace, scatter_sum

#: Marker of a vacancy placeholder (the same code as ``ase_definet.match.VACANCY``,
#: which the model cannot import: it stays free of ASE).
VACANCY_MARKER = 2


class DefiNet(nn.Module):
    """The DefiNet network (Yang et al., npj Comput. Mater. 2025).

    Parameters
    ----------
    config : DefiNetConfig, dict or str
        A config or a preset name (``"default"``, ``"paper"``).
    """

    def __init__(self, config: DefiNetConfig | dict | str = "default"):
        super().__init__()
        self.config = get_config(config)
        c = self.config
        self.embed_z = nn.Embedding(c.max_elements, c.hidden)
        self.embed_m = nn.Embedding(3, c.hidden)
        self.global_x = nn.Parameter(torch.zeros(c.hidden))
        self.rbf = RadialBasis(c.num_rbf, c.cutoff)
        self.layers = nn.ModuleList(
            DefiNetLayer(c.hidden, c.num_rbf, c.avg_neighbors,
                         aggregate=k < c.num_layers - 1, residual=c.residual)
            for k in range(c.num_layers))

    @classmethod
    def from_config(cls, config: DefiNetConfig | dict | str = "default") -> DefiNet:
        """An untrained network from a preset name, dict or config."""
        return cls(config)

    def forward(self, numbers: torch.Tensor, markers: torch.Tensor,
                edge_src: torch.Tensor, edge_dst: torch.Tensor,
                edge_vec: torch.Tensor, batch: torch.Tensor,
                n_graphs: int) -> torch.Tensor:
        """Displacements of all nodes.

        Parameters
        ----------
        numbers, markers : LongTensor (N,)
        edge_src, edge_dst : LongTensor (E,)
            Messages flow ``src → dst``.
        edge_vec : Tensor (E, 3)
            Unrelaxed bond vectors ``r[src] + shift - r[dst]``.
        batch : LongTensor (N,)
            Graph index of each node, in ``range(n_graphs)``.

        Returns
        -------
        Tensor (N, 3)
            Predicted displacement of every node (placeholders included).
        """
        if int(numbers.max()) >= self.config.max_elements or int(numbers.min()) < 1:
            raise ValueError(f"atomic numbers must lie in 1..{self.config.max_elements - 1}")
        n = numbers.shape[0]
        f = self.config.hidden
        dtype = edge_vec.dtype
        x = (self.embed_z(numbers) + self.embed_m(markers)).to(dtype)
        v = x.new_zeros((n, 3, f))
        xg = self.global_x.to(dtype).expand(n_graphs, f)
        vg = x.new_zeros((n_graphs, 3, f))
        disp = x.new_zeros((n, 3))
        counts = torch.bincount(batch, minlength=n_graphs).clamp_min(1).to(dtype)
        # Sort edges by marker pair once, so every layer applies the pair gates
        # as folded weights on contiguous edge blocks (see layers.BandWeights).
        pair = markers[edge_dst] * 3 + markers[edge_src]
        order = torch.argsort(pair, stable=True)
        src, dst = edge_src[order], edge_dst[order]
        vec0 = edge_vec[order]
        pair = pair[order]
        workspace = None if torch.is_grad_enabled() else Workspace()
        for layer in self.layers:
            x, v, xg, vg, disp = layer(x, v, xg, vg, disp, src, dst, vec0,
                                       pair, self.rbf, batch, counts, workspace)
        if self.config.zero_mean:
            disp = centre_displacements(disp, markers, batch, n_graphs)
        return disp


def centre_displacements(disp: torch.Tensor, markers: torch.Tensor,
                         batch: torch.Tensor, n_graphs: int) -> torch.Tensor:
    """Subtract each graph's mean displacement over its real atoms.

    The mean runs over real atoms only, because the labels' zero mean does:
    the oracle relaxes the real atoms (zero net force, so FIRE keeps their
    centroid), placeholders are not atoms there and are left out of the loss.
    Placeholders get the same shift, so the predicted structure moves as one
    body. A uniform shift leaves every bond vector unchanged, so doing this
    once at the end equals doing it after every layer; and it commutes with
    rotations, translations and permutations.
    """
    real = (markers != VACANCY_MARKER).to(disp.dtype)[:, None]
    n_real = scatter_sum(real, batch, n_graphs).clamp_min(1.0)
    mean = scatter_sum(disp * real, batch, n_graphs) / n_real
    return disp - mean.index_select(0, batch)
