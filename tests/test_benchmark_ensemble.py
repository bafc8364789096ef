"""benchmarks/ensemble.py: both arms measured, the table complete, the ensemble the
members' mean. Timings are measured, not asserted."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from conftest import ROOT, load_script

SMALL = {"hidden": 16, "num_rbf": 8, "cutoff": 3.0, "num_layers": 2, "max_neighbors": 12}


@pytest.fixture(scope="module")
def bench():
    return load_script(ROOT / "benchmarks" / "ensemble.py")


@pytest.fixture()
def one_thread():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_table_rows_finite_ratios_and_the_mean_of_members(bench, one_thread, capsys):
    result = bench.main(["--members", "2", "--config", json.dumps(SMALL), "--sizes", "6",
                         "--repeats", "2", "--warmup", "1", "--threads", "1"])
    out = capsys.readouterr().out
    assert result["members"] == 2 and result["threads"] == 1
    (row,) = result["rows"]
    assert row["supercell"] == "6x6" and row["atoms"] == 105
    for key in ("ratio", "network_ratio"):
        assert math.isfinite(row[key]) and row[key] > 0
    for arm in ("single", "ensemble"):
        assert set(row[arm]) == {"total", "match", "graph", "network"}
        assert all(math.isfinite(v) and v > 0 for v in row[arm].values())
        assert row[arm]["network"] < row[arm]["total"]
    # correctness: the members disagree, and the ensemble is exactly their mean
    assert row["mean_sigma"] > 1e-6
    assert row["max_dev"] < 1e-5
    table = [line for line in out.splitlines() if line.startswith("|")]
    assert len(table) == 3 and table[0].count("|") == table[2].count("|") == 12
    assert table[0].startswith("| MoS2 | atoms | single ms | ensemble ms | ratio |")
    cells = [c.strip() for c in table[2].strip("|").split("|")]
    assert cells[:2] == ["6x6", "105"] and cells[8] == "2"
    assert float(cells[4]) == pytest.approx(row["ratio"], abs=0.006)
    assert cells[9] == ("yes" if row["ratio"] <= 2 else "no")


def test_given_checkpoints_and_the_mean_check(bench, tmp_path, one_thread):
    from inference import structure

    from ase_definet.inference import Predictor
    members, label = bench.member_files([], 3, SMALL, tmp_path)
    assert label == "untrained custom members" and len(members) == 3
    given, label = bench.member_files([str(p) for p in members], 4, "default", tmp_path)
    assert given == members and label == "given checkpoints"
    ensemble = bench.ensemble_file(members, tmp_path)
    atoms, host = structure(6)
    dev, sigma = bench.mean_check(members, ensemble, atoms, host, "cpu")
    # the same check by hand: displacements of the ensemble vs the members' mean
    x0 = atoms.get_positions()
    own = np.mean([Predictor(str(m), device="cpu").predict([atoms], host)[0].positions - x0
                   for m in members], axis=0)
    ens = Predictor(str(ensemble), device="cpu").predict([atoms], host)[0]
    assert np.abs(own).max() > 1e-4 and sigma == pytest.approx(ens.sigma.mean())
    np.testing.assert_allclose(ens.positions - x0, own, atol=1e-5)
    assert dev < 1e-5


def test_one_checkpoint_is_refused(bench, tmp_path, capsys):
    with pytest.raises(SystemExit):
        bench.main([str(tmp_path / "a.pt")])
    assert "give at least 2 member checkpoints" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="at least 2 members, got 1"):
        bench.member_files([], 1, SMALL, tmp_path)
