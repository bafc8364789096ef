"""Splits: stratified, seeded, deterministic, leak-free; split files."""
from __future__ import annotations

import dataclasses
import json
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ase_definet.data.hosts import build_host
from ase_definet.data.sample import Sample
from ase_definet.data.splits import (SPLITS, apply_split, duplicate_clusters,
                                     first_per_group, read_split, same_configuration,
                                     split_samples, twin_classes, write_split)
from ase_definet.data.twins import site_pattern
from ase_definet.data.twins import stratum as stratum_name
from ase_definet.errors import DataFormatError

from conftest import ROOT
from symmetry_helpers import twin_population

_HOSTS = {m: build_host(m, 2) for m in ("MoS2", "WSe2", "hBN")}


def make(material: str, density: str, sid: str, seed: int, split: str | None = None,
         scale: float = 0.05) -> Sample:
    """A distinct small structure: the host with its atoms jiggled by ``seed``."""
    host = _HOSTS[material]
    atoms = host.copy()
    rng = np.random.default_rng(seed)
    atoms.positions += rng.normal(scale=scale, size=atoms.positions.shape)
    info = {"id": sid, "material": material, "density": density}
    if split:
        info["split"] = split
    return Sample(atoms, atoms.positions.copy(), host, info)


def population(sizes: dict[tuple[str, str], int], offset: int = 0) -> list[Sample]:
    out = []
    for (material, density), n in sizes.items():
        out += [make(material, density, f"{material}-{density}-{k}", offset + 1000 * len(out) + k)
                for k in range(n)]
    return out


SIZES = {("MoS2", "high"): 40, ("WSe2", "high"): 10, ("MoS2", "low"): 3, ("hBN", "high"): 1}


def ids(split) -> dict[str, list[str]]:
    return {k: [s.info["id"] for s in v] for k, v in split.items()}


def groups_of(split, name):
    return {s.group for s in split[name]}


# ------------------------------------------------------------ stratification
def test_split_is_stratified_and_covers_every_sample():
    samples = population(SIZES)
    split = split_samples(samples, seed=3)
    assert set(split) == set(SPLITS)
    all_ids = sum(ids(split).values(), [])
    assert sorted(all_ids) == sorted(s.info["id"] for s in samples)
    for (material, density), n in SIZES.items():
        group = f"{material}/{density}"
        count = {k: sum(s.group == group for s in v) for k, v in split.items()}
        if n >= 3:
            assert count["val"] >= 1 and count["test"] >= 1 and count["train"] >= 1
        else:
            assert count == {"train": n, "val": 0, "test": 0}
    mos2 = {k: sum(s.group == "MoS2/high" for s in v) for k, v in split.items()}
    assert mos2 == {"train": 32, "val": 4, "test": 4}
    assert split.seed == 3 and split.fractions == (0.8, 0.1, 0.1)


def test_split_fractions_validated_and_honoured():
    samples = population({("MoS2", "high"): 20})
    split = split_samples(samples, fractions=(0.5, 0.25, 0.25))
    assert [len(split[k]) for k in SPLITS] == [10, 5, 5]
    no_val = split_samples(samples, fractions=(0.9, 0.0, 0.1))
    assert len(no_val["val"]) == 0 and len(no_val["test"]) == 2
    with pytest.raises(ValueError, match="fractions"):
        split_samples(samples, fractions=(0.8, 0.1))
    with pytest.raises(ValueError, match="fractions"):
        split_samples(samples, fractions=(0.8, 0.3, 0.1))


# ------------------------------------------------------------ determinism
def test_split_is_deterministic_and_order_independent():
    samples = population(SIZES)
    a = ids(split_samples(samples, seed=7))
    b = ids(split_samples(list(reversed(samples)), seed=7))
    assert {k: sorted(v) for k, v in a.items()} == {k: sorted(v) for k, v in b.items()}
    assert ids(split_samples(samples, seed=7)) == a
    assert ids(split_samples(samples, seed=8)) != a


def test_adding_a_material_leaves_other_strata_alone():
    base = population({("MoS2", "high"): 30})
    more = base + population({("WSe2", "high"): 12}, offset=99)
    a, b = ids(split_samples(base, seed=1)), ids(split_samples(more, seed=1))
    for k in SPLITS:
        assert [i for i in b[k] if i.startswith("MoS2")] == a[k]


# ------------------------------------------------------------ duplicates, no leak
def test_same_configuration_tolerates_order_wrapping_and_noise():
    s = make("MoS2", "high", "x", 1)
    a = s.atoms
    b = a.copy()
    perm = np.random.default_rng(0).permutation(len(b))
    b = b[perm]
    b.positions[0] += a.cell[0] + a.cell[1]          # another periodic image
    b.positions += 1e-8
    assert same_configuration(a, b)
    c = a.copy()
    c.positions[3] += [1e-3, 0, 0]
    assert not same_configuration(a, c)
    d = a.copy()
    d[0].symbol = "W"
    assert not same_configuration(a, d)
    e = a.copy()
    e.positions[2] += a.cell[2]                       # c is not periodic here
    assert not same_configuration(a, e)


def test_duplicates_are_kept_together():
    samples = population({("MoS2", "high"): 30})
    twin = samples[4].atoms.copy()[::-1]              # same structure, new id, new order
    twin.positions[2] -= twin.cell[1]
    samples.append(Sample(twin, twin.positions.copy(), samples[4].host,
                          {"id": "twin", "material": "MoS2", "density": "high"}))
    again = make("MoS2", "high", samples[9].info["id"], 12345)   # same id, new structure
    samples.append(again)
    clusters = duplicate_clusters(samples)
    assert [4, 30] in clusters and [9, 31] in clusters
    assert sum(len(c) for c in clusters) == len(samples)
    for seed in range(12):
        split = split_samples(samples, seed=seed)
        where = {id(s): k for k, v in split.items() for s in v}
        assert where[id(samples[4])] == where[id(samples[30])]
        assert where[id(samples[9])] == where[id(samples[31])]


@settings(max_examples=25, deadline=None, database=None)
@given(sizes=st.lists(st.integers(0, 12), min_size=1, max_size=3),
       dup=st.integers(0, 5), seed=st.integers(0, 2**16))
def test_split_property_partition_and_no_leak(sizes, dup, seed):
    strata = [("MoS2", "high"), ("WSe2", "high"), ("hBN", "low")]
    samples = population({k: n for k, n in zip(strata, sizes)}, offset=seed)
    originals = samples[:dup]
    for s in originals:                               # exact copies under other ids
        samples.append(Sample(s.atoms.copy(), s.relaxed, s.host,
                              {**s.info, "id": s.info["id"] + "-copy"}))
    split = split_samples(samples, seed=seed)
    where = {id(s): k for k, v in split.items() for s in v}
    assert len(where) == len(samples) == sum(len(v) for v in split.values())
    for s in originals:
        twin = next(t for t in samples if t.info["id"] == s.info["id"] + "-copy")
        assert where[id(s)] == where[id(twin)]
    for stratum, n in zip(strata, sizes):
        group = "/".join(stratum)
        present = {where[id(s)] for s in samples if s.group == group}
        if n >= 3:
            assert {"val", "test"} <= present


# ------------------------------------------------------------ existing splits
def test_existing_splits_are_respected_within_the_strata():
    samples = population({("MoS2", "high"): 12})
    for s in samples[:2]:
        s.info["split"] = "test"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        split = split_samples(samples, seed=0)
    assert all(s in split["test"] for s in samples[:2])
    fresh = split_samples(samples, seed=0, respect_existing=False)
    assert len(fresh["test"]) == 1
    # Four in test would leave 12 * 0.1 by more than one structure: two move, loudly.
    for s in samples[:4]:
        s.info["split"] = "test"
    with pytest.warns(UserWarning, match="2 samples left their existing split"):
        split = split_samples(samples, seed=0)
    assert len(split["test"]) == 2 and all(s in samples[:4] for s in split["test"])


def test_conflicting_existing_splits_go_to_the_later_split():
    samples = population({("MoS2", "high"): 20})
    copy = Sample(samples[0].atoms.copy(), samples[0].relaxed, samples[0].host,
                  {**samples[0].info, "id": "copy", "split": "test"})
    samples[0].info["split"] = "train"
    with pytest.warns(UserWarning, match="different existing splits"):
        split = split_samples(samples + [copy])
    assert samples[0] in split["test"] and copy in split["test"]


# ------------------------------------------------------------ files
def test_write_read_apply_split(tmp_path):
    samples = population(SIZES)
    split = split_samples(samples, seed=5)
    path = write_split(split, tmp_path / "split.json")
    doc = json.loads(path.read_text())
    assert doc["seed"] == 5 and doc["fractions"] == [0.8, 0.1, 0.1]
    assert doc["train"] == [s.info["id"] for s in split["train"]]
    back = read_split(path)
    assert {k: back[k] for k in SPLITS} == ids(split)
    applied = apply_split(list(reversed(samples)), path)
    assert {k: sorted(v) for k, v in ids(applied).items()} == \
        {k: sorted(v) for k, v in ids(split).items()}
    assert applied.seed == 5


def test_apply_split_unassigned_and_leaks(tmp_path):
    samples = population({("MoS2", "high"): 5})
    path = write_split({"train": samples[:3], "val": [samples[3]], "test": []},
                       tmp_path / "s.json", seed=0, fractions=(0.8, 0.1, 0.1))
    with pytest.raises(DataFormatError, match="in no split"):
        apply_split(samples, path)
    dropped = apply_split(samples, path, unassigned="drop")
    assert sum(len(v) for v in dropped.values()) == 4
    as_test = apply_split(samples, path, unassigned="test")
    assert as_test["test"] == [samples[4]]
    # The same structure under a train id and a val id: moved together to val.
    twin = Sample(samples[0].atoms.copy(), samples[0].relaxed, samples[0].host,
                  {**samples[0].info, "id": samples[3].info["id"]})
    with pytest.warns(UserWarning, match="different splits"):
        moved = apply_split([samples[0], samples[1], twin], path)
    assert samples[0] in moved["val"] and twin in moved["val"]


def test_grown_data_set_keeps_its_split(tmp_path):
    """A set that grew 40 -> 100 per stratum: old ids stay put, new ones fill the quotas."""
    sizes = {("MoS2", "high"): 40, ("WSe2", "low"): 40}
    old = population(sizes)
    path = write_split(split_samples(old, seed=3), tmp_path / "old.json")
    before = read_split(path)
    grown = old + population({k: 60 for k in sizes}, offset=10**6)
    for s in grown:                     # new ids, distinct from the old ones
        s.info["id"] = s.info["id"] + ("-new" if s not in old else "")
    split = apply_split(grown, path, unassigned="split")
    got = ids(split)
    for name in SPLITS:
        assert set(before[name]) <= set(got[name])
    assert sorted(sum(got.values(), [])) == sorted(s.info["id"] for s in grown)
    for group in ("MoS2/high", "WSe2/low"):
        counts = {n: sum(s.group == group for s in split[n]) for n in SPLITS}
        assert counts == {"train": 80, "val": 10, "test": 10}
    assert split.seed == 3
    assert all("split" not in s.info for s in grown)   # inputs untouched
    again = apply_split(list(reversed(grown)), path, unassigned="split")
    assert {k: sorted(v) for k, v in ids(again).items()} == \
        {k: sorted(v) for k, v in got.items()}


def test_read_split_rejects_bad_files(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"seed": 0, "train": ["a"], "val": ["a"], "test": []}))
    with pytest.raises(DataFormatError, match="both train and val"):
        read_split(bad)
    bad.write_text("{not json")
    with pytest.raises(DataFormatError, match="unreadable"):
        read_split(bad)
    bad.write_text(json.dumps({"train": []}))
    with pytest.raises(DataFormatError, match="train, val and test"):
        read_split(bad)
    with pytest.raises(DataFormatError, match="both"):
        write_split({"train": ["a"], "test": ["a"]}, tmp_path / "x.json")


def test_split_without_warnings_on_clean_data():
    samples = population(SIZES)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        split = split_samples(samples)
    assert sorted(sum(ids(split).values(), [])) == sorted(s.info["id"] for s in samples)
    counts = {f"{m}/{d}": [sum(s.group == f"{m}/{d}" for s in split[k]) for k in SPLITS]
              for m, d in SIZES}
    assert counts == {"MoS2/high": [32, 4, 4], "WSe2/high": [8, 1, 1],
                      "MoS2/low": [1, 1, 1], "hBN/high": [1, 0, 0]}


# ------------------------------------------------------------ twins and strata
@pytest.fixture(scope="module")
def twins():
    return twin_population()


def test_split_never_separates_planted_twins(twins):
    samples, groups = twins
    assert len(groups) == 9 and max(len(g) for g in groups) == 5
    for seed in range(4):
        where = {id(s): k for k, v in split_samples(samples, seed=seed).items() for s in v}
        for g in groups:
            assert len({where[id(samples[i])] for i in g}) == 1, \
                [samples[i].info["id"] for i in g]
    # the relations find exactly what was planted: images (symmetry), the WSe2
    # copies (pattern), the legacy id pair (id); the classes are their union
    cls, _, rel = twin_classes(samples)
    assert sorted(map(sorted, rel["symmetry"])) == sorted(sorted(g[:4]) for g in groups[:-1])
    assert sorted(map(sorted, rel["pattern"])) == sorted(map(sorted, groups[:-1]))
    assert rel["id"] == [groups[-1]] and rel["duplicate"] == []
    assert sorted(c for c in cls if len(c) > 1) == sorted(map(sorted, groups))


def test_split_from_leaky_assignments_moves_as_few_as_the_rule_allows(twins):
    samples, groups = twins
    labelled = [dataclasses.replace(s, info=dict(s.info)) for s in samples]
    for g in groups[:4]:                      # each planted group across all splits
        for k, i in enumerate(g):
            labelled[i].info["split"] = SPLITS[k % 3]
    with pytest.warns(UserWarning, match="different existing splits"):
        split = split_samples(labelled, seed=0)
    where = {s.info["id"]: k for k, v in split.items() for s in v}
    for g in groups:
        assert len({where[samples[i].info["id"]] for i in g}) == 1
    kept = sum(where[s.info["id"]] == s.info.get("split") for s in labelled)
    # each group of five (train, val, test, train, val) keeps two: the most it can
    assert kept == 2 * 4


def _within_one(split, strata_of):
    counts: dict[str, dict[str, int]] = {}
    for name, members in split.items():
        for s in members:
            c = counts.setdefault(strata_of(s), dict.fromkeys(SPLITS, 0))
            c[name] += 1
    for stratum, c in counts.items():
        n = sum(c.values())
        for name, f in zip(SPLITS, split.fractions):
            assert abs(c[name] - f * n) <= 1, (stratum, c)
    return counts


def test_every_concentration_stratum_is_8_1_1_within_one_structure(twins):
    samples, _ = twins
    cls, strata, _ = twin_classes(samples)
    st = {id(s): k for s, k in zip(samples, strata)}
    assert sorted(set(strata)) == ["MoS2/high/4x4/c100", "MoS2/high/4x4/c125",
                                   "WSe2/high/4x4/c100", "WSe2/high/4x4/c125"]
    for seed in range(3):
        counts = _within_one(split_samples(samples, seed=seed), lambda s: st[id(s)])
        assert all(c["test"] >= 2 for c in counts.values())
    # pristine strata of several sizes from 10 on (below 10, a stratum of three or
    # more still gets a val and a test sample, which is more than 10 % of it)
    sizes = {("MoS2", "high"): 41, ("WSe2", "high"): 17, ("hBN", "high"): 10,
             ("MoS2", "low"): 13, ("WSe2", "low"): 26}
    _within_one(split_samples(population(sizes), seed=2), lambda s: s.group)


def test_concentration_strata_are_named_by_fraction_or_defect_count(twins):
    samples, _ = twins
    s = samples[0]
    assert stratum_name(s, site_pattern(s)) == "MoS2/high/4x4/c100"
    low = dataclasses.replace(s, info={**s.info, "density": "low"})
    assert stratum_name(low, site_pattern(low)) == "MoS2/low/4x4/n5"
    bare = dataclasses.replace(s, info={"material": "MoS2", "density": "high"})
    assert stratum_name(bare, site_pattern(bare)) == "MoS2/high/c104"     # 5 of 48 sites


def test_shipped_split_v2_keeps_id_twins_together_and_strata_balanced():
    """weights/data/chgnet-2dmd-tight/split-v2.json, from its ids alone."""
    new = read_split(ROOT / "weights" / "data" / "chgnet-2dmd-tight" / "split-v2.json")
    old = read_split(ROOT / "experiments/runs/definet-2dmd-v10-seed1/split.json")  # v10s1
    where = {i: k for k in SPLITS for i in new[k]}
    assert set(where) == {i for k in SPLITS for i in old[k]} and len(where) == 2399
    twins_of: dict[str, set] = {}
    for i, k in where.items():
        twins_of.setdefault(i.split("_", 1)[1], set()).add(k)
    assert len(twins_of) == 900 and all(len(v) == 1 for v in twins_of.values())
    high: dict[str, dict[str, int]] = {}
    for i, k in where.items():
        if "-high-" in i:
            key = i.rsplit("-", 1)[0]             # MoS2_8x8-high-c050
            high.setdefault(key, dict.fromkeys(SPLITS, 0))[k] += 1
    assert len(high) == 30
    for key, c in high.items():
        n = sum(c.values())
        assert all(abs(c[k] - f * n) <= 1 for k, f in zip(SPLITS, (0.8, 0.1, 0.1))), key


def test_first_per_group_takes_each_groups_first_samples_in_order():
    samples = population(SIZES)
    rng = np.random.default_rng(3)
    mixed = [samples[k] for k in rng.permutation(len(samples))]
    chosen = first_per_group(mixed, 2)
    # two of each group (one where a group has only one), in the input's order
    assert [s.group for s in chosen].count("MoS2/high") == 2
    assert [s.group for s in chosen].count("hBN/high") == 1
    assert len(chosen) == 7
    expected = [s for s in mixed if s.group == "WSe2/high"][:2]
    assert [s for s in chosen if s.group == "WSe2/high"] == expected
    positions = [mixed.index(s) for s in chosen]
    assert positions == sorted(positions)
    with pytest.raises(ValueError, match="at least 1"):
        first_per_group(mixed, 0)


def test_first_per_group_with_a_key_groups_any_items():
    items = ["a1", "b1", "a2", "a3", "b2"]
    assert first_per_group(items, 2, key=lambda s: s[0]) == ["a1", "b1", "a2", "b2"]


def test_id_twins_are_generator_ids_of_legacy_stores_only():
    from ase_definet.data.twins import id_twin_key
    info = {"id": "MoS2_8x8-high-c050-00012", "seed": 1}
    assert id_twin_key(info) == id_twin_key({**info, "id": "hBN_8x8-high-c050-00012"}) \
        == "8x8-high-c050-00012"
    assert id_twin_key({**info, "seed_scheme": "v2"}) is None       # material in the seed
    assert id_twin_key({"id": info["id"]}) is None                   # not a generator frame
    assert id_twin_key({"id": "MoS2_8x8-low-n-00003", "seed": 2}) == "8x8-low-n-00003"
    assert id_twin_key({"id": "5f3e2a", "seed": 1}) is None
