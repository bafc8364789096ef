"""DefiNet network: equivariance, batching and configuration."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from e3nn import o3

from ase_definet import DefiNet
from ase_definet.data.defects import apply_defects
from ase_definet.data.hosts import HOSTS, build_host
from ase_definet.inference import Predictor
from ase_definet.model import PRESETS, DefiNetConfig
from ase_definet.model.layers import BandWeights, RadialBasis


def _defect_structure(rng, name="MoS2", n=4):
    host = build_host(name, n)
    sym = host.get_chemical_symbols()
    old, new = HOSTS[name].substitutions[0]
    sub = sym.index(old, 3)
    sites = sorted({0, sub, 7} - {sub}) + [sub]
    defects = {s: ("vacancy", sym[s], None) for s in sites[:2]}
    defects[sub] = ("substitution", old, new)
    order = sorted(defects)
    a = apply_defects(host, order, [defects[k] for k in order])
    a.positions += rng.normal(scale=0.03, size=a.positions.shape)
    return a, host


@pytest.fixture(scope="module", params=[16, 64], ids=["one-window", "windowed-basis"])
def predictor(request):
    """Small networks; with 64 radial functions the basis is evaluated in
    windows (RadialBasis.n_windows > 1), as in the paper's configuration."""
    torch.manual_seed(0)
    net = DefiNet(DefiNetConfig(hidden=32, num_rbf=request.param))
    assert (net.rbf.n_windows > 1) == (request.param == 64)
    return Predictor(net, device="cpu")


def _pred(predictor, atoms, host):
    return predictor.predict([atoms], host)[0].positions


def test_prediction_moves_atoms(predictor, rng):
    a, host = _defect_structure(rng)
    out = _pred(predictor, a, host)
    assert out.shape == a.positions.shape          # placeholders never reach the output
    assert np.abs(out - a.positions).max() > 1e-3  # an untrained net still moves atoms


def test_rotation_equivariance(predictor, rng):
    a, host = _defect_structure(rng)
    out = _pred(predictor, a, host)
    torch.manual_seed(1)
    for _ in range(3):
        rot = o3.rand_matrix().double().numpy()
        ra, rh = a.copy(), host.copy()
        for x in (ra, rh):
            x.set_cell(x.cell.array @ rot.T, scale_atoms=False)
            x.positions = x.positions @ rot.T
        rout = _pred(predictor, ra, rh)
        assert np.abs(rout - out @ rot.T).max() < 1e-4


def test_translation_equivariance(predictor, rng):
    a, host = _defect_structure(rng)
    out = _pred(predictor, a, host)
    shift = np.array([1.7, -3.2, 0.9])
    ta, th = a.copy(), host.copy()
    ta.translate(shift)
    th.translate(shift)
    assert np.abs(_pred(predictor, ta, th) - (out + shift)).max() < 1e-5
    ta.translate(-shift)            # only the structure moves: the matcher registers it
    ta.translate(a.cell[0] * 2)
    assert np.abs(_pred(predictor, ta, host) - (out + 2 * a.cell[0])).max() < 1e-5


def test_permutation_equivariance(predictor, rng):
    a, host = _defect_structure(rng)
    out = _pred(predictor, a, host)
    p = rng.permutation(len(a))
    assert np.abs(_pred(predictor, a[p], host) - out[p]).max() < 1e-5
    q = rng.permutation(len(host))
    assert np.abs(_pred(predictor, a, host[q]) - out).max() < 1e-5


def test_batch_equals_one_by_one(predictor, rng):
    structs = [_defect_structure(rng, name, n) for name, n in
               (("MoS2", 4), ("hBN", 5), ("GaSe", 3))]
    single = [_pred(predictor, a, h) for a, h in structs]
    batched = predictor.predict([a for a, _ in structs], [h for _, h in structs],
                                batch_size=3)
    for s, b in zip(single, batched):
        assert np.abs(s - b.positions).max() < 1e-5


def test_cpu_batches_are_cut_to_cache_size(predictor, rng, monkeypatch):
    """A batch whose edge features exceed ``chunk_edge_features`` runs as several
    forward passes with the same result."""
    structs = [_defect_structure(rng, "MoS2", 4) for _ in range(3)]
    atoms, hosts = [a for a, _ in structs], [h for _, h in structs]
    whole = predictor.predict(atoms, hosts, batch_size=3)
    calls = []
    real = predictor._forward_chunk
    monkeypatch.setattr(predictor, "_forward_chunk", lambda gs: calls.append(len(gs)) or real(gs))
    monkeypatch.setattr(predictor, "chunk_edge_features", 1)
    cut = predictor.predict(atoms, hosts, batch_size=3)
    assert calls == [1, 1, 1]
    for w, c in zip(whole, cut):
        assert np.abs(w.positions - c.positions).max() < 1e-5


def test_cpu_bitwise_reproducible(predictor, rng):
    a, host = _defect_structure(rng)
    assert np.array_equal(_pred(predictor, a, host), _pred(predictor, a, host))


def test_presets_and_parameter_count():
    assert set(PRESETS) >= {"paper", "default"}
    paper = PRESETS["paper"]
    assert (paper.hidden, paper.num_rbf, paper.cutoff, paper.max_neighbors) == (512, 128, 6.0, 50)
    n = sum(p.numel() for p in DefiNet.from_config("paper").parameters())
    assert 20e6 < n < 40e6          # the paper's model has about 29 M parameters
    with pytest.raises(ValueError, match="unknown DefiNet preset"):
        DefiNet.from_config("huge")


def test_gradients_flow_to_every_parameter(rng):
    torch.manual_seed(0)
    net = DefiNet(DefiNetConfig(hidden=16, num_rbf=8))
    a, host = _defect_structure(rng)
    pred = Predictor(net, device="cpu")
    _, g, _ = pred.prepare(a, host)
    out = net(g.numbers, g.markers, g.edge_src, g.edge_dst, g.edge_vec, g.batch, 1)
    out.square().sum().backward()
    dead = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum()]
    # Inherent to the design: vectors start at zero, so layer 0's vector
    # distribution sees zeros. Everything else must receive gradient.
    allowed = ("layers.0.dist_w", "layers.0.dist_act")
    assert dead and all(n.startswith(allowed) for n in dead), dead


def test_finite_gradients_in_symmetric_environments():
    """Pristine fcc sites have exactly cancelling vector sums: gradients stay finite."""
    from ase.build import bulk
    torch.manual_seed(0)
    host = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(3)
    atoms = host.copy()
    del atoms[0]
    net = DefiNet(DefiNetConfig(hidden=16, num_rbf=8))
    _, g, _ = Predictor(net, device="cpu").prepare(atoms, host)
    out = net(g.numbers, g.markers, g.edge_src, g.edge_dst, g.edge_vec, g.batch, 1)
    out.square().sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)


def test_windowed_network_equals_dense_network(rng):
    """Outputs and gradients with the windowed basis equal those of the same
    network evaluating all radial functions for every edge."""
    class DenseBasis(RadialBasis):
        stride = 10 ** 6                        # one window holding every function

    torch.manual_seed(0)
    cfg = DefiNetConfig(hidden=16, num_rbf=64)
    windowed = DefiNet(cfg)
    dense = DefiNet(cfg)
    dense.rbf = DenseBasis(cfg.num_rbf, cfg.cutoff)
    dense.load_state_dict(windowed.state_dict())
    assert windowed.rbf.n_windows > 1 and dense.rbf.n_windows == 1
    a, host = _defect_structure(rng)
    _, g, _ = Predictor(windowed, device="cpu").prepare(a, host)
    args = (g.numbers, g.markers, g.edge_src, g.edge_dst, g.edge_vec, g.batch, 1)
    outs = []
    for net in (windowed, dense):
        out = net(*args)
        out.square().sum().backward()
        outs.append(out.detach())
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-5, atol=1e-7)
    for (name, p), q in zip(windowed.named_parameters(), dense.parameters()):
        if p.grad is not None:
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-7, msg=name)


@pytest.mark.parametrize("num_rbf, cutoff", [(128, 6.0), (64, 5.0), (33, 4.0), (16, 5.0)])
def test_windowed_basis_holds_every_nonzero_value(num_rbf, cutoff):
    """The window of each distance holds all its non-zero Gaussians, so the
    windowed filter equals the dense one ``rbf(d) @ W + b``."""
    rbf = RadialBasis(num_rbf, cutoff)
    d = torch.cat([torch.linspace(0.0, cutoff + 0.5, 4001, dtype=torch.float64),
                   rbf.centers.double() + 1e-7])
    rbf = rbf.double()
    env = 0.5 * (torch.cos(d * torch.pi / cutoff) + 1.0) * (d < cutoff)
    arg = -rbf.gamma * (d[:, None] - rbf.centers) ** 2
    dense = torch.where(arg < -30.0, 0.0, torch.exp(arg)) * env[:, None]
    window = rbf.window(d)
    cols = window[:, None] * rbf.window_step + torch.arange(rbf.width)
    inside = torch.zeros(len(d), rbf.n_windows * rbf.window_step + rbf.width, dtype=torch.bool)
    inside.scatter_(1, cols, True)
    assert not dense[~inside[:, :num_rbf]].any()
    torch.testing.assert_close(rbf(d, window), torch.cat(
        [dense, dense.new_zeros(len(d), inside.shape[1] - num_rbf)], 1).gather(1, cols))

    linear = torch.nn.Linear(num_rbf, 8).double()
    gate = torch.rand(9, 8, dtype=torch.float64)
    w = BandWeights(linear, gate, rbf)
    basis = torch.cat([rbf(d, window), d.new_ones(len(d), 1)], 1)
    for pair in (0, 4):
        got = torch.stack([basis[i] @ w[pair, int(window[i])] for i in range(0, len(d), 97)])
        want = (linear(dense) * gate[pair])[::97]
        torch.testing.assert_close(got, want)
