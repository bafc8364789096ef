"""glibc malloc thresholds for oracle workers (the speed gain is benchmarks/oracle_speed.py)."""
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
def test_only_spawned_workers_tune_the_heap(monkeypatch, module, args):
    import importlib
    mod = importlib.import_module(module)
    calls = []
    monkeypatch.setattr(mod, "keep_freed_memory", lambda: calls.append(1) or True)
    mod._init_worker(*args)                   # in the caller's process: untouched
    assert calls == []
    mod._init_worker(*args, own_process=True)  # a pool worker
    assert calls == [1]
