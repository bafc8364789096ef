"""evaluate(): model vs Dummy on tiny EMT-relaxed Cu/Au samples."""
import json

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.optimize import FIRE

from ase_definet import DefiNet
from ase_definet.breakdown import balanced_improvements
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
    assert "n/a" in format_table(report)


def test_displacement_arrays(samples):
    d = displacement_arrays(samples, [s.relaxed for s in samples])
    n = sum(len(s) for s in (s.atoms for s in samples))
    assert d.true.shape == d.pred.shape == (n, 3)
    np.testing.assert_allclose(d.model_error, 0.0, atol=1e-12)
    assert d.distance.min() < 0.1                  # the substituted atoms
    assert np.all(np.isfinite(d.distance))


def _record(group, model_mae, dummy_mae, fraction=None, n_defects=1):
    return {"group": group, "density": group.partition("/")[2], "fraction": fraction,
            "n_defects": n_defects, "model": {"mae": model_mae, "a3": model_mae},
            "dummy": {"mae": dummy_mae, "a3": dummy_mae}}


def test_strata_balance_concentrations_and_count_structures_worse_than_dummy():
    """Issue #29: three dilute structures and one dense one; the balanced mean gives
    the dense stratum as much weight as the three dilute ones together."""
    from ase_definet.breakdown import strata
    from ase_definet.evaluate import summarize
    records = [_record("MoS2/high", 0.01, 0.10, 0.025) for _ in range(3)]
    records += [_record("MoS2/high", 0.15, 0.10, 0.125),            # worse than the Dummy
                _record("MoS2/low", 0.001, 0.01, 0.005, n_defects=1),
                _record("MoS2/low", 0.004, 0.01, 0.01, n_defects=2),
                _record("MoS2/low", 0.006, 0.01, 0.01, n_defects=2)]
    out = strata(records, lambda rs: summarize(rs, ["mae", "a3"]))
    high = out["MoS2/high"]
    assert high["by"] == "concentration" and list(high["rows"]) == ["2.5 %", "12.5 %"]
    assert high["rows"]["2.5 %"]["improvement"]["mae"] == pytest.approx(90.0)
    assert high["rows"]["12.5 %"]["improvement"]["mae"] == pytest.approx(-50.0)
    assert high["balanced"]["improvement"]["mae"] == pytest.approx(20.0)     # (90 - 50) / 2
    assert summarize(records[:4], ["mae"])["improvement"]["mae"] == pytest.approx(55.0)
    assert high["rows"]["12.5 %"]["worse_than_dummy"] == {"n": 1, "share": 1.0}
    low = out["MoS2/low"]
    assert low["by"] == "defects" and list(low["rows"]) == ["1 defect", "2 defects"]
    assert low["rows"]["2 defects"]["n"] == 2
    # low density is one concentration class: its balanced mean is the group mean
    assert low["balanced"]["over"] == "group" and high["balanced"]["over"] == "strata"
    assert low["balanced"]["improvement"]["mae"] == pytest.approx(100 * (1 - 0.011 / 0.03))
    assert low["balanced"]["model"]["mae"] == pytest.approx(0.011 / 3)
    # a structure without a recorded fraction: one stratum, named as such
    assert list(strata([_record("X/high", 0.1, 0.2)], lambda rs: summarize(rs, ["mae"]))
                ["X/high"]["rows"]) == ["all"]


def test_report_carries_strata_and_worse_counts_to_json_and_text(samples, tmp_path):
    """End to end: fractions from the samples' info, a structure predicted worse than
    the Dummy counted overall and in its group, all of it in the JSON and the table."""
    samples = [Sample(s.atoms, s.relaxed, s.host, dict(s.info, fraction=f))
               for s, f in zip(samples, (0.005, 0.005, 0.05))]
    preds = [s.relaxed for s in samples[:2]] + [samples[2].relaxed + 0.5]
    report = evaluate_predictions(samples, preds)
    assert report["overall"]["worse_than_dummy"]["n"] == 1
    assert report["groups"]["Cu/high"]["worse_than_dummy"] == {"n": 1, "share": 1.0}
    assert report["groups"]["Cu/low"]["worse_than_dummy"]["n"] == 0
    assert list(report["strata"]["Cu/high"]["rows"]) == ["5 %"]
    assert list(report["strata"]["Cu/low"]["rows"]) == ["1 defect"]
    assert report["per_structure"][2]["fraction"] == 0.05
    back = json.loads(save_report(report, tmp_path / "r.json").read_text())
    assert back["strata"]["Cu/low"]["balanced"]["improvement"]["mae"] == pytest.approx(100.0)
    # the one reader of those values: the perfect low-density predictions score 100 %,
    # the moved high-density one below zero; a group without a value is left out
    bal = balanced_improvements(back)
    assert set(bal) == {"Cu/low", "Cu/high"}
    assert bal["Cu/low"] == pytest.approx(100.0) and bal["Cu/high"] < 0
    back["strata"]["Cu/high"]["balanced"]["improvement"]["mae"] = None
    assert set(balanced_improvements(back)) == {"Cu/low"}
    text = format_table(report)
    assert "balanced (1 strata)" in text and "balanced = group mean" in text
    assert "overall: 1 of 3 (33.3 %); Cu/high: 1 of 1 (100.0 %); Cu/low: 0 of 2 (0.0 %)" in text
    row = next(line for line in text.splitlines() if line.startswith("Cu/high") and "5 %" in line)
    assert row.split()[2:4] == ["%", "1"]               # stratum "5 %", n = 1


def test_saved_report_summarized_again_from_its_records(samples, tmp_path):
    """A saved report's records give back the same summaries (NaN saved as null too),
    so newer summaries need no second model run."""
    from ase_definet.evaluate import report_from_records
    preds = [s.relaxed + 0.01 * (k + 1) for k, s in enumerate(samples)]
    report = evaluate_predictions(samples, preds, radii=(0.1, 3.0))
    back = json.loads(save_report(report, tmp_path / "r.json").read_text())
    again = report_from_records(back["per_structure"], back["radii"])
    again = json.loads(save_report(again, tmp_path / "again.json").read_text())
    for part in ("overall", "groups", "strata", "per_structure"):
        assert again[part] == back[part], part
    assert back["per_structure"][0]["model"]["a0.1"] is None   # NaN (a lone vacancy), as null
    assert back["groups"]["Cu/low"]["worse_than_dummy"]["n"] == 2


def test_concentration_without_a_recorded_fraction_is_defect_sites_per_host_site(samples):
    """2DMD's own files record no fraction: the report counts defect sites per host
    site instead (the Cu cell: 32 sites; "both" has a vacancy and a substitution)."""
    assert all("fraction" not in s.info for s in samples)
    report = evaluate_predictions(samples, [s.relaxed for s in samples])
    assert [r["fraction"] for r in report["per_structure"]] == [1 / 32, 1 / 32, 2 / 32]
    assert list(report["strata"]["Cu/high"]["rows"]) == ["6.25 %"]
