"""start="lower": never hand the calculator a start above the unrelaxed input
(issue #31 item 4), in DefiNetRelaxer, batch relaxation and the residual study."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.optimize import BFGS

from ase_definet import DefiNet, DefiNetConfig, DefiNetRelaxer
from ase_definet.batch import relax_many
from ase_definet.inference import Prediction, Predictor
from ase_definet.residual import residual_study

from test_residual import make_samples


class FixedPredictor(Predictor):
    """A real Predictor whose prediction is given positions (per call, in order)."""

    def __init__(self, positions: list[np.ndarray]):
        torch.manual_seed(0)
        super().__init__(DefiNet(DefiNetConfig(hidden=8, num_rbf=4, cutoff=3.0)))
        self.queue = list(positions)

    def predict(self, atoms_list, hosts, tolerance=None, batch_size=8):
        out = []
        for a in atoms_list:
            match, _, _ = self.prepare(a, hosts if not isinstance(hosts, list) else hosts[0])
            out.append(Prediction(self.queue.pop(0), match))
        return out


class CountingEMT(EMT):
    def __init__(self):
        super().__init__()
        self.calls = 0

    def calculate(self, *args, **kwargs):
        self.calls += 1
        super().calculate(*args, **kwargs)


def cu_vacancy():
    host = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2)
    atoms = host.copy()
    del atoms[0]
    return atoms, host


def relaxed_positions(atoms):
    ref = atoms.copy()
    ref.calc = EMT()
    BFGS(ref, logfile=None).run(fmax=1e-3, steps=300)
    return ref.get_positions()


def test_a_worse_prediction_hands_the_calculator_the_input():
    atoms, host = cu_vacancy()
    unrelaxed = atoms.get_positions()
    bad = unrelaxed + np.random.default_rng(0).normal(0, 0.15, unrelaxed.shape)
    atoms.calc = EMT()
    r = DefiNetRelaxer(atoms, host, model=FixedPredictor([bad]), logfile=None,
                       start="lower")
    assert r.run(fmax=0.05, steps=200)
    info = atoms.info
    assert info["definet_start"] == "unrelaxed"
    assert info["definet_energy_unrelaxed"] < info["definet_energy_prediction"]
    # the same steps as BFGS from the input: the residual run did start there
    plain = cu_vacancy()[0]
    plain.calc = EMT()
    opt = BFGS(plain, logfile=None)
    opt.run(fmax=0.05, steps=200)
    assert r.nsteps == opt.nsteps
    assert np.allclose(atoms.positions, plain.positions, atol=1e-8)
    assert np.allclose(r.prediction, bad)          # the prediction itself is kept


def test_a_better_prediction_is_kept_at_one_extra_call():
    calls = {}
    for start in ("prediction", "lower"):
        atoms, host = cu_vacancy()
        good = relaxed_positions(atoms)
        calc = CountingEMT()
        atoms.calc = calc
        r = DefiNetRelaxer(atoms, host, model=FixedPredictor([good]), logfile=None,
                           start=start)
        assert r.run(fmax=0.05)
        calls[start] = calc.calls
        if start == "lower":
            assert atoms.info["definet_start"] == "prediction"
            assert atoms.info["definet_energy_prediction"] < \
                atoms.info["definet_energy_unrelaxed"]
        else:
            assert "definet_start" not in atoms.info
    assert calls["lower"] == calls["prediction"] + 1


def test_batch_relaxation_takes_the_start_option():
    atoms, host = cu_vacancy()
    bad = atoms.get_positions() + np.random.default_rng(1).normal(0, 0.15, (len(atoms), 3))
    (out,), = list(relax_many([atoms], host, FixedPredictor([bad]), calculator="emt",
                              fmax=0.05, start="lower"))
    assert out.info["definet_start"] == "unrelaxed" and out.info["definet_converged"]


def test_unknown_start_is_refused():
    atoms, host = cu_vacancy()
    with pytest.raises(ValueError, match="start must be one of"):
        DefiNetRelaxer(atoms, host, model=FixedPredictor([]), start="best")


def test_residual_report_prices_the_lower_start():
    samples = make_samples()

    class BadPredictor:
        def predict(self, atoms_list, hosts, batch_size=8):
            rng = np.random.default_rng(2)
            return [a.get_positions() + rng.normal(0, 0.15, (len(a), 3)) for a in atoms_list]

    report = residual_study(BadPredictor(), samples, calculator="emt", fmax=0.05,
                            progress=False)
    lower = report["summary_by_start"]["lower"]["0.05"]
    assert lower["from_unrelaxed"] == 2 and lower["extra_calls"] == 2
    # every start taken from the input: no step saved, none lost, same end points
    assert lower["median_steps_predicted"] == lower["median_steps_unrelaxed"]
    assert lower["predicted_higher"] == 0 and lower["end_distance_A_max"] == 0.0
    raw = report["summary"]["0.05"]
    assert raw["median_steps_predicted"] >= lower["median_steps_predicted"]
