"""The residual study's third start (a pre-relaxation), start energies and end-point
distances: the machinery of the DFT study (docs/dft-residual.md), CI-sized with EMT
in place of GPAW and of CHGNet."""
import json

import pytest
from ase.calculators.emt import EMT

from ase_definet.calculators import CALCULATORS, GPAW_SETTINGS, calculator_version, \
    make_calculator
from ase_definet.residual import residual_study, resume_records
from ase_definet.residual_report import format_residual, start_energy_gap

from conftest import TruePredictor
from test_residual import make_samples


@pytest.fixture(scope="module")
def samples():
    return make_samples()


PRE = {"calculator": "emt", "fmax": 0.01, "optimizer": "FIRE"}


def test_pre_relaxation_is_a_third_start_with_its_own_cost(samples):
    report = residual_study(TruePredictor(samples), samples, calculator="emt",
                            fmax=(0.05, 0.02), progress=False, pre_relax=PRE)
    assert report["pre_relax"]["calculator"] == "emt"
    for rec in report["per_structure"]:
        pre = rec["pre_relax"]
        assert pre["converged"] and pre["steps"] > 0 and pre["wall_time"] > 0
        assert pre["fmax_final"] < 0.01
        for key in ("0.05", "0.02"):
            # the pre-relaxed start is already below 0.01 eV/Å on the same surface
            assert rec["pre_relaxed"][key]["steps"] == 0
            assert rec["unrelaxed"][key]["steps"] > 0
            # end points: the prediction and the pre-relaxation reach the input's basin
            assert set(rec["end_distance"][key]) == {"predicted", "pre_relaxed"}
            assert 0.0 <= rec["end_distance"][key]["pre_relaxed"] < 0.05
        # start energies: both relaxed starts lie below the rattled input
        assert rec["predicted"]["energy_start"] < rec["unrelaxed"]["energy_start"]
        assert rec["pre_relaxed"]["energy_start"] < rec["unrelaxed"]["energy_start"]
        assert rec["unrelaxed"]["energy_start"] >= rec["unrelaxed"]["0.05"]["energy"]
        assert "positions" not in json.dumps(rec)          # no arrays in the report
    pre = report["summary_by_start"]["pre_relaxed"]["0.02"]
    assert pre["median_steps_predicted"] == 0 and pre["reduction_pct"] == pytest.approx(100)
    assert "end_distance_A_max" in pre
    gap = start_energy_gap(report["per_structure"], "predicted")
    assert gap["n"] == 2 and gap["higher"] == 0 and gap["max_meV"] < 0
    assert "pre-relaxation (emt + FIRE to fmax 0.01)" in format_residual(report)


def test_pre_relaxed_study_resumes_without_redoing_done_structures(samples):
    calls = []

    class CountingEMT(EMT):
        def calculate(self, *args, **kwargs):
            calls.append(1)
            super().calculate(*args, **kwargs)

    first = residual_study(TruePredictor(samples), samples[:1], calculator="emt",
                           fmax=0.05, progress=False, pre_relax=PRE)
    again = residual_study(TruePredictor(samples), samples, calculator=CountingEMT(),
                           fmax=0.05, progress=False, pre_relax=PRE,
                           done=first["per_structure"])
    assert again["n"] == 2
    assert again["per_structure"][0] == first["per_structure"][0]
    # only the second structure was relaxed: its three starts and its pre-relaxation
    # (the pre-relaxation uses its own "emt" calculator, not the counting one)
    steps = sum(again["per_structure"][1][s]["0.05"]["steps"] + 1
                for s in ("unrelaxed", "predicted", "pre_relaxed"))
    assert 0 < len(calls) <= steps + 3


def test_pre_relax_needs_a_calculator_and_a_threshold(samples):
    with pytest.raises(ValueError, match="pre_relax needs 'calculator' and 'fmax'"):
        residual_study(TruePredictor(samples), samples, calculator="emt",
                       progress=False, pre_relax={"calculator": "emt"})


def test_gpaw_is_a_calculator_name_with_its_settings_in_one_place():
    assert "gpaw" in CALCULATORS
    assert GPAW_SETTINGS["mode"] == "lcao" and GPAW_SETTINGS["xc"] == "PBE"
    try:
        import gpaw  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match=r"calculator 'gpaw' needs its package"):
            make_calculator("gpaw")
        pytest.skip("GPAW is not installed (optional: see docs/dft-residual.md)")
    from gpaw import GPAW
    calc = make_calculator("gpaw")
    assert isinstance(calc, GPAW)
    assert calc.parameters["basis"] == "dzp"
    version = calculator_version("gpaw")
    assert version.startswith("gpaw ") and '"xc": "PBE"' in version


class FailsOnGold(EMT):
    """EMT that fails like an SCF that does not converge, on any structure with Au."""

    def calculate(self, atoms=None, *args, **kwargs):
        if "Au" in atoms.get_chemical_symbols():
            raise RuntimeError("Did not converge!")
        super().calculate(atoms, *args, **kwargs)


def test_a_failing_calculator_is_recorded_and_the_study_goes_on(samples):
    report = residual_study(TruePredictor(samples), samples, calculator=FailsOnGold(),
                            fmax=0.05, progress=False, on_error="record")
    # the vacancy (no Au) finished; the Au substitution failed at its first start
    assert [r["id"] for r in report["per_structure"]] == ["s0"]
    assert report["n"] == 1
    (failed,) = report["failed"]
    assert failed["id"] == "s1" and failed["failed"] == "RuntimeError: Did not converge!"
    assert failed["failed_start"] == "unrelaxed"
    assert report["summary"]["0.05"]["converged_unrelaxed"] == 1   # left out of the statistics
    assert "failed, left out of every statistic: s1 (start unrelaxed)" in \
        format_residual(report)


def test_a_resumed_study_keeps_recorded_failures_without_retrying(samples):
    first = residual_study(TruePredictor(samples), samples, calculator=FailsOnGold(),
                           fmax=0.05, progress=False, on_error="record")
    calls = []

    class Counting(FailsOnGold):
        def calculate(self, *args, **kwargs):
            calls.append(1)
            super().calculate(*args, **kwargs)

    again = residual_study(TruePredictor(samples), samples, calculator=Counting(),
                           fmax=0.05, progress=False, on_error="record",
                           done=resume_records(first))
    assert calls == []
    assert again["failed"] == first["failed"]
    assert again["per_structure"] == first["per_structure"]


def test_by_default_a_calculator_error_ends_the_study(samples):
    with pytest.raises(RuntimeError, match="Did not converge"):
        residual_study(TruePredictor(samples), samples, calculator=FailsOnGold(),
                       fmax=0.05, progress=False)
    with pytest.raises(ValueError, match="on_error is 'raise' or 'record', got 'skip'"):
        residual_study(TruePredictor(samples), samples, calculator="emt",
                       progress=False, on_error="skip")
