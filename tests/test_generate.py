"""Defect generator and oracle relaxations (EMT for speed, one short CHGNet run)."""
from __future__ import annotations

import json
import signal
import subprocess
import sys

import numpy as np
import pytest

from ase_definet.data.defects import apply_defects, generate_configs, translation_table
from ase_definet.data.generate import SAMPLES, done_ids, generate, plan_jobs
from ase_definet.data.hosts import HOSTS, build_host, host_spec
from ase_definet.data.store import read_frames
from ase_definet.data.symmetry import canonical_key, site_permutations
from ase_definet.match import match_host

from conftest import ROOT, cu_host_spec, store_samples


def test_builtin_hosts_match_table_1():
    cells = {"MoS2": (25.52, 25.52), "WSe2": (26.62, 26.62), "hBN": (20.10, 20.10),
             "GaSe": (22.91, 22.91), "InSe": (24.58, 24.58), "BP": (19.80, 27.61)}
    for name, (a, b) in cells.items():
        h = build_host(name)
        lengths = h.cell.lengths()
        assert abs(lengths[0] - a) < 0.01 and abs(lengths[1] - b) < 0.01, name
        assert abs(lengths[2] - 20.0) < 1e-9 and list(h.pbc) == [True, True, False]
        assert 120 <= len(h) <= 192
    assert host_spec("h-BN").name == "hBN" and host_spec("P").name == "BP"


def test_translations_are_one_configuration():
    host = build_host("MoS2", 8)
    table = translation_table(host)
    assert table.shape == (64, 192)
    s_sites = np.flatnonzero(np.array(host.get_chemical_symbols()) == "S")
    keys = {canonical_key(table, [s], [("vacancy", "S", None)]) for s in s_sites}
    assert len(keys) == 2            # top- and bottom-layer S, nothing else
    pair = [("vacancy", "S", None), ("substitution", "Mo", "W")]
    k1 = canonical_key(table, [1, 3], pair)
    k2 = canonical_key(table, table[17, [1, 3]].tolist(), pair)
    assert k1 == k2


def test_generator_is_seeded_distinct_and_extensible():
    host = build_host("MoS2", 4)
    a = list(generate_configs(host, "low", 40, seed=3))
    b = list(generate_configs(host, "low", 40, seed=3))
    assert a == b
    table = site_permutations(host)
    keys = [canonical_key(table, c.sites, c.defects) for c in a]
    assert len(set(keys)) == len(keys)
    assert all(1 <= len(c.sites) <= 3 for c in a)
    high = plan_jobs(["GaSe"], "high", 3, None, 0)
    assert [j.fraction for j in high[:5]] == [0.025, 0.05, 0.075, 0.1, 0.125]
    more = plan_jobs(["GaSe"], "high", 5, None, 0)
    assert {j.id: j for j in high}.items() <= {j.id: j for j in more}.items()
    n_sites = len(build_host("GaSe"))
    assert {len(j.sites) for j in high} == {max(1, round(f * n_sites))
                                            for f in (0.025, 0.05, 0.075, 0.1, 0.125)}
    allowed = set(HOSTS["GaSe"].defect_types)
    assert all(set(j.defects) <= allowed for j in high)


def test_all_low_density_singles_are_found():
    host = build_host("MoS2", 3)
    # 4 defect types on 2 site orbits of the space group (Mo; S, top and bottom
    # mirror images), 3 orbits under translations alone (Mo, S-top, S-bottom)
    singles = list(generate_configs(host, "low", 4, seed=0, counts=(1,)))
    assert len(singles) == 4
    with pytest.raises(RuntimeError, match="distinct"):
        list(generate_configs(host, "low", 5, seed=0, counts=(1,), max_tries=50))
    legacy = list(generate_configs(host, "low", 6, seed=0, counts=(1,),
                                   symmetry="translations"))
    assert len(legacy) == 6
    with pytest.raises(RuntimeError, match="distinct"):
        list(generate_configs(host, "low", 7, seed=0, counts=(1,), max_tries=50,
                              symmetry="translations"))
    with pytest.raises(ValueError, match="symmetry must be"):
        list(generate_configs(host, "low", 1, seed=0, symmetry="rotations"))


def test_emt_generation_resume_and_manifest(emt_store, tmp_path):
    frames = read_frames(emt_store / SAMPLES)
    assert len(frames) == 36 and len(done_ids(emt_store)) == 36
    info = frames[0].info
    for key in ("steps", "converged", "energy_initial", "energy_final", "wall_time",
                "calculator", "calculator_version", "seed", "defects", "id"):
        assert key in info
    assert all(f.info["energy_final"] <= f.info["energy_initial"] for f in frames)
    manifest = json.loads((emt_store / "manifest.json").read_text())
    assert manifest["structures"] == 36 and manifest["oracle"]["fmax"] == 0.01
    # markers from match_host reproduce the generated defect strings
    for s in store_samples(emt_store)[:6]:
        labels = sorted([f"V_{e}" for e, _ in s.match.vacancies]
                        + [f"{n}_{o}" for _, o, n in s.match.substitutions])
        assert labels == sorted(s.info["defects"].split(","))
        assert np.abs(s.displacement).max() > 1e-3
    again = generate(emt_store, ["Cu-fcc"], "low", 36, calculator="emt", workers=0,
                     progress=False, seed=0)
    assert again["new"] == 0 and again["already_done"] == 36


def test_worker_processes(tmp_path):
    cu_host_spec()
    s = generate(tmp_path, ["Cu-fcc"], "low", 3, supercell=(2, 2, 2), calculator="emt",
                 workers=2, progress=False, seed=5)
    assert s["new"] == 3 and len(done_ids(tmp_path)) == 3


# SIGKILL in the middle of writing the 5th structure: deterministic, where a kill
# timed by the parent could land after the last structure and test no resume at all.
KILL_SCRIPT = """
import os, signal, sys
sys.path.insert(0, {tests!r})
from conftest import cu_host_spec
cu_host_spec()
import ase_definet.data.engine as engine
from ase_definet.data.generate import generate
append, calls = engine.append_frames, []

def append_then_die(path, frames):
    calls.append(1)
    if len(calls) == 5:
        with open(path, "a") as fh:           # half a frame, then the kill
            fh.write("32\\nLattice=\\"10 0 0 0 10 0 0 0 10\\" Properties=species:S:1\\nCu 0 0")
        os.kill(os.getpid(), signal.SIGKILL)
    append(path, frames)

engine.append_frames = append_then_die
generate({out!r}, ["Cu-fcc"], "low", 12, calculator="emt", workers=0, progress=False, seed=9)
"""


def test_sigkill_loses_at_most_the_structure_in_flight(tmp_path):
    script = KILL_SCRIPT.format(tests=str(ROOT / "tests"), out=str(tmp_path))
    proc = subprocess.run([sys.executable, "-c", script], timeout=300)
    assert proc.returncode == -signal.SIGKILL
    store = tmp_path / SAMPLES
    assert store.read_text().endswith("Cu 0 0")     # the torn write is on disk
    done = done_ids(tmp_path)            # repairs the torn tail
    assert len(done) == 4
    cu_host_spec()                       # this process resumes with the same host
    s = generate(tmp_path, ["Cu-fcc"], "low", 12, calculator="emt", workers=0,
                 progress=False, seed=9)
    ids = [f.info["id"] for f in read_frames(store)]
    assert len(ids) == len(set(ids)) == 12
    assert s["new"] == 12 - len(done) == 8


def test_chgnet_oracle_small_mos2(tmp_path):
    pytest.importorskip("chgnet")
    s = generate(tmp_path, ["MoS2"], "low", 1, supercell=3, calculator="chgnet",
                 workers=0, threads=2, progress=False, seed=0, steps=300)
    frames = read_frames(tmp_path / SAMPLES)
    assert s["new"] == 1 and len(frames) == 1
    f = frames[0]
    version = f.info["calculator_version"]
    assert version.startswith("chgnet") and "0.3.0" in version
    assert f.info["converged"] and f.info["fmax_final"] <= 0.01
    host = read_frames(tmp_path / "hosts.extxyz")[0]
    m = match_host(f, host)
    assert len(m.vacancies) + len(m.substitutions) >= 1


def test_host_from_2dmd_unit_cell(pilot):
    from conftest import UNIT_CELLS
    host = build_host("MoS2", 8, unit=UNIT_CELLS / "MoS2.cif")
    assert len(host) == 192 and abs(host.cell.lengths()[2] - 14.879) < 1e-3
    atoms, desc = pilot[0]
    m = match_host(atoms, host)
    assert len(m.vacancies) + len(m.substitutions) == len(desc)
    np.testing.assert_allclose(host.cell.array, atoms.cell.array, atol=1e-4)


def test_manifest_kept_current_during_a_run(tmp_path, monkeypatch):
    """A run killed hard leaves a manifest at most MANIFEST_EVERY stale (it was left
    at the previous run's count after a SIGKILL); a resumed run rewrites it first."""
    import ase_definet.data.generate as gen
    cu_host_spec()
    manifest = tmp_path / "manifest.json"
    seen = []
    relax_job = gen._relax_job

    def spying(args):
        seen.append(json.loads(manifest.read_text())["structures"])
        return relax_job(args)

    monkeypatch.setattr(gen, "_relax_job", spying)
    monkeypatch.setattr(gen, "MANIFEST_EVERY", 0.0)
    generate(tmp_path, ["Cu-fcc"], "low", 3, supercell=(2, 2, 2), calculator="emt",
             workers=0, progress=False, seed=5)
    assert seen == [0, 1, 2]
    monkeypatch.setattr(gen, "MANIFEST_EVERY", 1e9)
    manifest.write_text(json.dumps({"structures": -1}))   # stale, as a kill leaves it
    seen.clear()
    generate(tmp_path, ["Cu-fcc"], "low", 5, supercell=(2, 2, 2), calculator="emt",
             workers=0, progress=False, seed=5)
    assert seen == [3, 3]
    assert json.loads(manifest.read_text())["structures"] == 5


# ------------------------------------------------------------ seed schemes
def _site_sets(jobs, material):
    return {j.id.split("_", 1)[1]: j.sites for j in jobs if j.material == material}


def test_v2_streams_draw_other_sites_in_each_material():
    """Legacy streams drew the same sites for MoS2 and WSe2 (issue #29); v2 does not."""
    for density, count in (("low", 20), ("high", 4)):
        legacy = plan_jobs(["MoS2", "WSe2"], density, count, 4, seed=2, seed_scheme="legacy")
        v2 = plan_jobs(["MoS2", "WSe2"], density, count, 4, seed=2)
        a, b = _site_sets(legacy, "MoS2"), _site_sets(legacy, "WSe2")
        assert a.keys() == b.keys() and all(a[k] == b[k] for k in a)
        a, b = _site_sets(v2, "MoS2"), _site_sets(v2, "WSe2")
        same = [k for k in a if a[k] == b[k]]
        # only single defects can coincide (a 4x4 MoS2 has 48 sites)
        assert all(len(a[k]) == 1 for k in same), same
        assert len(same) <= 0.1 * len(a)
        assert {j.seed_scheme for j in v2} == {"v2"}
    with pytest.raises(ValueError, match="seed_scheme"):
        plan_jobs(["MoS2"], "low", 1, 3, seed=0, seed_scheme="v3")


def test_legacy_scheme_reproduces_the_shipped_store():
    """The first increments of weights/data/chgnet-2dmd (its recipe.sh), frame by frame."""
    from ase.io import read
    path = ROOT / "weights" / "data" / "chgnet-2dmd" / SAMPLES
    frames = read(path, index=":90", format="extxyz")
    plans = {}
    for mats, density, count, sc, seed in (
            (["MoS2", "WSe2"], "low", 30, None, 2),
            (["MoS2", "WSe2", "hBN", "GaSe", "InSe", "BP"], "high", 2, None, 1),
            (["MoS2"], "high", 1, 12, 3)):
        for scheme in ("legacy", "v2"):
            for j in plan_jobs(mats, density, count, sc, seed, seed_scheme=scheme):
                plans.setdefault(scheme, {})[j.id] = j
    hosts = {}
    checked = differ = 0
    for f in frames:
        job = plans["legacy"][f.info["id"]]
        assert f.info["defects"] == ",".join(
            f"V_{a}" if k == "vacancy" else f"{b}_{a}" for k, a, b in job.defects)
        if job.host_key not in hosts:
            hosts[job.host_key] = build_host(job.material, job.supercell)
        ideal = apply_defects(hosts[job.host_key], job.sites, job.defects)
        assert ideal.get_chemical_symbols() == f.get_chemical_symbols()
        # the store's host was relaxed by the oracle first: within 0.1 Å of ideal
        assert np.abs(ideal.positions - f.positions).max() < 0.1
        checked += 1
        differ += plans["v2"][f.info["id"]].sites != job.sites
    assert checked == 90 and differ >= 85


def test_a_store_resumes_under_the_scheme_it_was_made_with(tmp_path):
    cu_host_spec()
    kw = dict(calculator="emt", workers=0, progress=False, seed=1, supercell=(2, 2, 2))
    s = generate(tmp_path, ["Cu-fcc"], "low", 2, seed_scheme="legacy", **kw)
    assert s["seed_scheme"] == "legacy" and s["new"] == 2
    # frames written before the scheme was recorded count as legacy
    from ase_definet.data.store import append_frames
    frames = read_frames(tmp_path / SAMPLES)
    for f in frames:
        del f.info["seed_scheme"]
    (tmp_path / SAMPLES).unlink()
    append_frames(tmp_path / SAMPLES, frames)
    more = generate(tmp_path, ["Cu-fcc"], "low", 3, **kw)
    assert more["seed_scheme"] == "legacy" and more["new"] == 1
    legacy = plan_jobs(["Cu-fcc"], "low", 3, (2, 2, 2), 1, seed_scheme="legacy")
    third = read_frames(tmp_path / SAMPLES)[-1]
    assert third.info["id"] == legacy[2].id and third.info["seed_scheme"] == "legacy"
    assert json.loads((tmp_path / "manifest.json").read_text())["seed_scheme"] == "legacy"
    with pytest.raises(ValueError, match="made with seed scheme 'legacy', not 'v2'"):
        generate(tmp_path, ["Cu-fcc"], "low", 4, seed_scheme="v2", **kw)
    fresh = generate(tmp_path / "new", ["Cu-fcc"], "low", 1, **kw)
    assert fresh["seed_scheme"] == "v2"
    assert read_frames(tmp_path / "new" / SAMPLES)[0].info["seed_scheme"] == "v2"
