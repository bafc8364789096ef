"""evaluate(): model vs Dummy on tiny EMT-relaxed Cu/Au samples."""
import json

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.optimize import FIRE

from ase_definet import DefiNet
from ase_definet.data.sample import Sample
from ase_definet.evaluate import (displacement_arrays, evaluate, evaluate_predictions,
                                  format_table, save_report)
from ase_definet.inference import Predictor

from conftest import TruePredictor



KEYS = ["mae", "a3", "a4", "a5", "a6"]


def _relaxed(atoms):
    work = atoms.copy()
    work.calc = EMT()
    FIRE(work, logfile=None).run(fmax=0.02, steps=200)
    return work


def make_samples():
    """Vacancy, substitution, and both, in a 32-site fcc Cu cell."""
    host = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2)
    specs = [("vac", "low", [0], []), ("sub", "low", [], [5]), ("both", "high", [31], [9])]
    out = []
    for name, density, vac, sub in specs:
        a = host.copy()
        a.symbols[sub] = "Au"
        del a[vac]
        a.rattle(0.01, seed=len(out))      # an unrelaxed input is rarely exact
        out.append(Sample.from_pair(a, _relaxed(a), host,
                                    {"id": name, "material": "Cu", "density": density}))
    return out


@pytest.fixture(scope="module")
def samples():
    return make_samples()




def test_perfect_predictor_scores_zero_and_full_improvement(samples):
    report = evaluate(TruePredictor(samples), samples, progress=False)
    over = report["overall"]
    assert over["n"] == 3
    for k in KEYS:
        assert over["model"][k] == pytest.approx(0.0, abs=1e-12)
        assert over["dummy"][k] > 0
        assert over["improvement"][k] == pytest.approx(100.0)
    assert set(report["groups"]) == {"Cu/low", "Cu/high"}
    assert report["groups"]["Cu/low"]["n"] == 2
    assert len(report["per_structure"]) == 3


def test_untrained_definet_and_dummy_baseline(samples, tmp_path):
    predictor = Predictor(DefiNet("default"), device="cpu")
    report = evaluate(predictor, iter(samples), batch_size=2, progress=False)
    over = report["overall"]
    for part in ("model", "dummy", "improvement"):
        assert set(over[part]) == set(KEYS)
        assert all(np.isfinite(v) for v in over[part].values())
    # Dummy MAE is the mean |relaxed - unrelaxed| per structure.
    expected = np.mean([np.abs(s.relaxed - s.atoms.positions).mean() for s in samples])
    assert over["dummy"]["mae"] == pytest.approx(expected)
    assert {r["id"] for r in report["per_structure"]} == {"vac", "sub", "both"}
    path = save_report(report, tmp_path / "eval.json")
    back = json.loads(path.read_text())          # strict JSON
    assert back["overall"]["model"]["a3"] == pytest.approx(over["model"]["a3"])
    text = format_table(report)
    assert "MAE" in text and "A3" in text and "Cu/high" in text


def test_group_averages_are_per_structure_means(samples):
    preds = [s.relaxed + 0.01 * (k + 1) for k, s in enumerate(samples)]
    report = evaluate_predictions(samples, preds)
    maes = [r["model"]["mae"] for r in report["per_structure"]]
    assert maes == pytest.approx([0.01, 0.02, 0.03], abs=1e-12)
    assert report["overall"]["model"]["mae"] == pytest.approx(0.02)
    assert report["groups"]["Cu/low"]["model"]["mae"] == pytest.approx(0.015)


def test_nan_metric_saved_as_null(samples, tmp_path):
    report = evaluate_predictions(samples[:1], [samples[0].relaxed], radii=(0.1,))
    assert np.isnan(report["overall"]["model"]["a0.1"])
    back = json.loads(save_report(report, tmp_path / "r.json").read_text())
    assert back["overall"]["model"]["a0.1"] is None
    assert "—" in format_table(report)


def test_displacement_arrays(samples):
    d = displacement_arrays(samples, [s.relaxed for s in samples])
    n = sum(len(s) for s in (s.atoms for s in samples))
    assert d.true.shape == d.pred.shape == (n, 3)
    np.testing.assert_allclose(d.model_error, 0.0, atol=1e-12)
    assert d.distance.min() < 0.1                  # the substituted atoms
    assert np.all(np.isfinite(d.distance))
