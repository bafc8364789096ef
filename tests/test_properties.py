"""Property tests (hypothesis) of matching and the relaxer, and reproducibility.

Random built-in host, random vacancy/substitution set, shuffled atom order,
random periodic images and a small rattle: the matcher must recover exactly
the defects that were applied, and the relaxer must keep the atom count,
order, species and cell.
"""
from __future__ import annotations

import warnings
from functools import lru_cache

import numpy as np
import pytest
import torch
from ase import Atoms
from hypothesis import given, settings
from hypothesis import strategies as st

from ase_definet import DefiNet, DefiNetConfig, DefiNetRelaxer, match_host
from ase_definet.data.defects import apply_defects
from ase_definet.data.hosts import build_host
from ase_definet.inference import Predictor
from ase_definet.weights import save_checkpoint

BUILTIN = ("MoS2", "WSe2", "hBN", "GaSe", "InSe", "BP")
PROPERTY_SETTINGS = settings(max_examples=25, deadline=None, database=None)


def small_net() -> DefiNet:
    torch.manual_seed(0)
    return DefiNet(DefiNetConfig(hidden=16, num_rbf=8))


@lru_cache(maxsize=1)
def predictor() -> Predictor:
    # Module-level cache instead of a fixture: hypothesis re-runs the body
    # many times per test call and function-scoped fixtures would not reset.
    return Predictor(small_net(), device="cpu")


@st.composite
def defect_structures(draw) -> tuple[Atoms, Atoms, list[tuple]]:
    """(defect structure, pristine host, applied defects) on a random host."""
    from ase_definet.data.hosts import HOSTS
    name = draw(st.sampled_from(BUILTIN))
    n, m = draw(st.integers(3, 4)), draw(st.integers(3, 4))
    host = build_host(name, (n, m))
    symbols = host.get_chemical_symbols()
    k = draw(st.integers(1, 4))
    sites = draw(st.lists(st.integers(0, len(host) - 1), min_size=k, max_size=k,
                          unique=True))
    defects = []
    for s in sites:
        # Every host element has a vacancy type, so the choice is never empty.
        fits = [d for d in HOSTS[name].defect_types if d[1] == symbols[s]]
        defects.append(draw(st.sampled_from(fits)))
    atoms = apply_defects(host, sites, defects)

    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    atoms = atoms[rng.permutation(len(atoms))]
    frac = atoms.get_scaled_positions(wrap=False)
    periodic = np.flatnonzero(atoms.pbc)
    frac[:, periodic] += rng.integers(-2, 3, size=(len(atoms), len(periodic)))
    atoms.set_scaled_positions(frac)
    # Rattle: uniform direction, length ≤ amplitude ≤ 0.05 Å.
    amplitude = draw(st.floats(0.0, 0.05))
    direction = rng.normal(size=(len(atoms), 3))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    atoms.positions += direction * rng.uniform(0, amplitude, size=(len(atoms), 1))
    return atoms, host, defects


def _key(defect: tuple) -> tuple:
    kind, old, new = defect
    return (kind, old, new or "")


@PROPERTY_SETTINGS
@given(defect_structures())
def test_match_recovers_applied_defects(case):
    atoms, host, applied = case
    m = match_host(atoms, host)
    found = [("vacancy", s, None) for s, _ in m.vacancies]
    found += [("substitution", old, new) for _, old, new in m.substitutions]
    assert sorted(found, key=_key) == sorted(applied, key=_key)
    assert m.n_atoms == len(atoms) and len(m.markers) == len(host)
    assert m.max_distance <= 0.05 + 1e-9


@PROPERTY_SETTINGS
@given(defect_structures())
def test_relaxer_keeps_count_order_species_and_cell(case):
    atoms, host, _ = case
    before = atoms.copy()
    with warnings.catch_warnings():
        # An untrained network may fail the sanity checks; that is flagged, not raised.
        warnings.simplefilter("ignore", UserWarning)
        assert DefiNetRelaxer(atoms, host=host, model=predictor(), logfile=None).run()
    assert len(atoms) == len(before)
    assert atoms.get_chemical_symbols() == before.get_chemical_symbols()
    assert np.array_equal(atoms.numbers, before.numbers)
    assert np.array_equal(atoms.cell.array, before.cell.array)
    assert np.array_equal(atoms.pbc, before.pbc)
    assert np.isfinite(atoms.positions).all()


# ---------------------------------------------------------------- reproducibility
def _structure() -> tuple[Atoms, Atoms]:
    host = build_host("MoS2", 5)
    atoms = apply_defects(host, [0, 1, 8], [("vacancy", "Mo", None),
                                            ("substitution", "S", "Se"),
                                            ("vacancy", "S", None)])
    atoms.positions += np.random.default_rng(7).normal(scale=0.03, size=atoms.positions.shape)
    return atoms, host


def _relaxed(model, **kwargs) -> np.ndarray:
    atoms, host = _structure()
    DefiNetRelaxer(atoms, host=host, model=model, logfile=None, **kwargs).run()
    return atoms.positions


@pytest.fixture
def checkpoint(tmp_path):
    path = tmp_path / "w.pt"
    save_checkpoint(path, small_net())
    return path


def test_bitwise_reproducible_on_cpu(checkpoint):
    """Same input, weights and device → identical bits: one Predictor twice, two
    Predictors from one checkpoint, a freshly seeded network, the batched path."""
    first = Predictor(str(checkpoint), device="cpu")
    ref = _relaxed(first)
    assert np.array_equal(_relaxed(first), ref)
    assert np.array_equal(_relaxed(Predictor(str(checkpoint), device="cpu")), ref)
    assert np.array_equal(_relaxed(str(checkpoint), device="cpu"), ref)
    assert np.array_equal(_relaxed(small_net(), device="cpu"), ref)
    atoms, host = _structure()
    p1 = first.predict([atoms, atoms.copy()], host)
    p2 = Predictor(str(checkpoint), device="cpu").predict([atoms, atoms.copy()], host)
    for a, b in zip(p1, p2):
        assert np.array_equal(a.positions, b.positions)


def test_bitwise_reproducible_with_deterministic_flag(checkpoint):
    # The first torch.use_deterministic_algorithms call imports torch._inductor
    # (~4 s once per process), hence a test of its own.
    ref = _relaxed(Predictor(str(checkpoint), device="cpu"))
    det = Predictor(str(checkpoint), device="cpu", deterministic=True)
    assert np.array_equal(_relaxed(det), ref)
    assert np.array_equal(_relaxed(det), ref)
    assert np.array_equal(_relaxed(str(checkpoint), device="cpu", deterministic=True), ref)
    assert not torch.are_deterministic_algorithms_enabled()   # global flag restored
