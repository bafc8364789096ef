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
    """Sum rows of ``src`` into ``size`` rows by ``index``.

    A strided ``src`` (a column slice) is copied first: ``index_add_`` on CPU
    takes a slow generic path for it (7.5 ms instead of 1.2 + 1 ms for the
    copy, for the paper model's (6272, 512) messages).
    """
    out = src.new_zeros((size,) + tuple(src.shape[1:]))
    return out.index_add_(0, index, src.contiguous())


class RadialBasis(nn.Module):
    """Gaussian radial basis times a cosine envelope that is zero at the cutoff.

    The envelope makes every distance-dependent filter go smoothly to zero at
    the graph radius (the reference implementation's basis does not), so the
    prediction does not jump when a bond crosses the cutoff.

    Values below e^-30 are exactly zero, so one distance has at most ``span``
    non-zero Gaussians. With many functions (128 in the paper's model) the
    basis is therefore evaluated in *windows*: window ``j`` holds the
    ``width`` centres from ``j * stride`` on, and every distance gets the first
    window that holds all its non-zero values. A filter ``basis @ W`` then
    needs only the matching ``width`` rows of ``W`` (:class:`BandWeights`):
    the same numbers at a quarter of the arithmetic for the paper's model.
    With few functions there is one window holding them all.
    """

    #: Window step in centres; windows are ``stride + span - 1`` wide.
    stride = 16

    def __init__(self, num_rbf: int, cutoff: float):
        super().__init__()
        self.cutoff = float(cutoff)
        self.num_rbf = int(num_rbf)
        self.register_buffer("centers", torch.linspace(0.0, cutoff, num_rbf))
        self.gamma = 0.5 / (cutoff / num_rbf) ** 2 if num_rbf > 1 else 1.0
        self.spacing = cutoff / (num_rbf - 1) if num_rbf > 1 else max(cutoff, 1.0)
        # reach: centres farther than this (in units of the spacing) are zero;
        # the margin keeps the window test on the safe side of rounding
        self.reach = math.sqrt(30.0 / self.gamma) / self.spacing + 1e-3
        span = int(2.0 * self.reach) + 1
        width = self.stride + span - 1
        if width >= num_rbf:
            self.width, self.n_windows, step = num_rbf, 1, num_rbf
        else:
            self.width, step = width, self.stride
            self.n_windows = -(-(num_rbf - width) // step) + 1
        self.window_step = step
        n_pad = (self.n_windows - 1) * step + self.width - num_rbf
        # padding centres lie far outside any graph: their values are zero
        padded = torch.cat([self.centers, torch.full((n_pad,), 1e4 + cutoff)])
        self.register_buffer("padded_centers", padded, persistent=False)

    def window(self, d: torch.Tensor) -> torch.Tensor:
        """Index of the window used for each distance, (E,) long."""
        if self.n_windows == 1:
            return torch.zeros_like(d, dtype=torch.long)
        first = torch.ceil(d / self.spacing - self.reach).clamp_(min=0).long()
        return torch.div(first, self.window_step, rounding_mode="floor").clamp_(
            max=self.n_windows - 1)

    def forward(self, d: torch.Tensor, window: torch.Tensor | None = None) -> torch.Tensor:
        """Basis values, (E, width): centres ``window * step + t`` of each distance
        (all ``num_rbf`` centres when there is one window)."""
        env = 0.5 * (torch.cos(d * (math.pi / self.cutoff)) + 1.0) * (d < self.cutoff)
        if self.n_windows == 1:
            centers = self.centers
        else:
            t = torch.arange(self.width, device=d.device)
            centers = self.padded_centers[window[:, None] * self.window_step + t]
        arg = -self.gamma * (d[:, None] - centers) ** 2
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
    touched once per pass and freed with it. Edge passes run block by block
    (:func:`edge_blocks`) into the same few buffers, which therefore stay in
    cache. Only used when no gradient is recorded.
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


def _gather(t: torch.Tensor, index: torch.Tensor, ws: Workspace | None, name: str
            ) -> torch.Tensor:
    """``t[index]`` along the first axis, into a reused workspace buffer at inference."""
    out = None if ws is None else ws.get(name, (index.shape[0],) + tuple(t.shape[1:]), t)
    return torch.index_select(t, 0, index, out=out)


class BandWeights:
    """Radial-filter weights for one marker pair and one basis window.

    ``(rbf W + b) g_p = [rbf_j, 1] [W_j; b] g_p`` where ``rbf_j`` are the basis
    values of window ``j`` and ``W_j`` the matching rows of ``W``: each group
    of edges with the same pair type and window is one plain matmul, and no
    edge-sized gate tensor is gathered or multiplied. The bias rides along as
    a column of ones in the basis, because ``addmm`` would first broadcast-copy
    it over the whole output.
    """

    def __init__(self, linear: nn.Linear, gate: torch.Tensor, rbf: RadialBasis):
        w = linear.weight.t()                                   # (R, C)
        n_pad = (rbf.n_windows - 1) * rbf.window_step + rbf.width - w.shape[0]
        self.weight = torch.cat([w, w.new_zeros((n_pad, w.shape[1]))]) if n_pad else w
        self.bias = linear.bias[None, :]
        self.gate = gate                                        # (9, C)
        self.rbf = rbf
        self._cache: dict[tuple[int, int], torch.Tensor] = {}

    def __getitem__(self, key: tuple[int, int]) -> torch.Tensor:
        if key not in self._cache:
            pair, window = key
            start = window * self.rbf.window_step
            w = torch.cat([self.weight[start:start + self.rbf.width], self.bias])
            self._cache[key] = w * self.gate[pair]
        return self._cache[key]


def band_filter(basis: torch.Tensor, weights: BandWeights, groups: list,
                ws: Workspace | None) -> torch.Tensor:
    """Gated radial filter of all edges, (E, C): one matmul per group of edges
    ``(start, stop, (pair, window))``, written into one workspace buffer."""
    shape = (basis.shape[0], weights.weight.shape[1])
    if ws is None:
        parts = [basis[a:b] @ weights[g] for a, b, g in groups]
        return torch.cat(parts) if len(parts) > 1 else parts[0]
    out = ws.get("filter", shape, basis)
    for a, b, g in groups:
        torch.mm(basis[a:b], weights[g], out=out[a:b])
    return out


_SQRT_HALF = math.sqrt(0.5)


def _mul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a * b``, in place when no gradient is needed (saves edge-sized allocations)."""
    return a.mul_(b) if not torch.is_grad_enabled() else a * b


class DefiNetLayer(nn.Module):
    """One graph convolution: distribution, message passing, self-update,
    coordinate update and aggregation (Fig. 7 of the paper)."""

    def __init__(self, hidden: int, num_rbf: int, avg_neighbors: float,
                 aggregate: bool = True, residual: bool = False):
        super().__init__()
        f = hidden
        self.f = f
        self.norm = 1.0 / float(avg_neighbors)
        # residual=True keeps the node state across the two steps below
        # (see _residual_update); the parameters are the same either way
        self.residual = residual
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

    def forward(self, x, v, xg, vg, disp, src, dst, edge_vec0, pair, rbf_fn,
                batch, counts, workspace: Workspace | None = None):
        """One layer. ``pair`` is the marker-pair type ``3 m_dst + m_src`` of each
        edge; edges come sorted by it."""
        n = x.shape[0]
        f = self.f
        ws = workspace
        # message distribution (8-9)
        x = self.dist_phi(torch.cat([x, xg[batch]], dim=-1)) + x
        v = self.dist_act(self.dist_w(v + vg[batch]) + v)

        # bond vectors r_j - r_i (message j -> i) from the current positions; the
        # paper's r_ji differs only by sign, which the learned weights absorb
        vec = edge_vec0 + disp.index_select(0, src) - disp.index_select(0, dst)
        d = (vec * vec).sum(dim=-1).sqrt()
        # group edges by (pair type, basis window) for the radial filters; only
        # the order of edges changes, and every sum over edges is order-free
        window = rbf_fn.window(d)
        if rbf_fn.n_windows > 1:
            key = pair * rbf_fn.n_windows + window
            order = torch.argsort(key, stable=True)
            src, dst, vec, d, window = src[order], dst[order], vec[order], d[order], window[order]
            key = key[order]
        else:
            key = pair
        sizes = torch.bincount(key, minlength=9 * rbf_fn.n_windows).tolist()
        groups, start = [], 0
        for k, size in enumerate(sizes):
            if size:
                groups.append((start, start + size, divmod(k, rbf_fn.n_windows)))
            start += size
        unit = vec / d.clamp_min(1e-9)[:, None]
        basis = torch.cat([rbf_fn(d, window), d.new_ones((d.shape[0], 1))], dim=1)
        # the radial filters of eqs. 1-2 and 5 read the same basis: one matmul
        gate = torch.cat([self.msg_gate.table(), self.pos_gate.table()], dim=-1)
        filt = band_filter(basis, BandWeights(self.rbf_filter, gate, rbf_fn), groups, ws)

        # defect-aware message passing (1-2)
        m = _mul(filt[:, :3 * f], _gather(self.msg_phi(x), src, ws, "phi"))
        h, wu, wv = m[:, :f], m[:, None, f:2 * f], m[:, None, 2 * f:]
        vm = _mul(_gather(v, src, ws, "v"), wu)                 # (E, 3, F)
        vm = vm.addcmul_(wv, unit[:, :, None]) if ws is not None \
            else vm + wv * unit[:, :, None]
        q = scatter_sum(h, dst, n) * self.norm
        qv = scatter_sum(vm, dst, n) * self.norm                # (N, 3, F)

        # self-updating (3-4)
        if self.residual:
            x, v = self._residual_update(x, v, q, qv)
        else:
            x, v = self._self_update(q, qv)

        # coordinate updating (5-7)
        e = _mul(filt[:, 3 * f:], _gather(self.pos_phi(x), src, ws, "phi"))
        coef = self.pos_q(e)                                    # (E, 1)
        d_rpv = scatter_sum(coef * unit, dst, n) * self.norm
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

    def _self_update(self, q: torch.Tensor, qv: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """Scalars and vectors (eqs. 3-4) from the gathered messages ``q, qv``."""
        vq = self.upd_v(qv)
        # +eps: symmetric environments give exactly zero vectors, where the
        # gradient of a plain square root is infinite
        s = torch.cat([q, ((vq * vq).sum(dim=1) + 1e-12).sqrt()], dim=-1)
        a_, g, b_ = torch.split(self.upd_phi(s), self.f, dim=-1)
        return a_ + torch.tanh(g) * q, self.upd_act(b_[:, None, :] * self.upd_u(qv))

    def _residual_update(self, x: torch.Tensor, v: torch.Tensor, q: torch.Tensor,
                         qv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Message passing and self-update as increments of the node state.

        The replacing form (:meth:`_self_update`) drops the node's own state:
        the graph has no self-loops, so an atom's element and its earlier
        vectors come back only as echoes through its neighbours. Here both
        steps add to the state. Scalars are rescaled by 1/sqrt(2) after each
        addition, so the sum of two unit-variance terms keeps unit variance.
        Vectors start at zero and are summed without rescaling (rescaling would
        shrink the first messages too); the messages are damped by 1/sqrt(F),
        as in the reference, which keeps the vector state, and the
        displacement read from it (eq. 6), small at initialisation. Same
        parameters as eqs. 3-4, equally equivariant: only invariant scalars
        multiply the vectors.
        """
        x = (x + q) * _SQRT_HALF
        v = v + qv * (1.0 / math.sqrt(self.f))
        dx, dv = self._self_update(x, v)
        return (x + dx) * _SQRT_HALF, v + dv
