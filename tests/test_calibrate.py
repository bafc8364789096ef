"""Ensemble calibration and the choice of the do-no-harm policy (issue #31)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ase_definet.calibrate import (CANDIDATES, calibrate_ensemble, rank_policies, raw_run,
                                   score_policy)
from ase_definet.data.load import load_samples
from ase_definet.evaluate import evaluate
from ase_definet.inference import Predictor
from ase_definet.model import DefiNet, DefiNetConfig
from ase_definet.weights import save_checkpoint

CFG = DefiNetConfig(hidden=16, num_layers=2, num_rbf=8)


@pytest.fixture(scope="module")
def members(tmp_path_factory) -> list[str]:
    """Three small untrained members (they disagree, so sigma is not zero)."""
    out = tmp_path_factory.mktemp("members")
    paths = []
    for k in range(3):
        torch.manual_seed(k)
        net = DefiNet(CFG)
        run = out / f"member-{k}"
        run.mkdir()
        save_checkpoint(run / "best.pt", net, meta={"epoch": 2, "train_config": {"seed": k},
                                                     "n_train": 6, "n_val": 18})
        (run / "metrics.csv").write_text("epoch,train_loss,val_mae,val_score,lr,time\n"
                                         f"1,1.0,0.0{k + 3},0.5,1e-3,10.0\n"
                                         f"2,0.9,0.0{k + 2},0.4,1e-3,12.0\n")
        paths.append(str(run / "best.pt"))
    return paths


@pytest.fixture(scope="module")
def samples(emt_store):
    return load_samples(emt_store, progress_note=lambda m: None).samples


def _score(policy, share, mae, n=10):
    return {"policy": policy, "worse_share": share, "balanced_mae": mae, "n": n}


def test_rule_takes_the_safest_policy_within_two_points():
    scores = [_score("none", 0.10, 50.0), _score("shrink:1", 0.05, 48.5),
              _score("withhold:1", 0.02, 47.0),            # safest, but 3 points lower
              _score("shrink:2", 0.05, 49.0), _score("shrink:1+withhold:2", 0.05, 49.0)]
    ranked = [s["policy"] for s in rank_policies(scores)]
    assert "withhold:1" not in ranked
    # equal share: the smaller drop first, then the simpler of two equal drops
    assert ranked == ["shrink:2", "shrink:1+withhold:2", "shrink:1", "none"]
    with pytest.raises(ValueError, match="raw ensemble .'none'. as the reference"):
        rank_policies(scores[1:])


def test_raw_run_needs_an_ensemble(samples):
    torch.manual_seed(0)
    with pytest.raises(ValueError, match="calibration needs an ensemble"):
        raw_run(Predictor(DefiNet(CFG), device="cpu"), samples[:2], progress=False)


def test_withholding_everything_scores_as_the_dummy(members, samples):
    from ase_definet.weights import ensemble_of
    run = raw_run(Predictor(ensemble_of(members), device="cpu"), samples[:6], progress=False)
    s = score_policy(run, "withhold:0", 1.0)          # mean sigma > 0 always: all kept
    assert s["withheld"] == 6 and s["worse_n"] == 0
    assert s["balanced_mae"] == pytest.approx(0.0, abs=1e-9)
    raw = score_policy(run, "none", 1.0)
    assert raw["withheld"] == 0 and raw["balanced_mae"] != pytest.approx(0.0, abs=1e-6)


def test_calibrated_ensemble_applies_its_card_and_reproduces_its_report(members, samples,
                                                                       tmp_path):
    val, test = samples[:18], samples[18:30]
    section = calibrate_ensemble(members, val, tmp_path, held_out={"test": test},
                                 progress=False)
    names = {p.name for p in CANDIDATES}
    assert section["policy"] in names and section["members"] == 3
    assert len(section["validation"]["policies"]) == len(CANDIDATES)
    # the scale is fitted so that 95 % of validation atoms err by less than 2 sigma
    assert section["validation"]["calibrated"]["coverage_2sigma"] == pytest.approx(0.95,
                                                                                abs=0.02)
    assert section["scale"] > 0
    on_file = json.loads((tmp_path / "calibration.json").read_text())
    assert on_file["policy"] == section["policy"] and on_file["scale"] == section["scale"]
    # a Predictor of the written ensemble reads scale and policy from its card ...
    pred = Predictor(str(tmp_path / "best.pt"), device="cpu")
    assert pred.members and pred.policy.name == section["policy"]
    assert pred.sigma_scale == pytest.approx(section["scale"])
    # ... and reproduces the test report that calibration wrote (the card's numbers)
    report = json.loads((tmp_path / "test.json").read_text())
    again = evaluate(pred, test, progress=False)
    assert report["overall"]["n"] == len(test)
    for key in ("mae", "a3"):
        assert again["overall"]["model"][key] == pytest.approx(
            report["overall"]["model"][key], rel=1e-6)
    raw = json.loads((tmp_path / "test_none.json").read_text())
    held = section["test"]
    assert held["none"]["worse_n"] == raw["overall"]["worse_than_dummy"]["n"]
    assert held["drop"] == pytest.approx(held["none"]["balanced_mae"]
                                         - held["policy"]["balanced_mae"])
    assert np.isfinite(held["calibration"]["calibrated"]["spearman"])


def test_cli_calibrate_writes_the_ensemble_and_prints_the_tables(members, samples, emt_store,
                                                                 tmp_path, capsys):
    from ase_definet.cli import main
    from ase_definet.data.splits import write_split
    split = write_split({"train": samples[:6], "val": samples[6:24], "test": samples[24:]},
                        tmp_path / "split.json", seed=0)
    out = tmp_path / "ens"
    assert main(["calibrate", *members, "--data", str(emt_store), "--split-file",
                 str(split), "--out", str(out), "--quiet"]) == 0
    text = capsys.readouterr().out
    section = json.loads((out / "calibration.json").read_text())
    assert f"`{section['policy']}`" in text and "(chosen)" in text and "| test |" in text
    assert {"best.pt", "test.json", "test_none.json"} <= {p.name for p in out.iterdir()}
    # one member is not an ensemble: a one-line error, and no folder is left behind
    assert main(["calibrate", members[0], "--data", str(emt_store), "--split-file",
                 str(split), "--out", str(tmp_path / "one"), "--quiet"]) != 0
    assert "at least 2 member checkpoints" in capsys.readouterr().err
    assert not (tmp_path / "one").exists()


def test_card_of_a_calibrated_ensemble(members, samples, emt_store, tmp_path):
    from ase_definet.card import build_card, card_readme
    calibrate_ensemble(members, samples[:18], tmp_path, held_out={"test": samples[18:]},
                       progress=False)
    report = json.loads((tmp_path / "test.json").read_text())
    card = build_card(tmp_path, emt_store, report, name="cu-ensemble")
    section = json.loads((tmp_path / "calibration.json").read_text())
    assert card["uncertainty"]["policy"] == section["policy"]
    assert card["uncertainty"]["scale"] == pytest.approx(section["scale"])
    t = card["training"]
    assert t["epochs"] == 6 and t["wall_time_s"] == pytest.approx(66.0)
    assert [m["seed"] for m in t["members"]] == [0, 1, 2]
    assert t["best_val_mae"] == pytest.approx((0.02 + 0.03 + 0.04) / 3)
    text = card_readme(card)
    assert "## Uncertainty" in text and f"`{section['policy']}`" in text
    assert "member seed 2: 2 epochs, best validation MAE 0.0400" in text
    assert "- 3 members, 6 epochs in all, 1 min" in text
    assert 'SEEDS="0 1 2" bash experiments/ensemble/train.sh' in text   # not build.sh


def test_cli_plots_the_reliability_of_a_calibration(members, samples, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    from ase_definet.cli import main
    calibrate_ensemble(members, samples[:18], tmp_path / "ens", progress=False)
    assert main(["plot", "--reliability", str(tmp_path / "ens" / "calibration.json"),
                 "--groups", "--out", str(tmp_path / "plots")]) == 0
    png = tmp_path / "plots" / "reliability.png"
    assert png.is_file() and png.read_bytes()[:4] == b"\x89PNG"
    # the ensemble's own checkpoint carries the same section in its card
    assert main(["plot", "--reliability", str(tmp_path / "ens" / "best.pt"),
                 "--out", str(tmp_path / "p2")]) == 0
    assert (tmp_path / "p2" / "reliability.png").is_file()
