"""benchmarks/compare_reports.py: side-by-side per-group table of two reports."""
from __future__ import annotations

import json
import subprocess
import sys

from conftest import ROOT


def _report(groups: dict[str, tuple[float, float]]) -> dict:
    return {"groups": {g: {"n": 3, "improvement": {"mae": m, "a3": a}}
                       for g, (m, a) in groups.items()},
            "per_structure": [{"id": "x"}]}      # as definet evaluate writes it


def _compare(tmp_path, reports: dict[str, dict] | None = None, *args: str
             ) -> subprocess.CompletedProcess:
    """Write ``reports`` as NAME.json files and run the script on them (and ``args``)."""
    argv = []
    for name, rep in (reports or {}).items():
        (tmp_path / f"{name}.json").write_text(json.dumps(rep))
        argv.append(f"{name}={tmp_path / f'{name}.json'}")
    return subprocess.run([sys.executable, "benchmarks/compare_reports.py", *argv, *args],
                          cwd=ROOT, capture_output=True, text=True)


def test_table_means_and_targets(tmp_path):
    a = _report({"MoS2/low": (90.0, 86.0), "BP/high": (71.0, 69.0)})
    b = _report({"MoS2/low": (80.0, 80.0), "BP/high": (72.0, 75.0)})
    out = _compare(tmp_path, {"a": a, "b": b}).stdout
    rows = {line.split(" | ")[0].lstrip("| "): line for line in out.splitlines()}
    assert rows["MoS2/low"] == "| MoS2/low | 3 | 90.0 | 86.0 | 80.0 | 80.0 |"
    assert out.index("MoS2/low") < out.index("BP/high")       # low density first
    assert "| 80.5 | 77.5 | 76.0 | 77.5 |" in rows["mean over groups"]
    # a: MoS2/low meets 85 %, BP/high misses 70 % on A3; b: only BP/high meets
    assert "1 of 2 |  | 1 of 2" in rows["groups at target"]
    b["groups"]["BP/high"]["n"] = 5                             # another test set
    assert "| BP/high | 3/5 |" in _compare(tmp_path, {"a": a, "b": b}).stdout
    bad = _compare(tmp_path, None, "x.json")
    assert bad.returncode == 2 and "NAME=report.json" in bad.stdout


def _residual(reductions: dict[str, tuple[int, float, float]], ids: list[str]) -> dict:
    """A residual report: {scope: (n, % fewer, max dE)} for one fmax, scope '' = all."""
    def summary(scope: str) -> dict:
        n, pct, de = reductions[scope]
        return {"0.05": {"reduction_pct": pct, "dE_meV_max": de}}
    return {"n": reductions[""][0], "summary": summary(""),
            "by_density": {d: {"n": reductions[d][0], "summary": summary(d)}
                           for d in ("low", "high") if d in reductions},
            "per_structure": [{"id": i} for i in ids]}


def test_residual_reports_side_by_side(tmp_path):
    a = _residual({"": (3, 80.0, 5.0), "low": (2, 90.0, 1.0), "high": (1, 40.0, 5.0)},
                  ["x", "y", "z"])
    b = _residual({"": (3, 70.0, 9.5), "low": (2, 85.0, 2.0), "high": (1, 30.0, 9.5)},
                  ["x", "y", "z"])
    out = _compare(tmp_path, {"a": a, "b": b}).stdout
    assert "| all | 0.05 | 3 | 80.0 | 5.0 | 70.0 | 9.5 |" in out
    assert "| low | 0.05 | 2 | 90.0 | 1.0 | 85.0 | 2.0 |" in out
    assert "| high | 0.05 | 1 | 40.0 | 5.0 | 30.0 | 9.5 |" in out
    assert "different structures" not in out
    b["per_structure"] = [{"id": i} for i in ("x", "y", "w")]
    assert "different structures" in _compare(tmp_path, {"a": a, "b": b}).stdout
    mixed = _compare(tmp_path, {"a": a, "e": _report({"MoS2/low": (90.0, 86.0)})})
    assert mixed.returncode == 2 and "mix of evaluate and residual" in mixed.stdout


def test_null_values_print_na(tmp_path):
    """Bug: a JSON null (NaN written by ``definet evaluate``/``residual``) raised
    TypeError in the ``:.1f`` cells; it prints n/a and is left out of the mean."""
    rep = _report({"MoS2/low": (90.0, 86.0), "BP/high": (70.0, 74.0)})
    rep["groups"]["BP/high"]["improvement"]["mae"] = None
    res = _residual({"": (2, 80.0, 5.0), "low": (2, 80.0, 5.0)}, ["x", "y"])
    res["summary"]["0.05"]["reduction_pct"] = None
    out = _compare(tmp_path, {"a": rep})
    assert out.returncode == 0
    assert "| BP/high | 3 | n/a | 74.0 |" in out.stdout
    assert "| mean over groups | | 90.0 | 80.0 |" in out.stdout
    out = _compare(tmp_path, {"a": res})
    assert out.returncode == 0 and "| all | 0.05 | 2 | n/a | 5.0 |" in out.stdout


def test_means_over_common_groups(tmp_path):
    """A specialist's report (fewer groups) beside a joint model's: means compare like
    with like, over the groups both have; the others still get their rows."""
    joint = _report({"MoS2/low": (90.0, 90.0), "BP/high": (40.0, 50.0)})
    spec = _report({"BP/high": (72.0, 75.0)})
    out = _compare(tmp_path, {"joint": joint, "spec": spec})
    assert out.returncode == 0
    assert "| MoS2/low | 3/0 | 90.0 | 90.0 | n/a | n/a |" in out.stdout
    assert "| mean over groups (the 1 in all reports) | | 40.0 | 50.0 | 72.0 | 75.0 |" \
        in out.stdout
    assert "| groups at target (the 1 in all reports) | | 0 of 1 |  | 1 of 1 |  |" \
        in out.stdout


def test_balanced_table_for_reports_with_strata(tmp_path):
    """Issue #29: reports that carry strata also get the concentration-balanced
    improvement and the share of structures worse than the Dummy, side by side."""
    a = _report({"MoS2/high": (55.0, 60.0)})
    a["groups"]["MoS2/high"]["worse_than_dummy"] = {"n": 1, "share": 1 / 3}
    a["strata"] = {"MoS2/high": {"balanced": {"improvement": {"mae": 40.0, "a3": 45.5}}}}
    b = json.loads(json.dumps(a))
    b["strata"]["MoS2/high"]["balanced"]["improvement"]["mae"] = None     # NaN in the report
    out = _compare(tmp_path, {"a": a, "b": b}).stdout
    assert "| group | a balanced MAE % | a balanced A3 % | a worse than Dummy |" in out
    assert "| MoS2/high | 40.0 | 45.5 | 1 of 3 (33.3 %) | n/a | 45.5 | 1 of 3 (33.3 %) |" in out
    del b["strata"]                         # an older report: no second table
    assert "balanced" not in _compare(tmp_path, {"a": a, "b": b}).stdout
