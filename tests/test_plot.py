"""Every plot writes a non-empty PNG; inputs in all accepted forms."""
import numpy as np
import pytest
from ase.build import bulk

from ase_definet import DefiNet
from ase_definet.data.sample import Sample
from ase_definet.evaluate import displacement_arrays
from ase_definet.inference import Predictor
from ase_definet.plot import (plot_all, plot_error_vs_distance, plot_learning_curves,
                              plot_parity, plot_structure, read_metrics_csv)


PNG = b"\x89PNG\r\n\x1a\n"


def make_samples():
    """Cu with a vacancy / an Au substitution; "relaxed" = synthetic displacements."""
    host = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2)
    rng = np.random.default_rng(1)
    out = []
    for k, (vac, sub) in enumerate([([0], [5]), ([13], [])]):
        a = host.copy()
        a.symbols[sub] = "Au"
        del a[vac]
        relaxed = a.positions + rng.normal(0, 0.05, (len(a), 3))
        out.append(Sample(a, relaxed, host, {"id": f"cu{k}", "material": "Cu",
                                              "density": "low"}))
    return out


@pytest.fixture(scope="module")
def samples():
    return make_samples()


def is_png(path):
    data = path.read_bytes()
    return len(data) > 1000 and data.startswith(PNG)


def test_learning_curves_tolerate_extra_and_blank_columns(tmp_path):
    csv = tmp_path / "metrics.csv"
    csv.write_text("epoch,train_loss,val_mae,lr,time,note\n"
                   "1,0.10,0.09,1e-4,3.0,a\n2,0.05,,1e-4,6.0,b\n3,0.03,0.04,8e-5,9.0,c\n")
    cols = read_metrics_csv(csv)
    assert np.isnan(cols["val_mae"][1]) and cols["lr"][2] == pytest.approx(8e-5)
    assert is_png(plot_learning_curves(csv, tmp_path / "lc.png"))
    bad = tmp_path / "bad.csv"
    bad.write_text("step,loss\n1,0.1\n")
    with pytest.raises(ValueError, match="epoch"):
        plot_learning_curves(bad, tmp_path / "bad.png")


def test_parity_and_error_vs_distance(samples, tmp_path):
    preds = [s.relaxed + 0.01 for s in samples]
    data = displacement_arrays(samples, preds)
    assert is_png(plot_parity(data, tmp_path / "parity.png"))
    assert is_png(plot_parity((data.true, data.pred), tmp_path / "parity2.png"))
    assert is_png(plot_error_vs_distance(data, tmp_path / "err.png"))
    assert is_png(plot_error_vs_distance({"true": data.true, "pred": data.pred,
                                          "distance": data.distance}, tmp_path / "e2.png"))
    with pytest.raises(ValueError, match="needs per-atom defect distances"):
        plot_error_vs_distance((data.true, data.pred), tmp_path / "e3.png")
    assert not (tmp_path / "e3.png").exists()


def test_structure_view(samples, tmp_path):
    s = samples[0]
    path = plot_structure(s, s.relaxed + 0.02, tmp_path / "sub" / "structure.png")
    assert is_png(path)


def test_plot_all_with_untrained_definet(samples, tmp_path):
    csv = tmp_path / "m.csv"
    csv.write_text("epoch,train_loss,val_mae,lr,time\n1,0.1,0.09,1e-4,1\n2,0.08,0.07,1e-4,2\n")
    predictor = Predictor(DefiNet("default"), device="cpu")
    paths = plot_all(predictor, iter(samples), tmp_path / "figs", metrics_csv=csv,
                     n_structures=1, progress=False)
    names = sorted(p.name for p in paths)
    assert names == ["error_vs_distance.png", "learning_curves.png", "parity.png",
                     "structure_cu0.png"]
    assert all(is_png(p) for p in paths)
