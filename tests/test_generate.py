"""Defect generator and oracle relaxations (EMT for speed, one short CHGNet run)."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from ase_definet.data.defects import (canonical_key, generate_configs,
                                      translation_table)
from ase_definet.data.generate import SAMPLES, done_ids, generate, plan_jobs
from ase_definet.data.hosts import HOSTS, build_host, host_spec
from ase_definet.data.store import read_frames
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
    table = translation_table(host)
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
    # 4 defect types on 3 distinct site orbits under translation: Mo, S-top, S-bottom
    singles = list(generate_configs(host, "low", 6, seed=0, counts=(1,)))
    assert len(singles) == 6
    with pytest.raises(RuntimeError, match="distinct"):
        list(generate_configs(host, "low", 7, seed=0, counts=(1,), max_tries=50))


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


KILL_SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
from conftest import cu_host_spec
cu_host_spec()
from ase_definet.data.generate import generate
generate({out!r}, ["Cu-fcc"], "low", 40, calculator="emt", workers=0, progress=False, seed=9)
"""


def test_sigkill_loses_at_most_the_structure_in_flight(tmp_path):
    script = KILL_SCRIPT.format(tests=str(ROOT / "tests"), out=str(tmp_path))
    proc = subprocess.Popen([sys.executable, "-c", script])
    store = tmp_path / SAMPLES
    deadline = time.time() + 120
    while time.time() < deadline:
        if store.exists() and len(read_frames(store)) >= 3:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with open(store, "a") as fh:        # a write cut short by the kill
        fh.write("32\nLattice=\"10 0 0 0 10 0 0 0 10\" Properties=species:S:1\nCu 0 0")
    done = done_ids(tmp_path)            # repairs the torn tail
    assert len(done) >= 3
    s = generate(tmp_path, ["Cu-fcc"], "low", 40, calculator="emt", workers=0,
                 progress=False, seed=9)
    ids = [f.info["id"] for f in read_frames(store)]
    assert len(ids) == len(set(ids)) == 40
    assert s["new"] == 40 - len(done)


def test_chgnet_oracle_small_mos2(tmp_path):
    pytest.importorskip("chgnet")
    s = generate(tmp_path, ["MoS2"], "low", 1, supercell=3, calculator="chgnet",
                 workers=0, threads=2, progress=False, seed=0, steps=300)
    frames = read_frames(tmp_path / SAMPLES)
    assert s["new"] == 1 and len(frames) == 1
    f = frames[0]
    assert f.info["calculator_version"].startswith("chgnet") and "0.3.0" in f.info["calculator_version"]
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
