"""Deep ensemble (issue #31): sigma, batching, checkpoints and the do-no-harm policy."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from ase.build import bulk
from e3nn import o3

from ase_definet.checks import apply_prediction
from ase_definet.errors import CheckpointError
from ase_definet.inference import Predictor
from ase_definet.model import DefiNet, DefiNetConfig
from ase_definet.model.ensemble import DefiNetEnsemble
from ase_definet.relax import DefiNetRelaxer
from ase_definet.uncertainty import (Policy, calibration, fit_scale, member_sigma,
                                     parse_policy)
from ase_definet.weights import ensemble_of, load_model, save_checkpoint
from test_model import _defect_structure

CFG = DefiNetConfig(hidden=16, num_layers=2, num_rbf=8)


def _members(k: int = 3, seed: int = 0) -> list[DefiNet]:
    torch.manual_seed(seed)
    return [DefiNet(CFG) for _ in range(k)]


@pytest.fixture(scope="module")
def ensemble() -> DefiNetEnsemble:
    return DefiNetEnsemble(CFG, _members()).eval()


@pytest.fixture(scope="module")
def predictor(ensemble) -> Predictor:
    return Predictor(ensemble, device="cpu")


def _one(predictor, atoms, host):
    return predictor.predict([atoms], host)[0]


def test_sigma_is_the_members_spread(predictor, ensemble, rng):
    a, host = _defect_structure(rng)
    p = _one(predictor, a, host)
    singles = np.stack([_one(Predictor(m, device="cpu"), a, host).positions
                        for m in ensemble.members])
    assert np.abs(p.positions - singles.mean(axis=0)).max() < 1e-5
    expect = np.sqrt(((singles - singles.mean(axis=0)) ** 2).sum(axis=(0, 2)) / 2)
    assert p.sigma.shape == (len(a),)
    assert np.abs(p.sigma - expect).max() < 1e-5
    assert p.sigma.min() > 0                      # untrained members disagree


def test_ensemble_batch_equals_members_one_at_a_time(predictor, ensemble, rng):
    structs = [_defect_structure(rng, name, n) for name, n in
               (("MoS2", 4), ("hBN", 5), ("GaSe", 3))]
    batched = predictor.predict([a for a, _ in structs], [h for _, h in structs],
                                batch_size=3)
    for (a, h), b in zip(structs, batched):
        each = np.stack([_one(Predictor(m, device="cpu"), a, h).positions
                         for m in ensemble.members])
        assert np.abs(b.positions - each.mean(axis=0)).max() < 1e-5
        assert np.abs(b.sigma - member_sigma(each - a.positions)).max() < 1e-5


def test_sigma_invariant_under_rotation_and_translation(predictor, rng):
    a, host = _defect_structure(rng)
    sigma = _one(predictor, a, host).sigma
    torch.manual_seed(2)
    rot = o3.rand_matrix().double().numpy()
    ra, rh = a.copy(), host.copy()
    for x in (ra, rh):
        x.set_cell(x.cell.array @ rot.T, scale_atoms=False)
        x.positions = x.positions @ rot.T
        x.translate([1.3, -0.4, 2.2])
    assert np.abs(_one(predictor, ra, rh).sigma - sigma).max() < 1e-5


def test_sigma_follows_a_permutation(predictor, rng):
    a, host = _defect_structure(rng)
    sigma = _one(predictor, a, host).sigma
    p = rng.permutation(len(a))
    assert np.abs(_one(predictor, a[p], host).sigma - sigma[p]).max() < 1e-6


@pytest.mark.parametrize("spec", ["shrink:0.5", "shrink:2", "withhold:0.5",
                                  "shrink:1+withhold:2"])
def test_policy_never_moves_an_atom_farther_than_the_raw_prediction(ensemble, rng, spec):
    a, host = _defect_structure(rng)
    raw = _one(Predictor(ensemble, device="cpu", uncertainty_policy="none"), a, host)
    out = _one(Predictor(ensemble, device="cpu", uncertainty_policy=spec), a, host)
    moved = np.linalg.norm(out.positions - a.positions, axis=1)
    assert (moved <= np.linalg.norm(raw.positions - a.positions, axis=1) + 1e-12).all()
    assert out.policy == spec and np.allclose(out.raw_positions, raw.positions)
    # and on random displacements and sigmas, including sigma far above |d|
    d = rng.normal(scale=0.1, size=(200, 3))
    s = rng.exponential(0.1, size=200)
    new, _ = parse_policy(spec).apply(d, s)
    assert (np.linalg.norm(new, axis=1) <= np.linalg.norm(d, axis=1) + 1e-15).all()
    # the direction is kept: shrinking only scales
    kept = np.linalg.norm(new, axis=1) > 0
    cos = (new[kept] * d[kept]).sum(1) / np.linalg.norm(new[kept], axis=1) \
        / np.linalg.norm(d[kept], axis=1)
    assert np.allclose(cos, 1.0)


def test_shrink_and_withhold_do_what_they_say():
    d = np.array([[0.3, 0.0, 0.0], [0.0, 0.05, 0.0]])
    s = np.array([0.1, 0.1])
    new, held = Policy(shrink=1.0).apply(d, s)
    assert not held and np.allclose(new, [[0.2, 0, 0], [0, 0, 0]])
    new, held = Policy(withhold=1.0).apply(d, s)     # mean sigma 0.1 <= 1 * 0.175
    assert not held and np.allclose(new, d)
    new, held = Policy(withhold=0.5).apply(d, s)     # 0.1 > 0.5 * 0.175
    assert held and not new.any()


@pytest.mark.parametrize("bad", ["shrink", "shrink:-1", "grow:1", "shrink:1+shrink:2"])
def test_bad_policy_is_refused(bad):
    with pytest.raises(ValueError, match="unknown uncertainty_policy"):
        parse_policy(bad)


def test_a_policy_needs_an_ensemble():
    with pytest.raises(ValueError, match="needs an ensemble"):
        Predictor(DefiNet(CFG), device="cpu", uncertainty_policy="shrink:1")
    assert Predictor(DefiNet(CFG), device="cpu", uncertainty_policy="none").policy.name == "none"


def test_card_names_the_policy_and_scale(rng):
    ens = DefiNetEnsemble(CFG, _members())
    ens.card = {"uncertainty": {"policy": "shrink:1", "scale": 2.0}}
    a, host = _defect_structure(rng)
    raw = _one(Predictor(DefiNetEnsemble(CFG, _members()), device="cpu"), a, host)
    p = _one(Predictor(ens, device="cpu"), a, host)
    assert p.policy == "shrink:1"
    assert np.allclose(p.sigma, 2.0 * raw.sigma)
    assert _one(Predictor(ens, device="cpu", uncertainty_policy="none"), a, host).policy == "none"


def test_ensemble_checkpoint_round_trip(tmp_path, ensemble, rng):
    paths = []
    for k, m in enumerate(ensemble.members):
        paths.append(tmp_path / f"m{k}.pt")
        save_checkpoint(paths[-1], m)
    joined = ensemble_of(paths)
    save_checkpoint(tmp_path / "ens.pt", joined, meta={"card": {"note": "x"}})
    back = load_model(tmp_path / "ens.pt")
    assert isinstance(back, DefiNetEnsemble) and back.size == 3 and back.card == {"note": "x"}
    a, host = _defect_structure(rng)
    one = _one(Predictor(ensemble, device="cpu"), a, host)
    two = _one(Predictor(str(tmp_path / "ens.pt"), device="cpu"), a, host)
    assert np.array_equal(one.positions, two.positions)
    assert np.array_equal(one.sigma, two.sigma)


def test_ensemble_of_refuses_what_cannot_be_joined(tmp_path):
    save_checkpoint(tmp_path / "a.pt", DefiNet(CFG))
    save_checkpoint(tmp_path / "b.pt", DefiNet(DefiNetConfig(hidden=8, num_layers=2)))
    with pytest.raises(CheckpointError, match="must share one configuration"):
        ensemble_of([tmp_path / "a.pt", tmp_path / "b.pt"])
    with pytest.raises(CheckpointError, match="at least 2 member"):
        ensemble_of([tmp_path / "a.pt"])
    save_checkpoint(tmp_path / "e.pt", DefiNetEnsemble(CFG, 2))
    with pytest.raises(CheckpointError, match="already an ensemble"):
        ensemble_of([tmp_path / "a.pt", tmp_path / "e.pt"])


def test_relaxer_records_sigma_in_arrays_info_and_log(ensemble, rng, tmp_path):
    a, host = _defect_structure(rng)
    log = tmp_path / "log"
    DefiNetRelaxer(a, host, model=Predictor(ensemble, device="cpu"), logfile=str(log)).run()
    assert a.arrays["definet_sigma"].shape == (len(a),)
    assert a.info["definet_sigma_max"] == pytest.approx(a.arrays["definet_sigma"].max())
    assert a.info["definet_policy"] == "none" and a.info["definet_withheld"] is False
    assert "sigma mean" in log.read_text()
    # a single model afterwards leaves no stale sigma behind
    DefiNetRelaxer(a, host, model=Predictor(DefiNet(CFG), device="cpu"), logfile=None).run()
    assert "definet_sigma" not in a.arrays and "definet_sigma_mean" not in a.info


def test_apply_prediction_checks_the_sigma_shape():
    atoms = bulk("Cu", cubic=True)
    from ase_definet.match import match_host
    m = match_host(atoms, atoms)
    with pytest.raises(ValueError, match="sigma has shape"):
        apply_prediction(atoms, atoms.positions, m, sigma=np.zeros(2))


def test_calibration_of_an_honest_sigma(rng):
    # errors drawn with the stated sigma (per component sigma/sqrt(3)): the fitted
    # scale is near the Gaussian one and the structure ranking is recovered
    n_struct, per = 40, 50
    level = rng.uniform(0.01, 0.2, n_struct)
    sigma = np.repeat(level, per) * rng.uniform(0.8, 1.2, n_struct * per)
    errors = rng.normal(size=(len(sigma), 3)) * (sigma / np.sqrt(3))[:, None]
    structure = np.repeat(np.arange(n_struct), per)
    s = fit_scale(errors, sigma)
    # |e|/sigma is chi(3)/sqrt(3); its 95 % quantile is 2.80/sqrt(3) = 1.62 → s ≈ 0.81
    assert 0.7 < s < 0.95
    cal = calibration(errors, sigma, structure, scale=s)
    assert cal["coverage_2sigma"] == pytest.approx(0.95, abs=0.01)
    assert cal["spearman"] > 0.9
    binned = [r["sigma"] for r in cal["reliability"]]
    assert binned == sorted(binned)
    # a sigma unrelated to the error ranks nothing
    noise = calibration(errors, rng.permutation(sigma), structure)
    assert abs(noise["spearman"]) < 0.4


def test_batch_relaxation_records_sigma(ensemble, rng):
    from ase_definet.batch import relax_many
    structs = [_defect_structure(rng)[0] for _ in range(2)]
    host = _defect_structure(rng)[1]
    out = [a for batch in relax_many(structs, host, Predictor(ensemble, device="cpu"),
                                     batch_size=2) for a in batch]
    assert all(a.arrays["definet_sigma"].shape == (len(a),) for a in out)
    assert all(a.info["definet_sigma_mean"] > 0 for a in out)


def test_cli_relax_prints_and_writes_sigma_and_takes_a_policy(tmp_path, capsys):
    from ase.io import read

    from ase_definet.cli import main
    from conftest import ROOT
    example = ROOT / "examples" / "data" / "MoS2_defects.extxyz"
    save_checkpoint(tmp_path / "ens.pt", DefiNetEnsemble(CFG, _members()))
    run = ["relax", str(example), "--host", "MoS2", "--model", str(tmp_path / "ens.pt"),
           "--threads", "1"]
    assert main([*run, "-o", str(tmp_path / "raw.extxyz")]) == 0
    lines = [x for x in capsys.readouterr().out.splitlines() if x.startswith(str(example))]
    assert len(lines) == 2 and all(re.search(r"sigma mean \d\.\d{3} / max \d\.\d{3} Å "
                                             r"\(none\)", x) for x in lines)
    raw = read(tmp_path / "raw.extxyz", ":")
    assert all(f.arrays["definet_sigma"].shape == (len(f),) for f in raw)
    assert main([*run, "-o", str(tmp_path / "held.extxyz"),
                 "--uncertainty-policy", "withhold:0"]) == 0
    assert "(withhold:0, withheld: input kept)" in capsys.readouterr().out
    inputs = read(example, ":")
    for f, a in zip(read(tmp_path / "held.extxyz", ":"), inputs):
        assert np.allclose(f.positions, a.positions)
    assert main([*run, "-o", str(tmp_path / "bad.extxyz"),
                 "--uncertainty-policy", "grow:1"]) == 2
    assert "unknown uncertainty_policy 'grow:1'" in capsys.readouterr().err
