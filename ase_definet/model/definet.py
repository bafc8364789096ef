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
from .force_input import ForceEmbedding
from .layers import DefiNetLayer, RadialBasis, Workspace, scatter_sum
from .long_range import ReciprocalChannel

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
        # optional paths (issue #30) exist only when on, so a config without
        # them has exactly the parameters and state_dict keys of before
        if c.long_range:
            self.reciprocal = ReciprocalChannel(c.hidden, c.long_range)
        if c.force_input:
            self.force_embed = ForceEmbedding(c.hidden)

    @classmethod
    def from_config(cls, config: DefiNetConfig | dict | str = "default") -> DefiNet:
        """An untrained network from a preset name, dict or config."""
        return cls(config)

    def forward(self, numbers: torch.Tensor, markers: torch.Tensor,
                edge_src: torch.Tensor, edge_dst: torch.Tensor,
                edge_vec: torch.Tensor, batch: torch.Tensor,
                n_graphs: int, *, positions: torch.Tensor | None = None,
                cell: torch.Tensor | None = None, pbc: torch.Tensor | None = None,
                forces: torch.Tensor | None = None,
                workspace: Workspace | None = None) -> torch.Tensor:
        """Displacements of all nodes.

        The keyword arguments are what :meth:`ase_definet.graph.Graph.model_kwargs`
        returns; each is read only by the option that needs it and ignored
        otherwise.

        Parameters
        ----------
        numbers, markers : LongTensor (N,)
        edge_src, edge_dst : LongTensor (E,)
            Messages flow ``src → dst``.
        edge_vec : Tensor (E, 3)
            Unrelaxed bond vectors ``r[src] + shift - r[dst]``.
        batch : LongTensor (N,)
            Graph index of each node, in ``range(n_graphs)``.
        positions : Tensor (N, 3), optional
            Unrelaxed positions (float64 preferred); needed with ``long_range``.
        cell : Tensor (n_graphs, 3, 3), optional
            Lattice vectors (rows) of each graph; needed with ``long_range``.
        pbc : BoolTensor (n_graphs, 3), optional
            Periodic axes of each graph; needed with ``long_range``.
        forces : Tensor (N, 3), optional
            Oracle forces at the unrelaxed structure, eV/Å (placeholders'
            are ignored); needed with ``force_input``.
        workspace : Workspace, optional
            Scratch buffers to reuse at inference (an ensemble passes one to all
            its members, so that only the first touches fresh memory); a new one
            per call by default. Ignored while gradients are recorded.

        Returns
        -------
        Tensor (N, 3)
            Predicted displacement of every node (placeholders included).

        Raises
        ------
        ValueError
            Atomic numbers out of range, or an option's input missing.
        """
        c = self.config
        if int(numbers.max()) >= c.max_elements or int(numbers.min()) < 1:
            raise ValueError(f"atomic numbers must lie in 1..{c.max_elements - 1}")
        if c.long_range and (positions is None or cell is None or pbc is None):
            raise ValueError("this DefiNet has long_range on and needs positions=, cell= "
                             "and pbc= (pass **graph.model_kwargs() from a graph built "
                             "by build_graph)")
        if c.force_input and forces is None:
            raise ValueError("this DefiNet has force_input on and needs forces= (the "
                             "oracle's forces at the unrelaxed structure, eV/Å)")
        n = numbers.shape[0]
        f = c.hidden
        dtype = edge_vec.dtype
        x = (self.embed_z(numbers) + self.embed_m(markers)).to(dtype)
        if c.force_input:
            dx, v = self.force_embed(forces, markers != VACANCY_MARKER, dtype)
            x = x + dx
        else:
            v = x.new_zeros((n, 3, f))
        x0 = x
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
        if torch.is_grad_enabled():
            workspace = None
        elif workspace is None:
            workspace = Workspace()
        # the long-range channel runs once, before the last layer (see long_range.py)
        lr_at = c.num_layers - 1 if c.long_range else -1
        if c.long_range:
            modes = self.reciprocal.modes(cell.to(edge_vec.device), pbc.to(edge_vec.device))
            cos, sin = self.reciprocal.phases(positions, batch, modes, dtype)
        for k, layer in enumerate(self.layers):
            if k == lr_at:
                dx, dv, dd = self.reciprocal(x, v, x0, cos, sin, modes, batch, counts)
                x, v, disp = x + dx, v + dv, disp + dd
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
