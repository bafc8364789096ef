"""The oracle's calculators: CHGNet computes only the properties ASE asks for."""
from __future__ import annotations

import numpy as np
import pytest

from ase_definet.calculators import chgnet_task, make_calculator


def test_chgnet_task_covers_the_request_and_nothing_more():
    assert chgnet_task(["energy"]) == "ef"
    assert chgnet_task(["forces"]) == "ef"
    assert chgnet_task(["energy", "forces"]) == "ef"
    assert chgnet_task(["stress"]) == "efs"
    assert chgnet_task(["forces", "magmoms"]) == "efsm"
    assert chgnet_task(None) == "efsm"  # ASE's "everything"


def test_unknown_calculator_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown calculator 'vasp-typo'"):
        make_calculator("vasp-typo")
    with pytest.raises(ValueError, match="cannot import calculator factory"):
        make_calculator("no_such_module_xyz:factory")


def _mos2_vacancy():
    from ase.build import mx2
    atoms = mx2("MoS2", a=3.19, thickness=3.13, size=(3, 3, 1), vacuum=8.0)
    atoms.pbc = True
    del atoms[4]                                   # an S vacancy
    atoms.rattle(0.05, seed=1)
    return atoms


@pytest.fixture(scope="module")
def chgnet_calc():
    pytest.importorskip("chgnet")
    import torch
    torch.set_num_threads(1)
    return make_calculator("chgnet")


def test_on_demand_chgnet_matches_the_stock_calculator(chgnet_calc):
    from chgnet.model import CHGNetCalculator
    atoms = _mos2_vacancy()
    ours = chgnet_calc
    stock = CHGNetCalculator(model=ours.model, use_device="cpu")

    a, b = atoms.copy(), atoms.copy()
    a.calc, b.calc = ours, stock
    forces = a.get_forces()
    assert "stress" not in ours.results and "magmoms" not in ours.results
    # same model, same graph, one backward pass fewer: bit-identical
    np.testing.assert_array_equal(forces, b.get_forces())
    assert a.get_potential_energy() == b.get_potential_energy()
    np.testing.assert_array_equal(a.get_stress(), b.get_stress())  # computed on demand
    np.testing.assert_array_equal(a.get_magnetic_moments(), b.get_magnetic_moments())
    a.positions[0] += 0.1                          # a change recomputes forces only
    a.get_forces()
    assert "stress" not in ours.results


def test_flushing_subnormals_leaves_chgnet_trajectories_bit_identical(chgnet_calc):
    """What worker.tune_worker does to a worker must not change its labels."""
    import torch
    from ase.optimize import FIRE
    ends = []
    try:
        for flush in (False, True):
            torch.set_flush_denormal(flush)
            atoms = _mos2_vacancy()
            chgnet_calc.reset()
            atoms.calc = chgnet_calc
            FIRE(atoms, logfile=None).run(fmax=0.0, steps=8)
            ends.append((atoms.positions.copy(), atoms.get_potential_energy()))
    finally:
        torch.set_flush_denormal(False)
    np.testing.assert_array_equal(ends[0][0], ends[1][0])
    assert ends[0][1] == ends[1][1]
