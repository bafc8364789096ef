"""``residual``, batch ``relax --calculator`` and ``tighten`` on the engine (issue #32).

The same jobs in this process, on a ``LocalCluster`` and on a real ``dask scheduler``
with two ``dask worker`` processes on 127.0.0.1 (test_distributed's cluster) give the
same structures, step for step; this process alone writes, in input order.
"""
from __future__ import annotations

import json
import textwrap
import threading

import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.io import read, write

from ase_definet import DefiNet, DefiNetConfig
from ase_definet import cli
from ase_definet.batch import relax_many
from ase_definet.data.sample import Sample
from ase_definet.data.store import read_frames
from ase_definet.data.tighten import tighten
from ase_definet.inference import Predictor
from ase_definet.residual import residual_study

from conftest import TruePredictor
from test_residual import make_samples

distributed = pytest.importorskip("distributed")
from test_distributed import _cluster, _wait  # noqa: E402  (needs distributed)

#: EMT slowed down, so that a worker can be killed while it relaxes
SLOW = textwrap.dedent("""
    import time
    from ase.calculators.emt import EMT

    class Slow(EMT):
        def calculate(self, *args, **kwargs):
            time.sleep(0.01)
            super().calculate(*args, **kwargs)

    def make():
        return Slow()
    """)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    d = tmp_path_factory.mktemp("site")
    (d / "calcpkg").mkdir()
    (d / "calcpkg" / "__init__.py").write_text("")
    (d / "calcpkg" / "slow.py").write_text(SLOW)
    return d


@pytest.fixture(scope="module")
def cluster(site):
    with _cluster(site, 2) as c:
        yield c


@pytest.fixture(scope="module")
def samples():
    return make_samples()


def _predictor() -> Predictor:
    """An untrained DefiNet: small, deterministic moves for EMT to finish."""
    torch.manual_seed(0)
    return Predictor(DefiNet(DefiNetConfig(hidden=8, num_rbf=4, cutoff=3.0)), device="cpu")


def _structures():
    """Four Cu defect cells of different sizes (so that their order shows), and the host."""
    host = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2)
    out = []
    for k, (vac, sub) in enumerate([([0], {}), ([0, 5], {}), ([], {3: "Au"}),
                                    ([1], {7: "Ni"})]):
        a = host.copy()
        for i, el in sub.items():
            a[i].symbol = el
        del a[vac]
        a.rattle(0.03, seed=k)
        out.append(a)
    return out, host


def _relaxed(**kw) -> list[list]:
    frames, host = _structures()
    return list(relax_many(frames, host, _predictor(), batch_size=3, calculator="emt",
                           fmax=0.02, steps=300, start="lower", **kw))


def _assert_same_frames(a: list, b: list) -> None:
    assert [len(f) for f in a] == [len(f) for f in b]
    for f, g in zip(a, b):
        assert g.get_chemical_symbols() == f.get_chemical_symbols()
        np.testing.assert_allclose(g.positions, f.positions, atol=1e-8)
        for key in ("definet_residual_steps", "definet_converged", "definet_start",
                    "definet", "definet_max_move"):
            assert g.info.get(key) == f.info.get(key), key
        assert g.get_potential_energy() == pytest.approx(f.get_potential_energy(), abs=1e-9)


def _assert_same_records(a: dict, b: dict) -> None:
    assert [r["id"] for r in b["per_structure"]] == [r["id"] for r in a["per_structure"]]
    for r, s in zip(a["per_structure"], b["per_structure"]):
        for start in ("unrelaxed", "predicted"):
            for key, side in r[start].items():
                if key == "wall_time":
                    continue
                if key == "energy_start":
                    assert s[start][key] == pytest.approx(side, abs=1e-9)
                    continue
                assert s[start][key]["steps"] == side["steps"]
                assert s[start][key]["converged"] == side["converged"]
                assert s[start][key]["energy"] == pytest.approx(side["energy"], abs=1e-9)


# ------------------------------------------------------------- batch relax

def test_relax_on_a_cluster_equals_the_in_process_run_in_input_order(cluster):
    here = _relaxed()
    there = _relaxed(scheduler=cluster.file)
    assert [len(b) for b in here] == [len(b) for b in there] == [3, 1]   # input batches
    _assert_same_frames([f for b in here for f in b], [f for b in there for f in b])
    assert {f.info["definet_converged"] for b in there for f in b} == {True}


def test_relax_on_a_local_cluster_equals_the_in_process_run():
    _assert_same_frames([f for b in _relaxed() for f in b],
                        [f for b in _relaxed(workers=2) for f in b])


def test_relax_refuses_workers_without_a_calculator_and_a_calculator_instance():
    frames, host = _structures()
    with pytest.raises(ValueError, match="give a calculator"):
        next(relax_many(frames, host, _predictor(), workers=2))
    with pytest.raises(ValueError, match="name or factory .* not an instance"):
        next(relax_many(frames, host, _predictor(), calculator=EMT(), workers=2))


def test_a_failing_batch_is_raised_after_the_batches_before_it(cluster):
    frames, host = _structures()
    bad = frames[0].copy()
    bad.positions[0] += 1.3            # an interstitial: refused by the matcher
    got = []
    with pytest.raises(ValueError, match="interstitial|farther than"):
        for batch in relax_many(frames[:2] + [bad], host, _predictor(), batch_size=2,
                                calculator="emt", fmax=0.05, scheduler=cluster.address):
            got.append(batch)
    assert [len(b) for b in got] == [2]                 # the first batch is not lost


def _cli_relax(tmp_path, monkeypatch, out, *extra) -> int:
    frames, host = _structures()
    write(tmp_path / "in.extxyz", frames)
    write(tmp_path / "host.extxyz", host)
    monkeypatch.setattr(cli, "_predictor", lambda args: _predictor())
    return cli.main(["relax", str(tmp_path / "in.extxyz"), "--host",
                     str(tmp_path / "host.extxyz"), "-o", str(out), "--quiet",
                     "--threads", "1", *extra])


def test_cli_relax_with_scheduler_writes_what_the_local_run_writes(cluster, tmp_path,
                                                                   monkeypatch, capsys):
    calc = ["--calculator", "emt", "--fmax", "0.02", "--batch-size", "3"]
    assert _cli_relax(tmp_path, monkeypatch, tmp_path / "here.extxyz", *calc) == 0
    assert _cli_relax(tmp_path, monkeypatch, tmp_path / "there.extxyz", *calc,
                      "--scheduler", cluster.address) == 0
    _assert_same_frames(read(tmp_path / "here.extxyz", ":"),
                        read(tmp_path / "there.extxyz", ":"))
    assert "4 of 4 converged" in capsys.readouterr().out


def test_cli_relax_cluster_usage_errors_are_exit_2(tmp_path, monkeypatch, capsys):
    assert _cli_relax(tmp_path, monkeypatch, tmp_path / "a.extxyz", "--workers", "2") == 2
    assert "workers and a scheduler run the calculator's residual steps" in \
        capsys.readouterr().err
    assert _cli_relax(tmp_path, monkeypatch, tmp_path / "b.extxyz", "--calculator", "emt",
                      "--scheduler", str(tmp_path / "no.json")) == 2
    assert "is neither an address (tcp://HOST:PORT) nor an existing scheduler file" in \
        capsys.readouterr().err
    assert not (tmp_path / "a.extxyz").exists() and not (tmp_path / "b.extxyz").exists()


# ------------------------------------------------------------- residual study

def test_residual_on_a_cluster_equals_the_in_process_study_and_resumes(cluster, samples):
    here = residual_study(TruePredictor(samples), samples, calculator="emt",
                          fmax=(0.05, 0.01), progress=False)
    seen = []
    there = residual_study(TruePredictor(samples), samples, calculator="emt",
                           fmax=(0.05, 0.01), progress=False, scheduler=cluster.file,
                           on_record=lambda r: seen.append(r["n"]))
    assert seen == [1, 2]                  # the client reports each structure once
    _assert_same_records(here, there)
    assert there["summary"] == here["summary"]
    seen.clear()
    resumed = residual_study(TruePredictor(samples), samples, calculator="emt",
                             fmax=(0.05, 0.01), progress=False, scheduler=cluster.address,
                             done=there["per_structure"][1:],
                             on_record=lambda r: seen.append(r["n"]))
    assert seen == [2]                     # only s0 was relaxed again
    _assert_same_records(here, resumed)
    with pytest.raises(ValueError, match="name or factory"):
        residual_study(TruePredictor(samples), samples, calculator=EMT(),
                       scheduler=cluster.file, progress=False)


def test_cli_residual_with_scheduler_and_its_errors(cluster, samples, tmp_path,
                                                    monkeypatch, capsys):
    from ase_definet.data.formats import write_compact
    data = write_compact(samples, tmp_path / "data.extxyz.gz")
    monkeypatch.setattr(cli, "_predictor", lambda args: TruePredictor(samples))
    base = ["residual", "--data", str(data), "--calculator", "emt", "--fmax", "0.05",
            "--quiet"]
    assert cli.main(base + ["--json", str(tmp_path / "a.json")]) == 0
    assert cli.main(base + ["--json", str(tmp_path / "b.json"), "--scheduler",
                            cluster.file]) == 0
    _assert_same_records(json.loads((tmp_path / "a.json").read_text()),
                         json.loads((tmp_path / "b.json").read_text()))
    capsys.readouterr()
    assert cli.main(base + ["--scheduler", "no-such-file.json"]) == 2
    assert "neither an address" in capsys.readouterr().err


# ------------------------------------------------------------- tighten

def test_cli_tighten_with_scheduler_equals_the_in_process_run(cluster, emt_store,
                                                              tmp_path, capsys):
    sel = ["--limit", "3", "--quiet"]
    assert cli.main(["tighten", str(emt_store), "--out", str(tmp_path / "c"),
                     "--scheduler", cluster.file, *sel]) == 0
    assert json.loads(capsys.readouterr().out)["new"] == 3
    tighten(emt_store, tmp_path / "h", limit=3, workers=0, progress=False)
    here = {f.info["id"]: f for f in read_frames(tmp_path / "h" / "samples.extxyz")}
    there = read_frames(tmp_path / "c" / "samples.extxyz")
    assert sorted(f.info["id"] for f in there) == sorted(here)
    for f in there:
        g = here[f.info["id"]]
        assert f.info["steps"] == g.info["steps"]
        np.testing.assert_allclose(f.arrays["relaxed_positions"],
                                   g.arrays["relaxed_positions"], atol=1e-10)
    assert cli.main(["tighten", str(emt_store), "--out", str(tmp_path / "e"),
                     "--scheduler", str(tmp_path / "no.json"), *sel]) == 2
    assert "neither an address" in capsys.readouterr().err


# ------------------------------------------------------------- last: kills a worker

class _Noisy:
    """A prediction: the input moved by seeded noise (no reference relaxations)."""

    def predict(self, atoms_list, hosts, batch_size=8):
        rng = np.random.default_rng(3)
        return [a.get_positions() + rng.normal(0, 0.05, (len(a), 3)) for a in atoms_list]


def test_a_lost_worker_costs_the_residual_study_nothing(cluster, site, monkeypatch):
    """Last in this file: it kills one of the cluster's two workers mid-study."""
    host = bulk("Cu", "fcc", a=3.6).repeat(2)
    samples = []
    for k in range(8):
        a = host.copy()
        del a[k % 8]
        a.rattle(0.05, seed=k)
        samples.append(Sample(a, a.get_positions(), host, {"id": f"v{k}",
                                                         "material": "Cu",
                                                         "density": "low"}))
    here = residual_study(_Noisy(), samples, calculator="emt", fmax=0.05, progress=False)
    seen, outcome = [], {}

    def run():
        try:
            outcome["report"] = residual_study(
                _Noisy(), samples, calculator="calcpkg.slow:make", fmax=0.05,
                progress=False, scheduler=cluster.file,
                on_record=lambda r: seen.append([x["id"] for x in r["per_structure"]]))
        except BaseException as err:       # reported by the assertion below
            outcome["error"] = err

    runner = threading.Thread(target=run)
    runner.start()
    with distributed.Client(scheduler_file=cluster.file, timeout=30) as client:
        busy = _wait(lambda: seen and [
            info["name"] for addr, info in client.scheduler_info()["workers"].items()
            if client.processing().get(addr)], 60, "a busy worker after one structure")
        done_before = len(seen)
        victim = cluster.workers[busy[0]]
        victim.kill()
        victim.wait()
    runner.join(120)
    assert "error" not in outcome, outcome.get("error")
    assert done_before < 8 and len(seen) == 8         # one report per structure, once
    assert [len(ids) for ids in seen] == list(range(1, 9))
    _assert_same_records(here, outcome["report"])
