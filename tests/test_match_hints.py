"""Error messages of host matching that tell the user what to do."""
from __future__ import annotations

import numpy as np
import pytest
from ase.build import mx2

from ase_definet.errors import DataFormatError, SupercellError
from ase_definet.match import lattice_strain, match_host


def _mx2_vacancy(a: float = 3.18, vacuum: float | None = 10.0):
    atoms = mx2("MoS2", a=a, vacuum=vacuum).repeat((8, 8, 1))
    del atoms[0]
    return atoms


def test_strained_builtin_host_names_strain_host_and_fix():
    # ase.build.mx2's default a = 3.18 Å; the built-in MoS2 has 3.1903 Å
    with pytest.raises(SupercellError,
                       match=r"integer supercell \(8×8×1\) of the built-in host MoS2 "
                             r"strained by -0\.32 % \(a = 3\.1800 Å here, 3\.1903 Å in the "
                             r"host\).*pass your own pristine cell.*--host pristine\.vasp"):
        match_host(_mx2_vacancy(), "MoS2")


def test_own_pristine_cell_is_the_fix():
    """The suggested fix works: the user's own 3.18 Å cell matches, one Mo vacancy."""
    m = match_host(_mx2_vacancy(), mx2("MoS2", a=3.18, vacuum=10.0))
    assert [s for s, _ in m.vacancies] == ["Mo"] and not m.substitutions


def test_anisotropic_strain_is_given_per_axis():
    atoms = _mx2_vacancy()
    atoms.set_cell(atoms.cell.array * [[1.01], [1.0], [1.0]], scale_atoms=True)
    with pytest.raises(SupercellError, match=r"\+0\.67 % along a, -0\.32 % along b"):
        match_host(atoms, "MoS2")


def test_strain_above_two_percent_gives_no_hint():
    atoms = _mx2_vacancy(a=3.1903 * 0.97)
    with pytest.raises(SupercellError, match="not an integer supercell") as err:
        match_host(atoms, "MoS2")
    assert "strained" not in str(err.value)


def test_strained_file_host_is_not_called_builtin():
    with pytest.raises(SupercellError, match=r"of the host strained by -0\.32 % .*; the "
                                             r"host must be the pristine cell") as err:
        match_host(_mx2_vacancy(), mx2("MoS2", a=3.1903, vacuum=10.0))
    assert "built-in" not in str(err.value)


def test_lattice_strain_recovers_matrix_and_strain():
    host = mx2("MoS2", a=3.1903, vacuum=10.0).cell.array
    cell = np.diag([1.015, 0.99, 1.0]) @ (np.diag([6, 4, 1]) @ host)
    m, e = lattice_strain(cell, host)
    assert m.tolist() == [[6, 0, 0], [0, 4, 0], [0, 0, 1]]
    np.testing.assert_allclose(e, [0.015, -0.01, 0.0], atol=1e-12)
    # a sheared cell is no strained supercell
    sheared = cell.copy()
    sheared[1] += 0.3 * cell[0] / np.linalg.norm(cell[0])
    assert lattice_strain(sheared, host) is None


def test_layer_without_vacuum_says_add_vacuum():
    with pytest.raises(SupercellError, match=r"cell vector c has zero length.*vacuum"):
        match_host(_mx2_vacancy(a=3.1903, vacuum=None), "MoS2")


def test_garbage_host_file_names_the_file(tmp_path):
    bad = tmp_path / "POSCAR"
    bad.write_text("garbage\n1.0\nnot a cell\n")
    with pytest.raises(DataFormatError, match=r"cannot read host file .*POSCAR"):
        match_host(_mx2_vacancy(), str(bad))


def test_load_host_reads_files_once_and_keeps_names(tmp_path):
    from ase.io import write

    from ase_definet.errors import UnknownHostError
    from ase_definet.match import load_host
    write(tmp_path / "pristine.vasp", mx2("MoS2", a=3.18, vacuum=10.0), format="vasp")
    host = load_host(str(tmp_path / "pristine.vasp"))
    assert len(host) == 3 and abs(host.cell.lengths()[0] - 3.18) < 1e-9
    assert load_host("MoS2") == "MoS2" and load_host(host) is host
    with pytest.raises(UnknownHostError, match=r"host 'NoSuch' is neither a file nor a "
                                               r"built-in host \(MoS2, "):
        load_host("NoSuch")
