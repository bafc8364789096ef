"""The shipped weights: registry, hash, card, and that they reproduce their card."""
from __future__ import annotations

import json

import numpy as np
import pytest

from ase_definet import DefiNetRelaxer
from ase_definet.errors import UnsupportedStructureError
from ase_definet.weights import registry, sha256

from conftest import ROOT

WEIGHTS = ROOT / "weights"
REG = WEIGHTS / "registry.json"
pytestmark = pytest.mark.skipif(not REG.exists(), reason="no shipped weights yet")
#: every shipped model is checked against its own card, not only the default
SHIPPED = sorted(json.loads(REG.read_text())["models"]) if REG.exists() else []


def in_repo(path: str):
    """A path the card names, in today's layout: run folders moved from weights/train/ to
    experiments/runs/; the card keeps the old string (it is inside the sha256-checked .pt)."""
    return ROOT / path.replace("weights/train/", "experiments/runs/", 1)


@pytest.mark.parametrize("name", SHIPPED)
def test_registry_hash_and_card(name):
    entry = registry()[name]
    assert sha256(entry["path"]) == entry["sha256"]
    card = entry["card"]
    assert "chgnet" in card["oracle"].lower() and "NOT DFT" in card["oracle"]
    assert {"Mo", "S", "W", "Se"} <= set(card["elements"])
    for key in ("mae", "a3", "a4", "a5", "a6"):
        assert key in card["test"]["overall"]["model"]


def test_models_verbose_prints_the_card_with_its_targets(capsys):
    from ase_definet.cli import main
    assert main(["models", "-v"]) == 0
    out = capsys.readouterr().out
    assert "NOT DFT" in out and "## Against the targets" in out and "MoS2/low" in out


def test_default_weights_prerelax_example_structures():
    from ase.io import read
    for atoms in read(ROOT / "examples" / "data" / "MoS2_defects.extxyz", ":"):
        before = atoms.positions.copy()
        r = DefiNetRelaxer(atoms, host="MoS2", logfile=None)
        assert r.run() is True
        moved = np.linalg.norm(atoms.positions - before, axis=1)
        assert 0.0 < moved.max() < 1.0
        assert r.report.ok, r.report.problems


def test_out_of_card_structure_is_refused():
    from ase_definet.data.defects import apply_defects
    from ase_definet.data.hosts import build_host
    host = build_host("MoS2", 4)
    atoms = apply_defects(host, [1], [("substitution", "S", "Te")])
    with pytest.raises(UnsupportedStructureError, match="Te"):
        DefiNetRelaxer(atoms, host=host, logfile=None).run()


def card_test_report(card: dict) -> dict:
    """The per-structure report behind the card's test numbers: the rescoring on the
    leak-free split (experiments/honest-numbers/) when the card says it was rescored,
    else its training run's test.json."""
    if card["data"].get("test_split"):
        return json.loads((ROOT / "experiments/honest-numbers/test_v2_shipped.json").read_text())
    return json.loads(in_repo(card["data"]["split"]).with_name("test.json").read_text())


@pytest.mark.parametrize("name", SHIPPED)
def test_card_test_numbers_are_those_of_its_report(name):
    card = registry()[name]["card"]
    report = card_test_report(card)
    assert report["overall"]["n"] == card["test"]["overall"]["n"]
    for key in ("mae", "a3"):
        assert report["overall"]["model"][key] == pytest.approx(
            card["test"]["overall"]["model"][key], abs=1e-9)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_model_reproduces_its_per_structure_test_report(name):
    """CI-sized version of the check below: four test structures of the card's report."""
    from ase_definet.evaluate import evaluate
    from ase_definet.inference import Predictor
    from ase_definet.data.load import load_samples
    card = registry()[name]["card"]
    report = card_test_report(card)
    # one structure of each of four groups, so both densities are covered
    picked = {}
    for rec in report["per_structure"]:
        picked.setdefault(rec["group"], rec)
    by_density = sorted(picked.values(), key=lambda r: (r["density"], r["group"]))
    picked = ([r for r in by_density if r["density"] == "low"][:2]
              + [r for r in by_density if r["density"] == "high"][:2])
    ids = {r["id"] for r in picked}
    samples = [s for s in load_samples(in_repo(card["data"]["source"])).samples
               if s.info["id"] in ids]
    assert len(samples) == 4
    got = {r["id"]: r for r in evaluate(Predictor(name), samples, progress=False)["per_structure"]}
    for rec in picked:
        for key in ("mae", "a3"):
            assert abs(got[rec["id"]]["model"][key] - rec["model"][key]) < 1e-6
            assert abs(got[rec["id"]]["dummy"][key] - rec["dummy"][key]) < 1e-9


@pytest.mark.slow
@pytest.mark.parametrize("name", SHIPPED)
def test_card_test_metrics_reproduce(name):
    """Re-evaluating the shipped model on its test split gives the card's numbers."""
    from ase_definet.data.splits import apply_split
    from ase_definet.evaluate import evaluate
    from ase_definet.inference import Predictor
    from ase_definet.data.load import load_samples
    card = registry()[name]["card"]
    samples = load_samples(in_repo(card["data"]["source"])).samples
    split = (ROOT / card["data"]["test_split"] if card["data"].get("test_split")
             else WEIGHTS / f"{name}.split.json")
    test = apply_split(samples, split, unassigned="drop")["test"]
    report = evaluate(Predictor(name), test, progress=False)
    for key in ("mae", "a3"):
        assert abs(report["overall"]["model"][key]
                   - card["test"]["overall"]["model"][key]) < 1e-6
    assert json.loads(json.dumps(report["overall"]["n"])) == card["test"]["overall"]["n"]
