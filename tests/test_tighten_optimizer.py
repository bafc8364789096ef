"""experiments/probes/tighten_optimizer.py: the same labels continued by two optimizers,
compared."""
from __future__ import annotations

import importlib.util
import json

import pytest

from conftest import ROOT
from ase_definet.data.store import read_frames
from ase_definet.data.tighten import tighten

spec = importlib.util.spec_from_file_location(
    "tighten_optimizer", ROOT / "experiments" / "probes" / "tighten_optimizer.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


def test_bfgs_against_fire_on_a_real_store(emt_store, tmp_path):
    frames = read_frames(emt_store / "samples.extxyz")
    ids = [f.info["id"] for f in frames]
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": ids[:6], "val": ids[6:8], "test": []}))
    tight = tmp_path / "tight"
    tighten(emt_store, tight, fmax=1e-4, ids=ids[:8], workers=0, progress=False)
    group = f"{frames[0].info['material']}/{frames[0].info['density']}"
    report = tmp_path / "v8.json"
    report.write_text(json.dumps({"groups": {group: {"model": {"mae": 0.05}}}}))
    out_json = tmp_path / "bfgs.json"
    rc = bench.main(["--source", str(emt_store), "--tight", str(tight), "--split-file",
                     str(split), "--model-report", str(report), "--per-group", "3",
                     "--out", str(tmp_path / "bfgs"), "--workers", "0",
                     "--json", str(out_json)])
    assert rc == 0
    res = json.loads(out_json.read_text())
    # the first three training ids of the store, continued again with BFGS
    assert res["ids"] == ids[:3] and [r["id"] for r in res["rows"]] == ids[:3]
    assert {f.info["optimizer"] for f in read_frames(tmp_path / "bfgs" / "samples.extxyz")} \
        == {"BFGS"}
    for r in res["rows"]:
        assert r["converged_new"] and r["steps_ref"] > 0 and r["steps_new"] > 0
        assert r["distance_max"] < 2e-3 and abs(r["denergy_meV"]) < 0.1
        # the split of the distance: its two parts bound the whole
        assert max(r["distance_normal_mean"], r["distance_inplane_mean"]) \
            <= r["distance_mean"] + 1e-12 \
            <= r["distance_normal_mean"] + r["distance_inplane_mean"] + 1e-12
    g = res["groups"][group]
    assert g["n"] == 3 and g["distance_share_of_model_mae"] == pytest.approx(
        g["distance_mean"] / 0.05)
    assert res["checks"]["all_converged"] and res["checks"]["energies_within_1meV"]


def _row(group="A/high", ref=100, new=40, dist=0.001, de=0.1, conv=True):
    return {"group": group, "steps_ref": ref, "steps_new": new, "distance_mean": dist,
            "distance_max": 2 * dist, "denergy_meV": de, "converged_new": conv}


def test_each_condition_of_the_rule_can_fail():
    mae = {"A/high": 0.02, "B/low": 0.003}
    ok = [_row(), _row("B/low", dist=0.0001)]
    assert bench.verdict(ok, mae)["switch"]
    cases = {
        "all_converged": [_row(conv=False), _row("B/low", dist=0.0001)],
        "steps_at_most_half": [_row(new=60), _row("B/low", new=60, dist=0.0001)],
        "distance_below_share_of_model_mae": [_row(), _row("B/low", dist=0.0004)],
        "energies_within_1meV": [_row(de=-1.5), _row("B/low", dist=0.0001)],
    }
    for failing, rows in cases.items():
        res = bench.verdict(rows, mae)
        assert not res["switch"]
        assert [k for k, v in res["checks"].items() if not v] == [failing]
    # a group with no model score cannot pass the distance condition
    assert not bench.verdict([_row("C/high")], mae)["checks"][
        "distance_below_share_of_model_mae"]


def test_pick_takes_each_groups_first_training_frames_grouped(tmp_path):
    from ase import Atoms

    def frame(sid, material, density="high", supercell="6x6"):
        return Atoms("H", info={"id": sid, "material": material, "density": density,
                                "supercell": supercell})

    frames = [frame("w1", "WSe2"), frame("m1", "MoS2"), frame("x", "MoS2"),
              frame("big", "MoS2", supercell="12x12"), frame("m2", "MoS2"),
              frame("w2", "WSe2"), frame("m3", "MoS2"), frame("l1", "MoS2", "low")]
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": ["w1", "m1", "big", "m2", "w2", "m3", "l1"],
                                 "val": ["x"], "test": []}))
    # 12x12 and non-training frames skipped; groups sorted, store order within each
    assert bench.pick(frames, split, 2) == ["m1", "m2", "l1", "w1", "w2"]
