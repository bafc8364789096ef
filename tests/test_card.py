"""Model cards: building one from a run, its sections, and the verdicts against the
targets of the shipped weights."""
from __future__ import annotations

import pytest

from ase_definet.card import card_readme
from ase_definet.targets import TARGETS, targets_markdown


def _block(mae: float, a3: float, n: int = 3) -> dict:
    return {"model": {}, "dummy": {}, "improvement": {"mae": mae, "a3": a3}, "n": n}


def _card() -> dict:
    return {
        "test": {"overall": _block(60.0, 60.0),
                 "groups": {"MoS2/low": _block(90.0, 86.0),       # both above 85: met
                            "WSe2/low": _block(90.0, 84.9),       # A3 short: missed
                            "hBN/high": _block(71.0, 70.0),       # exactly 70: met
                            "BP/high": _block(None, 99.0)}},      # NaN metric: missed
        "scalability_holdout": {"overall": _block(81.0, 79.0, 20)},
        "residual_steps": {"0.05": {"reduction_pct": 90.0, "dE_meV_max": 4.0},
                           "0.01": {"reduction_pct": 90.0, "dE_meV_max": 6.0}},
        "residual_steps_n": 20,
        "residual_steps_by_density": {
            "low": {"n": 12, "summary": {"0.01": {"reduction_pct": 86.0, "dE_meV_max": 2.0}}}},
    }


def test_targets_table_verdicts():
    rows = {line.split(" | ")[0].lstrip("| "): line
            for line in targets_markdown(_card()).splitlines()[2:]}
    assert rows["MoS2/low"].endswith("| met |")
    assert rows["WSe2/low"].endswith("**missed** |")
    assert rows["hBN/high"].endswith("| met |")
    assert "n/a" in rows["BP/high"] and rows["BP/high"].endswith("**missed** |")
    assert rows["MoS2 12×12, never trained on"].endswith("**missed** |")
    assert rows["residual steps to fmax 0.05 eV/Å"].endswith("| met |")
    assert rows["residual steps to fmax 0.01 eV/Å"].endswith("**missed** |")
    low = rows["residual steps to fmax 0.01 eV/Å, low density"]
    assert low.startswith("| residual steps to fmax 0.01 eV/Å, low density | 12 |")
    assert low.endswith("| met |")
    # low density rows first, and every row names its own target
    assert list(rows)[:2] == ["MoS2/low", "WSe2/low"]
    assert f"≥ {TARGETS['low']:.0f} %" in rows["MoS2/low"]
    assert f"≥ {TARGETS['high']:.0f} %" in rows["hBN/high"]


def test_card_readme_contains_the_verdicts():
    card = dict(_card(), name="m", summary="s", oracle="CHGNet, NOT DFT", elements=["Mo"],
                defects=["V_S"], config={}, parameters=1,
                data={"source": "d", "structures": 1, "n_train": 1, "n_val": 1,
                      "n_test": 1, "excluded": []},
                training={"epochs": 1, "wall_time_s": 60.0, "best_val_mae": 0.1,
                          "hardware": "cpu", "recipe": {}})
    card["test"]["overall"] = {**card["test"]["overall"], "model": {"mae": 0.1},
                               "dummy": {"mae": 0.2}}
    for g in card["test"]["groups"].values():
        g["model"], g["dummy"] = {"mae": 0.1}, {"mae": 0.2}
    card["scalability_holdout"]["overall"].update(model={"mae": 0.1}, dummy={"mae": 0.2})
    text = card_readme(card)
    assert "## Against the targets" in text and text.count("**missed**") == 4
    # bug: the reproduce line named the protocol store's recipe whatever the data
    assert "(data: `d/recipe.sh`)" in text
    # the residual table says which start ended lower (n/a for cards without counts)
    assert "| 4.0 | n/a |" in text
    card["residual_steps"]["0.05"].update(predicted_lower=18, predicted_higher=0)
    assert "| 4.0 | 18/0 |" in card_readme(card)
    # the residual sample's make-up is stated (cards before it said only a count)
    assert "on 20 test structures (median;" in card_readme(card)
    card["residual_steps_groups"] = {"MoS2/low": 4, "hBN/high": 4}
    assert "on 20 test structures (MoS2/low 4, hBN/high 4) (median;" in card_readme(card)


def test_summary_lists_materials_case_insensitively():
    """Bug: the summary sorted material names by code point, so hBN came after WSe2."""
    from ase_definet.card import card_summary
    line = card_summary(["WSe2", "hBN", "MoS2", "BP", "GaSe", "hBN"])
    assert "in BP, GaSe, hBN, MoS2, WSe2;" in line


def test_oracle_note_says_what_the_manifest_records():
    from ase_definet.card import oracle_note
    note = oracle_note({"oracle": {"calculators": ["chgnet 0.4.2, model 0.3.0"],
                                   "optimizer": "FIRE", "fmax": 0.001},
                        "tightened": {"source": "weights/data/chgnet-2dmd"}})
    assert "chgnet 0.4.2, model 0.3.0" in note and "fmax 0.001 eV/Å" in note
    assert "weights/data/chgnet-2dmd continued with FIRE to fmax 0.001" in note
    assert "NOT DFT" in oracle_note({}) and "unrecorded" in oracle_note({})
    mixed = oracle_note({"oracle": {"calculators": ["c"], "fmax": 0.001,
                                    "optimizer": {"BFGS": 1684, "FIRE": 735}},
                         "tightened": {"source": "s"}})
    assert "continued with BFGS (1,684 labels) or FIRE (735 labels) to fmax 0.001" in mixed
    plain = oracle_note({"oracle": {"calculators": ["c"], "optimizer": "FIRE", "fmax": 0.01}})
    assert "(FIRE, fixed cell, fmax 0.01 eV/Å" in plain


def test_oracle_note_resolves_a_tightened_source_against_its_store():
    """Bug: the card said "the labels of ../chgnet-2dmd", relative to a folder it never named."""
    from ase_definet.card import oracle_note
    manifest = {"oracle": {"calculators": ["c"], "fmax": 0.001},
                "tightened": {"source": "../chgnet-2dmd"}}
    note = oracle_note(manifest, "weights/data/chgnet-2dmd-tight")
    assert "the labels of weights/data/chgnet-2dmd continued" in note
    assert "the labels of /abs/s continued" in oracle_note(
        {"tightened": {"source": "/abs/s"}}, "weights/data/x")


def test_reproduce_line_names_what_differs_from_build_sh():
    """Bug: every card said `bash weights/build.sh`, which trains on another store with
    another learning rate than a warm-started, tightened-label model used."""
    from ase_definet.reproduce import reproduce_line
    card = {"data": {"source": "weights/data/chgnet-2dmd", "excluded": ["supercell=12x12"],
                     "split": "r/split.json"},
            "training": {"recipe": {"lr": 1.5e-3, "batch_size": 2, "seed": 0,
                                    "max_time": 2400.0, "balance": "group"}}}
    assert reproduce_line(card) == "`bash weights/build.sh`"
    card["data"].update(source="weights/data/t",
                        excluded=["supercell=12x12", "material=MoS2", "material=WSe2"])
    card["training"]["recipe"].update(lr=1e-3, seed=1, max_time=1800.0)
    card["training"]["initialised_from"] = {"checkpoint": "weights/definet-2dmd.pt",
                                            "sha256": "752340c0ef8c5ef3"}
    line = reproduce_line(card)
    assert line.startswith("`DATA=weights/data/t LR=0.001 SEED=1 MAX_TIME=1800 "
                           "EXCLUDE=material=MoS2,material=WSe2 INIT=parent.pt "
                           "SPLIT=r/split.json bash weights/build.sh`")
    assert "sha256 `752340c0ef8c…`" in line


def test_reproduce_line_knows_build_sh_defaults():
    """The card's reproduce line omits variables at build.sh's defaults: they must agree."""
    import re
    from pathlib import Path
    from ase_definet.reproduce import _BUILD_DATA, _BUILD_VARS
    script = (Path(__file__).resolve().parents[1] / "weights" / "build.sh").read_text()
    for key, (var, default) in _BUILD_VARS.items():
        found = re.findall(r"\$\{" + var + r":-([^}]*)\}", script)
        assert found, f"build.sh has no ${{{var}:-...}}"
        value = found[0]
        assert (float(value) == default) if isinstance(default, (int, float)) \
            else (value == default), (key, value, default)
    assert "${DATA:-" + _BUILD_DATA + "}" in script


def test_training_history_totals_over_the_parent_models():
    """The card's history line: this run plus the models it continued from."""
    from ase_definet.card import _history_lines
    from ase_definet.training_log import with_history as _with_history
    total = _with_history({"epochs": 2, "wall_time_s": 10.0, "best_val_mae": 0.1},
                          {"training": {"epochs": 3, "wall_time_s": 5.0}})
    assert total["total_epochs"] == 5 and total["total_wall_time_s"] == 15.0
    # a parent without a recorded wall time (a plain training checkpoint): the
    # total is unknown, not this run's time alone
    unknown = _with_history({"epochs": 2, "wall_time_s": 10.0, "best_val_mae": 0.1},
                            {"checkpoint": "p.pt", "sha256": "0" * 64,
                             "training": {"epochs": 3, "best_val_mae": 0.2}})
    assert unknown["total_epochs"] == 5 and unknown["total_wall_time_s"] is None
    assert "3 epochs, ? min" in _history_lines(unknown)[0]
    assert "in total 5 epochs, ? min of training" in _history_lines(unknown)[0]


def test_card_scope_leaves_out_excluded_samples(emt_store, tmp_path):
    """Bug: the card's elements and defect types came from the whole data folder, so a
    run that excluded samples (a specialist, a holdout) claimed them too."""
    from ase_definet.card import build_card
    from ase_definet.train import TrainConfig, run_training
    from conftest import store_samples
    samples = store_samples(emt_store)
    with_au = [s.info["id"] for s in samples if "Au" in s.atoms.get_chemical_symbols()]
    assert 0 < len(with_au) < len(samples)
    run = tmp_path / "run"
    run_training(emt_store, run, TrainConfig(model={"hidden": 24, "num_rbf": 12, "cutoff": 4.5,
                                                   "max_neighbors": 24},
                                            epochs=1, batch_size=4),
                 progress=False, exclude=[f"id={i}" for i in with_au])
    report = {"overall": {"n": 99}}
    card = build_card(run, emt_store, report, name="tiny")
    # bug: n_test came from training time, not from the report the card's metrics
    # rest on (a run tested after its data set grew)
    assert card["data"]["n_test"] == 99
    assert "Au" not in card["elements"] and {"Cu", "Ni"} <= set(card["elements"])
    assert "Au_Cu" not in card["defects"] and card["hosts"] == ["Cu"]
    assert card["data"]["excluded"] == [f"id={i}" for i in with_au]
    assert samples[0].group.partition("/")[0] in card["summary"]
    # bug: the oracle note named CHGNet and fmax 0.01 whatever the data said
    assert "EMT" in card["oracle"] and "CHGNet" not in card["oracle"]
    assert "fmax 0.01 eV/Å" in card["oracle"] and "NOT DFT" in card["oracle"]
    # the residual sample's groups are counted from its records
    end = {"0.05": {"steps": 3, "converged": True, "energy": -1.0}}
    records = [{"id": f"r{k}", "group": g, "unrelaxed": end, "predicted": end}
               for k, g in enumerate(["Cu/low", "Cu/high", "Cu/low"])]
    card = build_card(run, emt_store, report, name="tiny", residual_report={
        "summary": {}, "fmax": [0.05], "per_structure": records})
    assert card["residual_steps_groups"] == {"Cu/high": 1, "Cu/low": 2}
    assert card["residual_steps_n"] == 3
    # a store against itself: the label drift is zero, over the run's own samples only
    card = build_card(run, emt_store, report, name="tiny", loose_data=emt_store)
    drift = card["label_drift"]["densities"]["low"]
    assert drift["n"] == len(samples) - len(with_au) and drift["drift"] == 0.0
    assert drift["dummy"] > 0


def _samples_with_labels(shift: float):
    """Two cubic Cu cells, the second with a vacancy; relaxed = unrelaxed + shift in x."""
    from ase.build import bulk
    from ase_definet.data.sample import Sample
    host = bulk("Cu", "fcc", a=3.6, cubic=True)
    out = []
    for k, (density, drop) in enumerate((("low", []), ("high", [0]))):
        a = host.copy()
        del a[drop]
        relaxed = a.positions + [0.03 * (k + 1), 0.0, 0.0]
        out.append(Sample(a, relaxed + [shift, 0.0, 0.0], host,
                          {"id": f"s{k}", "material": "Cu", "density": density}))
    return out


def test_label_drift_is_the_mean_coordinate_difference_of_two_label_sets():
    from ase_definet.label_drift import label_drift
    tight, loose = _samples_with_labels(0.0), _samples_with_labels(0.006)
    out = label_drift(tight, loose[:1] + loose[1:])
    low = out["densities"]["low"]
    assert low["n"] == 1
    assert low["drift"] == pytest.approx(0.002)              # 0.006 Å in x only
    assert low["dummy"] == pytest.approx(0.01)               # 0.03 Å in x only
    assert low["dummy_loose"] == pytest.approx(0.012)
    assert low["drift_pct_of_dummy"] == pytest.approx(20.0)
    assert out["groups"]["Cu/high"]["dummy"] == pytest.approx(0.02)
    assert label_drift(tight, loose[:1])["groups"].keys() == {"Cu/low"}   # shared ids only
    other = _samples_with_labels(0.0)
    other[0].atoms.positions[0] += 0.1
    with pytest.raises(ValueError, match="different unrelaxed structures"):
        label_drift(tight, other)
    for s in other:
        s.info["id"] = "x" + s.info["id"]
    with pytest.raises(ValueError, match="share no structure id"):
        label_drift(tight, other)


def _strata_report():
    """An evaluation report's blocks from hand-built records: MoS2/high at two
    concentrations (one structure worse than the Dummy) and MoS2/low."""
    from ase_definet.breakdown import strata
    from ase_definet.evaluate import summarize

    def rec(group, model, dummy, fraction, n_defects=1):
        return {"group": group, "density": group.partition("/")[2], "fraction": fraction,
                "n_defects": n_defects, "model": {"mae": model, "a3": model},
                "dummy": {"mae": dummy, "a3": dummy}}
    records = [rec("MoS2/high", 0.01, 0.1, 0.025), rec("MoS2/high", 0.2, 0.1, 0.125),
               rec("MoS2/low", 0.001, 0.01, 0.005), rec("MoS2/low", 0.002, 0.01, 0.01, 2)]
    keys = ["mae", "a3"]
    groups = {g: summarize([r for r in records if r["group"] == g], keys)
              for g in ("MoS2/high", "MoS2/low")}
    return {"overall": summarize(records, keys), "groups": groups,
            "strata": strata(records, lambda rs: summarize(rs, keys))}


def test_card_shows_strata_worse_counts_and_label_drift():
    """Issue #29: the card's per-concentration table, balanced means, worse-than-Dummy
    counts, and the label-drift paragraph with both low-density improvements."""
    from ase_definet.card import _slim
    card = dict(_card(), name="m", summary="s", oracle="o", elements=["Mo"], defects=["V_S"],
                config={}, parameters=1,
                data={"source": "d", "structures": 1, "n_train": 1, "n_val": 1,
                      "n_test": 4, "excluded": []},
                training={"epochs": 1, "wall_time_s": 60.0, "best_val_mae": 0.1,
                          "hardware": "cpu", "recipe": {}})
    card.pop("scalability_holdout")
    card["test"] = _slim(dict(_strata_report(), per_structure=[{}]))
    assert "per_structure" not in card["test"]
    loose = _strata_report()
    loose["groups"]["MoS2/low"]["improvement"]["mae"] = 66.0
    loose["groups"]["MoS2/low"]["model"]["mae"] = 0.0034
    card["test_loose_labels"] = loose
    card["label_drift"] = {"densities": {"low": {"n": 600, "drift": 0.0036, "dummy": 0.0128,
                                                 "drift_pct_of_dummy": 28.1}},
                           "groups": {"MoS2/low": {"n": 300, "drift": 0.003, "dummy": 0.011,
                                                   "drift_pct_of_dummy": 27.0}}}
    text = card_readme(card)
    assert "## Where it fails" in text and "### Per concentration: test split (n = 4)" in text
    rows = [line for line in text.splitlines() if line.startswith("| MoS2/high |")]
    assert rows[0].startswith("| MoS2/high | 2.5 % | 1 | 0.0100 | 0.1000 | +90.0 |")
    assert rows[1].startswith("| MoS2/high | 12.5 % | 1 |") and "1 of 1 (100.0 %)" in rows[1]
    # (90 - 100) / 2
    assert rows[2].startswith("| MoS2/high | balanced (2 strata) |  |  |  | -5.0 |")
    assert "| MoS2/low | 2 defects | 1 |" in text
    assert "| MoS2/low | balanced = group mean |  |  |  | +85.0 |" in text
    assert ("Structures whose model MAE exceeds the Dummy's: overall: 1 of 4 (25.0 %); "
            "MoS2/high: 1 of 2 (50.0 %); MoS2/low: 0 of 2 (0.0 %).") in text
    assert "by 0.0036 Å per coordinate on average, 28 % of the Dummy's MAE (0.0128 Å" in text
    assert ("MoS2/low (test, n = 2): against the fmax-0.01 labels the model removes 66 % of "
            "the Dummy's error (MAE 0.0034 Å), against the continued labels 85 %") in text
    assert "| MoS2/low | 300 | 0.0030 | 0.0110 | 27 % |" in text
    # a card from before these sections renders without them
    for key in ("label_drift", "test_loose_labels"):
        card.pop(key)
    card["test"].pop("strata")
    text = card_readme(card)
    assert "## Where it fails" not in text and "label drift" not in text


def test_rescore_card_replaces_the_test_sections_and_says_which_split(tmp_path, capsys):
    """Issue #29 item 5: a shipped model scored on a new split without repackaging it;
    the old split's numbers must not stay on the card beside the new ones."""
    import json
    from ase_definet.card import main, rescore_card
    card = dict(_card(), name="m", summary="s", oracle="o", elements=["Mo"],
                defects=["V_S"], config={}, parameters=1,
                data={"source": str(tmp_path / "no-store"), "structures": 1, "n_train": 1,
                      "n_val": 1, "n_test": 240, "excluded": []},
                training={"epochs": 1, "wall_time_s": 60.0, "best_val_mae": 0.1,
                          "hardware": "cpu", "recipe": {}},
                test_loose_labels={"overall": {}, "groups": {}})
    new = dict(_strata_report(), per_structure=[{}])
    out = rescore_card(card, new, split="s-v2.json", note="Trained on 7 of these.")
    assert out["data"]["n_test"] == 4 and out["data"]["test_split"] == "s-v2.json"
    assert out["test"]["groups"].keys() == {"MoS2/high", "MoS2/low"}
    assert "per_structure" not in out["test"]
    # the old card's holdout and loose-label sections came from the old reports
    assert "scalability_holdout" not in out and "test_loose_labels" not in out
    assert card["data"]["n_test"] == 240 and "WSe2/low" in card["test"]["groups"]
    text = card_readme(out)
    assert "Test split: `s-v2.json`." in text and "**Trained on 7 of these.**" in text
    assert "trained on split 1/1 train/val (`m.split.json`); test metrics on the 4 test " \
        "structures of `s-v2.json`" in text
    # the residual study keeps its own structures and says from which split
    assert ("Residual steps with chgnet + BFGS on 20 test structures of `m.split.json` "
            "(median;") in text
    assert "| test, MoS2/low | 2 |" in text and "WSe2/low" not in text
    # the same from the command line, from a card JSON
    (tmp_path / "card.json").write_text(json.dumps(card))
    (tmp_path / "test.json").write_text(json.dumps(new))
    assert main(["--from-card", str(tmp_path / "card.json"), "--test", str(tmp_path / "test.json"),
                 "--split", "s-v2.json", "-o", str(tmp_path / "new.json"),
                 "--readme", str(tmp_path / "README.md")]) == 0
    assert json.loads((tmp_path / "new.json").read_text())["data"]["test_split"] == "s-v2.json"
    assert "## Where it fails" in (tmp_path / "README.md").read_text()
    with pytest.raises(SystemExit, match="2"):
        main(["--test", str(tmp_path / "test.json"), "-o", str(tmp_path / "x.json")])
    assert "give RUN and --data, or --from-card" in capsys.readouterr().err


def test_rescored_card_takes_a_residual_study_with_the_lower_start():
    from ase_definet.card import rescore_card
    from ase_definet.residual_report import residual_lines
    from ase_definet.residual_report import summarize
    rec = {"id": "a", "group": "MoS2/high"}
    for start, (e0, steps, e1) in {"unrelaxed": (0.0, 10, -1.0),
                                   "predicted": (0.5, 4, -0.9)}.items():
        rec[start] = {"energy_start": e0, "0.05": {"steps": steps, "converged": True,
                                                   "energy": e1, "fmax_final": 0.04}}
    report = {"summary": summarize([rec], [0.05])["predicted"], "per_structure": [rec],
              "fmax": [0.05], "summary_by_start": summarize([rec], [0.05]),
              "calculator": "emt"}
    card = rescore_card({"name": "m", "data": {}, "residual_steps": {"old": {}}},
                        {"overall": {"n": 1}, "groups": {}}, split="s.json",
                        residual_report=report)
    assert card["residual_steps"]["0.05"]["median_steps_predicted"] == 4
    lower = card["residual_steps_lower_start"]["0.05"]
    # the prediction starts 500 meV above the input: start="lower" takes the input
    assert lower["from_unrelaxed"] == 1 and lower["median_steps_predicted"] == 10
    assert "residual_steps_split" not in card          # the study ran on the test split
    text = "\n".join(residual_lines(card))
    assert 'With `start="lower"`' in text and "the input taken 1 times" in text
    assert "| 0.05 | 10.0 | 10.0 | 0.0 % |" in text        # no step saved, none lost


def test_card_counts_ends_more_than_5_mev_above_the_input_even_for_an_old_report():
    """The issues' criterion (an end > 5 meV above the run from the input) is counted
    from the records, so a report written before the count existed gets it too."""
    from ase_definet.card import with_residual
    from ase_definet.residual_report import residual_lines
    recs = []
    for k, d_mev in enumerate((-20.0, 3.0, 6.0, 400.0)):
        recs.append({"id": str(k), "group": "BP/high",
                     "unrelaxed": {"0.01": {"steps": 50, "converged": True, "energy": -1.0}},
                     "predicted": {"0.01": {"steps": 20, "converged": True,
                                            "energy": -1.0 + d_mev / 1000}}})
    old = {"summary": {"0.01": {"median_steps_unrelaxed": 50}}, "per_structure": recs,
           "fmax": [0.01]}
    card = with_residual({"name": "m"}, old)
    assert card["residual_steps"]["0.01"]["predicted_higher_5meV"] == 2
    assert card["residual_steps"]["0.01"]["predicted_higher"] == 3       # > 0.5 meV
    row = [line for line in residual_lines(card) if line.startswith("| 0.01 |")][0]
    assert row.endswith("| 2 |") and "ends > 5 meV higher" in "\n".join(residual_lines(card))
