"""DefiNetRelaxer: prediction in place, ASE optimizer behaviour, real EMT fallback."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.calculators.calculator import Calculator, all_changes
from ase.calculators.emt import EMT
from ase.constraints import FixAtoms, FixCartesian
from ase.io import read

from ase_definet import DefiNet, DefiNetConfig, DefiNetRelaxer
from ase_definet.errors import DeviceError, NoWeightsError
from ase_definet.inference import Predictor


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return DefiNet(DefiNetConfig(hidden=16, num_rbf=8, cutoff=4.0))


def cu_defect():
    host = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(3)
    atoms = host.copy()
    del atoms[0]
    atoms[5].symbol = "Au"
    return atoms, host


def test_prediction_only_in_place_without_calculator(net):
    atoms, host = cu_defect()
    before = atoms.copy()
    log = io.StringIO()
    r = DefiNetRelaxer(atoms, host=host, model=net, logfile=log)
    assert r.run() is True
    assert r.nsteps == 0 and r.predicted
    assert atoms.get_chemical_symbols() == before.get_chemical_symbols()
    assert np.allclose(atoms.cell, before.cell)
    assert np.abs(atoms.positions - before.positions).max() > 0
    assert np.allclose(atoms.positions, r.prediction)
    line = log.getvalue().splitlines()[0]
    assert line.startswith("DefiNet:    0 ") and "1 vacancies, 1 substitutions" in line
    assert set(r.timings) >= {"match", "graph", "network", "total"}


def test_emt_fallback_converges_with_trajectory_and_log(net, tmp_path):
    atoms, host = cu_defect()
    atoms.calc = EMT()
    unrelaxed = atoms.positions.copy()
    log = io.StringIO()
    traj = tmp_path / "relax.traj"
    r = DefiNetRelaxer(atoms, host=host, model=net, logfile=log, trajectory=traj)
    seen = []
    r.attach(lambda: seen.append(r.nsteps))
    assert r.run(fmax=0.05, steps=200) is True
    assert r.nsteps > 0
    assert np.sqrt((atoms.get_forces() ** 2).sum(1)).max() < 0.05
    frames = read(traj, ":")
    assert len(frames) == r.nsteps + 2           # unrelaxed, prediction, residual steps
    assert np.allclose(frames[0].positions, unrelaxed)
    assert np.allclose(frames[1].positions, r.prediction)
    assert frames[1].calc is not None            # the prediction frame has energy/forces
    lines = log.getvalue().splitlines()
    assert lines[0].startswith("DefiNet:")
    assert sum(line.startswith("BFGS:") for line in lines) == r.nsteps + 1
    assert seen[0] == 0 and seen[-1] == r.nsteps   # observers: prediction, then each step
    d = r.todict()
    assert d["optimizer"] == "DefiNetRelaxer" and d["fallback"] == "BFGS" and d["fmax"] == 0.05


def test_irun_and_step_cap(net):
    atoms, host = cu_defect()
    atoms.calc = EMT()
    r = DefiNetRelaxer(atoms, host=host, model=net, logfile=None, optimizer="FIRE")
    flags = list(r.irun(fmax=1e-4, steps=3))
    assert flags[-1] is False and r.nsteps == 3


@pytest.mark.parametrize("name", ["Newton", "bfgs", "optimize"])
def test_unknown_optimizer_is_refused(net, name):
    # "bfgs" and "optimize" are modules of ase.optimize, not optimizer classes
    atoms, host = cu_defect()
    with pytest.raises(ValueError, match=f"unknown ASE optimizer '{name}'"):
        DefiNetRelaxer(atoms, host=host, model=net, logfile=None, optimizer=name)


def test_constraints_honoured(net):
    atoms, host = cu_defect()
    fixed = [1, 2, 3]
    atoms.set_constraint([FixAtoms(indices=fixed), FixCartesian(10, mask=(1, 1, 0))])
    before = atoms.positions.copy()
    DefiNetRelaxer(atoms, host=host, model=net, logfile=None).run()
    assert np.array_equal(atoms.positions[fixed], before[fixed])
    assert np.array_equal(atoms.positions[10, :2], before[10, :2])


class Exploding(Calculator):
    implemented_properties = ["energy", "forces"]

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        raise RuntimeError("SCF did not converge")


def test_calculator_failure_keeps_prediction_and_trajectory(net, tmp_path):
    atoms, host = cu_defect()
    atoms.calc = Exploding()
    traj = tmp_path / "t.traj"
    r = DefiNetRelaxer(atoms, host=host, model=net, logfile=None, trajectory=traj)
    with pytest.raises(RuntimeError, match="SCF did not converge"):
        r.run(fmax=0.05)
    assert np.allclose(atoms.positions, r.prediction)
    assert len(read(traj, ":")) == 1                # the unrelaxed frame survived


def test_sanity_policies(net):
    atoms, host = cu_defect()
    r = DefiNetRelaxer(atoms.copy(), host=host, model=net, logfile=None,
                       max_displacement=1e-9, on_violation="revert")
    with pytest.warns(UserWarning, match="failed sanity checks"):
        r.run()
    assert np.allclose(r.atoms.positions, atoms.positions)
    assert "moved" in r.atoms.info["definet_warnings"][0]
    kept = atoms.copy()
    with pytest.warns(UserWarning):
        DefiNetRelaxer(kept, host=host, model=net, logfile=None,
                       max_displacement=1e-9, on_violation="keep").run()
    assert not np.allclose(kept.positions, atoms.positions)
    assert kept.info["definet_warnings"]
    with pytest.raises(ValueError, match="on_violation"):
        DefiNetRelaxer(atoms, host=host, model=net, on_violation="ignore")


def test_runaway_prediction_is_reverted_by_default():
    """Bug: the default policy kept any flagged prediction, so a network whose
    coordinate updates ran away (v6 moved an atom of a 13-vacancy InSe sheet by 7e7 Å)
    handed a flung-apart structure to the calculator with only a warning."""
    torch.manual_seed(0)
    wild = DefiNet(DefiNetConfig(hidden=16, num_rbf=8, cutoff=4.0))
    with torch.no_grad():        # an untrained net scaled up: displacements of ~1e3 Å
        for layer in wild.layers:
            layer.pos_q[1].weight.mul_(1e4)
    atoms, host = cu_defect()
    before = atoms.get_positions()
    with pytest.warns(UserWarning, match="restored the unrelaxed positions"):
        DefiNetRelaxer(atoms, host=host, model=wild, logfile=None).run()
    assert np.allclose(atoms.positions, before)
    assert "max_displacement=6" in atoms.info["definet_warnings"][-1]


def test_cuda_requested_without_cuda(net):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    atoms, host = cu_defect()
    with pytest.raises(DeviceError, match="no CUDA"):
        DefiNetRelaxer(atoms, host=host, model=net, device="cuda")


def test_missing_checkpoint_is_clear(tmp_path):
    with pytest.raises(NoWeightsError, match="neither a shipped model"):
        Predictor(str(tmp_path / "nope.pt"))


def test_fresh_relaxers_share_one_cached_model(tmp_path, monkeypatch):
    """A loop of DefiNetRelaxer(atoms, host, model=path) reads the checkpoint once:
    the same module object, frozen, and no second read until the file changes or
    the cache is cleared."""
    import os

    from ase_definet import weights
    from ase_definet.model_cache import clear_model_cache
    path = tmp_path / "w.pt"
    torch.manual_seed(0)
    weights.save_checkpoint(path, DefiNet(DefiNetConfig(hidden=16, num_rbf=8, cutoff=4.0)))
    reads = []
    real = weights.read_checkpoint
    monkeypatch.setattr(weights, "read_checkpoint",
                        lambda *a, **k: reads.append(a[0]) or real(*a, **k))
    clear_model_cache()
    relaxers = []
    for _ in range(3):
        atoms, host = cu_defect()
        relaxers.append(DefiNetRelaxer(atoms, host=host, model=str(path), logfile=None))
        relaxers[-1].run()
    models = {id(r.predictor.model) for r in relaxers}
    assert len(reads) == 1 and len(models) == 1
    net = relaxers[0].predictor.model
    assert not net.training and not any(p.requires_grad for p in net.parameters())
    assert np.array_equal(relaxers[0].atoms.positions, relaxers[2].atoms.positions)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))    # the file changed
    assert Predictor(str(path), device="cpu").model is not net and len(reads) == 2
    assert clear_model_cache() == 1                                 # the old entry went
    Predictor(str(path), device="cpu")
    assert len(reads) == 3


def test_threads_apply_to_the_run_and_are_restored(net, monkeypatch):
    atoms, host = cu_defect()
    atoms.calc = EMT()
    before = torch.get_num_threads()
    want = 1 if before != 1 else 2
    seen = []
    r = DefiNetRelaxer(atoms, host=host, model=net, logfile=None, threads=want)
    r.attach(lambda: seen.append(torch.get_num_threads()))
    assert r.run(fmax=0.05, steps=200)
    assert seen and set(seen) == {want}          # prediction and every residual step
    assert torch.get_num_threads() == before
    with pytest.raises(ValueError, match="threads must be a positive integer"):
        DefiNetRelaxer(atoms, host=host, model=net, threads=0)


def test_host_preprocessing_is_reused_for_the_same_host(net):
    """Tiling, site checks, the periodic KD-tree and the host bond are derived from
    the host once; a loop that passes the same host (object, copy or name) reuses them."""
    from ase_definet.data.defects import apply_defects
    from ase_definet.data.hosts import build_host
    from ase_definet.match import _host_sites
    pristine = build_host("MoS2", 4)
    atoms = apply_defects(pristine, [0], [("vacancy", "Mo", None)])
    for host in (pristine, "MoS2"):
        DefiNetRelaxer(atoms.copy(), host=host, model=net, logfile=None, strict=False).run()
        before = _host_sites.cache_info()
        for h in (host, host, pristine.copy() if host is pristine else "MoS2"):
            DefiNetRelaxer(atoms.copy(), host=h, model=net, logfile=None, strict=False).run()
        after = _host_sites.cache_info()
        assert after.misses == before.misses and after.hits >= before.hits + 3


def test_host_file_is_read_once_per_version(net, tmp_path):
    import os

    from ase.io import write

    from ase_definet.data.defects import apply_defects
    from ase_definet.data.hosts import build_host
    from ase_definet.host_cell import _read_host_file
    pristine = build_host("MoS2", 4)
    atoms = apply_defects(pristine, [0], [("vacancy", "Mo", None)])
    path = tmp_path / "POSCAR"
    write(path, pristine, format="vasp")
    before = _read_host_file.cache_info()
    runs = []
    for _ in range(3):
        a = atoms.copy()
        DefiNetRelaxer(a, host=str(path), model=net, logfile=None, strict=False).run()
        runs.append(a.positions)
    after = _read_host_file.cache_info()
    assert after.misses == before.misses + 1 and after.hits >= before.hits + 2
    assert np.array_equal(runs[0], runs[2])
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))   # the file changed
    DefiNetRelaxer(atoms.copy(), host=str(path), model=net, logfile=None, strict=False).run()
    assert _read_host_file.cache_info().misses == before.misses + 2
