"""Tightening a store's labels: continuation to a smaller fmax, resumable, refusals."""
from __future__ import annotations

import json

import numpy as np
import pytest

from ase_definet.cli import main
from ase_definet.data.formats import load_store
from ase_definet.data.store import read_frames
from ase_definet.data.tighten import tighten


def test_tightened_labels_are_lower_and_keep_their_inputs(emt_store, tmp_path):
    out = tmp_path / "tight"
    s = tighten(emt_store, out, fmax=0.001, where=["defects=V_Cu"], workers=0,
                progress=False)
    src = {f.info["id"]: f for f in read_frames(emt_store / "samples.extxyz")}
    new = read_frames(out / "samples.extxyz")
    assert s["new"] == len(new) == s["selected"] > 0 and s["not_converged"] == 0
    moved = 0.0
    for f in new:
        old = src[f.info["id"]]
        i = f.info
        assert i["defects"] == "V_Cu" and i["fmax_target"] == 0.001
        assert i["fmax_final"] <= 0.001 and i["converged"]
        # the continuation only goes downhill from the label it starts on
        assert i["energy_final"] <= old.info["energy_final"] + 1e-9
        assert i["label_energy"] == old.info["energy_final"]
        assert i["label_steps"] == old.info["steps"] and i["steps"] >= old.info["steps"]
        assert i["label_fmax"] == 0.01
        np.testing.assert_array_equal(f.positions, old.positions)   # same input
        moved = max(moved, np.abs(f.arrays["relaxed_positions"]
                                  - old.arrays["relaxed_positions"]).max())
    assert moved > 1e-4                     # the labels did move on
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["oracle"]["fmax"] == 0.001 and manifest["oracle"]["optimizer"] == "FIRE"
    assert {(f.info["optimizer"], f.info["label_optimizer"]) for f in new} == {("FIRE", "FIRE")}
    assert manifest["tightened"]["source"] == str(emt_store)
    # the loaders read it like any store; hosts came along unchanged
    loaded = load_store(out)
    assert len(loaded.samples) == len(new) and not loaded.skipped
    assert read_frames(out / "hosts.extxyz")[0].info == \
        read_frames(emt_store / "hosts.extxyz")[0].info

    again = tighten(emt_store, out, fmax=0.001, where=["defects=V_Cu"], workers=0,
                    progress=False)
    assert again["new"] == 0 and again["already_done"] == len(new)


def test_ids_limit_and_resume(emt_store, tmp_path):
    ids = [f.info["id"] for f in read_frames(emt_store / "samples.extxyz")][:5]
    out = tmp_path / "t"
    first = tighten(emt_store, out, ids=ids, limit=2, workers=0, progress=False)
    assert first["selected"] == 5 and first["new"] == 2
    rest = tighten(emt_store, out, ids=ids, workers=0, progress=False)
    assert rest["already_done"] == 2 and rest["new"] == 3
    assert sorted(f.info["id"] for f in read_frames(out / "samples.extxyz")) == sorted(ids)


def test_optimizer_is_recorded_per_label_and_ends_at_the_same_minimum(emt_store, tmp_path):
    """Labels continued with BFGS and FIRE into one store: each frame says which, the
    manifest counts both, and the two reach the same minimum (EMT, fmax 1e-4)."""
    ids = [f.info["id"] for f in read_frames(emt_store / "samples.extxyz")][:4]
    out = tmp_path / "mixed"
    tighten(emt_store, out, fmax=1e-4, ids=ids[:2], workers=0, progress=False)
    tighten(emt_store, out, fmax=1e-4, ids=ids[2:], optimizer="BFGS", workers=0,
            progress=False)
    frames = {f.info["id"]: f for f in read_frames(out / "samples.extxyz")}
    assert [frames[i].info["optimizer"] for i in ids] == ["FIRE", "FIRE", "BFGS", "BFGS"]
    assert json.loads((out / "manifest.json").read_text())["oracle"]["optimizer"] == \
        {"BFGS": 2, "FIRE": 2}
    fire = tighten(emt_store, tmp_path / "fire", fmax=1e-4, ids=ids[2:], workers=0,
                   progress=False)
    assert fire["new"] == 2
    for f in read_frames(tmp_path / "fire" / "samples.extxyz"):
        b = frames[f.info["id"]]
        assert b.info["converged"] and f.info["converged"]
        np.testing.assert_allclose(b.arrays["relaxed_positions"],
                                   f.arrays["relaxed_positions"], atol=2e-3)
        assert abs(b.info["energy_final"] - f.info["energy_final"]) < 1e-4


def test_refusals(emt_store, tmp_path):
    with pytest.raises(ValueError, match="unknown ASE optimizer 'Newton'"):
        tighten(emt_store, tmp_path / "n", optimizer="Newton", workers=0, progress=False)
    assert not (tmp_path / "n").exists()
    with pytest.raises(ValueError, match="must differ"):
        tighten(emt_store, emt_store, workers=0, progress=False)
    with pytest.raises(ValueError, match="mix two oracles"):
        tighten(emt_store, tmp_path / "a", calculator="chgnet", workers=0, progress=False)
    with pytest.raises(ValueError, match="not below"):
        tighten(emt_store, tmp_path / "b", fmax=0.01, workers=0, progress=False)
    ids = [f.info["id"] for f in read_frames(emt_store / "samples.extxyz")][:1]
    tighten(emt_store, tmp_path / "c", fmax=0.005, ids=ids, workers=0, progress=False)
    with pytest.raises(ValueError, match="holds labels tightened to fmax"):
        tighten(emt_store, tmp_path / "c", fmax=0.001, ids=ids, workers=0, progress=False)
    with pytest.raises(ValueError, match="no converged labels match"):
        tighten(emt_store, tmp_path / "e", where=["defects=nothing"], workers=0,
                progress=False)
    with pytest.raises(ValueError, match="no samples.extxyz"):
        tighten(tmp_path / "missing", tmp_path / "d", workers=0, progress=False)


def test_cli_selects_split_subsets(emt_store, tmp_path, capsys):
    from ase_definet.data.splits import split_samples, write_split
    from conftest import store_samples
    split = write_split(split_samples(store_samples(emt_store), seed=0), tmp_path / "s.json")
    val = json.loads(split.read_text())["val"]
    rc = main(["tighten", str(emt_store), "--out", str(tmp_path / "v"), "--split-file",
               str(split), "--subset", "val", "--workers", "0", "--quiet"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["new"] == len(val)
    assert sorted(f.info["id"] for f in read_frames(tmp_path / "v" / "samples.extxyz")) \
        == sorted(val)
    rc = main(["tighten", str(emt_store), "--out", str(emt_store), "--workers", "0"])
    assert rc == 2 and "must differ" in capsys.readouterr().err
    rc = main(["tighten", str(emt_store), "--out", str(tmp_path / "n"), "--optimizer",
               "fire", "--workers", "0"])
    assert rc == 2 and "unknown ASE optimizer 'fire'" in capsys.readouterr().err
