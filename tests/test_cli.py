"""The `definet` command line, end to end on small inputs."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import torch
from ase.io import read, write

from ase_definet import DefiNet, DefiNetConfig
from ase_definet.cli import main
from ase_definet.weights import save_checkpoint

from conftest import ROOT


def _checkpoint(path):
    torch.manual_seed(0)
    save_checkpoint(path, DefiNet(DefiNetConfig(hidden=16, num_rbf=8)))
    return path


def test_relax_multiframe_any_format(tmp_path, capsys):
    ckpt = _checkpoint(tmp_path / "m.pt")
    src = ROOT / "examples" / "data" / "MoS2_defects.extxyz"
    out = tmp_path / "out.extxyz"
    assert main(["relax", str(src), "--host", "MoS2", "--model", str(ckpt), "-o", str(out),
                 "--quiet", "--batch-size", "1", "--threads", "1"]) == 0
    frames, inputs = read(out, ":"), read(src, ":")
    assert len(frames) == len(inputs) == 2
    for f, a in zip(frames, inputs):
        assert f.get_chemical_symbols() == a.get_chemical_symbols()
        assert 0 < np.abs(f.positions - a.positions).max() < 1.0
    # a single-frame format with two structures: one file each
    assert main(["relax", str(src), "--host", "MoS2", "--model", str(ckpt),
                 "-o", str(tmp_path / "POSCAR"), "--format", "vasp", "--quiet"]) == 0
    assert (tmp_path / "POSCAR_0001").exists() and (tmp_path / "POSCAR_0002").exists()


def test_relax_with_calculator_records_residual_steps(tmp_path, emt_store):
    from ase_definet.data.store import read_frames
    ckpt = _checkpoint(tmp_path / "m.pt")
    frames = read_frames(emt_store / "samples.extxyz")[:2]
    for f in frames:
        f.arrays.pop("relaxed_positions")
    write(tmp_path / "in.extxyz", frames)
    write(tmp_path / "host.extxyz", read_frames(emt_store / "hosts.extxyz")[0])
    assert main(["relax", str(tmp_path / "in.extxyz"), "--host", str(tmp_path / "host.extxyz"),
                 "--model", str(ckpt), "-o", str(tmp_path / "out.traj"), "--calculator", "emt",
                 "--fmax", "0.05", "--quiet"]) == 0
    out = read(tmp_path / "out.traj", ":")
    assert len(out) == 2


def test_evaluate_plot_models_and_errors(tmp_path, emt_store, capsys, monkeypatch):
    ckpt = _checkpoint(tmp_path / "m.pt")
    report = tmp_path / "r.json"
    assert main(["evaluate", "--model", str(ckpt), "--data", str(emt_store), "--json",
                 str(report), "--quiet", "--where", "density=low"]) == 0
    data = json.loads(report.read_text())
    assert set(data["overall"]["model"]) >= {"mae", "a3", "a4", "a5", "a6"}
    assert "coordinate MAE" in capsys.readouterr().out
    assert main(["plot", "--model", str(ckpt), "--data", str(emt_store), "--out",
                 str(tmp_path / "plots"), "--quiet"]) == 0
    assert list((tmp_path / "plots").glob("*.png"))
    # models: registry in a temporary weights folder
    monkeypatch.setenv("ASE_DEFINET_WEIGHTS", str(tmp_path / "w"))
    card = tmp_path / "card.json"
    card.write_text(json.dumps({"summary": "test", "elements": ["Cu"], "defects": ["V_Cu"]}))
    assert main(["models", "--add", str(ckpt), "--name", "tiny", "--card", str(card),
                 "--out", str(tmp_path / "w"), "--default"]) == 0
    capsys.readouterr()
    assert main(["models"]) == 0
    listing = capsys.readouterr().out
    assert "tiny (default)" in listing and "sha256" in listing
    # a card without the full sections prints as JSON, with -v and with --json
    for flag in ("-v", "--json"):
        assert main(["models", flag]) == 0
        assert '"elements": [' in capsys.readouterr().out
    # a bad input is a clean error with exit code 2, not a traceback
    assert main(["relax", str(tmp_path / "card.json"), "--host", "MoS2", "--model", str(ckpt),
                 "-o", str(tmp_path / "x.extxyz"), "--quiet"]) != 0


def test_console_script_help():
    out = subprocess.run([sys.executable, "-m", "ase_definet.cli", "--help"],
                         capture_output=True, text=True)
    assert out.returncode == 0
    for cmd in ("relax", "generate", "train", "evaluate", "residual", "plot", "models"):
        assert cmd in out.stdout


def test_closed_output_pipe_is_not_an_error(tmp_path, emt_store):
    """`definet ... | head`: the reader closing early ends the command quietly."""
    import subprocess
    import sys
    proc = subprocess.Popen([sys.executable, "-m", "ase_definet.cli", "evaluate", "--model",
                             str(_checkpoint(tmp_path / "m.pt")), "--data", str(emt_store),
                             "--quiet", "--threads", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    proc.stdout.close()                 # before the command has written anything
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=300) == 0, err
    assert "Broken pipe" not in err and "Traceback" not in err
