"""The `definet` command line, end to end on small inputs."""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys

import ase
import numpy as np
import pytest
import torch
from ase.build import mx2
from ase.io import read, write

from ase_definet import DefiNet, DefiNetConfig, __version__
from ase_definet.cli import EXIT_NOT_CONVERGED, build_parser, main
from ase_definet.match import match_host
from ase_definet.weights import save_checkpoint

from conftest import ROOT

EXAMPLE = ROOT / "examples" / "data" / "MoS2_defects.extxyz"


def _checkpoint(path):
    torch.manual_seed(0)
    save_checkpoint(path, DefiNet(DefiNetConfig(hidden=16, num_rbf=8)))
    return path


@pytest.fixture
def ckpt(tmp_path):
    return _checkpoint(tmp_path / "m.pt")


@pytest.fixture
def cu_inputs(tmp_path, emt_store):
    """Two unrelaxed Cu(Au, Ni) defect structures and their host, as files."""
    from ase_definet.data.store import read_frames
    frames = read_frames(emt_store / "samples.extxyz")[:2]
    for f in frames:
        f.arrays.pop("relaxed_positions")
        f.info.clear()
    write(tmp_path / "in.extxyz", frames)
    write(tmp_path / "host.extxyz", read_frames(emt_store / "hosts.extxyz")[0])
    return tmp_path / "in.extxyz", tmp_path / "host.extxyz"


def _relax(inputs, host, ckpt, out, *extra):
    return main(["relax", *map(str, inputs), "--host", str(host), "--model", str(ckpt),
                 "-o", str(out), "--threads", "1", *extra])


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


# ----------------------------------------------------------------- relax output

def test_relax_multiframe_any_format(tmp_path, ckpt):
    out = tmp_path / "out.extxyz"
    assert _relax([EXAMPLE], "MoS2", ckpt, out, "--quiet", "--batch-size", "1") == 0
    frames, inputs = read(out, ":"), read(EXAMPLE, ":")
    assert len(frames) == len(inputs) == 2
    for f, a in zip(frames, inputs):
        assert f.get_chemical_symbols() == a.get_chemical_symbols()
        assert 0 < np.abs(f.positions - a.positions).max() < 1.0
    # a single-frame format with two structures: one file each
    assert _relax([EXAMPLE], "MoS2", ckpt, tmp_path / "POSCAR", "--format", "vasp",
                  "--quiet") == 0
    assert (tmp_path / "POSCAR_0001").exists() and (tmp_path / "POSCAR_0002").exists()


def test_relax_prints_defects_and_largest_move_per_structure(tmp_path, ckpt, capsys):
    out = tmp_path / "out.extxyz"
    assert _relax([EXAMPLE], "MoS2", ckpt, out) == 0
    stdout = capsys.readouterr().out
    inputs, outputs = read(EXAMPLE, ":"), read(out, ":")
    moves = []
    for k, (a, f) in enumerate(zip(inputs, outputs)):
        m = match_host(a, "MoS2")
        move = np.linalg.norm(f.positions - a.positions, axis=1).max()
        moves.append(move)
        nv, ns = len(m.vacancies), len(m.substitutions)
        line = (f"{EXAMPLE}@{k}: {nv} vacanc{'y' if nv == 1 else 'ies'}, {ns} "
                f"substitution{'' if ns == 1 else 's'}; largest predicted move {move:.3f} Å")
        assert line in stdout.splitlines()
    nv = sum(len(match_host(a, "MoS2").vacancies) for a in inputs)
    assert re.search(rf"^total: 2 structures, {nv} vacancies, .*; largest predicted move "
                     rf"{max(moves):.3f} Å$", stdout, re.M)
    assert stdout.rstrip().endswith(str(out))


def test_relax_one_frame_file_is_named_without_index(tmp_path, ckpt, capsys):
    write(tmp_path / "POSCAR", read(EXAMPLE, 0), format="vasp")
    assert _relax([tmp_path / "POSCAR"], "MoS2", ckpt, tmp_path / "o.extxyz") == 0
    assert re.search(rf"^{re.escape(str(tmp_path / 'POSCAR'))}: 1 vacancy",
                     capsys.readouterr().out, re.M)


def test_relax_with_calculator_records_residual_steps(tmp_path, ckpt, cu_inputs, capsys):
    src, host = cu_inputs
    out = tmp_path / "out.traj"
    assert _relax([src], host, ckpt, out, "--calculator", "emt", "--fmax", "0.05") == 0
    frames = read(out, ":")
    assert len(frames) == 2
    stdout = capsys.readouterr().out.splitlines()
    for k, f in enumerate(frames):
        steps = f.info["definet_residual_steps"]
        assert f.info["definet_converged"] is True and steps >= 1
        # converged for real: forces of the written structure are below fmax
        from ase.calculators.emt import EMT
        f.calc = EMT()
        assert np.linalg.norm(f.get_forces(), axis=1).max() < 0.05
        line = next(s for s in stdout if s.startswith(f"{src}@{k}: "))
        assert line.endswith(f"; {steps} residual step{'' if steps == 1 else 's'}, converged")
    assert "2 of 2 converged" in next(s for s in stdout if s.startswith("total: "))


@pytest.mark.parametrize("name", ["out.extxyz", "out.traj", "POSCAR"])
def test_not_converged_is_exit_3_and_recorded_in_the_output(tmp_path, ckpt, cu_inputs,
                                                            capsys, name):
    src, host = cu_inputs
    out = tmp_path / name
    code = _relax([src], host, ckpt, out, "--calculator", "emt", "--fmax", "1e-6",
                  "--steps", "2", "--quiet")
    assert code == EXIT_NOT_CONVERGED == 3
    captured = capsys.readouterr()
    assert re.search(rf"2 of 2 residual relaxations did not converge to --fmax 1e-06 within "
                     rf"--steps 2: {re.escape(str(src))}@0, {re.escape(str(src))}@1",
                     captured.err)
    assert "0 of 2 converged" in captured.out
    sidecar = tmp_path / f"{name}.definet.json"
    if name == "POSCAR":       # vasp cannot hold info: the sidecar says it
        rows = json.loads(sidecar.read_text())["structures"]
        assert [r["converged"] for r in rows] == [False, False]
        assert [r["residual_steps"] for r in rows] == [2, 2]
        assert [r["output"] for r in rows] == [str(tmp_path / "POSCAR_0001"),
                                              str(tmp_path / "POSCAR_0002")]
        assert len(read(rows[0]["output"])) == len(read(src, 0))
    else:                      # the flag travels in each frame; no sidecar
        assert not sidecar.exists()
        assert [f.info["definet_converged"] for f in read(out, ":")] == [False, False]
        assert [f.info["definet_residual_steps"] for f in read(out, ":")] == [2, 2]


def test_sidecar_without_calculator_lists_defects(tmp_path, ckpt):
    assert _relax([EXAMPLE], "MoS2", ckpt, tmp_path / "out.cif", "--quiet") == 0
    rows = json.loads((tmp_path / "out.cif.definet.json").read_text())["structures"]
    want = [len(match_host(a, "MoS2").vacancies) for a in read(EXAMPLE, ":")]
    assert [r["vacancies"] for r in rows] == want
    assert all(r["converged"] is None and r["max_move"] > 0 for r in rows)


# ----------------------------------------------------------------- bad input

def test_garbage_poscar_is_one_line_naming_the_file(tmp_path, ckpt, capsys):
    bad = tmp_path / "POSCAR"
    bad.write_text("garbage\n1.0\nnot a cell\n")
    assert _relax([bad], "MoS2", ckpt, tmp_path / "o.extxyz", "--quiet") == 2
    line = _one_error_line(capsys.readouterr().err)
    assert re.fullmatch(rf"definet relax: error: cannot read {re.escape(str(bad))}: \w+: .+",
                        line)


def test_progress_bar_is_cleared_before_the_error(tmp_path, ckpt):
    """Without --quiet a terminal still shows only the error line."""
    bad = tmp_path / "POSCAR"
    bad.write_text("garbage\n1.0\nnot a cell\n")
    out = subprocess.run([sys.executable, "-m", "ase_definet.cli", "relax", str(bad), "--host",
                          "MoS2", "--model", str(ckpt), "-o", str(tmp_path / "o.extxyz"),
                          "--threads", "1"], capture_output=True, cwd=ROOT)
    assert out.returncode == 2
    # what a terminal shows: each carriage return starts the line over
    shown = [line.split(b"\r")[-1] for line in out.stderr.split(b"\n")]
    shown = [line.decode() for line in shown if line.strip()]
    assert len(shown) == 1 and shown[0].startswith(f"definet relax: error: cannot read {bad}")


def test_garbage_host_file_is_the_hosts_fault(tmp_path, ckpt, capsys):
    bad = tmp_path / "pristine.vasp"
    bad.write_text("garbage\n1.0\nnot a cell\n")
    assert _relax([EXAMPLE], bad, ckpt, tmp_path / "o.extxyz", "--quiet") == 2
    assert _one_error_line(capsys.readouterr().err).startswith(
        f"definet relax: error: cannot read host file {bad}: ")
    assert _relax([EXAMPLE], "NoSuchHost", ckpt, tmp_path / "o.extxyz", "--quiet") == 2
    assert _one_error_line(capsys.readouterr().err).startswith(
        "definet relax: error: host 'NoSuchHost' is neither a file nor a built-in host")


def test_non_structure_input_is_exit_2(tmp_path, ckpt, capsys):
    card = tmp_path / "card.json"
    card.write_text(json.dumps({"summary": "not a structure"}))
    assert _relax([card], "MoS2", ckpt, tmp_path / "x.extxyz", "--quiet") == 2
    assert f"cannot read {card}" in _one_error_line(capsys.readouterr().err)


def test_empty_input_file_is_named(tmp_path, ckpt, capsys):
    empty = tmp_path / "empty.extxyz"
    empty.write_text("")
    assert _relax([EXAMPLE, empty], "MoS2", ckpt, tmp_path / "o.extxyz", "--quiet") == 2
    assert _one_error_line(capsys.readouterr().err).startswith(
        f"definet relax: error: cannot read {empty}: ")


def test_missing_input_is_refused_before_the_model_loads(tmp_path, capsys):
    code = _relax([tmp_path / "nope.vasp"], "MoS2", tmp_path / "no-model.pt",
                  tmp_path / "o.extxyz", "--quiet")
    assert code == 2
    assert _one_error_line(capsys.readouterr().err) == (
        f"definet relax: error: cannot read {tmp_path / 'nope.vasp'}: no such file")


@pytest.mark.parametrize("out, fmt, says", [
    ("out.foo", None, "ASE does not know the output format of its name"),
    ("out.extxyz", "nonsense", "ASE does not know format 'nonsense'"),
    ("missing/out.extxyz", None, "folder"),
])
def test_bad_output_is_refused_before_any_work(tmp_path, capsys, out, fmt, says):
    # the model path does not exist: the output check must come first
    extra = ["--format", fmt] if fmt else []
    code = _relax([EXAMPLE], "MoS2", tmp_path / "no-model.pt", tmp_path / out, "--quiet",
                  *extra)
    assert code == 2
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith(f"definet relax: error: cannot write {tmp_path / out}: ")
    assert says in line
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_strained_builtin_host_error_suggests_own_cell(tmp_path, ckpt, capsys):
    atoms = mx2("MoS2", a=3.18, vacuum=10.0).repeat((8, 8, 1))
    del atoms[0]
    write(tmp_path / "defect.vasp", atoms, format="vasp")
    assert _relax([tmp_path / "defect.vasp"], "MoS2", ckpt, tmp_path / "o.extxyz",
                  "--quiet") == 2
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith(f"definet relax: error: {tmp_path / 'defect.vasp'}: ")
    assert re.search(r"built-in host MoS2 strained by -0\.32 % \(a = 3\.1800 Å here, "
                     r"3\.1903 Å in the host\).*--host pristine\.vasp", line)
    # in a batch of several, the error names the batch
    assert _relax([EXAMPLE, tmp_path / "defect.vasp"], "MoS2", ckpt, tmp_path / "o.extxyz",
                  "--quiet") == 2
    assert _one_error_line(capsys.readouterr().err).startswith(
        f"definet relax: error: one of {EXAMPLE}@0 ... {tmp_path / 'defect.vasp'} "
        "(--batch-size 1 names it): ")
    # the suggestion works
    write(tmp_path / "pristine.vasp", mx2("MoS2", a=3.18, vacuum=10.0), format="vasp")
    assert _relax([tmp_path / "defect.vasp"], tmp_path / "pristine.vasp", ckpt,
                  tmp_path / "o.extxyz", "--quiet") == 0
    assert "1 vacancy, 0 substitutions" in capsys.readouterr().out


def test_failure_writes_nothing_first_and_keeps_what_finished(tmp_path, ckpt, capsys):
    atoms = mx2("MoS2", a=3.18, vacuum=10.0).repeat((8, 8, 1))
    del atoms[0]
    write(tmp_path / "strained.vasp", atoms, format="vasp")
    # fails on its first structure: no output file at all
    assert _relax([tmp_path / "strained.vasp"], "MoS2", ckpt, tmp_path / "out.traj",
                  "--quiet") == 2
    assert not (tmp_path / "out.traj").exists()
    # fails on the third: the two before are written, with their record
    capsys.readouterr()
    assert _relax([EXAMPLE, tmp_path / "strained.vasp"], "MoS2", ckpt, tmp_path / "POSCAR",
                  "--quiet", "--batch-size", "1") == 2
    captured = capsys.readouterr()
    assert _one_error_line(captured.err).startswith(
        f"definet relax: error: {tmp_path / 'strained.vasp'}: ")
    rows = json.loads((tmp_path / "POSCAR.definet.json").read_text())["structures"]
    assert [r["source"] for r in rows] == [f"{EXAMPLE}@0", f"{EXAMPLE}@1"]
    assert [len(read(r["output"])) for r in rows] == [len(a) for a in read(EXAMPLE, ":")]
    assert "total: 2 structures" in captured.out


# ----------------------------------------------------------------- --tolerance

def _displaced(atoms, by=0.2):
    atoms = atoms.copy()
    atoms.positions[3] += [by, 0.0, 0.0]
    return atoms


def test_relax_tolerance(tmp_path, ckpt, capsys):
    write(tmp_path / "moved.extxyz", _displaced(read(EXAMPLE, 0)))
    args = ([tmp_path / "moved.extxyz"], "MoS2", ckpt, tmp_path / "o.extxyz", "--quiet")
    assert _relax(*args, "--tolerance", "0.1") == 2
    assert re.search(r"atom 3 .* is 0\.200 Å from the nearest host site \(tolerance 0\.1 Å\)",
                     _one_error_line(capsys.readouterr().err))
    assert _relax(*args) == 0               # default 0.5 Å


@pytest.mark.parametrize("command", ["evaluate", "residual"])
def test_evaluate_and_residual_tolerance(tmp_path, ckpt, emt_store, capsys, command):
    from ase_definet.data.store import read_frames
    frame = read_frames(emt_store / "samples.extxyz")[0]
    relaxed = frame.copy()
    relaxed.positions = frame.arrays.pop("relaxed_positions")
    write(tmp_path / "run.traj", [_displaced(frame), relaxed])     # a relaxation file
    write(tmp_path / "host.extxyz", read_frames(emt_store / "hosts.extxyz")[0])
    base = [command, "--model", str(ckpt), "--data", str(tmp_path / "run.traj"),
            "--host", str(tmp_path / "host.extxyz"), "--quiet", "--threads", "1"]
    if command == "residual":
        base += ["--calculator", "emt", "-n", "1", "--fmax", "0.1"]
    assert main(base + ["--tolerance", "0.1"]) == 2
    assert re.search(r"is 0\.200 Å from the nearest host site \(tolerance 0\.1 Å\)",
                     _one_error_line(capsys.readouterr().err))
    assert main(base) == 0


# ----------------------------------------------------------------- empty folders

def test_failed_generate_leaves_no_folder(tmp_path, capsys):
    out = tmp_path / "new" / "store"
    assert main(["generate", "--materials", "NoSuchHost", "--count", "1", "--calculator",
                 "emt", "--out", str(out), "--quiet"]) == 2
    assert "NoSuchHost" in _one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "new").exists()


def test_failed_train_leaves_no_folder_but_keeps_the_users(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--data", str(tmp_path / "no-data"), "--out", str(out),
                 "--quiet"]) == 2
    assert "no-data" in _one_error_line(capsys.readouterr().err)
    assert not out.exists()
    out.mkdir()                 # a folder the user made stays, even empty
    assert main(["train", "--data", str(tmp_path / "no-data"), "--out", str(out),
                 "--quiet"]) == 2
    assert out.is_dir()


# ----------------------------------------------------------------- help and version

def test_version_names_package_torch_and_ase():
    out = subprocess.run([sys.executable, "-m", "ase_definet.cli", "--version"],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"ase_definet {__version__} ")
    assert f"torch {torch.__version__}" in out.stdout
    assert f"ase {ase.__version__}" in out.stdout


def _options():
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, command in sub.choices.items():
        for action in command._actions:
            if not isinstance(action, argparse._HelpAction):
                yield name, command, action


def test_every_subcommand_runs_a_command():
    from ase_definet.cli import COMMANDS
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert set(sub.choices) == set(COMMANDS)


def test_every_option_has_help_and_shows_its_default():
    for name, command, action in _options():
        assert action.help and action.help.strip(), (name, action.dest)
        text = command.format_help()
        text = text[text.index("\noptions:"):]             # not the usage lines
        d = action.default
        if action.option_strings and not (d is None or d is False or d == []):
            # the help of this option: its line, up to the next option's
            flag = re.escape(action.option_strings[-1])
            block = re.search(rf"^  (?=-)[^\n]*?{flag}\b.*?(?=^  -|\Z)", text, re.M | re.S)
            assert block and "default" in block.group(), (name, flag, block)


def test_top_level_help_is_for_users_and_documents_exit_codes():
    out = subprocess.run([sys.executable, "-m", "ase_definet.cli", "--help"],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0
    for cmd in ("relax", "generate", "train", "evaluate", "residual", "plot", "models"):
        assert re.search(rf"^    {cmd} ", out.stdout, re.M)
    assert "definet relax POSCAR --host MoS2" in out.stdout
    assert re.search(rf"^  {EXIT_NOT_CONVERGED} +definet relax: outputs written, but some "
                     r"residual relaxation did", out.stdout, re.M)
    from ase_definet.trees import EXIT_SKIPPED
    assert re.search(rf"^  {EXIT_SKIPPED} +definet relax TREE: the others written, but some "
                     r"POSCARs were skipped", out.stdout, re.M)
    relax = subprocess.run([sys.executable, "-m", "ase_definet.cli", "relax", "--help"],
                           capture_output=True, text=True, cwd=ROOT).stdout
    assert "OUT.definet.json" in relax and f"{EXIT_NOT_CONVERGED} all outputs written" in relax


# ----------------------------------------------------------------- other commands

def test_evaluate_writes_report_and_table(tmp_path, ckpt, emt_store, capsys):
    report = tmp_path / "r.json"
    assert main(["evaluate", "--model", str(ckpt), "--data", str(emt_store), "--json",
                 str(report), "--quiet", "--where", "density=low", "--threads", "1"]) == 0
    data = json.loads(report.read_text())
    assert set(data["overall"]["model"]) >= {"mae", "a3", "a4", "a5", "a6"}
    assert "coordinate MAE" in capsys.readouterr().out


def test_evaluate_with_nothing_selected_is_exit_2(tmp_path, ckpt, emt_store, capsys):
    assert main(["evaluate", "--model", str(ckpt), "--data", str(emt_store), "--quiet",
                 "--where", "material=NoSuch"]) == 2
    assert _one_error_line(capsys.readouterr().err) == (
        "definet evaluate: error: no samples selected (check --data, --subset, --where)")


def test_plot_writes_pngs(tmp_path, ckpt, emt_store):
    assert main(["plot", "--model", str(ckpt), "--data", str(emt_store), "--out",
                 str(tmp_path / "plots"), "--quiet", "--threads", "1"]) == 0
    assert list((tmp_path / "plots").glob("*.png"))


def test_plot_without_data_or_metrics_is_exit_2_and_no_folder(tmp_path, capsys):
    assert main(["plot", "--out", str(tmp_path / "plots")]) == 2
    assert _one_error_line(capsys.readouterr().err) == (
        "definet plot: error: give --data (and a model), --metrics or --reliability")
    assert not (tmp_path / "plots").exists()


@pytest.fixture
def registry(tmp_path, ckpt, monkeypatch, capsys):
    """A temporary weights folder holding one shipped model, 'tiny' (default)."""
    monkeypatch.setenv("ASE_DEFINET_WEIGHTS", str(tmp_path / "w"))
    card = tmp_path / "card.json"
    card.write_text(json.dumps({"summary": "test", "elements": ["Cu"], "defects": ["V_Cu"]}))
    assert main(["models", "--add", str(ckpt), "--name", "tiny", "--card", str(card),
                 "--out", str(tmp_path / "w"), "--default"]) == 0
    assert re.fullmatch(r"tiny: sha256 [0-9a-f]{64}\n", capsys.readouterr().out)
    return tmp_path / "w"


def test_models_lists_the_added_model(registry, capsys):
    assert main(["models"]) == 0
    listing = capsys.readouterr().out
    assert "tiny (default)" in listing
    assert re.search(r"^  sha256: [0-9a-f]{64}$", listing, re.M)
    assert "  summary: test" in listing


@pytest.mark.parametrize("flag", ["-v", "--json"])
def test_models_prints_partial_cards_as_json(registry, capsys, flag):
    assert main(["models", flag]) == 0
    assert '"elements": [' in capsys.readouterr().out


def test_models_add_without_card_is_exit_2(tmp_path, ckpt, capsys):
    assert main(["models", "--add", str(ckpt), "--name", "x"]) == 2
    assert _one_error_line(capsys.readouterr().err) == (
        "definet models: error: --add needs --name and --card")


def test_models_add_with_a_broken_card_names_it(tmp_path, ckpt, capsys):
    card = tmp_path / "card.json"
    card.write_text("{broken")
    assert main(["models", "--add", str(ckpt), "--name", "x", "--card", str(card),
                 "--out", str(tmp_path / "w")]) == 2
    assert _one_error_line(capsys.readouterr().err).startswith(
        f"definet models: error: cannot read model card {card}: Expecting property name")
    assert not (tmp_path / "w").exists()


def test_closed_output_pipe_is_not_an_error(tmp_path, emt_store):
    """`definet ... | head`: the reader closing early ends the command quietly."""
    proc = subprocess.Popen([sys.executable, "-m", "ase_definet.cli", "evaluate", "--model",
                             str(_checkpoint(tmp_path / "m.pt")), "--data", str(emt_store),
                             "--quiet", "--threads", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    proc.stdout.close()                 # before the command has written anything
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=300) == 0, err
    assert "Broken pipe" not in err and "Traceback" not in err


class _Flinger(torch.nn.Module):
    """A real DefiNet whose prediction throws atom 0 of every structure 1e3 Å away."""

    def __init__(self, net):
        super().__init__()
        self.net, self.config = net, net.config

    def forward(self, numbers, markers, edge_src, edge_dst, edge_vec, batch, n_graphs):
        disp = self.net(numbers, markers, edge_src, edge_dst, edge_vec, batch, n_graphs).clone()
        for g in range(int(n_graphs)):
            disp[torch.nonzero(batch == g)[0, 0], 0] += 1e3
        return disp


def test_relax_says_when_a_prediction_was_reverted(tmp_path, monkeypatch, capsys):
    from ase_definet import cli
    from ase_definet.inference import Predictor
    torch.manual_seed(0)
    flinger = Predictor(_Flinger(DefiNet(DefiNetConfig(hidden=16, num_rbf=8))), device="cpu")
    monkeypatch.setattr(cli, "_predictor", lambda args: flinger)
    out = tmp_path / "out.extxyz"
    assert main(["relax", str(EXAMPLE), "--host", "MoS2", "-o", str(out)]) == 0
    captured = capsys.readouterr()
    lines = [s for s in captured.out.splitlines() if s.startswith(f"{EXAMPLE}@")]
    assert len(lines) == 2
    for line in lines:
        assert re.search(r"largest predicted move 1000\.\d{3} Å; prediction reverted to the "
                         r"input positions; warning: .+", line), line
    assert "2 with warnings (2 reverted)" in captured.out
    assert re.search(r"^definet relax: warning: DefiNet prediction failed sanity checks",
                     captured.err, re.M)
    for f, a in zip(read(out, ":"), read(EXAMPLE, ":")):        # reverted exactly
        np.testing.assert_allclose(f.positions, a.positions, atol=1e-6)
    # --on-violation keep: the flung prediction is written, flagged, not reverted
    assert main(["relax", str(EXAMPLE), "--host", "MoS2", "-o", str(out), "--quiet",
                 "--on-violation", "keep"]) == 0
    assert "2 with warnings (0 reverted)" in capsys.readouterr().out
    for f, a in zip(read(out, ":"), read(EXAMPLE, ":")):
        assert abs(np.linalg.norm(f.positions - a.positions, axis=1).max() - 1e3) < 1.0
        assert f.info["definet"] == "kept" and f.info["definet_warnings"]


# ----------------------------------------------------------------- residual --keep-going

def scf_never_converges():
    """A calculator factory for ``--calculator test_cli:scf_never_converges``."""
    from ase.calculators.emt import EMT

    class NoSCF(EMT):
        def calculate(self, *args, **kwargs):
            raise RuntimeError("Did not converge!")
    return NoSCF()


def test_residual_keep_going_records_failures_and_resume_skips_them(tmp_path, ckpt,
                                                                     emt_store, capsys):
    report = tmp_path / "res.json"
    base = ["residual", "--model", str(ckpt), "--data", str(emt_store), "--quiet",
            "--threads", "1", "--calculator", "test_cli:scf_never_converges", "-n", "2",
            "--fmax", "0.1", "--json", str(report)]
    with pytest.raises(RuntimeError, match="Did not converge"):   # without --keep-going
        main(base)
    assert not report.exists()                   # nothing finished, nothing written
    assert main(base + ["--keep-going"]) == 0
    out = capsys.readouterr().out
    saved = json.loads(report.read_text())
    assert saved["n"] == 0 and len(saved["failed"]) == 2
    assert {r["failed"] for r in saved["failed"]} == {"RuntimeError: Did not converge!"}
    assert out.count("failed, left out of every statistic") == 2
    assert main(base + ["--keep-going", "--resume"]) == 0
    assert json.loads(report.read_text())["failed"] == saved["failed"]


@pytest.mark.parametrize("command", ["relax", "residual", "generate", "fit"])
def test_every_calculator_flag_lists_every_calculator_name(command):
    """The help named chgnet/sevenn/emt by hand and missed gpaw when it was added."""
    from ase_definet.calculators import CALCULATORS
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    flag = next(a for a in sub.choices[command]._actions if "--calculator" in a.option_strings)
    for name in CALCULATORS:
        assert name in flag.help, (command, name)
