"""benchmarks/oracle_speed.py: arms run side by side and report whether results changed."""
from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import ROOT


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "benchmarks/oracle_speed.py", *args],
                          cwd=ROOT, capture_output=True, text=True)


def test_unknown_arm_is_refused():
    out = _run("--arms", "stock,turbo")
    assert out.returncode != 0 and "--arms: choose from stock,heap,ondemand,ftz" in out.stderr


def test_worker_arms_match_the_stock_calculator_bit_for_bit():
    pytest.importorskip("chgnet")
    out = _run("--steps", "2", "--repeats", "1", "--arms", "stock,ftz",
               "--where", "material=MoS2", "--where", "density=low")
    assert out.returncode == 0, out.stderr
    rows = [line for line in out.stdout.splitlines() if line.startswith(("| stock", "| ftz"))]
    assert len(rows) == 2 and all(r.rstrip().endswith("| bit-identical |") for r in rows)
    assert ("worker settings accepted (mallopt; flush-to-zero in ftz): True" in out.stdout
            or sys.platform != "linux")
