"""experiments/probes/oracle_noise.py: the oracle relaxes test structures again and is scored."""
from __future__ import annotations

import json
import subprocess
import sys

from conftest import ROOT, store_samples


def _run(store, split, out, sigma: float | None = None, *extra: str,
         model: str = "none") -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "experiments/probes/oracle_noise.py", "--data", str(store),
         "--split-file", str(split), "--subset", "train", "--per-group", "3",
         *(() if sigma is None else ("--sigma", str(sigma))), "--calculator", "emt",
         "--model", model, "--workers", "1", "--out", str(out), *extra],
        cwd=ROOT, capture_output=True, text=True)


def test_rerun_reproduces_labels_and_resumes(emt_store, tmp_path):
    from ase_definet.data.splits import split_samples, write_split
    split = write_split(split_samples(store_samples(emt_store), seed=0), tmp_path / "split.json")

    exact = _run(emt_store, split, tmp_path / "s0", 0.0)
    assert exact.returncode == 0, exact.stderr
    report = json.loads((tmp_path / "s0" / "oracle_rerun.json").read_text())
    assert report["overall"]["n"] == 3
    # same start, same deterministic oracle: the label itself
    assert report["overall"]["model"]["mae"] < 1e-6
    assert "| Cu-fcc/low | 3 | 100.0 | 100.0 |" in exact.stdout
    assert not (tmp_path / "s0" / "model.json").exists()

    shaken = _run(emt_store, split, tmp_path / "s1", 0.05)
    assert shaken.returncode == 0, shaken.stderr
    log = (tmp_path / "s1" / "relaxed.jsonl").read_text().splitlines()
    moved = json.loads((tmp_path / "s1" / "oracle_rerun.json").read_text())
    # a perturbed start ends near, not on, the label (fmax 0.01 leaves some slack)
    assert moved["overall"]["model"]["mae"] > 1e-4
    assert moved["settings"]["sigma_A"] == 0.05

    again = _run(emt_store, split, tmp_path / "s1", 0.05)       # resume: nothing to redo
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "s1" / "relaxed.jsonl").read_text().splitlines() == log
    assert "oracle rerun" not in again.stderr                   # no progress bar: no work
    mixed = _run(emt_store, split, tmp_path / "s1", 0.0)         # other sigma, same folder
    assert mixed.returncode == 2 and "holds reruns with start input, sigma 0.05" in mixed.stderr


def test_continuing_from_the_label_measures_its_convergence(emt_store, tmp_path):
    import numpy as np

    from ase_definet import DefiNet, DefiNetConfig
    from ase_definet.data.splits import split_samples, write_split
    from ase_definet.weights import save_checkpoint
    split = write_split(split_samples(store_samples(emt_store), seed=0), tmp_path / "split.json")
    model = tmp_path / "tiny.pt"
    save_checkpoint(model, DefiNet(DefiNetConfig(hidden=8, num_rbf=4)))

    run = _run(emt_store, split, tmp_path / "tight", None, "--start", "label",
               "--fmax", "0.0005", model=str(model))
    assert run.returncode == 0, run.stderr
    report = json.loads((tmp_path / "tight" / "oracle_rerun.json").read_text())
    settings = report["settings"]
    assert settings["start"] == "label" and settings["sigma_A"] == 0.0
    assert "fmax 0.0005 eV/Å" in settings["protocol"]
    # the label was relaxed to fmax 0.01: going on to 0.0005 moves the atoms (here by
    # about a fifth of the Dummy error), stays in the label's basin and only lowers the energy
    assert 0 < report["overall"]["model"]["mae"] < 0.5 * report["overall"]["dummy"]["mae"]
    assert max(settings["energy_diff_meV"].values()) <= 1e-3
    assert min(settings["steps"].values()) > 0
    shifts = np.array(list(settings["shift_out_of_plane_A"].values())
                      + list(settings["shift_in_plane_A"].values()))
    assert np.all(shifts >= 0) and shifts.max() > 0
    assert "mean |shift| from the label" in run.stdout
    # the model is scored against the labels and against the new end points
    vs_label = json.loads((tmp_path / "tight" / "model.json").read_text())
    vs_end = json.loads((tmp_path / "tight" / "model_vs_endpoint.json").read_text())
    assert vs_label["overall"]["n"] == vs_end["overall"]["n"] == 3
    assert vs_label["overall"]["dummy"]["mae"] != vs_end["overall"]["dummy"]["mae"]
    assert "model_vs_endpoint" in run.stdout

    other = _run(emt_store, split, tmp_path / "tight", 0.0)     # input reruns, same folder
    assert other.returncode == 2 and "holds reruns with start label" in other.stderr


def test_no_structure_selected_is_an_error(emt_store, tmp_path):
    run = subprocess.run(
        [sys.executable, "experiments/probes/oracle_noise.py", "--data", str(emt_store),
         "--subset", "all", "--where", "supercell=12x12", "--calculator", "emt",
         "--model", "none", "--out", str(tmp_path / "none")],
        cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 2 and "no structures selected" in run.stderr
