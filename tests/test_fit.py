"""`definet fit`: host file -> data -> split -> training -> test report -> relax.

The whole path on fcc Cu with EMT, CI-sized (a tiny model, a 20 s budget).
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ase.build import bulk
from ase.io import read, write

from ase_definet.cli import main
from ase_definet.weights import checkpoint_source, read_checkpoint

TINY = json.dumps({"hidden": 16, "num_rbf": 8, "cutoff": 4.5, "max_neighbors": 24})
ROOT = Path(__file__).resolve().parents[1]


def _fit_args(host: Path, out: Path) -> list[str]:
    return ["fit", "--host", str(host), "--supercell", "2x2x2",
            "--defects", "vacancy:Cu,substitution:Cu>Ni", "--density", "low",
            "--count", "30", "--calculator", "emt", "--workers", "0",
            "--config", TINY, "--lr", "2e-3", "--max-time", "20", "--quiet",
            "--out", str(out)]


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fit")
    host = tmp / "Cu.vasp"
    write(host, bulk("Cu", "fcc", a=3.6, cubic=True), format="vasp")
    out = tmp / "cu_model"
    assert main(_fit_args(host, out)) == 0
    return host, out


def test_fit_leaves_data_run_model_and_test_report(fitted):
    _, out = fitted
    for rel in ("data/manifest.json", "run/best.pt", "run/split.json", "run/metrics.csv",
                "model.pt", "test.json"):
        assert (out / rel).is_file(), rel
    report = json.loads((out / "test.json").read_text())
    split = json.loads((out / "run" / "split.json").read_text())
    test_ids = split["test"]
    assert report["overall"]["n"] == len(report["per_structure"]) == len(test_ids) > 0
    # the Dummy comparison: both errors and the improvement over the Dummy
    overall = report["overall"]
    assert overall["dummy"]["mae"] > 0
    assert np.isfinite(overall["model"]["mae"])
    assert "mae" in overall["improvement"]


def test_fit_model_card_lists_elements_defects_and_scope(fitted):
    _, out = fitted
    card = read_checkpoint(out / "model.pt")["meta"]["card"]
    assert card["elements"] == ["Cu", "Ni"]
    assert set(card["defects"]) == {"V_Cu", "Ni_Cu"}
    assert card["hosts"] == ["Cu"]
    assert card["scope"]
    # the exported file has no training state, only what prediction needs
    assert "optimizer" not in read_checkpoint(out / "model.pt")


def test_relax_with_fit_folder_and_card_refuses_out_of_scope(fitted, tmp_path, capsys):
    host, out = fitted
    sc = read(host) * (2, 2, 2)
    ni = sc.copy()
    ni[0].symbol = "Ni"
    del ni[5]
    ni.rattle(0.02, seed=1)
    write(tmp_path / "ni.vasp", ni, format="vasp")
    pristine = tmp_path / "host.vasp"
    write(pristine, sc, format="vasp")
    assert main(["relax", str(tmp_path / "ni.vasp"), "--host", str(pristine), "--model",
                 str(out), "-o", str(tmp_path / "ni_relaxed.extxyz"), "--quiet"]) == 0
    relaxed = read(tmp_path / "ni_relaxed.extxyz")
    assert relaxed.get_chemical_formula() == ni.get_chemical_formula()
    ag = sc.copy()
    ag[0].symbol = "Ag"                           # Ag is on no card of this model
    write(tmp_path / "ag.vasp", ag, format="vasp")
    assert main(["relax", str(tmp_path / "ag.vasp"), "--host", str(pristine), "--model",
                 str(out), "-o", str(tmp_path / "ag_relaxed.extxyz"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "Ag" in err and "not in the model card" in err
    assert not (tmp_path / "ag_relaxed.extxyz").exists()


def test_rerun_resumes_without_new_structures(fitted, capsys):
    host, out = fitted
    before = (out / "run" / "split.json").read_text()
    args = _fit_args(host, out)
    # the same command; a short budget only to keep CI fast (a rerun trains on from
    # last.pt for one more --max-time)
    args[args.index("--max-time") + 1] = "2"
    assert main(args) == 0
    printed = capsys.readouterr().out
    summary = json.loads(printed.strip().splitlines()[-1])
    assert summary["generate"]["already_done"] == summary["generate"]["planned"] == 30
    assert (out / "run" / "split.json").read_text() == before
    assert "dummy" in printed


def test_model_folder_without_model_pt_is_refused(tmp_path, capsys):
    from ase_definet.errors import NoWeightsError
    empty = tmp_path / "unfinished"
    empty.mkdir()
    with pytest.raises(NoWeightsError, match="holds no model.pt"):
        checkpoint_source(empty)
    host = tmp_path / "Cu.vasp"
    write(host, bulk("Cu", "fcc", a=3.6, cubic=True), format="vasp")
    assert main(["relax", str(host), "--host", str(host), "--model", str(empty),
                 "-o", str(tmp_path / "r.extxyz"), "--quiet"]) == 2
    assert "holds no model.pt" in capsys.readouterr().err


def test_bad_fit_recipe_is_exit_2_and_leaves_no_folder(tmp_path, capsys):
    host = tmp_path / "Cu.vasp"
    write(host, bulk("Cu", "fcc", a=3.6, cubic=True), format="vasp")
    out = tmp_path / "never"
    args = _fit_args(host, out)
    args[args.index("vacancy:Cu,substitution:Cu>Ni")] = "vacancy:Ga"
    assert main(args) == 2
    assert "has no Ga" in capsys.readouterr().err
    assert not out.exists()


def test_own_material_example_help():
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "own_material.py"),
                           "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "--max-time" in done.stdout and "--count" in done.stdout
