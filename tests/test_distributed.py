"""Oracle jobs on a real dask cluster: same results, lost workers, no silent hangs.

A ``dask scheduler`` and two ``dask worker`` processes on 127.0.0.1 (no nanny,
so killing a worker process kills the worker) run ``generate`` on an fcc Cu host
from a file with EMT (issue #32, items 2 and 3).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from contextlib import contextmanager
from types import SimpleNamespace

import numpy as np
import pytest
from ase.build import bulk
from ase.io import write

from ase_definet.data.generate import SAMPLES
from ase_definet.data.recipe import run_recipe
from ase_definet.data.store import read_frames

distributed = pytest.importorskip("distributed")

DEFECTS = "vacancy:Cu,substitution:Cu>Au,substitution:Cu>Ni"
CALC_PKG = {
    "__init__.py": "",
    # a calculator whose module imports here but not where the workers run
    "broken.py": textwrap.dedent("""
        import os
        from ase.calculators.emt import EMT

        if os.environ.get("CALCPKG_ON_WORKER"):
            raise ImportError("libfoo.so: cannot open shared object file")

        def make():
            return EMT()
        """),
    # a calculator that takes its worker process down on a defect structure, as a
    # segfault would (the pristine host, relaxed by the client, passes)
    "crash.py": textwrap.dedent("""
        import os
        from ase.calculators.emt import EMT

        class Crash(EMT):
            def calculate(self, atoms=None, *args, **kwargs):
                if set(atoms.get_chemical_symbols()) != {"Cu"} or len(atoms) % 4:
                    os._exit(7)
                super().calculate(atoms, *args, **kwargs)

        def make():
            return Crash()
        """),
}


def _wait(predicate, timeout: float, what: str):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A Cu host file and an importable package of test calculators."""
    d = tmp_path_factory.mktemp("site")
    write(d / "Cu.cif", bulk("Cu", "fcc", a=3.6, cubic=True))
    (d / "calcpkg").mkdir()
    for name, text in CALC_PKG.items():
        (d / "calcpkg" / name).write_text(text)
    return d


@contextmanager
def _cluster(site, n_workers: int):
    """``dask scheduler`` + ``dask worker --nthreads 1 --no-nanny`` processes."""
    sfile = site / f"scheduler-{time.time_ns()}.json"
    env = dict(os.environ, OMP_NUM_THREADS="1", CALCPKG_ON_WORKER="1",
               PYTHONPATH=os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]))
    quiet = dict(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    procs = [subprocess.Popen([sys.executable, "-m", "dask", "scheduler", "--host",
                               "127.0.0.1", "--port", "0", "--no-dashboard",
                               "--scheduler-file", str(sfile)], **quiet)]
    try:
        _wait(lambda: sfile.exists() and sfile.read_text().strip(), 60, "the scheduler")
        workers = [subprocess.Popen([sys.executable, "-m", "dask", "worker",
                                     "--scheduler-file", str(sfile), "--nthreads", "1",
                                     "--no-nanny", "--no-dashboard", "--host", "127.0.0.1",
                                     "--name", f"w{i}"], **quiet) for i in range(n_workers)]
        procs += workers
        with distributed.Client(scheduler_file=str(sfile), timeout=30) as client:
            client.wait_for_workers(n_workers, timeout=90)
            address = client.scheduler.address
        yield SimpleNamespace(file=str(sfile), address=address,
                              workers={f"w{i}": w for i, w in enumerate(workers)})
    finally:        # workers first and at once: a graceful close waits on the scheduler
        for p in procs[1:]:
            p.kill()
        procs[0].terminate()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()


@pytest.fixture(scope="module")
def cluster(site):
    with _cluster(site, 2) as c:
        yield c


def _fields(site, count: int, **kw) -> dict:
    return {"host": str(site / "Cu.cif"), "supercell": "2x2x2", "defects": DEFECTS,
            "count": count, "calculator": "emt", "seed": 11, **kw}


def test_a_calculator_failing_at_import_on_the_workers_stops_the_run_at_once(
        site, cluster, tmp_path, monkeypatch):
    # the client imports calcpkg.broken (and relaxes the host with it); workers cannot
    monkeypatch.syspath_prepend(str(site))
    out = tmp_path / "store"
    t0 = time.time()
    with pytest.raises(ValueError, match="libfoo.so: cannot open shared object"):
        run_recipe(out, _fields(site, 4, calculator="calcpkg.broken:make"),
                   scheduler=cluster.file, progress=False)
    assert time.time() - t0 < 30
    assert read_frames(out / SAMPLES) == [] and len(read_frames(out / "hosts.extxyz")) == 1


def test_a_scheduler_that_is_not_there_is_a_named_error(site, tmp_path, monkeypatch):
    import ase_definet.data.engine as engine
    monkeypatch.setattr(engine, "CONNECT_TIMEOUT", 2.0)
    with pytest.raises(ValueError, match="neither an address"):
        run_recipe(tmp_path / "a", _fields(site, 1), scheduler=str(tmp_path / "no.json"))
    with pytest.raises(OSError, match="Timed out|connect"):
        run_recipe(tmp_path / "b", _fields(site, 1), scheduler="tcp://127.0.0.1:9")


def test_sigint_mid_run_leaves_a_store_that_resumes(site, cluster, tmp_path):
    out = tmp_path / "store"
    cmd = [sys.executable, "-m", "ase_definet.cli", "generate", "--host",
           str(site / "Cu.cif"), "--supercell", "2x2x2", "--defects", DEFECTS,
           "--count", "40", "--calculator", "emt", "--seed", "2", "--quiet",
           "--scheduler", cluster.address, "--out", str(out)]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, OMP_NUM_THREADS="1"))
    _wait(lambda: (out / SAMPLES).exists() and len(read_frames(out / SAMPLES)) >= 3,
          90, "three frames")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted; finished work is saved" in err
    kept = read_frames(out / SAMPLES)           # complete frames only, no repair needed
    assert 3 <= len(kept) < 40
    assert json.loads((out / "manifest.json").read_text())["structures"] == len(kept)
    s = run_recipe(out, _fields(site, 40, seed=2), workers=0, progress=False)
    ids = [f.info["id"] for f in read_frames(out / SAMPLES)]
    assert len(ids) == len(set(ids)) == 40 and s["new"] == 40 - len(kept)


def test_every_worker_is_tuned_and_holds_the_oracle(site, cluster, tmp_path):
    def state() -> tuple[int, bool, bool]:      # nested: sent by value to the workers
        import torch

        from ase_definet.data.generate import worker_calculator
        subnormal = torch.tensor([1e-39]) * 1.0
        return (torch.get_num_threads(), bool(subnormal.item() == 0.0),
                type(worker_calculator()).__name__ == "EMT")

    # threads=2: not the workers' OMP_NUM_THREADS=1, so only the plugin can have set it
    s = run_recipe(tmp_path / "s", _fields(site, 2), scheduler=cluster.file, threads=2,
                   progress=False)
    assert s["new"] == 2
    with distributed.Client(scheduler_file=cluster.file, timeout=30) as client:
        found = client.run(state)
    assert len(found) == 2 and set(found.values()) == {(2, True, True)}


def test_the_cluster_run_equals_the_local_run_and_a_lost_worker_loses_nothing(
        site, cluster, tmp_path):
    """Last in this file: it kills one of the cluster's two workers."""
    fields = _fields(site, 30)
    local = run_recipe(tmp_path / "local", fields, workers=0, progress=False)
    out = tmp_path / "cluster"
    outcome = {}

    def run():
        try:
            outcome["summary"] = run_recipe(out, fields, scheduler=cluster.file,
                                            progress=False)
        except BaseException as err:       # reported by the assertion below
            outcome["error"] = err

    runner = threading.Thread(target=run)
    runner.start()
    with distributed.Client(scheduler_file=cluster.file, timeout=30) as client:
        # kill a worker while it is relaxing a structure
        busy = _wait(lambda: (len(read_frames(out / SAMPLES)) >= 3 if (
            out / SAMPLES).exists() else False) and [
            info["name"] for addr, info in client.scheduler_info()["workers"].items()
            if client.processing().get(addr)], 60, "a busy worker after three frames")
        written = len(read_frames(out / SAMPLES))
        victim = cluster.workers[busy[0]]
        victim.kill()
        victim.wait()
    runner.join(120)
    assert "error" not in outcome, outcome.get("error")
    assert written < 30 and outcome["summary"]["new"] == 30
    a = {f.info["id"]: f for f in read_frames(tmp_path / "local" / SAMPLES)}
    frames = read_frames(out / SAMPLES)
    b = {f.info["id"]: f for f in frames}
    assert len(frames) == len(b) == 30 and a.keys() == b.keys() and local["new"] == 30
    for k, f in a.items():          # structure for structure
        g = b[k]
        assert g.get_chemical_symbols() == f.get_chemical_symbols()
        np.testing.assert_allclose(g.positions, f.positions, atol=1e-10)
        np.testing.assert_allclose(g.arrays["relaxed_positions"],
                                   f.arrays["relaxed_positions"], atol=1e-8)
        assert g.info["steps"] == f.info["steps"]


def test_a_job_that_kills_its_workers_stops_a_local_run_naming_it(site, tmp_path,
                                                                  monkeypatch):
    import dask
    monkeypatch.syspath_prepend(str(site))
    t0 = time.time()
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        with pytest.raises(RuntimeError, match="killed every worker that ran it"):
            run_recipe(tmp_path / "store", _fields(site, 3, calculator="calcpkg.crash:make"),
                       workers=1, progress=False)
    assert time.time() - t0 < 90
    assert read_frames(tmp_path / "store" / SAMPLES) == []


NO_GUARD = """
from ase_definet.data.recipe import run_recipe
run_recipe({out!r}, {fields!r}, workers=1, progress=False)
"""


def test_a_script_without_a_main_guard_fails_fast_naming_the_guard(site, tmp_path):
    """Spawned workers re-import such a script; the run said nothing for minutes."""
    script = tmp_path / "no_guard.py"
    script.write_text(NO_GUARD.format(out=str(tmp_path / "store"), fields=_fields(site, 2)))
    t0 = time.time()
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=120, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode != 0 and time.time() - t0 < 90
    assert "local dask workers failed to start" in proc.stderr
    assert 'if __name__ == "__main__":' in proc.stderr


def test_a_cluster_left_without_workers_stops_the_run(site, tmp_path, monkeypatch):
    import ase_definet.data.engine as engine
    monkeypatch.setattr(engine, "WAIT_FOR_WORKERS", 3.0)
    out = tmp_path / "store"
    outcome = {}
    with _cluster(site, 1) as one:
        def run():
            try:
                run_recipe(out, _fields(site, 40), scheduler=one.file, progress=False)
            except BaseException as err:
                outcome["error"] = err

        runner = threading.Thread(target=run)
        runner.start()
        _wait(lambda: (out / SAMPLES).exists() and len(read_frames(out / SAMPLES)) >= 2,
              60, "two frames")
        one.workers["w0"].kill()
        t0 = time.time()
        runner.join(60)
        assert not runner.is_alive() and time.time() - t0 < 30
    assert isinstance(outcome.get("error"), TimeoutError), outcome
    assert "the cluster has no worker left" in str(outcome["error"])
    kept = read_frames(out / SAMPLES)
    assert 2 <= len(kept) < 40 and len({f.info["id"] for f in kept}) == len(kept)
