"""Oracle worker process settings: glibc malloc thresholds, subnormal flushing
(the speed gain is benchmarks/oracle_speed.py)."""
from __future__ import annotations

import platform

import pytest

from ase_definet.data import heap

glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")


@glibc
def test_settings_accepted_on_glibc():
    assert heap.keep_freed_memory() is True


def test_refused_setting_reported(monkeypatch):
    class Libc:                    # a libc whose mallopt refuses (returns 0)
        @staticmethod
        def mallopt(param, value):
            return 0
    monkeypatch.setattr(heap.ctypes, "CDLL", lambda name: Libc)
    assert heap.keep_freed_memory() is False


def test_no_libc_is_a_no_op(monkeypatch):
    monkeypatch.setattr(heap.ctypes.util, "find_library", lambda name: "libdoesnotexist.so")
    assert heap.keep_freed_memory() is False


@pytest.mark.parametrize("module, args", [("ase_definet.data.generate", ("emt", 1)),
                                          ("ase_definet.residual", ("emt", "cpu", None))])
def test_only_spawned_workers_tune_their_process(monkeypatch, module, args):
    import importlib
    mod = importlib.import_module(module)
    calls = []
    monkeypatch.setattr(mod, "tune_worker", lambda: calls.append(1) or {})
    mod._init_worker(*args)                   # in the caller's process: untouched
    assert calls == []
    mod._init_worker(*args, own_process=True)  # a pool worker
    assert calls == [1]


def test_tune_worker_flushes_subnormals_in_its_own_process():
    import subprocess
    import sys
    code = ("import torch; from ase_definet.data.worker import tune_worker; "
            "x = torch.tensor([1e-39]); before = (x * 1.0).item(); s = tune_worker(); "
            "print(before > 0, (x * 1.0).item() == 0.0, s['flush_denormal'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["True", "True", "True"]
