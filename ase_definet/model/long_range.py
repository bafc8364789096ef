"""Long-range reciprocal channel of DefiNet (issue #30, lever 4).

The graph layers see ``num_layers × cutoff`` around each atom (20 Å for the
default network), and the global node (eqs. 10-11) sees only per-structure
means, which carry no position. In high-density MoS2 labels the cell's
lowest reciprocal-lattice modes hold about half of the out-of-plane
displacement variance, with an amplitude that grows with the cell: a field
that no local model can place once the cell outgrows the receptive field.

This channel reads that field from structure factors. For every structure,
``G`` runs over the reciprocal vectors of its *periodic* axes with
``0 < |G| <= G_max = 2π / long_range`` (a Cartesian cutoff, so the set of
physical modes is the same for any lattice basis), one of each pair ``±G``.
With learned per-atom channel weights ``w_c(x_j, x^0_j)`` (scalars, from
the node state and the input embedding) and ``W v_j`` (vectors),

.. math::

    S_c(G) = \\frac{1}{N} \\sum_j w_c(x_j, x^0_j)\\, e^{i G\\cdot r_j}, \\qquad
    \\mathbf{S}^v_c(G) = \\frac{1}{N} \\sum_j (W v_j)_c\\, e^{i G\\cdot r_j},

and every atom gets back, with radial filters ``f_{1,2,3}(|G|)``,

.. math::

    a_{ic} &= \\sum_G f_1(|G|)\\, \\mathrm{Re}[S_c(G)^* e^{iG\\cdot r_i}] \\\\
    \\mathbf{b}_{ic} &= \\sum_G f_2(|G|)\\, \\frac{G}{G_{max}}
        \\mathrm{Im}[S_c(G)^* e^{iG\\cdot r_i}]
        + f_3(|G|)\\, \\mathrm{Re}[\\mathbf{S}^v_c(G)^* e^{iG\\cdot r_i}],

which the network adds to its scalar state (``a`` through an MLP), its vector
state (``b`` through a channel mix) and, through one linear readout of ``b``,
to the displacement. Design choices, with their reasons:

* ``(1/N) Σ_G`` is a Riemann sum over reciprocal space (the number of modes
  under ``G_max`` grows like the cell), so ``a`` and ``b`` are sums of a
  learned pair kernel ``K(r_i - r_j)`` whose real-space form does not depend
  on the cell size: the filters, functions of ``|G|``, are what lets the
  amplitude follow the wavelength, and so the cell. For a supercell of a
  periodic pattern the extra modes have ``S = 0`` and the features are linear
  in ``S``: the same prediction.
* The vector structure factor ``S^v`` is an addition to the issue's design:
  vectors built from ``G`` lie in the periodic plane of a 2D material, so
  they cannot carry the *out-of-plane* field the measurement points at; the
  atoms' own vectors (``v``, with the ±z of the top/bottom chalcogens) can.
* Reciprocal vectors of the periodic axes only: with ``A`` the periodic
  lattice vectors (rows), ``B = 2π (A Aᵀ)⁻¹ A`` spans the periodic plane and
  does not depend on the vacuum vector of a slab (a tilted ``c`` gives the
  same modes). ``±G`` are folded exactly: ``S(-G) = S(G)^*``, so the Re terms
  are even and ``G·Im`` is even too.
* Phases use the unrelaxed positions (exact and the simplest; the layers'
  displacements are far below the wavelengths read here) and are formed in
  float64 with autocast off, so a shift of the origin by 1000 Å or a
  lattice translation of one atom changes them by nothing but rounding.
* The filters carry the envelope ``(1 + cos(π|G|/G_max))/2``: a mode that
  crosses the cutoff under strain enters with zero weight.
* The channel runs once, before the last layer (after the earlier layers have
  built the vectors it reads, and so that the last layer's messages and
  coordinate update can use its output locally); its direct readout makes
  the field reach the displacement also where the last layer replaces the
  node state (``residual=False``).

Modes are enumerated on one integer grid for the whole batch, sized by the
largest index any graph needs (one host sync), masked per graph and packed to
the front: no Python loop over graphs, atoms or modes.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .layers import mlp, scatter_sum

#: Gaussian functions of ``|G| / G_max`` in the radial filters of the modes.
NUM_G_BASIS = 8


def reciprocal_modes(cell: torch.Tensor, pbc: torch.Tensor, g_max: float
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Reciprocal vectors ``0 < |G| <= g_max`` of each graph, one per ``±G`` pair.

    Parameters
    ----------
    cell : Tensor (B, 3, 3)
        Lattice vectors as rows, Å.
    pbc : BoolTensor (B, 3)
        Periodic axes; a graph without any has no modes.
    g_max : float
        Cutoff in 1/Å.

    Returns
    -------
    G : Tensor (B, K, 3), float64
        Modes of each graph packed to the front, zero beyond its count.
    mask : BoolTensor (B, K)
        Which entries are modes. ``K`` is the largest count in the batch (0
        when no graph has a mode).
    """
    with torch.autocast(cell.device.type, enabled=False):
        cell = cell.to(torch.float64)
        p = pbc.to(device=cell.device, dtype=torch.bool)
        a = cell * p[:, :, None]
        # identity on the non-periodic axes keeps the Gram matrix invertible;
        # their rows of A are zero, so they get zero reciprocal vectors
        gram = a @ a.transpose(1, 2) + torch.diag_embed((~p).to(cell.dtype))
        b = 2.0 * math.pi * torch.linalg.solve(gram, a)              # (B, 3, 3) rows b_i
        # |n_i| = |G·a_i| / 2π <= g_max |a_i| / 2π
        n_max = torch.floor(g_max * torch.linalg.vector_norm(a, dim=-1) / (2 * math.pi)
                            + 1e-9).long() * p
        m = n_max.amax(dim=0).tolist()                               # per axis, batch-wide
        axes = [torch.arange(-k, k + 1, device=cell.device) for k in m]
        n = torch.cartesian_prod(*axes).reshape(-1, 3)               # (K0, 3)
        # one of each ±n: the first non-zero index positive
        first = torch.where(n[:, 0] != 0, n[:, 0], torch.where(n[:, 1] != 0, n[:, 1], n[:, 2]))
        n = n[first > 0]
        g = torch.einsum("kd,bde->bke", n.to(cell.dtype), b)         # (B, K0, 3)
        valid = ((n.abs()[None] <= n_max[:, None, :]).all(dim=-1)
                 & (torch.linalg.vector_norm(g, dim=-1) <= g_max))
        count = valid.sum(dim=1)
        k = int(count.max()) if count.numel() else 0
        order = torch.argsort((~valid).to(torch.int8), dim=1, stable=True)[:, :k]
        g = torch.gather(g, 1, order[:, :, None].expand(-1, -1, 3))
        mask = torch.arange(k, device=cell.device)[None, :] < count[:, None]
        return g * mask[:, :, None], mask


class ReciprocalChannel(nn.Module):
    """Structure factors at the cell's longest-wavelength modes, read back per atom.

    See the module docstring for the formulas and the reasons behind them.

    Parameters
    ----------
    hidden : int
        Feature width F of the network.
    wavelength : float
        Shortest wavelength read, Å (``DefiNetConfig.long_range``).
    channels : int, optional
        Structure-factor channels C (default ``max(8, F // 4)``).
    """

    def __init__(self, hidden: int, wavelength: float, channels: int | None = None):
        super().__init__()
        c = channels or max(8, hidden // 4)
        self.channels = c
        self.g_max = 2.0 * math.pi / float(wavelength)
        self.weight_s = mlp(2 * hidden, hidden, c)
        self.weight_v = nn.Linear(hidden, c, bias=False)
        self.register_buffer("centers", torch.linspace(0.0, 1.0, NUM_G_BASIS),
                             persistent=False)
        self.gamma = 0.5 * (NUM_G_BASIS - 1) ** 2
        self.filter = nn.Linear(NUM_G_BASIS, 3 * c)
        self.out_x = mlp(c, hidden, hidden)
        self.out_v = nn.Linear(c, hidden, bias=False)
        self.readout = nn.Linear(c, 1, bias=False)

    def modes(self, cell: torch.Tensor, pbc: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """This channel's :func:`reciprocal_modes`."""
        return reciprocal_modes(cell, pbc, self.g_max)

    def phases(self, positions: torch.Tensor, batch: torch.Tensor,
               modes: tuple[torch.Tensor, torch.Tensor], dtype: torch.dtype
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """``cos(G·r_i)`` and ``sin(G·r_i)``, (N, K), zero on padding modes.

        Formed in float64 (elementwise, autocast off) and only then cast to the
        network's dtype: ``G·r`` of an atom 1000 Å from the origin loses its
        fractional part in float32, and bf16 autocast would make it noise.
        """
        g, mask = modes
        with torch.autocast(positions.device.type, enabled=False):
            gi = g.index_select(0, batch)                               # (N, K, 3)
            phase = (positions.to(g.dtype)[:, None, :] * gi).sum(dim=-1)
            m = mask.index_select(0, batch).to(g.dtype)
            return (phase.cos() * m).to(dtype), (phase.sin() * m).to(dtype)

    def forward(self, x: torch.Tensor, v: torch.Tensor, x0: torch.Tensor,
                cos: torch.Tensor, sin: torch.Tensor,
                modes: tuple[torch.Tensor, torch.Tensor], batch: torch.Tensor,
                counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Increments ``(dx (N, F), dv (N, 3, F), ddisp (N, 3))`` of the node state.

        Parameters
        ----------
        x, v : Tensor (N, F), (N, 3, F)
            Node scalars and vectors.
        x0 : Tensor (N, F)
            The input embedding (element, marker, force norm). The scalar
            weights read it beside ``x``: with the paper's replacing update
            (``residual=False``) the state after a layer holds the atom's own
            element only as an echo through its neighbours, and at
            initialisation the layers make ``x`` nearly uniform, which would
            leave the structure factors of a defect near zero.
        cos, sin : Tensor (N, K)
            From :meth:`phases`.
        modes : (Tensor (B, K, 3), BoolTensor (B, K))
            From :meth:`modes`.
        batch : LongTensor (N,)
        counts : Tensor (B,)
            Nodes per graph (at least 1).
        """
        g, mask = modes
        n_graphs = g.shape[0]
        dtype = x.dtype
        g_norm = torch.linalg.vector_norm(g, dim=-1)                    # (B, K)
        u = (g_norm / self.g_max).to(dtype)
        basis = torch.exp(-self.gamma * (u[..., None] - self.centers.to(dtype)) ** 2)
        env = 0.5 * (torch.cos(u * math.pi) + 1.0) * mask.to(dtype)
        f1, f2, f3 = (self.filter(basis) * env[..., None]).split(self.channels, dim=-1)
        g_unit = (g / self.g_max).to(dtype)                             # (B, K, 3), |.| <= 1

        inv_n = (1.0 / counts).to(dtype)
        ws = self.weight_s(torch.cat([x, x0], dim=-1))                  # (N, C)
        wv = self.weight_v(v)                                           # (N, 3, C)
        # structure factors, per graph (B, K, C) and (B, K, 3, C)
        s_re = scatter_sum(cos[:, :, None] * ws[:, None, :], batch, n_graphs)
        s_im = scatter_sum(sin[:, :, None] * ws[:, None, :], batch, n_graphs)
        sv_re = scatter_sum(cos[:, :, None, None] * wv[:, None], batch, n_graphs)
        sv_im = scatter_sum(sin[:, :, None, None] * wv[:, None], batch, n_graphs)
        s_re, s_im = s_re * inv_n[:, None, None], s_im * inv_n[:, None, None]
        sv_re = sv_re * inv_n[:, None, None, None]
        sv_im = sv_im * inv_n[:, None, None, None]

        # back to the atoms: Re[S* e^{iGr}] = S_re cos + S_im sin,
        # Im[S* e^{iGr}] = S_re sin - S_im cos; filters folded in per graph
        a = (torch.einsum("nk,nkc->nc", cos, (f1 * s_re)[batch])
             + torch.einsum("nk,nkc->nc", sin, (f1 * s_im)[batch]))
        gs_re = g_unit[..., None] * (f2 * s_re)[:, :, None, :]          # (B, K, 3, C)
        gs_im = g_unit[..., None] * (f2 * s_im)[:, :, None, :]
        f3v = f3[:, :, None, :]
        b = (torch.einsum("nk,nkdc->ndc", sin, gs_re[batch])
             - torch.einsum("nk,nkdc->ndc", cos, gs_im[batch])
             + torch.einsum("nk,nkdc->ndc", cos, (f3v * sv_re)[batch])
             + torch.einsum("nk,nkdc->ndc", sin, (f3v * sv_im)[batch]))
        return self.out_x(a), self.out_v(b), self.readout(b).squeeze(-1)
