"""A built wheel carries the shipped default model and works outside the repository.

Builds the wheel from a copy of the sources (so a stale ``build/`` folder in the
checkout cannot leak files into it), reads its file list and metadata, installs
it with ``pip --target`` and runs ``definet models`` from a folder that is not
the repository.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

from conftest import ROOT

SOURCES = ["setup.py", "setup.cfg", "pyproject.toml", "MANIFEST.in", "LICENSE", "README.md",
           "ase_definet", "weights"]
WEIGHTS = "ase_definet/_weights/"


def _pip(*args: str, cwd: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "pip", *args], cwd=cwd, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    pytest.importorskip("setuptools", minversion="70.1")   # builds wheels without `wheel`
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()

    def skip(folder: str, names: list[str]) -> set[str]:
        out = {n for n in names if n == "__pycache__" or n.endswith(".egg-info")}
        return out | ({"data"} if Path(folder) == ROOT / "weights" else set())  # 80 MB

    for name in SOURCES:
        p = ROOT / name
        if p.is_dir():
            shutil.copytree(p, src / name, ignore=skip)
        else:
            shutil.copy2(p, src / name)
    _pip("wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp / "dist"), ".",
         cwd=src)
    wheels = list((tmp / "dist").glob("ase_definet-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def test_wheel_holds_every_registered_model_and_no_training_data(wheel):
    registry = json.loads((ROOT / "weights" / "registry.json").read_text())["models"]
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        assert json.loads(zf.read(WEIGHTS + "registry.json"))["models"] == registry
        for name, entry in registry.items():
            blob = zf.read(WEIGHTS + entry["file"])          # KeyError: not shipped
            assert hashlib.sha256(blob).hexdigest() == entry["sha256"], name
    assert any(e.get("default") for e in registry.values())
    shipped = {n for n in names if n.startswith(WEIGHTS)}
    assert all(n.endswith((".pt", ".json")) for n in shipped), shipped
    assert not [n for n in names if n.startswith(("tests/", "experiments/", "weights/"))
                or "/data/chgnet-2dmd" in n]
    assert "ase_definet/data/formats/__init__.py" in names
    assert "ase_definet/data/formats.py" not in names


def test_wheel_metadata_license_and_extras(wheel):
    with zipfile.ZipFile(wheel) as zf:
        info = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        meta = Parser().parsestr(zf.read(info).decode())
        assert any(n.endswith("LICENSE") for n in zf.namelist())
    assert meta["License"] == "MIT" or "MIT" in (meta.get("License-Expression") or "")
    assert {"chgnet", "plot", "dask", "slurm", "test", "dev"} <= set(meta.get_all("Provides-Extra"))
    requires = meta.get_all("Requires-Dist")
    plain = {r.split(";")[0].split(">")[0].split("[")[0].strip() for r in requires
             if "extra ==" not in r}
    # relaxing one file needs none of the test or oracle packages
    assert {"torch", "ase", "spglib"} <= plain
    assert not plain & {"pytest", "hypothesis", "chgnet", "matplotlib", "e3nn", "dask-jobqueue"}


def test_installed_wheel_lists_its_model_from_any_folder(wheel, tmp_path):
    target = tmp_path / "site"
    _pip("install", "--no-deps", "-q", "--target", str(target), str(wheel), cwd=tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "ASE_DEFINET_WEIGHTS"}
    env["PYTHONPATH"] = str(target)
    out = subprocess.run([sys.executable, "-m", "ase_definet.cli", "models"], cwd=elsewhere,
                         env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    default = next(line for line in out.stdout.splitlines() if "(default)" in line)
    name = default.split()[0]
    assert f"file: {target / 'ase_definet' / '_weights'}" in out.stdout, out.stdout
    probe = ("import ase_definet, ase_definet.weights as w; m = w.load_model(); "
             "print(ase_definet.__file__); print(sum(p.numel() for p in m.parameters()))")
    out = subprocess.run([sys.executable, "-c", probe], cwd=elsewhere, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    module, n_params = out.stdout.split()
    assert Path(module).is_relative_to(target)              # the installed copy, not ours
    from ase_definet.weights import load_model
    assert int(n_params) == sum(p.numel() for p in load_model(name).parameters())


# Fails the import of every package that only an extra installs.
_WITHOUT_EXTRAS = """
import sys
EXTRAS = {"chgnet", "pymatgen", "pandas", "plotly", "hypothesis", "pytest", "matplotlib",
          "e3nn", "dask_jobqueue", "sevenn"}

class NoExtras:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in EXTRAS:
            raise ImportError(f"{name} is an extra")
        return None

sys.meta_path.insert(0, NoExtras())
from ase_definet.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_relaxing_a_file_needs_no_extra(tmp_path):
    """`pip install .` without extras is enough to relax a file with the shipped model."""
    out_file = tmp_path / "relaxed.extxyz"
    cmd = [sys.executable, "-c", _WITHOUT_EXTRAS, "relax", "--threads", "1",
           str(ROOT / "examples" / "data" / "MoS2_defects.extxyz"), "--host", "MoS2",
           "-o", str(out_file)]
    out = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    from ase.io import read
    assert len(read(out_file, index=":")) == 2
