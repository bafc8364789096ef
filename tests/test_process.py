"""Process-wide settings, opt-in only: glibc malloc thresholds, subnormal flushing
in our own workers (the speed gain is benchmarks/oracle_speed.py), torch threads."""
from __future__ import annotations

import platform

import pytest

from ase_definet import process as heap

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


def test_environment_switch_turns_it_off(monkeypatch):
    def never(name):
        raise AssertionError("libc must not be opened when switched off")
    monkeypatch.setattr(heap.ctypes, "CDLL", never)
    monkeypatch.setenv("ASE_DEFINET_TUNE_MALLOC", "0")
    assert heap.keep_freed_memory() is False


def test_predictor_leaves_the_callers_malloc_alone(monkeypatch):
    """Bug: Predictor(device="cpu") changed the malloc thresholds of the importing
    program. Now only the CLI and our own workers opt in."""
    import torch
    from ase_definet import DefiNet, DefiNetConfig
    from ase_definet.inference import Predictor
    calls = []
    monkeypatch.setattr(heap.ctypes, "CDLL", lambda name: calls.append(name))
    torch.manual_seed(0)
    Predictor(DefiNet(DefiNetConfig(hidden=16, num_rbf=8)), device="cpu")
    assert calls == []


def test_cli_opts_in(monkeypatch, tmp_path):
    from ase_definet import cli
    calls = []
    monkeypatch.setattr(heap, "keep_freed_memory", lambda: calls.append(1) or True)
    assert cli.main(["models"]) == 0
    assert calls == [1]


def test_torch_threads_set_and_restored():
    import torch
    before = torch.get_num_threads()
    other = 1 if before != 1 else 2
    with heap.torch_threads(other):
        assert torch.get_num_threads() == other
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError, match="inside"):
        with heap.torch_threads(other):
            raise RuntimeError("inside")
    assert torch.get_num_threads() == before           # restored after an error too
    with heap.torch_threads(None):
        assert torch.get_num_threads() == before


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2", True])
def test_bad_thread_counts_are_refused(bad):
    with pytest.raises(ValueError, match="threads must be a positive integer"):
        heap.check_threads(bad)


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
