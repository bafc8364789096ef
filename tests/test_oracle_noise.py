"""benchmarks/oracle_noise.py: the oracle relaxes test structures again and is scored."""
from __future__ import annotations

import json
import subprocess
import sys

from conftest import ROOT, store_samples


def _run(store, split, out, sigma: float) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "benchmarks/oracle_noise.py", "--data", str(store),
         "--split-file", str(split), "--subset", "train", "--per-group", "3",
         "--sigma", str(sigma), "--calculator", "emt", "--model", "none",
         "--workers", "1", "--out", str(out)],
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
    assert mixed.returncode == 2 and "holds reruns with sigma 0.05" in mixed.stderr
