"""Model-card rendering: the verdicts against the targets of the shipped weights."""
from __future__ import annotations

from ase_definet.card import TARGETS, card_readme, targets_markdown


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
    from ase_definet.card import reproduce_line
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
    from ase_definet.card import _BUILD_DATA, _BUILD_VARS
    script = (Path(__file__).resolve().parents[1] / "weights" / "build.sh").read_text()
    for key, (var, default) in _BUILD_VARS.items():
        found = re.findall(r"\$\{" + var + r":-([^}]*)\}", script)
        assert found, f"build.sh has no ${{{var}:-...}}"
        value = found[0]
        assert (float(value) == default) if isinstance(default, (int, float)) \
            else (value == default), (key, value, default)
    assert "${DATA:-" + _BUILD_DATA + "}" in script
