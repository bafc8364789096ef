"""Batch relaxation (``definet relax``) shares DefiNetRelaxer's prediction path:
the same sanity checks, the same policy, the same per-structure records."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.calculators.emt import EMT
from torch import nn

from ase_definet import DefiNet, DefiNetConfig, DefiNetRelaxer
from ase_definet.batch import relax_many
from ase_definet.inference import Predictor
from ase_definet.match import SUBSTITUTION

FLING = 1e3     # Å


class Flinger(nn.Module):
    """A real DefiNet whose output throws the first substituted atom of every
    structure 1e3 Å away along x: the runaway case the sanity checks exist for."""

    def __init__(self, net: DefiNet):
        super().__init__()
        self.net = net
        self.config = net.config

    def forward(self, numbers, markers, edge_src, edge_dst, edge_vec, batch, n_graphs):
        disp = self.net(numbers, markers, edge_src, edge_dst, edge_vec, batch, n_graphs).clone()
        for g in range(int(n_graphs)):
            subs = torch.nonzero((batch == g) & (markers == SUBSTITUTION)).flatten()
            if len(subs):
                disp[subs[0], 0] += FLING
        return disp


@pytest.fixture(scope="module")
def flinger() -> Predictor:
    torch.manual_seed(0)
    return Predictor(Flinger(DefiNet(DefiNetConfig(hidden=16, num_rbf=8, cutoff=4.0))),
                     device="cpu")


def structures():
    """A vacancy + Au substitution (flung), a vacancy alone (not flung), and again."""
    host = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(3)
    sub = host.copy()
    del sub[0]
    sub[5].symbol = "Au"
    vac = host.copy()
    del vac[7]
    return [sub, vac, sub.copy()], host


def single(predictor, atoms, host, **kwargs):
    atoms = atoms.copy()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        DefiNetRelaxer(atoms, host=host, model=predictor, logfile=None, **kwargs).run()
    return atoms, [str(w.message) for w in caught]


def batched(predictor, frames, host, **kwargs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = [a for b in relax_many(frames, host, predictor, **kwargs) for a in b]
    return out, [str(w.message) for w in caught]


def test_batch_reverts_a_flung_atom_exactly_as_the_relaxer_does(flinger):
    """Bug: relax_many wrote predictions without the sanity checks, so a flung atom
    reached the output file."""
    frames, host = structures()
    before = [a.get_positions() for a in frames]
    out, msgs = batched(flinger, frames, host, batch_size=3)
    assert sum("restored the unrelaxed positions" in m for m in msgs) == 2
    for k in (0, 2):                                   # the flung ones: input, bit for bit
        ref, ref_msgs = single(flinger, frames[k], host)
        assert np.array_equal(out[k].positions, before[k])
        assert np.array_equal(out[k].positions, ref.positions)
        assert out[k].info["definet"] == ref.info["definet"] == "reverted"
        assert out[k].info["definet_warnings"] == ref.info["definet_warnings"]
        assert "max_displacement=6" in out[k].info["definet_warnings"][-1]
        assert out[k].info["definet_max_move"] == pytest.approx(FLING, rel=1e-2)
        assert out[k].info["definet_vacancies"] == 1
        assert out[k].info["definet_substitutions"] == 1
        assert ref_msgs and ref_msgs[0] == msgs[0]
    ok, ok_msgs = single(flinger, frames[1], host)     # the other one is predicted
    assert ok_msgs == []
    assert out[1].info["definet"] == "predicted" and "definet_warnings" not in out[1].info
    assert not np.allclose(out[1].positions, before[1])
    assert np.allclose(out[1].positions, ok.positions, atol=1e-5)
    assert out[1].info["definet_max_move"] == pytest.approx(ok.info["definet_max_move"],
                                                            abs=1e-5)
    assert (out[1].info["definet_vacancies"], out[1].info["definet_substitutions"]) == (1, 0)
    for a, b in zip(frames, before):                   # inputs untouched
        assert np.array_equal(a.positions, b)


def test_batch_keep_policy_flags_but_keeps(flinger):
    frames, host = structures()
    out, msgs = batched(flinger, frames[:1], host, on_violation="keep")
    ref, _ = single(flinger, frames[0], host, on_violation="keep")
    assert "kept the prediction" in msgs[0]
    assert out[0].info["definet"] == "kept"
    assert np.abs(out[0].positions - frames[0].positions).max() == pytest.approx(FLING, 1e-2)
    assert np.allclose(out[0].positions, ref.positions, atol=1e-5)
    with pytest.raises(ValueError, match="on_violation must be one of"):
        next(relax_many(frames, host, flinger, on_violation="ignore"))


def test_batch_with_calculator_starts_from_the_reverted_structure(flinger):
    frames, host = structures()
    out, msgs = batched(flinger, frames[:2], host, calculator=EMT(), fmax=0.05, steps=200)
    assert any("restored the unrelaxed positions" in m for m in msgs)
    for a in out:
        assert a.info["definet_converged"] is True
        assert a.info["definet_residual_steps"] > 0
        assert np.sqrt((a.get_forces() ** 2).sum(1)).max() < 0.05
    assert out[0].info["definet"] == "reverted" and out[1].info["definet"] == "predicted"
    capped, _ = batched(flinger, frames[1:2], host, calculator="emt", fmax=1e-6, steps=2)
    assert capped[0].info["definet_converged"] is False
    assert capped[0].info["definet_residual_steps"] == 2


def test_unknown_calculator_name_lists_the_known_ones(flinger):
    frames, host = structures()
    with pytest.raises(ValueError, match="unknown calculator 'vasp-typo'; use one of chgnet"):
        next(relax_many(frames, host, flinger, calculator="vasp-typo"))


@pytest.mark.parametrize("name", ["out.extxyz", "out.traj"])
def test_records_survive_the_output_file(flinger, tmp_path, name):
    """Bug: ASE's extxyz read a list of warnings back without its escapes
    ("1000.000 Å" came back as "1000.000 u00c5")."""
    from ase.io import read

    from ase_definet.batch import FrameWriter
    frames, host = structures()
    out, _ = batched(flinger, frames[:2], host)
    writer = FrameWriter(tmp_path / name)
    writer.write(out)
    writer.close()
    back = read(tmp_path / name, ":")
    assert [a.info["definet"] for a in back] == ["reverted", "predicted"]
    assert back[0].info["definet_max_move"] == pytest.approx(out[0].info["definet_max_move"])
    assert back[0].info["definet_vacancies"] == 1 and back[1].info["definet_substitutions"] == 0
    warns = back[0].info["definet_warnings"]
    text = warns if isinstance(warns, str) else "; ".join(warns)
    assert text == "; ".join(out[0].info["definet_warnings"]) and "Å" in text
    assert np.allclose(back[0].positions, frames[0].positions, atol=1e-7)
    assert isinstance(out[0].info["definet_warnings"], list)       # in memory: untouched
