"""Host matching: real 2DMD acceptance test, invariances and every error path."""
from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk

from ase_definet import match_host
from ase_definet.data.defects import apply_defects
from ase_definet.data.hosts import HOSTS, build_host
from ase_definet.errors import (DefiNetInputError, EmptyStructureError, HostDefectError,
                                NonFiniteError, SiteCollisionError, SupercellError,
                                UnknownHostError, UnmatchedAtomError)
from ase_definet.match import PRISTINE, SUBSTITUTION, VACANCY

from conftest import canon


def test_pilot_defect_lists_exact(pilot, mos2_unit_cell):
    """All 200 real 2DMD structures: inferred defects equal descriptors.csv."""
    wrong = [k for k, (atoms, desc) in enumerate(pilot)
             if canon(match_host(atoms, mos2_unit_cell).defect_records()) != canon(desc)]
    assert len(pilot) == 200
    assert wrong == []


def test_pilot_shuffled_wrapped_and_builtin_host(pilot, mos2_unit_cell, rng):
    """Atom order, wrapping and the host's form (file or name) do not matter."""
    for atoms, desc in pilot[::10]:
        a = atoms[rng.permutation(len(atoms))]
        frac = a.get_scaled_positions(wrap=False)
        frac[:, :2] += rng.integers(-2, 3, size=(len(a), 2))   # other periodic images
        a.set_scaled_positions(frac)
        for host in (mos2_unit_cell, "MoS2"):
            assert canon(match_host(a, host).defect_records()) == canon(desc)


def test_markers_and_placeholders_layout():
    host = build_host("MoS2", 4)
    a = apply_defects(host, [0, 1, 5], [("vacancy", "Mo", None),
                                        ("substitution", "S", "Se"),
                                        ("vacancy", "S", None)])
    m = match_host(a, host)
    assert len(m.markers) == len(a) + 2
    assert (m.markers[len(a):] == VACANCY).all()
    assert (m.markers[:len(a)] != VACANCY).all()
    assert sorted(m.markers[:len(a)].tolist()).count(SUBSTITUTION) == 1
    # placeholders carry the removed element and sit on the ideal site
    assert sorted(m.numbers[len(a):].tolist()) == sorted([42, 16])
    assert {s for s, _ in m.vacancies} == {"Mo", "S"}
    ideal = {tuple(np.round(host.positions[i], 6)) for i in (0, 5)}
    assert {tuple(np.round(p, 6)) for _, p in m.vacancies} == ideal
    assert m.substitutions == [(0, "S", "Se")]   # atom 0 of `a` was host site 1
    np.testing.assert_allclose(m.positions[:len(a)], a.positions)
    assert (m.markers[:len(a)][np.array([s != "Se" for s in a.get_chemical_symbols()])]
            == PRISTINE).all()


@pytest.mark.parametrize("name", sorted(HOSTS))
def test_every_builtin_host_roundtrip(name, rng):
    host = build_host(name, (3, 2))
    sites = sorted(rng.choice(len(host), size=3, replace=False).tolist())
    sym = host.get_chemical_symbols()
    defects = [("vacancy", sym[sites[0]], None), ("vacancy", sym[sites[1]], None)]
    sub = HOSTS[name].substitutions[0]
    k = sym.index(sub[0], 0)
    sites = [s for s in sites[:2] if s != k] + [k]
    defects = defects[:len(sites) - 1] + [("substitution", sub[0], sub[1])]
    order = np.argsort(sites)
    sites = [sites[i] for i in order]
    defects = [defects[i] for i in order]
    a = apply_defects(host, sites, defects)
    a.positions += rng.normal(scale=0.05, size=a.positions.shape)   # lightly relaxed
    m = match_host(a[rng.permutation(len(a))], host)
    assert len(m.vacancies) == len(sites) - 1
    assert len(m.substitutions) == 1


def test_non_orthogonal_left_handed_cell():
    host = bulk("Cu", "fcc", a=3.6)          # primitive, non-orthogonal
    left = host.copy()
    left.set_cell(-host.cell.array, scale_atoms=True)   # det < 0
    for h in (host, left):
        sc = h.repeat((3, 3, 3))
        a = sc.copy()
        del a[4]
        a[7].symbol = "Au"
        m = match_host(a, h)
        assert len(m.vacancies) == 1 and m.substitutions[0][2] == "Au"


def test_all_errors_are_value_errors_and_name_the_culprit():
    host = build_host("MoS2", 3)
    with pytest.raises(EmptyStructureError):
        match_host(Atoms(cell=host.cell, pbc=host.pbc), host)
    bad = host.copy()
    bad.positions[4, 1] = np.nan
    with pytest.raises(NonFiniteError, match=r"atom\(s\) \[4\]"):
        match_host(bad, host)
    inf = host.copy()
    inf.positions[2, 0] = np.inf
    with pytest.raises(NonFiniteError):
        match_host(host, inf)
    strained = host.copy()
    strained.set_cell(host.cell.array * [[1.07], [1.0], [1.0]], scale_atoms=True)
    with pytest.raises(SupercellError, match="not an integer supercell"):
        match_host(strained, host)
    inter = host + Atoms("S", positions=[host.positions[0] + [0.9, 0.9, 0.0]])
    with pytest.raises(UnmatchedAtomError, match=r"atom 27 \(S at"):
        match_host(inter, host)
    far = host.copy()
    far.positions[3] += [0.0, 0.0, 0.8]
    with pytest.raises(UnmatchedAtomError, match="atom 3"):
        match_host(far, host)
    two = host.copy()
    two.positions[1] = two.positions[0] + 0.1
    with pytest.raises((SiteCollisionError, UnmatchedAtomError)):
        match_host(two, host)
    broken = host.copy()
    broken.positions[5] = broken.positions[4] + [0.05, 0.0, 0.0]
    with pytest.raises(HostDefectError, match="host atoms"):
        match_host(host, broken)
    with pytest.raises(UnknownHostError):
        match_host(host, "Graphene-XYZ")
    for err in (EmptyStructureError, NonFiniteError, SupercellError, UnmatchedAtomError,
                SiteCollisionError, HostDefectError, UnknownHostError):
        assert issubclass(err, DefiNetInputError) and issubclass(err, ValueError)


def test_site_collision_is_reported():
    host = build_host("MoS2", 3)
    a = host.copy()
    del a[[0]]                              # free a Mo site; atom k is now site k + 1
    a.positions[0] = host.positions[2] + [0.2, 0.0, 0.0]   # S of site 1 onto S site 2
    with pytest.raises(SiteCollisionError, match="assigned to host site"):
        match_host(a, host)


def test_pbc_false_along_vacuum_and_translation():
    host = build_host("WSe2", 4)
    a = apply_defects(host, [1], [("vacancy", "Se", None)])
    a.pbc = (True, True, False)
    a.translate([1.3, -0.7, 2.5])          # the whole slab moved
    m = match_host(a, host)
    assert len(m.vacancies) == 1
    np.testing.assert_allclose(m.vacancies[0][1], host.positions[1] + [1.3, -0.7, 2.5],
                               atol=1e-9)
