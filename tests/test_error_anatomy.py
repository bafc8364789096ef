"""experiments/probes/error_anatomy.py: in-plane/out-of-plane split, response, distance shells."""
from __future__ import annotations

import numpy as np
from ase import Atoms
from scipy.spatial.transform import Rotation

from ase_definet.evaluate import Displacements
from conftest import ROOT, load_script


def _module():
    return load_script(ROOT / "experiments" / "probes" / "error_anatomy.py")


class _S:                                   # only .atoms is read by sheet_normals
    def __init__(self, cell):
        self.atoms = Atoms(cell=cell, pbc=True)


def _case(rng, rotation=None):
    rotation = np.eye(3) if rotation is None else rotation
    cell = np.array([[3.0, 0, 0], [-1.5, 2.6, 0], [0, 0, 20.0]]) @ rotation.T
    true = rng.normal(size=(40, 3)) * [0.1, 0.1, 0.02]
    pred = 0.5 * true + rng.normal(size=(40, 3)) * 1e-3
    disp = Displacements(true @ rotation.T, pred @ rotation.T,
                         distance=np.linspace(0.0, 9.0, 40), numbers=np.full(40, 42),
                         structure=np.zeros(40, int))
    return disp, [_S(cell)]


def test_anatomy_splits_directions_and_measures_response(rng):
    mod = _module()
    disp, samples = _case(rng)
    row = mod.anatomy(disp, mod.sheet_normals(samples), np.ones(40, bool))
    assert row["atoms"] == 40
    assert abs(row["response"] - 0.5) < 0.02          # the model predicts half of it
    # the normal of this cell is z: out-of-plane is exactly the z component
    assert np.isclose(row["dummy_out"], np.abs(disp.true[:, 2]).mean())
    assert row["dummy_in"] > 3 * row["dummy_out"]
    assert np.isclose(sum(row[f"share {k}"] for k in ("0-3", "3-6", ">=6")), 1.0)
    assert np.isclose(row["dummy 0-3"], np.abs(disp.true[disp.distance < 3]).mean())


def test_anatomy_does_not_depend_on_orientation(rng):
    mod = _module()
    rot = Rotation.from_euler("xyz", [0.3, -1.1, 2.0]).as_matrix()
    rows = []
    for r in (np.eye(3), rot):
        disp, samples = _case(np.random.default_rng(5), r)
        rows.append(mod.anatomy(disp, mod.sheet_normals(samples), np.ones(40, bool)))
    a, b = rows
    for key in ("dummy_in", "model_in", "dummy_out", "model_out", "response"):
        assert np.isclose(a[key], b[key]), key
