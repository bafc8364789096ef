"""Reliability diagram: the lines are the calibration bins, from every accepted source."""
import json

import numpy as np
import pytest

from ase_definet import DefiNet
from ase_definet.plot_reliability import (bins_of, plot_reliability, read_uncertainty,
                                          reliability_curves, reliability_figure)
from ase_definet.uncertainty import calibration
from ase_definet.weights import save_checkpoint

PNG = b"\x89PNG\r\n\x1a\n"
SMALL = {"hidden": 16, "num_rbf": 8, "cutoff": 3.0, "num_layers": 2, "max_neighbors": 12}


def synthetic(n_atoms: int, seed: int, factor: float = 1.0):
    """(errors, raw sigma, structure, group): error vectors whose RMS norm is ``factor``
    times the true sigma; raw sigma is half of it, so a scale of 2 calibrates it."""
    rng = np.random.default_rng(seed)
    true = rng.uniform(0.005, 0.3, n_atoms)
    errors = rng.normal(size=(n_atoms, 3)) * (factor * true / np.sqrt(3))[:, None]
    structure = np.arange(n_atoms) // 50
    group = np.where(structure % 2, "MoS2/high", "BP/low")
    return errors, true / 2, structure, group


def blocks(n_atoms: int, seed: int, factor: float = 1.0) -> dict:
    """What calibrate.calibration_blocks writes: raw, calibrated (scale 2), per group."""
    err, sig, idx, grp = synthetic(n_atoms, seed, factor)
    return {"raw": calibration(err, sig, idx),
            "calibrated": calibration(err, sig, idx, scale=2.0),
            "groups": {str(g): calibration(err[grp == g], sig[grp == g], idx[grp == g], scale=2.0)
                       for g in sorted(set(grp))}}


@pytest.fixture(scope="module")
def section() -> dict:
    """An uncertainty section as calibrate.py writes it: validation holds its curves
    directly, a held-out set under ``calibration``; test errors are 1.5× too large."""
    return {"members": 4, "scale": 2.0, "policy": "none",
            "validation": dict(blocks(6000, 0), policies=[]),
            "test": {"none": {"balanced_mae": 50.0}, "drop": 0.0,
                     "calibration": blocks(3000, 1, factor=1.5)}}


def lines(fig) -> dict[str, np.ndarray]:
    return {ln.get_label(): np.asarray(ln.get_xydata()) for ln in fig.axes[0].get_lines()}


def is_png(path) -> bool:
    data = path.read_bytes()
    return len(data) > 1000 and data.startswith(PNG)


def test_lines_are_the_bins_and_calibrated_errors_sit_on_the_diagonal(section, tmp_path):
    path = tmp_path / "calibration.json"
    path.write_text(json.dumps(section))
    out = plot_reliability(path, tmp_path / "figs" / "reliability.png")
    assert out == tmp_path / "figs" / "reliability.png" and is_png(out)
    got, label = read_uncertainty(path)
    assert label == "calibration" and got == section
    curves = reliability_curves(got)
    assert list(curves) == ["validation", "test"]
    drawn = lines(reliability_figure(curves))
    assert set(drawn) == {"validation", "test", "calibrated"}
    for name, cal in (("validation", section["validation"]["calibrated"]),
                      ("test", section["test"]["calibration"]["calibrated"])):
        sigma, rms, n = bins_of(cal)
        assert len(sigma) == 10 and n.sum() == cal["n_atoms"]
        np.testing.assert_array_equal(drawn[name], np.column_stack([sigma, rms]))
    diag = drawn["calibrated"]
    np.testing.assert_allclose(diag[:, 0], diag[:, 1])
    assert diag[0, 0] < drawn["validation"][:, 0].min()
    assert diag[1, 0] > drawn["test"][:, 1].max()
    # errors drawn with the calibrated sigma: on the diagonal; the test set's 1.5× above
    val, test = drawn["validation"], drawn["test"]
    np.testing.assert_allclose(val[:, 1] / val[:, 0], 1.0, atol=0.15)
    np.testing.assert_allclose(test[:, 1] / test[:, 0], 1.5, atol=0.25)


def test_raw_and_group_curves(section):
    curves = reliability_curves(section, kinds=("calibrated", "raw"), groups=True,
                                blocks=["validation"])
    assert list(curves) == ["validation", "validation (raw)", "validation BP/low",
                            "validation MoS2/high"]
    drawn = lines(reliability_figure(curves, log=False))
    raw = drawn["validation (raw)"]
    np.testing.assert_allclose(raw[:, 1] / raw[:, 0], 2.0, atol=0.3)    # uncalibrated
    for g in ("BP/low", "MoS2/high"):
        sigma, rms, _ = bins_of(section["validation"]["groups"][g])
        np.testing.assert_array_equal(drawn[f"validation {g}"], np.column_stack([sigma, rms]))
    only = reliability_curves(section, groups=["MoS2/high"])
    assert list(only) == ["validation", "validation MoS2/high", "test", "test MoS2/high"]


def test_model_card_and_checkpoint_sources(section, tmp_path):
    card = tmp_path / "card.json"
    card.write_text(json.dumps({"name": "ens", "elements": ["Mo", "S"],
                                "uncertainty": section}))
    ckpt = tmp_path / "ens.pt"
    save_checkpoint(ckpt, DefiNet(SMALL), meta={"card": {"uncertainty": section}})
    for source in (card, ckpt, str(ckpt)):
        assert read_uncertainty(source)[0] == section
        assert is_png(plot_reliability(source, tmp_path / f"{ckpt.stem}.png", groups=True))
    assert read_uncertainty(ckpt)[1] == "ens"
    # a single CAL, or one block, is named after the file
    one = tmp_path / "val.json"
    one.write_text(json.dumps(section["validation"]["calibrated"]))
    assert list(reliability_curves(*read_uncertainty(one))) == ["val"]


def test_sources_without_bins_are_refused_by_name(section, tmp_path):
    bare = tmp_path / "card.json"
    bare.write_text(json.dumps({"name": "single", "uncertainty": {"scale": 1.0}}))
    with pytest.raises(ValueError, match=r"card\.json: no reliability bins .*'reliability' "
                                         r"list.*found keys \['scale'\]"):
        plot_reliability(bare, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()
    ckpt = tmp_path / "single.pt"
    save_checkpoint(ckpt, DefiNet(SMALL), meta={"card": {"elements": ["Mo"]}})
    with pytest.raises(ValueError, match=r"single\.pt: no reliability bins .*without an "
                                         r"'uncertainty' section.*found keys \['elements'\]"):
        plot_reliability(ckpt, tmp_path / "x.png")
    empty = json.loads(json.dumps(section))
    for block in (empty["validation"], empty["test"]["calibration"]):
        block["calibrated"]["reliability"] = []
    with pytest.raises(ValueError, match="no reliability bins"):
        reliability_curves(empty)
    broken = tmp_path / "broken.json"
    broken.write_text('{"validation": ')
    with pytest.raises(ValueError, match=r"broken\.json: not a JSON file"):
        plot_reliability(broken, tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"no group \['hBN/low'\] in any block"):
        reliability_curves(section, groups=["hBN/low"])
    with pytest.raises(ValueError, match=r"no reliability block \['holdout'\].*'test'"):
        reliability_curves(section, blocks=["holdout"])
    with pytest.raises(ValueError, match="unknown curve kind"):
        reliability_curves(section, kinds=["scaled"])
    bad = {"validation": {"calibrated": {"reliability": [{"sigma": 0.1}]}}}
    with pytest.raises(ValueError, match="numeric 'sigma' and 'rms_error'"):
        reliability_figure(reliability_curves(bad))
