"""Force-informed input (DefiNetConfig.force_input, issue #30 lever 6)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.optimize import BFGS
from e3nn import o3

from ase_definet import DefiNet
from ase_definet.data.sample import Sample
from ase_definet.encoding import FORCES_ARRAY, encode
from ase_definet.graph import Graph, build_graph, collate
from ase_definet.match import match_host
from ase_definet.model import DefiNetConfig

SMALL = {"hidden": 16, "num_rbf": 8, "cutoff": 3.0, "num_layers": 2, "max_neighbors": 12}


def _host():
    return bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2)       # 32 atoms, 7.2 Å


def _structure(rng, rattle: float = 0.06):
    """A Cu vacancy (one placeholder), a Ni substitution, rattled; EMT forces."""
    host = _host()
    atoms = host.copy()
    atoms.symbols[5] = "Ni"
    del atoms[0]
    atoms.positions += rng.normal(scale=rattle, size=atoms.positions.shape)
    atoms.calc = EMT()
    forces = atoms.get_forces()
    atoms.calc = None
    return atoms, host, forces


def _net(seed: int = 0, **options) -> DefiNet:
    torch.manual_seed(seed)
    return DefiNet(DefiNetConfig(**{**SMALL, "force_input": True, **options})).double()


def _graph(atoms, host, forces, net: DefiNet) -> Graph:
    m = match_host(atoms, host)
    g = build_graph(m, atoms.cell.array, atoms.pbc, net.config.cutoff,
                    net.config.max_neighbors, forces=forces)
    return g.to("cpu", torch.float64)


def _run(net: DefiNet, g: Graph) -> torch.Tensor:
    with torch.no_grad():
        return net(g.numbers, g.markers, g.edge_src, g.edge_dst, g.edge_vec, g.batch,
                   g.n_graphs, **g.model_kwargs(net.config))


# ----------------------------------------------------------------- symmetry
@pytest.mark.parametrize("long_range", [0, 3], ids=["local", "with-long-range"])
@pytest.mark.parametrize("improper", [False, True], ids=["proper", "improper"])
def test_rotating_structure_and_forces_rotates_the_output(rng, improper, long_range):
    net = _net(long_range=long_range)
    g = _graph(*_structure(rng), net)
    assert g.forces is not None and (g.markers == 2).sum() == 1
    out = _run(net, g)
    torch.manual_seed(5)
    for _ in range(2):
        rot = o3.rand_matrix(dtype=torch.float64) * (-1.0 if improper else 1.0)
        rg = dataclasses.replace(g, edge_vec=g.edge_vec @ rot.T, positions=g.positions @ rot.T,
                                 cell=g.cell @ rot.T, forces=g.forces @ rot.T)
        torch.testing.assert_close(_run(net, rg), out @ rot.T, rtol=0, atol=1e-10)


def test_translation_and_permutation_equivariance(rng):
    net = _net()
    atoms, host, forces = _structure(rng)
    out = _run(net, _graph(atoms, host, forces, net))
    shifted = atoms.copy()
    shifted.translate([0.7, -1.3, 2.2])
    moved_host = host.copy()
    moved_host.translate([0.7, -1.3, 2.2])
    torch.testing.assert_close(_run(net, _graph(shifted, moved_host, forces, net)), out,
                               rtol=0, atol=1e-10)
    p = rng.permutation(len(atoms))
    got = _run(net, _graph(atoms[p], host, forces[p], net))
    torch.testing.assert_close(got[:len(atoms)], out[p], rtol=0, atol=1e-10)
    torch.testing.assert_close(got[len(atoms):], out[len(atoms):], rtol=0, atol=1e-10)


# ----------------------------------------------------------------- inputs
def test_forces_carry_information_and_placeholders_get_none(rng):
    """Other forces give another prediction; a placeholder's force row is
    ignored (it is not an atom)."""
    net = _net()
    atoms, host, forces = _structure(rng)
    g = _graph(atoms, host, forces, net)
    out = _run(net, g)
    assert (_run(net, dataclasses.replace(g, forces=-g.forces)) - out).abs().max() > 1e-6
    noisy = g.forces.clone()
    noisy[g.markers == 2] = torch.tensor([5.0, -3.0, 1.0], dtype=noisy.dtype)
    assert torch.equal(_run(net, dataclasses.replace(g, forces=noisy)), out)
    # build_graph pads real-atom forces with zeros, and takes all-node forces too
    assert not g.forces[g.markers == 2].any()
    full = np.vstack([forces, np.ones((1, 3))])
    g_full = _graph(atoms, host, full, net)
    assert torch.equal(g_full.forces, g.forces)


def test_missing_or_misshapen_forces_raise(rng):
    net = _net()
    atoms, host, forces = _structure(rng)
    g = _graph(atoms, host, None, net)
    assert g.forces is None and "forces" not in g.model_kwargs()
    with pytest.raises(ValueError, match="force_input on and needs forces="):
        _run(net, g)
    with pytest.raises(ValueError, match="forces have shape"):
        _graph(atoms, host, forces[:-2], net)
    with pytest.raises(ValueError, match="graphs have 'forces'"):
        collate([g, _graph(atoms, host, forces, net)])


def test_encode_reads_the_samples_force_array(rng):
    atoms, host, forces = _structure(rng)
    sample = Sample(atoms, atoms.get_positions(), host, {"id": "a"})
    cfg = DefiNetConfig(**SMALL, force_input=True)
    with pytest.raises(ValueError, match=FORCES_ARRAY):
        encode([sample], cfg)
    atoms.arrays[FORCES_ARRAY] = forces
    (item,) = encode([sample], cfg)
    np.testing.assert_allclose(item.graph.forces[:len(atoms)].numpy(), forces, atol=1e-6)
    (plain,) = encode([sample], DefiNetConfig(**SMALL))    # off: forces not read
    assert plain.graph.forces is None


# ----------------------------------------------------------------- learning
def _emt_samples(rng, count: int) -> list[Sample]:
    """Rattled Cu(Ni) vacancy structures relaxed by EMT, forces attached."""
    out = []
    for k in range(count):
        atoms, host, forces = _structure(rng, rattle=0.08)
        work = atoms.copy()
        work.calc = EMT()
        BFGS(work, logfile=None).run(fmax=0.02, steps=200)
        atoms.arrays[FORCES_ARRAY] = forces
        out.append(Sample(atoms, work.get_positions(), host, {"id": str(k)}))
    return out


def _fit(net: DefiNet, items, steps: int, lr: float) -> tuple[float, float]:
    """Coordinate MAE over real atoms after ``steps`` full-batch Adam steps, and
    the Dummy's."""
    g = collate([e.graph for e in items])
    target = torch.cat([e.target for e in items])
    real = g.real[:, None].to(target.dtype)
    opt = torch.optim.Adam(net.parameters(), lr=lr)

    def mae() -> torch.Tensor:
        pred = net(g.numbers, g.markers, g.edge_src, g.edge_dst, g.edge_vec, g.batch,
                   g.n_graphs, **g.model_kwargs(net.config))
        return ((pred - target).abs() * real).sum() / real.sum() / 3

    for _ in range(steps):
        loss = mae()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return float(mae()), float((target.abs() * real).sum() / real.sum() / 3)


def test_small_force_model_learns_emt_relaxations(rng):
    """With the unrelaxed forces as input the network fits the EMT relaxation
    of rattled Cu(Ni) vacancy cells far below the Dummy in 40 steps.

    Not asserted: that it beats the same network without forces. Measured on
    4 seeds, 0.0029-0.0040 Å against 0.0040-0.0055 Å (Dummy 0.057-0.065):
    better, but EMT forces are a function of the local geometry, which the
    plain network also reads, so the margin is too small for a CI test.
    """
    samples = _emt_samples(rng, 6)
    cfg = DefiNetConfig(**SMALL, force_input=True)
    torch.manual_seed(0)
    mae, dummy = _fit(DefiNet(cfg), encode(samples, cfg), steps=40, lr=1e-2)
    assert mae < 0.2 * dummy, (mae, dummy)


def test_trainer_runs_with_both_options(rng, tmp_path):
    """The training loop, its checkpoint and reload carry cell, pbc and forces."""
    from ase_definet.train import TrainConfig, load_trained, train
    samples = _emt_samples(rng, 4)
    model = {**SMALL, "force_input": True, "long_range": 3}
    summary = train(samples[:3], samples[3:], tmp_path / "run",
                    TrainConfig(model=model, lr=3e-3, batch_size=2, epochs=2, seed=0,
                                input_noise=0.01),
                    progress=False)
    assert summary["epochs"] == 2 and np.isfinite(summary["best_val_mae"])
    net = load_trained(tmp_path / "run" / "best.pt")
    assert net.config.force_input and net.config.long_range == 3
    (item,) = encode(samples[3:], net.config)
    g = item.graph
    with torch.no_grad():
        out = net(g.numbers, g.markers, g.edge_src, g.edge_dst, g.edge_vec, g.batch, 1,
                  **g.model_kwargs(net.config))
    assert torch.isfinite(out).all()


def test_predictor_and_relaxer_take_forces_from_the_attached_calculator(rng):
    from ase_definet import DefiNetRelaxer
    from ase_definet.inference import Predictor
    torch.manual_seed(0)
    net = DefiNet(DefiNetConfig(**SMALL, force_input=True))
    pred = Predictor(net, device="cpu", strict=False)
    atoms, host, forces = _structure(rng)
    with pytest.raises(ValueError, match="attach a calculator to the structure or pass forces"):
        pred.predict([atoms], host)
    given = pred.predict([atoms], host, forces=[forces])[0].positions
    atoms.calc = EMT()
    p = pred.predict([atoms], host)[0]
    assert np.allclose(p.positions, given) and p.timings["forces"] > 0
    # other forces, another prediction: the input is really read
    flipped = pred.predict([atoms], host, forces=[-forces])[0].positions
    assert np.abs(flipped - given).max() > 1e-6
    with pytest.raises(ValueError, match="1 force arrays for 2 structures"):
        pred.predict([atoms, atoms], host, forces=[forces])
    # DefiNetRelaxer with a calculator attached predicts from its forces
    r = DefiNetRelaxer(atoms, host, model=pred, logfile=None)
    assert np.allclose(r.predict(), given)


def test_predictor_reads_the_structures_force_array(rng):
    """Forces stored on the structure (extxyz array, a labelled store) are used
    before asking a calculator; none at all still raises."""
    from ase_definet.inference import Predictor
    torch.manual_seed(0)
    pred = Predictor(DefiNet(DefiNetConfig(**SMALL, force_input=True)), device="cpu",
                     strict=False)
    atoms, host, forces = _structure(rng)
    given = pred.predict([atoms], host, forces=[forces])[0].positions
    atoms.arrays[FORCES_ARRAY] = forces
    p = pred.predict([atoms], host)[0]
    assert np.allclose(p.positions, given) and "forces" not in p.timings
    atoms.arrays[FORCES_ARRAY] = -forces                  # really read: other output
    assert np.abs(pred.predict([atoms], host)[0].positions - given).max() > 1e-6


def _store(tmp_path, rng, count=3):
    """A compact extxyz data set of EMT-relaxed samples, and their input forces."""
    from ase_definet.data.formats.compact import write_compact
    samples = _emt_samples(rng, count)
    forces = {s.info["id"]: s.atoms.arrays.pop(FORCES_ARRAY) for s in samples}
    path = tmp_path / "set.extxyz.gz"
    write_compact(samples, path)
    return path, forces


def test_load_samples_attaches_input_forces_by_id(rng, tmp_path):
    from ase_definet.data.load import load_samples
    path, forces = _store(tmp_path, rng)
    npz = tmp_path / "forces.npz"
    np.savez(npz, **forces)
    samples = load_samples(path, progress_note=lambda m: None, input_forces=npz).samples
    assert len(samples) == 3
    for s in samples:
        np.testing.assert_allclose(s.atoms.arrays[FORCES_ARRAY], forces[s.info["id"]])
    np.savez(npz, **{k: v for k, v in forces.items() if k != "1"})
    with pytest.raises(ValueError, match="no forces for 1 of 3 samples"):
        load_samples(path, progress_note=lambda m: None, input_forces=npz)
    np.savez(npz, **{k: v[:-1] for k, v in forces.items()})
    with pytest.raises(ValueError, match="forces of '0' have shape"):
        load_samples(path, progress_note=lambda m: None, input_forces=npz)


def test_cli_trains_and_evaluates_a_force_model_from_input_forces(rng, tmp_path, capsys):
    """`definet train/evaluate --input-forces`: the forces reach the network, and
    without them a force model's evaluation stops with a message naming the array."""
    import json

    from ase_definet.cli import main
    from ase_definet.data.splits import write_split
    path, forces = _store(tmp_path, rng, count=4)
    npz = tmp_path / "forces.npz"
    np.savez(npz, **forces)
    split = write_split({"train": ["0", "1", "2"], "val": ["3"], "test": []},
                        tmp_path / "split.json")
    out = tmp_path / "run"
    config = json.dumps({**SMALL, "force_input": True})
    common = ["--data", str(path), "--split-file", str(split), "--quiet"]
    assert main(["train", *common, "--input-forces", str(npz), "--out", str(out),
                 "--config", config, "--epochs", "1", "--batch-size", "2",
                 "--lr", "1e-3"]) == 0
    report = tmp_path / "val.json"
    assert main(["evaluate", *common, "--input-forces", str(npz), "--subset", "val",
                 "--model", str(out / "best.pt"), "--json", str(report)]) == 0
    assert json.loads(report.read_text())["overall"]["n"] == 1
    assert main(["evaluate", *common, "--subset", "val",
                 "--model", str(out / "best.pt")]) == 2
    assert "--input-forces NPZ" in capsys.readouterr().err
