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


@pytest.fixture(scope="module", params=[
    {"num_rbf": 16}, {"num_rbf": 64}, {"num_rbf": 16, "residual": True},
    {"num_rbf": 16, "residual": True, "zero_mean": True}],
    ids=["one-window", "windowed-basis", "residual", "residual-zero-mean"])
def predictor(request):
    """Small networks; with 64 radial functions the basis is evaluated in
    windows (RadialBasis.n_windows > 1), as in the paper's configuration. The
    residual and zero-mean paths (issue #30) run every test that takes this
    fixture: equivariances, batching, reproducibility."""
    torch.manual_seed(0)
    net = DefiNet(DefiNetConfig(hidden=32, **request.param))
    assert (net.rbf.n_windows > 1) == (request.param["num_rbf"] == 64)
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


@pytest.mark.parametrize("residual", [False, True])
def test_gradients_flow_to_every_parameter(rng, residual):
    torch.manual_seed(0)
    net = DefiNet(DefiNetConfig(hidden=16, num_rbf=8, residual=residual))
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


def _two_graph_batch(rng):
    """Two defect structures (vacancies included) batched into one graph."""
    from ase_definet.graph import collate
    pred = Predictor(DefiNet(DefiNetConfig(hidden=16, num_rbf=8)), device="cpu")
    graphs = [pred.prepare(*_defect_structure(rng, name, n))[1]
              for name, n in (("MoS2", 4), ("hBN", 5))]
    g = collate(graphs)
    return g, (g.numbers, g.markers, g.edge_src, g.edge_dst, g.edge_vec, g.batch, 2)


def test_zero_mean_centres_real_atoms_of_each_structure(rng):
    """zero_mean: each structure's real atoms have zero mean displacement, and
    the output is the plain network's shifted by one vector per structure
    (placeholders included, so the structure moves as one body)."""
    g, args = _two_graph_batch(rng)
    real = g.markers != 2
    assert (~real).any() and set(g.batch[~real].tolist()) == {0, 1}
    torch.manual_seed(0)
    cfg = DefiNetConfig(hidden=16, num_rbf=8, residual=True)
    plain = DefiNet(cfg)
    centred = DefiNet(DefiNetConfig(**{**cfg.to_dict(), "zero_mean": True}))
    centred.load_state_dict(plain.state_dict())
    with torch.no_grad():
        out, ref = centred(*args), plain(*args)
    for k in range(2):
        mine = (g.batch == k)
        assert ref[mine & real].mean(0).abs().max() > 1e-4     # not centred by itself
        assert out[mine & real].mean(0).abs().max() < 1e-7
        shift = ref[mine] - out[mine]
        torch.testing.assert_close(shift, ref[mine & real].mean(0).expand_as(shift))


def test_residual_option_changes_the_network(rng):
    """The same weights give another prediction with the residual state (the
    option is wired through), and the parameter set is the same."""
    _, args = _two_graph_batch(rng)
    torch.manual_seed(0)
    old = DefiNet(DefiNetConfig(hidden=16, num_rbf=8))
    new = DefiNet(DefiNetConfig(hidden=16, num_rbf=8, residual=True))
    new.load_state_dict(old.state_dict())
    with torch.no_grad():
        assert (old(*args) - new(*args)).abs().max() > 1e-4


def test_vacancy_marker_matches_the_matcher():
    from ase_definet.match import VACANCY
    from ase_definet.model.definet import VACANCY_MARKER
    assert VACANCY_MARKER == VACANCY


def test_configs_saved_before_the_new_keys_build_the_old_network():
    old = {"hidden": 64, "num_layers": 4, "num_rbf": 16, "cutoff": 5.0,
           "max_neighbors": 32, "avg_neighbors": 16.0, "max_elements": 100}
    cfg = DefiNetConfig.from_dict(old)
    assert cfg.residual is False and cfg.zero_mean is False
    assert not any(layer.residual for layer in DefiNet(cfg).layers)
    with pytest.raises(ValueError, match="unknown DefiNet config keys"):
        DefiNetConfig.from_dict({**old, "residuals": True})


#: The shipped checkpoint these reference numbers were taken with (before the
#: residual and zero-mean options existed).
_SHIPPED_SHA = "12e5114564623ecfe4433ab02518aadb473b7e6444dade687e6763eb4fff40c2"


def test_shipped_model_prediction_unchanged_by_the_new_options():
    """The shipped weights predict what they predicted before the options were
    added: the three largest displacements and the summed |displacement| of the
    first example structure, recorded with the code of commit e2ffcff."""
    from ase.io import read
    from ase_definet.weights import default_model_name, registry, sha256
    from conftest import ROOT
    entry = registry().get(default_model_name())
    if entry is None or sha256(entry["path"]) != _SHIPPED_SHA:
        pytest.skip("the shipped weights changed since the reference was recorded")
    atoms = read(ROOT / "examples" / "data" / "MoS2_defects.extxyz", 0)
    pred = Predictor(default_model_name(), device="cpu")
    assert pred.model.config.residual is False and pred.model.config.zero_mean is False
    disp = pred.predict([atoms], "MoS2")[0].positions - atoms.positions
    want = np.array([[-0.0042824978, 0.0055596447, -0.1489440054],
                     [-0.0012933097, 0.0083511183, 0.148443386],
                     [0.0063649593, -0.0037612044, 0.1484810263]])
    assert np.abs(disp[[39, 20, 0]] - want).max() < 1e-8
    assert abs(np.abs(disp).sum() - 8.568035539705306) < 1e-6
