"""benchmarks/compare_reports.py: side-by-side per-group table of two reports."""
from __future__ import annotations

import json
import subprocess
import sys

from conftest import ROOT


def _report(groups: dict[str, tuple[float, float]]) -> dict:
    return {"groups": {g: {"n": 3, "improvement": {"mae": m, "a3": a}}
                       for g, (m, a) in groups.items()}}


def test_table_means_and_targets(tmp_path):
    a = _report({"MoS2/low": (90.0, 86.0), "BP/high": (71.0, 69.0)})
    b = _report({"MoS2/low": (80.0, 80.0), "BP/high": (72.0, 75.0)})
    paths = []
    for name, rep in (("a", a), ("b", b)):
        p = tmp_path / f"{name}.json"
        p.write_text(json.dumps(rep))
        paths.append(f"{name}={p}")
    out = subprocess.run([sys.executable, "benchmarks/compare_reports.py", *paths], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    rows = {line.split(" | ")[0].lstrip("| "): line for line in out.splitlines()}
    assert rows["MoS2/low"] == "| MoS2/low | 3 | 90.0 | 86.0 | 80.0 | 80.0 |"
    assert out.index("MoS2/low") < out.index("BP/high")       # low density first
    assert "| 80.5 | 77.5 | 76.0 | 77.5 |" in rows["mean over groups"]
    # a: MoS2/low meets 85 %, BP/high misses 70 % on A3; b: only BP/high meets
    assert "1 of 2 |  | 1 of 2" in rows["groups at target"]
    b["groups"]["BP/high"]["n"] = 5                             # another test set
    (tmp_path / "b.json").write_text(json.dumps(b))
    out = subprocess.run([sys.executable, "benchmarks/compare_reports.py", *paths], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    assert "| BP/high | 3/5 |" in out
    bad = subprocess.run([sys.executable, "benchmarks/compare_reports.py", "x.json"],
                         cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 2 and "NAME=report.json" in bad.stdout
