"""`definet relax TREE`: the POSCAR trees written by the real doped and ShakeNBreak.

The trees under tests/data/defect_trees/ were made by those packages
(make_trees.py, README.md there): a 64-atom diamond-Si host with vacancies, Ge
substitutions, an interstitial and ShakeNBreak's bond distortions.
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from ase.constraints import FixAtoms, FixScaled
from ase.io import read, write

from ase_definet import DefiNet, DefiNetConfig
from ase_definet.cli import main
from ase_definet.errors import InputFileError
from ase_definet.inference import Predictor
from ase_definet.trees import EXIT_SKIPPED, ORIGINAL, check_output, find_poscars
from ase_definet.weights import save_checkpoint

TREES = Path(__file__).parent / "data" / "defect_trees"
HOST = TREES / "Si_host.vasp"
#: matches doped's and ShakeNBreak's rattle (0.72-0.73 Å in these trees), not the
#: -60 % distortion (0.94 Å) nor the interstitial (2.1 Å); Si's bond is 2.35 Å
TOL = "0.8"


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """An untrained small DefiNet: no card, so no host or element is out of its scope."""
    path = tmp_path_factory.mktemp("model") / "m.pt"
    torch.manual_seed(0)
    save_checkpoint(path, DefiNet(DefiNetConfig(hidden=16, num_rbf=8)))
    return path


def _relax(tree, ckpt, *extra) -> int:
    return main(["relax", str(tree), "--host", str(HOST), "--model", str(ckpt),
                 "--threads", "1", "--quiet", *extra])


def _rows(out: str) -> dict[str, list[str]]:
    """Table rows by path: [defect, charge, status, largest move]."""
    rows = {}
    for line in out.splitlines():
        cells = line.split()
        if cells and cells[0].endswith("/POSCAR"):
            rows[cells[0]] = cells[1:]
    return rows


def _poscars(tree: Path) -> list[str]:
    return sorted(str(p.relative_to(tree)) for p in tree.rglob("POSCAR"))


@pytest.fixture
def snb(tmp_path):
    shutil.copytree(TREES / "shakenbreak", tmp_path / "snb")
    return tmp_path / "snb"


# ----------------------------------------------------------------- the table

@pytest.mark.parametrize("tree", ["doped", "shakenbreak"])
def test_table_lists_every_poscar_of_the_tree(tree, tmp_path, ckpt, capsys):
    code = _relax(TREES / tree, ckpt, "-o", str(tmp_path / "out"), "--tolerance", TOL)
    out = capsys.readouterr().out
    rows = _rows(out)
    assert sorted(rows) == _poscars(TREES / tree) and len(rows) >= 9
    assert code == EXIT_SKIPPED           # the interstitial, the -60 % distortion
    for path, (defect, charge, status, move) in rows.items():
        folder = path.split("/")[0]
        if folder == "Si_bulk":           # doped's pristine reference
            assert (defect, charge, status, move) == ("-", "-", "pristine", "-")
            continue
        assert folder == f"{defect}_{charge}"
        assert re.fullmatch(r"[+-]?\d", charge)
        skipped = defect == "Si_i_Td" or "-60.0%" in path
        assert status == ("skipped" if skipped else "relaxed"), path
        assert (move == "-") == skipped
        assert skipped or 0.0 <= float(move) < 1.0
    n = len(rows)
    assert re.search(rf"^total: {n} POSCARs: \d+ relaxed, 0 reverted", out, re.M)


def test_default_tolerance_skips_rattled_poscars_with_a_hint(snb, ckpt, capsys):
    assert _relax(snb, ckpt, "--inplace") == EXIT_SKIPPED
    out = capsys.readouterr().out
    rows = _rows(out)
    for path, (_, _, status, _) in rows.items():
        # ShakeNBreak's Unperturbed is unrattled; every other POSCAR is rattled
        assert status == ("relaxed" if "Unperturbed" in path else "skipped"), path
    assert re.search(r"^skipped: v_Si_0/Rattled/POSCAR: atom \d+ \(Si at .*\) is "
                     r"0\.\d{3} Å from the nearest host site \(tolerance 0\.5 Å\)", out, re.M)
    assert re.search(r"^hint: .*--tolerance", out, re.M)


# ----------------------------------------------------------------- in place

def test_inplace_keeps_the_original_byte_identical_and_a_rerun_keeps_it(snb, ckpt,
                                                                         capsys):
    assert _relax(snb, ckpt, "--inplace", "--tolerance", TOL) == EXIT_SKIPPED
    rows = _rows(capsys.readouterr().out)
    written = {}
    for path, (_, _, status, _) in rows.items():
        poscar, original = snb / path, (snb / path).with_name(ORIGINAL)
        source = (TREES / "shakenbreak" / path).read_bytes()
        if status == "skipped":           # untouched, and no copy made
            assert poscar.read_bytes() == source and not original.exists()
            continue
        assert original.read_bytes() == source
        assert poscar.read_bytes() != source
        written[path] = poscar.read_bytes()
    assert len(written) == len(rows) - 1
    # a second run starts again from POSCAR.unrelaxed: same result, original kept
    assert _relax(snb, ckpt, "--inplace", "--tolerance", TOL) == EXIT_SKIPPED
    for path, text in written.items():
        assert (snb / path).read_bytes() == text, path
        assert (snb / path).with_name(ORIGINAL).read_bytes() == \
            (TREES / "shakenbreak" / path).read_bytes()


def test_written_poscar_is_the_prediction_in_the_original_order(snb, ckpt):
    """Round trip: the POSCAR holds the one prediction path's positions, with the
    element order, cell and comment line of the original."""
    path = "Ge_Si_0/Bond_Distortion_30.0%/POSCAR"
    original = read(TREES / "shakenbreak" / path, format="vasp")
    assert _relax(snb, ckpt, "--inplace", "--tolerance", TOL) == EXIT_SKIPPED
    relaxed = read(snb / path, format="vasp")
    pred = Predictor(ckpt, device="cpu", tolerance=float(TOL)).predict([original], HOST)[0]
    assert relaxed.get_chemical_symbols() == original.get_chemical_symbols()
    assert relaxed.get_chemical_symbols()[-1] == "Ge"          # "Si Ge" as doped wrote it
    np.testing.assert_allclose(relaxed.cell.array, original.cell.array, atol=1e-12)
    np.testing.assert_allclose(relaxed.positions, pred.positions, atol=1e-8)
    assert np.abs(relaxed.positions - original.positions).max() > 1e-3
    first = (TREES / "shakenbreak" / path).read_text().splitlines()[0]
    assert first.startswith("30.0% N(Distort)=")            # ShakeNBreak's own comment
    assert (snb / path).read_text().splitlines()[0] == first


def test_selective_dynamics_survive_and_fixed_atoms_stay(tmp_path, ckpt):
    atoms = read(TREES / "doped" / "v_Si_0" / "vasp_gam" / "POSCAR", format="vasp")
    atoms.set_constraint([FixAtoms(indices=[0, 1, 2]),
                          FixScaled(3, mask=[True, True, False])])
    folder = tmp_path / "tree" / "v_Si_0" / "vasp_gam"
    folder.mkdir(parents=True)
    write(folder / "POSCAR", atoms, format="vasp", direct=True)
    text = (folder / "POSCAR").read_text()
    assert "Selective dynamics" in text
    assert _relax(tmp_path / "tree", ckpt, "--inplace", "--tolerance", TOL) == 0
    out = read(folder / "POSCAR", format="vasp")
    assert "Selective dynamics" in (folder / "POSCAR").read_text()
    assert [type(c).__name__ for c in out.constraints] == \
        [type(c).__name__ for c in read(folder / ORIGINAL, format="vasp").constraints]
    np.testing.assert_allclose(out.positions[:3], atoms.positions[:3], atol=1e-8)
    moved = np.linalg.norm(out.positions - atoms.positions, axis=1)
    assert moved[4:].max() > 1e-3                               # the others did move
    frac = out.get_scaled_positions(wrap=False)[3] - atoms.get_scaled_positions(wrap=False)[3]
    np.testing.assert_allclose(frac[:2], 0.0, atol=1e-10)       # a, b fixed for atom 3


# ----------------------------------------------------------------- mirror tree

def test_mirror_tree_holds_relaxed_poscars_and_their_inputs(tmp_path, ckpt, capsys):
    out = tmp_path / "out"
    assert _relax(TREES / "doped", ckpt, "-o", str(out), "--tolerance", TOL) == EXIT_SKIPPED
    rows = _rows(capsys.readouterr().out)
    assert not list((TREES / "doped").rglob(ORIGINAL))         # the source is untouched
    for path, (_, _, status, _) in rows.items():
        target = out / path
        assert target.is_file() == (status == "relaxed"), path
        if status == "relaxed":
            for name in ("INCAR", "KPOINTS"):                   # a runnable folder
                src = TREES / "doped" / Path(path).parent / name
                assert (not src.exists()) or (target.parent / name).read_bytes() == \
                    src.read_bytes()
            assert len(read(target, format="vasp")) == len(read(TREES / "doped" / path))


# ----------------------------------------------------------------- bad usage

def test_folder_needs_inplace_or_output(tmp_path):
    with pytest.raises(InputFileError, match="needs either --inplace .* not neither"):
        check_output(TREES / "doped", None, False)
    with pytest.raises(InputFileError, match="not both"):
        check_output(TREES / "doped", tmp_path, True)
    with pytest.raises(InputFileError, match="inside"):
        check_output(TREES / "doped", TREES / "doped" / "out", False)
    with pytest.raises(InputFileError, match="no file named POSCAR"):
        find_poscars(tmp_path)


def test_bad_tree_usage_is_exit_2_with_one_line(tmp_path, ckpt, capsys):
    assert _relax(TREES / "doped", ckpt) == 2
    assert "needs either --inplace" in capsys.readouterr().err
    assert main(["relax", str(TREES / "doped"), str(HOST), "--host", str(HOST),
                 "--inplace"]) == 2
    assert "give one folder" in capsys.readouterr().err
    assert main(["relax", str(HOST), "--host", str(HOST), "--inplace"]) == 2
    assert "--inplace is for a folder input" in capsys.readouterr().err


def test_relax_help_documents_the_skipped_exit_status():
    from ase_definet.cli import build_parser
    sub = next(a for a in build_parser()._actions if hasattr(a, "choices") and a.choices
               and "relax" in a.choices)
    text = sub.choices["relax"].format_help()
    assert f"{EXIT_SKIPPED} a TREE folder" in text and "POSCAR.unrelaxed" in text


# ----------------------------------------------------------------- with a calculator

def test_calculator_finishes_each_poscar_and_not_converged_is_exit_3(tmp_path, ckpt,
                                                                     capsys):
    """EMT has no Si, so a Cu tree in ShakeNBreak's layout (written here): a vacancy."""
    from ase.build import bulk
    from ase_definet.cli import EXIT_NOT_CONVERGED
    host = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 2, 2))
    write(tmp_path / "Cu.vasp", host, format="vasp", direct=True)
    folder = tmp_path / "tree" / "v_Cu_0" / "Unperturbed"
    folder.mkdir(parents=True)
    defect = host.copy()
    del defect[5]
    write(folder / "POSCAR", defect, format="vasp", direct=True)
    args = ["relax", str(tmp_path / "tree"), "--host", str(tmp_path / "Cu.vasp"),
            "--model", str(ckpt), "--threads", "1", "--quiet", "--inplace",
            "--calculator", "emt", "--fmax", "0.05"]
    assert main(args) == 0
    row = _rows(capsys.readouterr().out)["v_Cu_0/Unperturbed/POSCAR"]
    assert row[:3] == ["v_Cu", "0", "relaxed,"] and re.fullmatch(r"\d+", row[3])
    from ase.calculators.emt import EMT
    out = read(folder / "POSCAR", format="vasp")
    out.calc = EMT()
    assert np.linalg.norm(out.get_forces(), axis=1).max() < 0.05 + 1e-6
    # one step cap: written, flagged NOT converged, exit 3 (from the original again)
    assert main(args + ["--steps", "1"]) == EXIT_NOT_CONVERGED
    assert "relaxed, 1 step, NOT converged" in capsys.readouterr().out


def test_structures_outside_the_model_card_are_skipped_not_fatal(snb, capsys):
    """The shipped model covers six 2D monolayers: each Si POSCAR is refused by its
    card, reported with the reason, and nothing is written."""
    before = {p: p.read_bytes() for p in snb.rglob("POSCAR")}
    code = main(["relax", str(snb), "--host", str(HOST), "--threads", "1", "--quiet",
                 "--inplace", "--tolerance", TOL])
    out = capsys.readouterr().out
    assert code == EXIT_SKIPPED
    assert {s for _, _, s, _ in _rows(out).values()} == {"skipped"}
    assert re.search(r"^skipped: v_Si_0/Unperturbed/POSCAR: elements \['Si'\] are not in "
                     r"the model card .*--no-strict", out, re.M)
    assert {p: p.read_bytes() for p in snb.rglob("POSCAR")} == before
    assert not list(snb.rglob(ORIGINAL))
