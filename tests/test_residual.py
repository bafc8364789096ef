"""Residual-step study with EMT on small Cu/Au fcc supercells."""
import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.optimize import BFGS, FIRE

from ase_definet import DefiNet
from ase_definet.data.sample import Sample
from ase_definet.inference import Predictor
from ase_definet.residual import format_residual, relax_to_thresholds, residual_study

from conftest import TruePredictor




def make_samples():
    """A vacancy and an Au substitution in 8-site Cu, relaxed tightly.

    The primitive 2x2x2 cell keeps BFGS's dense Hessian small: on these shared
    2-core machines a threaded eigh of a 93x93 matrix takes ~0.1 s.
    """
    host = bulk("Cu", "fcc", a=3.6).repeat(2)
    out = []
    for k, (vac, sub) in enumerate([([0], []), ([], [3])]):
        a = host.copy()
        a.symbols[sub] = "Au"
        del a[vac]
        a.rattle(0.02, seed=k)
        ref = a.copy()
        ref.calc = EMT()
        FIRE(ref, logfile=None).run(fmax=1e-3, steps=500)
        out.append(Sample.from_pair(a, ref, host, {"id": f"s{k}", "material": "Cu",
                                                    "density": "low"}))
    return out


@pytest.fixture(scope="module")
def samples():
    return make_samples()




def test_start_from_relaxed_positions_needs_fewer_steps(samples):
    report = residual_study(TruePredictor(samples), samples, calculator="emt",
                            fmax=(0.05, 0.01), progress=False)
    assert report["n"] == 2 and report["fmax"] == [0.05, 0.01]
    for rec in report["per_structure"]:
        for key in ("0.05", "0.01"):
            u, p = rec["unrelaxed"][key], rec["predicted"][key]
            assert u["converged"] and p["converged"]
            assert p["steps"] < u["steps"]
            assert abs(u["energy"] - p["energy"]) < 5e-3      # same minimum
        assert rec["unrelaxed"]["0.01"]["steps"] >= rec["unrelaxed"]["0.05"]["steps"]
    s = report["summary"]["0.01"]
    assert s["median_steps_predicted"] == 0           # already converged at 1e-3
    assert s["reduction_pct"] == pytest.approx(100.0)
    assert s["median_reduction_pct"] == pytest.approx(100.0)
    assert s["converged_both"] == 2
    assert 0 <= s["dE_meV_median"] <= s["dE_meV_max"] < 5.0
    text = format_residual(report)
    assert "0.05" in text and "0.01" in text and "100.0" in text


def test_thresholds_match_separate_runs(samples):
    # One run recording both thresholds equals two separate BFGS runs.
    atoms = samples[1].atoms
    rec = relax_to_thresholds(atoms, EMT(), (0.01, 0.05), steps=200)
    for f in (0.05, 0.01):
        work = atoms.copy()
        work.calc = EMT()
        opt = BFGS(work, logfile=None)
        assert opt.run(fmax=f, steps=200)
        assert rec[f"{f:g}"]["steps"] == opt.nsteps
        assert rec[f"{f:g}"]["energy"] == pytest.approx(work.get_potential_energy())


def test_step_cap_reports_not_converged(samples):
    rec = relax_to_thresholds(samples[0].atoms, EMT(), 1e-6, steps=3)
    assert not rec["1e-06"]["converged"]
    assert rec["1e-06"]["steps"] == 3 and rec["1e-06"]["fmax_final"] > 1e-6


def test_untrained_definet_with_calculator_factory(samples):
    predictor = Predictor(DefiNet("default"), device="cpu")
    report = residual_study(predictor, iter(samples), calculator=EMT, fmax=0.05,
                            steps=300, n=1, progress=False)
    assert report["n"] == 1 and report["calculator"] == "EMT"
    s = report["summary"]["0.05"]
    assert np.isfinite(s["median_steps_unrelaxed"]) and np.isfinite(s["median_steps_predicted"])
    with pytest.raises(ValueError, match="fmax must be positive, got 0.0"):
        residual_study(predictor, samples, calculator=EMT(), fmax=0.0, progress=False)


def test_interrupted_study_resumes_without_redoing_structures(samples, tmp_path):
    """Every finished structure is reported at once; a resumed study relaxes
    only the rest and ends with the same report as one uninterrupted run."""
    from ase_definet.evaluate import save_report
    path = tmp_path / "residual.json"
    seen = []

    def save(report):
        seen.append(report["n"])
        save_report(report, path)

    full = residual_study(TruePredictor(samples), samples, calculator="emt", fmax=0.05,
                          progress=False)
    first = residual_study(TruePredictor(samples), samples, calculator="emt", fmax=0.05,
                           n=1, progress=False, on_record=save)
    assert seen == [1] and first["per_structure"][0]["id"] == "s0"
    import json
    done = json.loads(path.read_text())["per_structure"]
    seen.clear()
    resumed = residual_study(TruePredictor(samples), samples, calculator="emt", fmax=0.05,
                             progress=False, done=done, on_record=save)
    assert seen == [2]                                   # only s1 was relaxed
    assert [r["id"] for r in resumed["per_structure"]] == ["s0", "s1"]
    assert resumed["summary"] == full["summary"]
    # bug: a resume with nothing left to do reported a prediction time of 0 s
    again = residual_study(TruePredictor(samples), samples, calculator="emt", fmax=0.05,
                           progress=False, done=resumed["per_structure"])
    assert again["predict_time_s"] == resumed["predict_time_s"] > first["predict_time_s"] > 0


def test_cli_residual_resume(samples, tmp_path, monkeypatch):
    from ase_definet import cli
    from ase_definet.data.formats import write_compact
    data = write_compact(samples, tmp_path / "data.extxyz.gz")
    monkeypatch.setattr(cli, "_predictor", lambda args: TruePredictor(samples))
    out = tmp_path / "r.json"
    base = ["residual", "--data", str(data), "--calculator", "emt", "--fmax", "0.05",
            "--json", str(out), "--quiet"]
    assert cli.main(base + ["-n", "1"]) == 0
    import json
    assert json.loads(out.read_text())["n"] == 1
    calls = []
    import ase_definet.residual as res
    orig = res.relax_to_thresholds
    monkeypatch.setattr(res, "relax_to_thresholds",
                        lambda *a, **k: calls.append(1) or orig(*a, **k))
    assert cli.main(base + ["-n", "2", "--resume"]) == 0
    assert len(calls) == 2                    # one structure, from two starts
    assert [r["id"] for r in json.loads(out.read_text())["per_structure"]] == ["s0", "s1"]


def test_cli_residual_per_group(samples, tmp_path, monkeypatch):
    """--per-group takes the first K of each material/density group, then -n caps."""
    from ase_definet import cli
    from ase_definet.data.formats import write_compact
    data = write_compact(samples, tmp_path / "data.extxyz.gz")
    monkeypatch.setattr(cli, "_predictor", lambda args: TruePredictor(samples))
    out = tmp_path / "r.json"
    assert cli.main(["residual", "--data", str(data), "--calculator", "emt", "--fmax",
                     "0.05", "--json", str(out), "--quiet", "--per-group", "1"]) == 0
    import json
    assert [r["id"] for r in json.loads(out.read_text())["per_structure"]] == ["s0"]


def test_worker_processes_give_the_same_report(samples):
    one = residual_study(TruePredictor(samples), samples, calculator="emt", fmax=0.05,
                         progress=False)
    two = residual_study(TruePredictor(samples), samples, calculator="emt", fmax=0.05,
                         progress=False, workers=2)
    assert [r["id"] for r in two["per_structure"]] == ["s0", "s1"]
    for a, b in zip(one["per_structure"], two["per_structure"]):
        assert a["unrelaxed"]["0.05"]["steps"] == b["unrelaxed"]["0.05"]["steps"]
        assert a["predicted"]["0.05"]["energy"] == pytest.approx(b["predicted"]["0.05"]["energy"])
    with pytest.raises(ValueError, match="factory"):
        residual_study(TruePredictor(samples), samples, calculator=EMT(), workers=2,
                       progress=False)


def test_summary_by_density_on_hand_built_records():
    from ase_definet.residual import summarize_by_density

    def rec(group, steps_u, steps_p, e_u, e_p):
        side = lambda s, e: {"0.01": {"steps": s, "converged": True, "energy": e}}  # noqa: E731
        return {"group": group, "unrelaxed": side(steps_u, e_u),
                "predicted": side(steps_p, e_p)}

    records = [rec("MoS2/low", 40, 4, -1.0, -1.001), rec("WSe2/low", 20, 4, -2.0, -2.0),
               rec("BP/high", 100, 90, -3.0, -3.5)]
    out = summarize_by_density(records, [0.01])
    assert set(out) == {"low", "high"} and out["low"]["n"] == 2 and out["high"]["n"] == 1
    low = out["low"]["summary"]["0.01"]
    assert low["median_steps_unrelaxed"] == 30 and low["median_steps_predicted"] == 4
    assert abs(low["dE_meV_max"] - 1.0) < 1e-6
    assert abs(out["high"]["summary"]["0.01"]["dE_meV_max"] - 500.0) < 1e-6
    # which start ends lower: MoS2 from the prediction (1 meV lower), WSe2 level
    assert (low["predicted_lower"], low["predicted_higher"]) == (1, 0)
    records.append(rec("GaSe/high", 50, 20, -4.0, -3.99))
    high = summarize_by_density(records, [0.01])["high"]["summary"]["0.01"]
    assert (high["predicted_lower"], high["predicted_higher"]) == (1, 1)


def test_table_prints_missing_values_as_n_a():
    """A study where no structure converged has NaN medians (JSON null once saved);
    the text table says n/a for them, as the model card does."""
    nan = float("nan")
    s = {"median_steps_unrelaxed": 1000.0, "median_steps_predicted": 1000.0,
         "reduction_pct": 0.0, "median_reduction_pct": nan, "converged_unrelaxed": 0,
         "converged_predicted": 0, "dE_meV_max": None, "dE_meV_median": nan}
    text = format_residual({"optimizer": "BFGS", "calculator": "emt", "max_steps": 1000,
                            "n": 1, "summary": {"0.05": s}})
    row = text.splitlines()[-1].split()
    assert row[:4] == ["0.05", "1000.0", "1000.0", "0.0"]
    assert row[4] == "n/a" and row[6:] == ["n/a", "n/a", "n/a"]


def test_text_table_splits_a_mixed_sample_by_density():
    """A sample of low- and high-density structures also gets one block per density
    (the overall medians of a mixed sample describe neither)."""
    def summary(steps):
        return {"median_steps_unrelaxed": 2.0 * steps, "median_steps_predicted": steps,
                "reduction_pct": 50.0, "median_reduction_pct": 50.0,
                "converged_unrelaxed": 1, "converged_predicted": 1, "dE_meV_max": 1.0,
                "dE_meV_median": 1.0}
    report = {"optimizer": "BFGS", "calculator": "emt", "max_steps": 1000, "n": 2,
              "summary": {"0.05": summary(20.0)},
              "by_density": {"high": {"n": 1, "summary": {"0.05": summary(30.0)}},
                             "low": {"n": 1, "summary": {"0.05": summary(10.0)}}}}
    lines = format_residual(report).splitlines()
    assert lines[-4] == "high density (n = 1)" and lines[-2] == "low density (n = 1)"
    assert lines[-3].split()[:3] == ["0.05", "60.0", "30.0"]
    assert lines[-1].split()[:3] == ["0.05", "20.0", "10.0"]
    report["by_density"] = {"low": report["by_density"]["low"]}
    assert "density" not in format_residual(report)
