"""experiments/probes/ensemble_probe.py: the averaged network predicts the mean of its members."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ase_definet import DefiNet, DefiNetConfig
from ase_definet.inference import Predictor
from conftest import ROOT, load_script, store_samples


def _net(seed: int) -> DefiNet:
    torch.manual_seed(seed)
    return DefiNet(DefiNetConfig(hidden=16, num_layers=2, num_rbf=8)).eval()


def test_average_predicts_mean_of_members(emt_store):
    Average = load_script(ROOT / "experiments" / "probes" / "ensemble_probe.py").Average
    samples = store_samples(emt_store)[:3]
    atoms, hosts = [s.atoms for s in samples], [s.host for s in samples]
    a, b = _net(0), _net(1)
    pa, pb, pab = (Predictor(m, device="cpu").predict(atoms, hosts)
                   for m in (a, b, Average([a, b])))
    for x, y, m in zip(pa, pb, pab):
        assert not np.allclose(x.positions, y.positions)       # members really differ
        np.testing.assert_allclose(m.positions, (x.positions + y.positions) / 2, atol=1e-5)


def test_members_must_share_graph_settings():
    Average = load_script(ROOT / "experiments" / "probes" / "ensemble_probe.py").Average
    other = DefiNet(DefiNetConfig(hidden=16, num_layers=2, num_rbf=8, cutoff=4.0))
    with pytest.raises(ValueError, match="graph settings"):
        Average([_net(0), other])
