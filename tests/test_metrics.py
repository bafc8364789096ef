"""Hand-built cases for the coordinate metrics (MAE, A_x) under PBC."""
import numpy as np
import pytest
from ase import Atoms

from ase_definet.metrics import (average_metrics, defect_distances, improvement, mae,
                                 metric_keys, structure_metrics)


def cubic(positions, pbc=True, a=10.0):
    return Atoms("Cu" * len(positions), positions=positions, cell=np.eye(3) * a, pbc=pbc)


def test_mae_three_atoms_known_errors():
    true = np.array([[1.0, 1, 1], [5, 5, 5], [9, 9, 9]])
    pred = true + np.array([[0.3, 0, 0], [0.1, -0.2, 0.3], [0, 0, 0]])
    # per-atom means 0.1, 0.2, 0.0 -> 0.1
    assert mae(pred, true) == pytest.approx(0.1)
    assert mae(pred, true, mask=[True, True, False]) == pytest.approx(0.15)


def test_mae_ignores_wrapping_only_with_a_cell():
    true = np.array([[0.05, 5, 5], [5, 5, 5]])
    pred = true.copy()
    pred[0, 0] = 9.95 + 0.3           # wrapped to the far face, then off by 0.3 - 0.1
    cell = np.eye(3) * 10.0
    assert mae(pred, true, cell, True) == pytest.approx(0.2 / 6)
    assert mae(pred, true) > 1.0       # without the cell it is a wrapping artefact


def test_a_x_counts_periodic_image_only_neighbour():
    # Defect site at x = 0.5; atom 0 at x = 9.0 is 8.5 Å away directly but
    # 1.5 Å through the periodic face. Atom 1 is 4.5 Å away.
    atoms = cubic([[9.0, 5, 5], [5.0, 5, 5]])
    true = atoms.get_positions()
    pred = true + np.array([[0.3, 0.3, 0.3], [0.6, 0.6, 0.6]])
    m = structure_metrics(pred, true, atoms, np.array([[0.5, 5, 5]]))
    assert m["a3"] == pytest.approx(0.3)          # NaN if images were ignored
    assert m["a4"] == pytest.approx(0.3)
    assert m["a5"] == pytest.approx(0.45)
    assert m["a6"] == pytest.approx(0.45)
    assert m["mae"] == pytest.approx(0.45)
    assert list(m) == metric_keys()


def test_non_periodic_axis_has_no_images():
    atoms = cubic([[5.0, 5, 9.5]], pbc=(True, True, False))
    m = structure_metrics(atoms.positions + 0.1, atoms.positions, atoms,
                          np.array([[5.0, 5, 0.5]]))
    assert np.isnan(m["a3"]) and np.isnan(m["a6"])
    assert m["mae"] == pytest.approx(0.1)


def test_placeholders_are_excluded():
    atoms = cubic([[1.0, 1, 1], [2.0, 1, 1]])
    # Node arrays: two real atoms, then a vacancy placeholder with a huge error.
    true = np.vstack([atoms.positions, [[3.0, 1, 1]]])
    pred = true + np.array([[0.1, 0.1, 0.1], [0.2, 0.2, 0.2], [5.0, 5.0, 5.0]])
    m = structure_metrics(pred, true, atoms, np.array([[3.0, 1, 1]]))
    assert m["mae"] == pytest.approx(0.15)
    assert m["a3"] == pytest.approx(0.15)


def test_nan_when_no_atom_within_radius_and_average_skips_it():
    atoms = cubic([[5.0, 5, 5]])
    m = structure_metrics(atoms.positions + 0.1, atoms.positions, atoms,
                          np.array([[0.0, 0, 0]]))            # 8.66 Å away
    assert all(np.isnan(m[k]) for k in ("a3", "a4", "a5", "a6"))
    avg = average_metrics([m, {"mae": 0.3, "a3": 0.2, "a4": 0.2, "a5": 0.2, "a6": 0.2}])
    assert avg["mae"] == pytest.approx(0.2)
    assert avg["a3"] == pytest.approx(0.2)        # the NaN structure is skipped


def test_defect_distances_match_brute_force_in_a_skewed_cell():
    # A small hexagonal (120°) cell, where rounding fractional coordinates
    # alone does not give the nearest image at these distances.
    rng = np.random.default_rng(0)
    cell = np.array([[3.2, 0, 0], [-1.6, 3.2 * np.sqrt(3) / 2, 0], [0, 0, 4.0]])
    # Fractional (0.45, 0.55) from a site at the origin: rounding gives 2.5 Å,
    # the true nearest image is 1.6 Å away.
    pos = np.vstack([[[0.45, 0.55, 0.0]], rng.random((20, 3))]) @ cell
    sites = np.vstack([[[0.0, 0.0, 0.0]], rng.random((2, 3))]) @ cell
    got = defect_distances(pos, sites, cell, True)
    shifts = np.array([(i, j, k) for i in range(-3, 4) for j in range(-3, 4)
                       for k in range(-3, 4)]) @ cell
    brute = np.linalg.norm(pos[:, None, None, :] - sites[None, :, None, :]
                           - shifts[None, None, :, :], axis=-1).min(axis=(1, 2))
    np.testing.assert_allclose(got, brute, atol=1e-12)


def test_no_defects_gives_nan_localised_metrics():
    atoms = cubic([[1.0, 1, 1]])
    m = structure_metrics(atoms.positions, atoms.positions, atoms, np.zeros((0, 3)))
    assert m["mae"] == 0.0 and np.isnan(m["a3"])


def test_improvement_percent():
    imp = improvement({"mae": 0.025, "a3": 0.1}, {"mae": 0.1, "a3": 0.0})
    assert imp["mae"] == pytest.approx(75.0)
    assert np.isnan(imp["a3"])                   # undefined against a zero Dummy


def test_shape_mismatch_is_an_error():
    atoms = cubic([[1.0, 1, 1], [2.0, 2, 2]])
    with pytest.raises(ValueError, match=r"need at least 2 positions for 2 atoms, got \(1, 3\)"):
        structure_metrics(np.zeros((1, 3)), atoms.positions, atoms, np.zeros((0, 3)))


def test_sheet_normal_is_the_unit_normal_of_a1_a2_one_cell_or_many():
    from ase.build import mx2
    from scipy.spatial.transform import Rotation
    from ase_definet.geometry import sheet_normal
    cell = mx2("MoS2", vacuum=8).cell.array
    np.testing.assert_allclose(sheet_normal(cell), [0, 0, 1], atol=1e-12)
    rot = Rotation.from_euler("xyz", [0.3, -1.1, 2.0]).as_matrix()
    many = sheet_normal(np.stack([cell, cell @ rot.T, 2 * cell]))
    np.testing.assert_allclose(many, [[0, 0, 1], rot @ [0, 0, 1], [0, 0, 1]], atol=1e-12)
