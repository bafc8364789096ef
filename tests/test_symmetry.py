"""Host site permutations (spglib) and canonical keys of defect configurations."""
from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk

from ase_definet.data.defects import apply_defects, generate_configs, translation_table
from ase_definet.data.hosts import build_host
from ase_definet.data.symmetry import canonical_key, site_permutations
from ase_definet.data.twins import site_pattern

from symmetry_helpers import defect_sample, fingerprint, host_operations, image, pick


# D3h (12 operations), Pmna (8); hBN is flat, so its mirror plane moves no site.
@pytest.mark.parametrize("name, n, order", [("MoS2", 3, 12), ("hBN", 4, 6), ("BP", 2, 8)])
def test_site_permutations_are_the_space_group(name, n, order):
    host = build_host(name, n)
    table = site_permutations(host)
    n_cells = n * n
    assert table.shape == (order * n_cells, len(host))     # point group x translations
    assert (table[0] == np.arange(len(host))).all()
    assert len({tuple(r) for r in table}) == len(table)
    assert (np.sort(table, axis=1) == np.arange(len(host))).all()   # permutations
    numbers = host.numbers
    assert (numbers[table] == numbers[None, :]).all()               # keep the element
    # the translations are a subgroup of the table
    rows = {tuple(r) for r in table}
    assert {tuple(r) for r in translation_table(host)} <= rows
    # closed under composition
    g, h = table[5], table[-3]
    assert tuple(g[h]) in rows


def test_site_permutations_of_a_shifted_host_and_a_3d_crystal():
    host = build_host("MoS2", 3)
    moved = host.copy()
    moved.positions += [0.7, -1.3, 2.0]
    a, b = site_permutations(host), site_permutations(moved)
    assert {tuple(r) for r in a} == {tuple(r) for r in b}
    cu = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2)
    assert site_permutations(cu).shape == (48 * 32, 32)           # Oh x 32 lattice points


def test_a_distorted_host_keeps_only_its_remaining_operations():
    host = build_host("MoS2", 2)
    host.positions[3] += [0.0, 0.0, 0.4]          # breaks the mirror, keeps a few ops
    table = site_permutations(host)
    assert len(table) < 48


def _sites_and_labels(sample):
    """Defect sites and (marker, host Z, Z) labels from the sample's match."""
    m = sample.match
    on = m.markers != 0
    return (m.sites[on].tolist(),
            list(zip(m.markers[on].tolist(), m.host.numbers[m.sites[on]].tolist(),
                     m.numbers[on].tolist())))


@pytest.mark.parametrize("kind", ["rotation", "mirror", "translation"])
def test_an_image_under_a_host_operation_has_the_same_key(kind):
    host = build_host("MoS2", 4)
    sites = (1, 5, 30, 47)
    defects = (("vacancy", "S", None), ("substitution", "S", "Se"),
               ("substitution", "Mo", "W"), ("vacancy", "S", None))
    atoms = apply_defects(host, sites, defects)
    moved = image(atoms, *pick(host_operations(host), kind))
    assert fingerprint(moved) != fingerprint(atoms)
    a = defect_sample(host, sites, defects, {"id": "a"})
    b = defect_sample(host, sites, defects, {"id": "b"}, atoms=moved)
    pa, pb = site_pattern(a), site_pattern(b)
    assert pa.n_defects == pb.n_defects == 4
    assert pa.symmetry_key == pb.symmetry_key and pa.pattern_key == pb.pattern_key
    (sa, la), (sb, lb) = _sites_and_labels(a), _sites_and_labels(b)
    assert sorted(sa) == sorted(sites) and sorted(sb) != sorted(sites)
    # lattice translations alone see a rotated or mirrored copy as new
    t = translation_table(host)
    assert (canonical_key(t, sa, la) == canonical_key(t, sb, lb)) == (kind == "translation")
    other = defect_sample(host, (1, 5, 30, 46), defects, {"id": "c"})
    assert site_pattern(other).symmetry_key != pa.symmetry_key


def test_canonical_key_of_no_defect_and_of_labels():
    table = site_permutations(build_host("MoS2", 2))
    assert canonical_key(table, [], []) == ((), ())
    a = canonical_key(table, [1, 3], ["x", "y"])
    assert a == canonical_key(table, [3, 1], ["y", "x"])
    assert a != canonical_key(table, [1, 3], ["x", "x"])


def test_full_symmetry_generator_never_yields_two_images():
    """Checked against the structures themselves under spglib's operations."""
    host = build_host("MoS2", 3)
    ops = host_operations(host)
    configs = list(generate_configs(host, "low", 40, seed=4))
    prints = {}
    for k, c in enumerate(configs):
        atoms = apply_defects(host, c.sites, c.defects)
        for rot, trans in ops:
            f = fingerprint(image(atoms, rot, trans))
            assert prints.setdefault(f, k) == k, (k, prints[f])
    legacy = list(generate_configs(host, "low", 40, seed=4, symmetry="translations"))
    twins = 0
    seen: dict = {}
    for k, c in enumerate(legacy):
        atoms = apply_defects(host, c.sites, c.defects)
        images = {fingerprint(image(atoms, r, t)) for r, t in ops}
        twins += any(f in seen for f in images)
        seen.update(dict.fromkeys(images, k))
    assert twins > 0          # the translation-only rule lets rotated copies through
