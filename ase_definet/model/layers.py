"""Building blocks of DefiNet (paper, Methods, eqs. 1–13).

Vector features are stored as ``(N, 3, F)`` so that channel mixing (the
matrices U, V, W of the paper) is a plain ``Linear`` over the last axis.
Scatter sums use ``Tensor.index_add_``; there are no Python loops over atoms
or edges.
"""
from __future__ import annotations

import math

import torch
from torch import nn


def mlp(n_in: int, n_hidden: int, n_out: int) -> nn.Sequential:
    """Two-layer perceptron with SiLU."""
    return nn.Sequential(nn.Linear(n_in, n_hidden), nn.SiLU(), nn.Linear(n_hidden, n_out))


def scatter_sum(src: torch.Tensor, index: torch.Tensor, size: int) -> torch.Tensor:
    """Sum rows of ``src`` into ``size`` rows by ``index``."""
    out = src.new_zeros((size,) + tuple(src.shape[1:]))
    return out.index_add_(0, index, src)


class RadialBasis(nn.Module):
    """Gaussian radial basis times a cosine envelope that is zero at the cutoff.

    The envelope makes every distance-dependent filter go smoothly to zero at
    the graph radius (the reference implementation's basis does not), so the
    prediction does not jump when a bond crosses the cutoff.
    """

    def __init__(self, num_rbf: int, cutoff: float):
        super().__init__()
        self.cutoff = float(cutoff)
        self.register_buffer("centers", torch.linspace(0.0, cutoff, num_rbf))
        self.gamma = 0.5 / (cutoff / num_rbf) ** 2 if num_rbf > 1 else 1.0

    def forward(self, d: torch.Tensor) -> torch.Tensor:
        env = 0.5 * (torch.cos(d * (math.pi / self.cutoff)) + 1.0) * (d < self.cutoff)
        arg = -self.gamma * (d[:, None] - self.centers) ** 2
        # Tails below e^-30 are set to exactly zero, and exp() never sees the
        # large negative arguments that give subnormal floats: every op on
        # subnormals (exp and matmul included) runs 10-50x slower on x86 CPUs.
        tail = arg < -30.0
        if torch.is_grad_enabled():
            return torch.exp(arg.clamp(min=-30.0)).masked_fill(tail, 0.0) * env[:, None]
        return torch.exp(arg.clamp_(min=-30.0)).masked_fill_(tail, 0.0).mul_(env[:, None])


class VectorActivation(nn.Module):
    """Non-linear vector activation (eqs. 12–13).

    A consensus vector ``c = W_p x`` is formed per node; each mixed channel
    ``y_j = (W x)_j`` is kept where it points along ``c`` and has ``c`` added
    where it does not. Equivariant, since the test is a dot product.
    """

    def __init__(self, hidden: int):
        super().__init__()
        self.consensus = nn.Linear(hidden, 1, bias=False)
        self.mix = nn.Linear(hidden, hidden, bias=False)

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        c = self.consensus(v)                                   # (N, 3, 1)
        y = self.mix(v)                                         # (N, 3, F)
        aligned = (c * y).sum(dim=1, keepdim=True) > 0          # (N, 1, F)
        return torch.where(aligned, y, y + c)


class MarkerGate(nn.Module):
    """Pair gate γ(E(m_i) + E(m_j)) evaluated once for the 9 marker pairs."""

    def __init__(self, hidden: int, n_out: int):
        super().__init__()
        self.embed = nn.Embedding(3, hidden)
        self.gamma = mlp(hidden, hidden, n_out)

    def table(self) -> torch.Tensor:
        e = self.embed.weight                                   # (3, F)
        pairs = (e[:, None, :] + e[None, :, :]).reshape(9, -1)  # index 3*m_i + m_j
        return self.gamma(pairs)


class Workspace:
    """Reusable scratch memory for edge-sized tensors at inference.

    A fresh multi-megabyte tensor page-faults on first touch, which on the
    2-core VMs we measured costs about as much as the arithmetic filling it
    (benchmarks/inference.py). One workspace lives for one forward pass and is
    shared by its layers, which run one after another, so the buffers are
    touched once per pass and freed with it. Only used when no gradient is
    recorded.
    """

    def __init__(self):
        self._buffers: dict[str, torch.Tensor] = {}

    def get(self, name: str, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        numel = 1
        for n in shape:
            numel *= n
        buf = self._buffers.get(name)
        if (buf is None or buf.numel() < numel or buf.dtype != like.dtype
                or buf.device != like.device):
            buf = like.new_empty(max(numel, int(1.25 * numel)))
            self._buffers[name] = buf
        return buf[:numel].view(shape)


def gated_filter(rbf: torch.Tensor, linear: nn.Linear, gate: torch.Tensor,
                 pair_sizes: list[int], workspace: Workspace | None = None) -> torch.Tensor:
    """``linear(rbf) * gate[pair]`` for edges sorted by marker pair.

    The gate is folded into the weights, ``(rbf W + b) g_p = [rbf, 1] [W; b] g_p``,
    so each of the 9 pair types is one small matmul and no edge-sized gate
    tensor is ever gathered or multiplied. The bias rides along as a column of
    ones: ``addmm`` would first broadcast-copy it over the whole edge-sized
    output, which costs as much as the product itself.
    """
    ones = rbf.new_ones((rbf.shape[0], 1))
    basis = torch.cat([rbf, ones], dim=1)                       # (E, R + 1)
    w = torch.cat([linear.weight.t(), linear.bias[None, :]], dim=0)
    inference = not torch.is_grad_enabled()
    out = None
    if inference:
        shape = (basis.shape[0], w.shape[1])
        out = workspace.get("filter", shape, basis) if workspace else basis.new_empty(shape)
    parts, start = [], 0
    for p, size in enumerate(pair_sizes):
        if size:
            block = basis[start:start + size]
            if inference:
                torch.mm(block, w * gate[p], out=out[start:start + size])
            else:
                parts.append(block @ (w * gate[p]))
        start += size
    if inference:
        return out
    return torch.cat(parts) if len(parts) > 1 else parts[0]


def _mul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a * b``, in place when no gradient is needed (saves edge-sized allocations)."""
    return a.mul_(b) if not torch.is_grad_enabled() else a * b


class DefiNetLayer(nn.Module):
    """One graph convolution: distribution, message passing, self-update,
    coordinate update and aggregation (Fig. 7 of the paper)."""

    def __init__(self, hidden: int, num_rbf: int, avg_neighbors: float,
                 aggregate: bool = True):
        super().__init__()
        f = hidden
        self.f = f
        self.norm = 1.0 / float(avg_neighbors)
        # distribution, eqs. 8-9
        self.dist_phi = mlp(2 * f, f, f)
        self.dist_w = nn.Linear(f, f, bias=False)
        self.dist_act = VectorActivation(f)
        # defect-aware message passing, eqs. 1-2 (φ_h, φ_u, φ_v fused), and the
        # radial filter of eq. 5, which reads the same basis: one matmul for both
        self.msg_phi = mlp(f, f, 3 * f)
        self.rbf_filter = nn.Linear(num_rbf, 4 * f)
        self.msg_gate = MarkerGate(f, 3 * f)
        # self-updating, eqs. 3-4 (φ_s, φ_g, φ_h fused)
        self.upd_v = nn.Linear(f, f, bias=False)
        self.upd_u = nn.Linear(f, f, bias=False)
        self.upd_phi = mlp(2 * f, f, 3 * f)
        self.upd_act = VectorActivation(f)
        # coordinate updating, eqs. 5-7
        self.pos_phi = mlp(f, f, f)
        self.pos_gate = MarkerGate(f, f)
        self.pos_q = nn.Sequential(nn.SiLU(), nn.Linear(f, 1))
        self.pos_vec = nn.Linear(f, 1, bias=False)
        # aggregation, eqs. 10-11 (the last layer's global node would feed nothing)
        self.aggregate = aggregate
        if aggregate:
            self.agg_phi = mlp(2 * f, f, f)
            self.agg_w = nn.Linear(f, f, bias=False)

    def forward(self, x, v, xg, vg, disp, src, dst, edge_vec0, pair_sizes, rbf_fn,
                batch, counts, workspace: Workspace | None = None):
        """One layer. Edges must be sorted by marker pair (``pair_sizes`` per type)."""
        n = x.shape[0]
        f = self.f
        # message distribution (8-9)
        x = self.dist_phi(torch.cat([x, xg[batch]], dim=-1)) + x
        v = self.dist_act(self.dist_w(v + vg[batch]) + v)

        # bond vectors r_j - r_i (message j -> i) from the current positions; the
        # paper's r_ji differs only by sign, which the learned weights absorb
        vec = edge_vec0 + disp.index_select(0, src) - disp.index_select(0, dst)
        d = (vec * vec).sum(dim=-1).sqrt()
        unit = vec / d.clamp_min(1e-9)[:, None]
        rbf = rbf_fn(d)
        gate = torch.cat([self.msg_gate.table(), self.pos_gate.table()], dim=-1)
        filt = gated_filter(rbf, self.rbf_filter, gate, pair_sizes, workspace)

        # defect-aware message passing (1-2)
        w = _mul(filt[:, :3 * f], self.msg_phi(x).index_select(0, src))
        h, wu, wv = w[:, :f], w[:, f:2 * f], w[:, 2 * f:]
        q = scatter_sum(h, dst, n) * self.norm
        if workspace is None:
            vmsg = _mul(v.index_select(0, src), wu[:, None, :])
        else:
            vmsg = torch.index_select(v, 0, src, out=workspace.get(
                "vmsg", (src.shape[0],) + tuple(v.shape[1:]), v)).mul_(wu[:, None, :])
        vmsg = vmsg.addcmul_(wv[:, None, :], unit[:, :, None]) if not torch.is_grad_enabled() \
            else vmsg + wv[:, None, :] * unit[:, :, None]
        qv = scatter_sum(vmsg, dst, n) * self.norm               # (N, 3, F)

        # self-updating (3-4)
        vq = self.upd_v(qv)
        # +eps: symmetric environments give exactly zero vectors, where the
        # gradient of a plain square root is infinite
        s = torch.cat([q, ((vq * vq).sum(dim=1) + 1e-12).sqrt()], dim=-1)
        a, g, b = torch.split(self.upd_phi(s), f, dim=-1)
        x = a + torch.tanh(g) * q
        v = self.upd_act(b[:, None, :] * self.upd_u(qv))

        # coordinate updating (5-7)
        e = _mul(filt[:, 3 * f:], self.pos_phi(x).index_select(0, src))
        d_rpv = scatter_sum(self.pos_q(e) * unit, dst, n) * self.norm
        d_vec = self.pos_vec(v).squeeze(-1)
        disp = disp + d_rpv + d_vec

        if not self.aggregate:
            return x, v, xg, vg, disp
        # message aggregation (10-11): per-graph means
        xm = scatter_sum(x, batch, xg.shape[0]) / counts[:, None]
        vm = scatter_sum(v, batch, vg.shape[0]) / counts[:, None, None]
        xg = self.agg_phi(torch.cat([xm, xg], dim=-1)) + xg
        vg = self.agg_w(vm + vg) + vg
        return x, v, xg, vg, disp
