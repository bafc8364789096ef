"""The example scripts compile, fail clearly without weights or VASP, and run
their whole workflow with a cheap stand-in for CHGNet / VASP."""
from __future__ import annotations

import json
import os
import py_compile
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from ase.calculators.calculator import Calculator, all_changes

from ase_definet import DefiNet, DefiNetConfig, match_host
from ase_definet.weights import save_checkpoint, sha256
from conftest import load_script

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SCRIPTS = ["prerelax_then_chgnet.py", "prerelax_then_vasp.py"]
VASP_VARS = ("ASE_VASP_COMMAND", "VASP_COMMAND", "VASP_SCRIPT", "VASP_PP_PATH")


def load(name: str):
    return load_script(EXAMPLES / name)


class Harmonic(Calculator):
    """Springs (k = 1 eV/Å²) tying each atom to its ideal MoS2 host site."""

    implemented_properties = ["energy", "forces"]

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        n = len(self.atoms)
        d = self.atoms.positions - match_host(self.atoms, "MoS2").site_positions[:n]
        self.results = {"energy": 0.5 * float((d ** 2).sum()), "forces": -d}


class FakeVasp(Harmonic):
    """Stands in for ase.calculators.vasp.Vasp: NSW > 0 relaxes "internally"."""

    made: list[dict] = []

    def __init__(self, directory: str, **settings):
        super().__init__(directory=directory)
        self.settings = settings
        FakeVasp.made.append(dict(settings, directory=directory))

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        if self.settings["nsw"] > 0:        # like Vasp.update_atoms reading CONTCAR
            atoms.positions = match_host(atoms, "MoS2").site_positions[:len(atoms)]
        super().calculate(atoms, properties, system_changes)


@pytest.fixture
def untrained_weights(tmp_path, monkeypatch):
    """A registry with an untrained default model, so `model=None` works."""
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "tiny.pt", DefiNet(DefiNetConfig(hidden=8, num_rbf=4)))
    reg = {"models": {"examples-test": {"file": "tiny.pt", "default": True, "card": {},
                                        "sha256": sha256(tmp_path / "tiny.pt")}}}
    (tmp_path / "registry.json").write_text(json.dumps(reg))
    monkeypatch.setenv("ASE_DEFINET_WEIGHTS", str(tmp_path))


@pytest.mark.parametrize("name", SCRIPTS)
def test_examples_compile(name, tmp_path):
    py_compile.compile(str(EXAMPLES / name), cfile=str(tmp_path / "x.pyc"), doraise=True)


def test_vasp_example_without_vasp_exits_with_clear_message(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in VASP_VARS}
    proc = subprocess.run([sys.executable, str(EXAMPLES / "prerelax_then_vasp.py")],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stderr
    assert "VASP is not configured" in proc.stderr
    assert "ASE_VASP_COMMAND" in proc.stderr and "VASP_PP_PATH" in proc.stderr
    assert list(tmp_path.iterdir()) == []              # nothing written


def test_examples_without_weights_exit_1(monkeypatch, capsys, tmp_path):
    import ase_definet.weights as weights
    monkeypatch.setattr(weights, "registry", lambda: {})
    for name in SCRIPTS:
        module = load(name)
        if name == "prerelax_then_vasp.py":
            monkeypatch.setenv("ASE_VASP_COMMAND", "false")
            monkeypatch.setenv("VASP_PP_PATH", str(tmp_path))
        assert module.main(["--supercell", "3"]) == 1
        assert "no shipped DefiNet weights" in capsys.readouterr().err


def test_chgnet_example_workflow(untrained_weights, monkeypatch, capsys):
    module = load("prerelax_then_chgnet.py")
    monkeypatch.setattr(module, "make_calculator", lambda name: Harmonic())
    assert module.main(["--supercell", "3", "--fmax", "0.05"]) == 0
    out = capsys.readouterr().out
    assert "MoS2 3x3: 26 atoms" in out
    assert "residual steps" in out and "BFGS only:" in out and "meV" in out


def test_vasp_example_workflow(untrained_weights, monkeypatch, capsys, tmp_path):
    module = load("prerelax_then_vasp.py")
    monkeypatch.setenv("ASE_VASP_COMMAND", "vasp_gam")
    monkeypatch.setenv("VASP_PP_PATH", str(tmp_path))
    monkeypatch.setattr(module, "Vasp", FakeVasp)
    monkeypatch.setattr(module, "ionic_steps", lambda directory: 4)
    FakeVasp.made = []
    args = ["--supercell", "3", "--workdir", str(tmp_path / "runs"), "--from-scratch"]
    assert module.main(args) == 0
    out = capsys.readouterr().out
    assert "(a) DefiNet + ASE BFGS:" in out and "(b) DefiNet + VASP:" in out
    assert "VASP from scratch:" in out and "4 ionic steps" in out
    a, b, scratch = FakeVasp.made
    assert (a["nsw"], a["ibrion"], b["nsw"], b["ibrion"]) == (0, -1, 100, 2)
    for s in (a, b, scratch):
        assert (s["xc"], s["encut"], s["ediff"], s["ediffg"]) == ("PBE", 500, 1e-6, -0.01)
        assert s["kpts"] == (1, 1, 1) and s["gamma"] is True
        assert s["ispin"] == 1        # S vacancy + Se on S: even electron count
    assert np.isclose(module.VASP_SETTINGS["ediffg"], -0.01)
