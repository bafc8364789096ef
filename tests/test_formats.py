"""Data formats: generator store, 2DMD layout, compact file, DFT outputs."""
from __future__ import annotations

import ast
import csv
import gzip
import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import read, write

from ase_definet.data.defects import apply_defects
from ase_definet.data.formats import (LoadResult, load_dataset, load_store, read_2dmd,
                                      read_compact, read_pairs, read_relaxation,
                                      write_2dmd, write_compact)
from ase_definet.data.hosts import build_host
from ase_definet.data.sample import Sample
from ase_definet.data.store import append_frames, read_frames
from ase_definet.errors import DataFormatError

REPO = Path(__file__).resolve().parents[1]
REAL_STORE = REPO / "weights" / "data" / "chgnet-2dmd"
SHARED = Path("/work/shared/data")
UNIT_CELLS = SHARED / "2dmd-unit-cells"
PILOT = SHARED / "2dmd-pilot"


# ------------------------------------------------------------ fixtures
def make_sample(material: str, sid: str, sites, defects, density: str = "high",
                seed: int = 0, n: int = 3, vacuum: float = 20.0) -> Sample:
    """A small defect structure with randomly displaced 'relaxed' positions."""
    host = build_host(material, n, vacuum=vacuum)
    atoms = apply_defects(host, sites, defects)
    rng = np.random.default_rng(seed)
    relaxed = atoms.positions + rng.normal(scale=0.05, size=atoms.positions.shape)
    return Sample(atoms, relaxed, host, {"id": sid, "material": material,
                                         "density": density})


def mos2_samples() -> list[Sample]:
    vac_sub = [("vacancy", "Mo", None), ("substitution", "S", "Se")]
    out = []
    for k in range(5):
        # Mo sites are 0, 3, 6, ...; S sites the others.
        out.append(make_sample("MoS2", f"mos2-h{k}", [3 * k, 3 * k + 1], vac_sub,
                               seed=k))
    out.append(make_sample("MoS2", "mos2-l0", [4], [("substitution", "S", "Se")],
                           density="low", seed=10))
    out.append(make_sample("MoS2", "mos2-l1", [3], [("substitution", "Mo", "W")],
                           density="low", seed=11))
    out.append(make_sample("hBN", "hbn-h0", [0, 3], [("vacancy", "B", None),
                                                     ("substitution", "N", "C")],
                           seed=12))
    return out


@pytest.fixture
def samples() -> list[Sample]:
    return mos2_samples()


@pytest.fixture
def tree(tmp_path, samples) -> Path:
    split = {"train": ["mos2-h0", "mos2-h1", "mos2-h2", "mos2-l0", "hbn-h0"],
             "val": ["mos2-h3", "mos2-l1"], "test": ["mos2-h4"]}
    return write_2dmd(samples, tmp_path / "2dmd", split=split)


def by_id(result) -> dict:
    return {s.info["id"]: s for s in result.samples}


def defect_multiset(sample: Sample) -> Counter:
    return Counter(tuple(sorted(r.items())) for r in sample.match.defect_records())


# ------------------------------------------------------------ 2DMD layout
def test_write_2dmd_layout(tree):
    high, low = tree / "high_density_defects", tree / "low_density_defects"
    assert (high / "MoS2.cif").exists() and (high / "BN.cif").exists()
    assert (low / "MoS2.cif").exists()
    assert (high / "hBN_spin_500" / "CIF" / "hbn-h0_unrelaxed.cif").exists()
    assert (high / "MoS2_500" / "CIF" / "mos2-h4_relaxed.cif").exists()
    assert (low / "MoS2" / "CIF_POSCAR" / "mos2-l1_unrelaxed.cif").exists()
    with open(high / "MoS2_500" / "val.csv", newline="") as fh:
        assert list(csv.DictReader(fh)) == [{"atoms_id": "mos2-h3"}]
    # The unit cell written for high density has c = 20 Å (2DMD convention).
    assert read(high / "MoS2.cif").cell.lengths()[2] == pytest.approx(20.0)


def test_2dmd_round_trip_is_lossless(tree, samples):
    result = read_2dmd(tree)
    assert not result.skipped and not result.duplicates
    got = by_id(result)
    assert set(got) == {s.info["id"] for s in samples}
    for s in samples:
        g = got[s.info["id"]]
        assert g.atoms.get_chemical_symbols() == s.atoms.get_chemical_symbols()
        np.testing.assert_allclose(g.atoms.positions, s.atoms.positions, atol=1e-5)
        np.testing.assert_allclose(g.relaxed, s.relaxed, atol=1e-5)
        np.testing.assert_allclose(g.atoms.cell.array, s.atoms.cell.array, atol=1e-5)
        assert g.info["material"] == s.info["material"]
        assert g.info["density"] == s.info["density"]
        assert g.info["source"].endswith(f"{s.info['id']}_unrelaxed.cif")
        assert tuple(g.atoms.pbc) == (True, True, False)
        # The unit-cell host reproduces the defects of the original supercell host.
        assert defect_multiset(g) == defect_multiset(s)
    assert got["mos2-h3"].info["split"] == "val"
    assert got["mos2-h4"].info["split"] == "test"
    assert got["hbn-h0"].info["split"] == "train"


def test_2dmd_default_split_uses_info_then_splitter(tmp_path, samples):
    samples[0].info["split"] = "test"
    result = read_2dmd(write_2dmd(samples, tmp_path / "t"))
    got = by_id(result)
    assert got["mos2-h0"].info["split"] == "test"
    assert all(s.info["split"] in ("train", "val", "test") for s in result.samples)


def test_2dmd_reads_one_density_folder(tree):
    only_low = read_2dmd(tree / "low_density_defects")
    assert {s.info["density"] for s in only_low.samples} == {"low"}
    assert len(only_low) == 2
    only_high = read_2dmd(tree, densities=("high",))
    assert len(only_high) == 6


def test_2dmd_duplicate_id_kept_in_one_split(tree):
    folder = tree / "high_density_defects" / "MoS2_500"
    with open(folder / "train.csv", "a", newline="") as fh:
        fh.write("mos2-h4\n")          # also in test.csv
    with open(folder / "val.csv", "a", newline="") as fh:
        fh.write("mos2-h0\n")          # also in train.csv
    result = read_2dmd(tree)
    got = [s.info["id"] for s in result.samples]
    assert got.count("mos2-h4") == 1 and got.count("mos2-h0") == 1
    assert by_id(result)["mos2-h4"].info["split"] == "test"
    assert by_id(result)["mos2-h0"].info["split"] == "val"
    assert sorted(result.duplicates) == ["mos2-h0", "mos2-h4"]
    assert "2 ids listed more than once" in result.summary()


def _corrupt(kind: str, cif: Path) -> str:
    """Spoil one pair of files in the CIF folder; returns the file the reason must name."""
    u, r = cif / "mos2-h2_unrelaxed.cif", cif / "mos2-h2_relaxed.cif"
    spoilt = read(r)
    relaxed = Atoms(numbers=spoilt.numbers, positions=spoilt.positions, cell=spoilt.cell)
    if kind == "missing partner":
        r.unlink()
        return u.name
    if kind == "garbage":
        r.write_text("this is not a CIF file\n_cell_length_a ???\n")
        return r.name
    if kind == "count":
        del relaxed[0]
    elif kind == "species":
        relaxed[5].symbol = "W"
    elif kind == "cell":
        relaxed.set_cell(relaxed.cell.array * [[1.05], [1.05], [1.0]], scale_atoms=True)
    write(r, relaxed, format="cif", wrap=False)
    return u.name


@pytest.mark.parametrize("kind,words", [
    ("missing partner", "no relaxed partner"),
    ("garbage", "unreadable CIF"),
    ("count", "atoms"),
    ("species", "species differ"),
    ("cell", "cell differs"),
])
def test_2dmd_bad_pair_is_skipped_rest_loads(tree, kind, words):
    named = _corrupt(kind, tree / "high_density_defects" / "MoS2_500" / "CIF")
    result = read_2dmd(tree)
    assert len(result.samples) == 7
    assert "mos2-h2" not in by_id(result)
    assert len(result.skipped) == 1
    name, reason = result.skipped[0]
    assert name == "mos2-h2"
    assert named in reason and words in reason
    assert "skipped 1" in result.summary() and named in result.summary()


def test_2dmd_listed_but_missing_file_is_skipped(tree):
    with open(tree / "low_density_defects" / "MoS2" / "test.csv", "a") as fh:
        fh.write("ghost\n")
    result = read_2dmd(tree)
    assert len(result.samples) == 8
    assert result.skipped[0][0] == "ghost"
    assert "ghost_unrelaxed.cif" in result.skipped[0][1]
    assert "test.csv" in result.skipped[0][1]


def test_write_2dmd_rejects_what_the_layout_cannot_hold(tmp_path, samples):
    s = samples[0]
    with pytest.raises(DataFormatError, match="density"):
        write_2dmd([Sample(s.atoms, s.relaxed, s.host, {"id": "x", "material": "MoS2"})],
                   tmp_path / "a")
    thick = make_sample("MoS2", "thick", [1], [("substitution", "S", "Se")],
                        vacuum=25.0)
    with pytest.raises(DataFormatError, match="c = 20"):
        write_2dmd([thick], tmp_path / "b", split={"train": ["thick"]})
    with pytest.raises(DataFormatError, match="no split"):
        write_2dmd(samples, tmp_path / "c", split={"train": ["mos2-h0"]})


@pytest.mark.skipif(not (UNIT_CELLS / "MoS2.cif").exists(), reason="2DMD unit cells absent")
def test_2dmd_real_unit_cell_c_reset_to_20(tree):
    # The published MoS2.cif has c = 14.879 Å; high density resets it to 20 Å.
    shutil.copy(UNIT_CELLS / "MoS2.cif", tree / "high_density_defects" / "MoS2.cif")
    result = read_2dmd(tree, densities=("high",))
    assert not result.skipped
    s = by_id(result)["mos2-h1"]
    assert s.host.cell.lengths()[2] == pytest.approx(20.0)
    assert s.host.cell.lengths()[0] == pytest.approx(3.1903157)
    assert defect_multiset(s) == Counter({(("element", "Mo"), ("type", "vacancy")): 1,
                                          (("from", "S"), ("to", "Se"),
                                           ("type", "substitution")): 1})


@pytest.mark.skipif(not (PILOT / "pilot" / "data.csv.gz").exists(),
                    reason="2DMD pilot absent")
def test_2dmd_reads_published_cif_text(tmp_path):
    """Published (pymatgen-written) CIF text, low-density convention: c kept."""
    low = tmp_path / "low_density_defects"
    cif = low / "MoS2" / "CIF_POSCAR"
    cif.mkdir(parents=True)
    shutil.copy(UNIT_CELLS / "MoS2.cif", low / "MoS2.cif")
    with gzip.open(PILOT / "pilot" / "data.csv.gz", "rt", newline="") as fh:
        rows = list(csv.reader(fh))[1:4]
    with open(PILOT / "descriptors.csv", newline="") as fh:
        descriptors = {r["_id"]: r["defects"] for r in csv.DictReader(fh)}
    for k, (_, text) in enumerate(rows):
        for kind in ("unrelaxed", "relaxed"):
            (cif / f"p{k}_{kind}.cif").write_text(text)
    (low / "MoS2" / "train.csv").write_text("atoms_id\np0\np1\np2\n")
    result = read_2dmd(tmp_path)
    assert len(result) == 3 and not result.skipped
    for k, (desc_id, _) in enumerate(rows):
        s = by_id(result)[f"p{k}"]
        assert s.atoms.cell.lengths()[2] == pytest.approx(14.879004)
        want = Counter(tuple(sorted(d.items()))
                       for d in ast.literal_eval(descriptors[desc_id]))
        assert defect_multiset(s) == want


# ------------------------------------------------------------ compact form
def test_compact_round_trip(tmp_path, samples):
    samples[0].info.update(code="00012", empty="", flag="T", none=None,
                           nested={"a": [1, "x"]}, steps=37, converged=True,
                           energy_final=-1.25)
    manifest_path = write_compact(samples, tmp_path / "set.extxyz.gz")
    manifest = json.loads(manifest_path.read_text())
    assert manifest["structures"] == len(samples)
    assert manifest["groups"] == {"MoS2/high": 5, "MoS2/low": 2, "hBN/high": 1}
    assert manifest["distinct_hosts"] == 2
    assert (tmp_path / "set.hosts.extxyz.gz").exists()
    back = read_compact(tmp_path / "set.extxyz.gz")
    assert len(back) == len(samples) and not back.skipped
    for s, b in zip(samples, back.samples):
        np.testing.assert_allclose(b.atoms.positions, s.atoms.positions, atol=1e-6)
        np.testing.assert_allclose(b.relaxed, s.relaxed, atol=1e-6)
        np.testing.assert_allclose(b.host.positions, s.host.positions, atol=1e-6)
        np.testing.assert_allclose(b.atoms.cell.array, s.atoms.cell.array, atol=1e-9)
        assert (b.atoms.numbers == s.atoms.numbers).all()
        assert tuple(b.atoms.pbc) == tuple(s.atoms.pbc)
        assert b.info["source"] == str(tmp_path / "set.extxyz.gz")
        assert {k: v for k, v in b.info.items() if k != "source"} == s.info
    info = back.samples[0].info
    assert info["code"] == "00012" and info["empty"] == "" and info["flag"] == "T"
    assert info["none"] is None and info["steps"] == 37 and info["converged"] is True
    assert load_dataset(tmp_path / "set.extxyz.gz").samples[3].info == back.samples[3].info


def test_compact_is_deterministic_and_tamper_evident(tmp_path, samples):
    for folder in ("one", "two"):
        write_compact(samples, tmp_path / folder / "a.extxyz.gz")
    for name in ("a.extxyz.gz", "a.hosts.extxyz.gz", "a.manifest.json"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()
    data = tmp_path / "one" / "a.extxyz.gz"
    frames = read_frames(data)
    frames[0].positions[0, 0] += 0.1
    from ase_definet.data.store import write_gz
    write_gz(data, frames)
    with pytest.raises(DataFormatError, match="sha256"):
        read_compact(data)
    with pytest.raises(DataFormatError, match="extxyz.gz"):
        write_compact(samples, tmp_path / "wrong.xyz")


# ------------------------------------------------------------ DFT outputs
def _trajectory(sample: Sample, n: int = 4) -> list[Atoms]:
    frames = []
    for k in range(n):
        a = sample.atoms.copy()
        a.positions = sample.atoms.positions + (sample.relaxed - sample.atoms.positions) \
            * k / (n - 1)
        a.calc = SinglePointCalculator(a, energy=-10.0 - k, forces=np.zeros((len(a), 3)))
        frames.append(a)
    return frames


@pytest.mark.parametrize("name", ["relax.traj", "relax.extxyz"])
def test_read_relaxation_trajectory(tmp_path, samples, name):
    s = samples[1]
    write(tmp_path / name, _trajectory(s))
    got = read_relaxation(tmp_path / name, "MoS2")
    np.testing.assert_allclose(got.atoms.positions, s.atoms.positions, atol=1e-6)
    np.testing.assert_allclose(got.relaxed, s.relaxed, atol=1e-6)
    assert got.info["steps"] == 3 and got.info["id"] == "relax"
    assert got.info["energy_initial"] == pytest.approx(-10.0)
    assert got.info["energy_final"] == pytest.approx(-13.0)
    assert got.info["material"] == "MoS2"
    assert got.info["source"] == str(tmp_path / name)
    assert defect_multiset(got) == defect_multiset(s)
    # Other frames on request; host as Atoms or as a file.
    mid = read_relaxation(tmp_path / name, s.host, index_relaxed=1)
    assert mid.info["steps"] == 1
    write(tmp_path / "host.cif", s.host)
    assert defect_multiset(read_relaxation(tmp_path / name, str(tmp_path / "host.cif"))) \
        == defect_multiset(s)


def test_read_relaxation_errors(tmp_path, samples):
    write(tmp_path / "one.extxyz", samples[0].atoms)
    with pytest.raises(DataFormatError, match="same frame"):
        read_relaxation(tmp_path / "one.extxyz", "MoS2")
    with pytest.raises(DataFormatError, match="host"):
        read_relaxation(tmp_path / "one.extxyz", None)
    (tmp_path / "junk.traj").write_bytes(b"\x00 not a trajectory")
    with pytest.raises(DataFormatError, match="junk.traj"):
        read_relaxation(tmp_path / "junk.traj", "MoS2")


def _vasprun(frames: list[Atoms], energies: list[float]) -> str:
    """A small, well-formed vasprun.xml with one calculation per frame."""
    def varray(name, rows):
        body = "".join(f"   <v> {r[0]:.10f} {r[1]:.10f} {r[2]:.10f} </v>\n" for r in rows)
        return f'  <varray name="{name}" >\n{body}  </varray>\n'

    def structure(a, name=None):
        tag = f' name="{name}"' if name else ""
        return (f"  <structure{tag}>\n   <crystal>\n" + varray("basis", a.cell.array)
                + f'    <i name="volume"> {a.get_volume():.8f} </i>\n   </crystal>\n'
                + varray("positions", a.get_scaled_positions(wrap=False))
                + "  </structure>\n")

    def energy(e):
        return ("<energy>\n" + "".join(f'  <i name="{k}"> {e:.8f} </i>\n' for k in
                                      ("e_fr_energy", "e_wo_entrp", "e_0_energy"))
                + "</energy>\n")

    a0 = frames[0]
    species = a0.get_chemical_symbols()
    kinds = list(dict.fromkeys(species))
    rc = "".join(f"    <rc><c>{s:2s}</c><c>{kinds.index(s) + 1:4d}</c></rc>\n"
                 for s in species)
    types = "".join(f"    <rc><c>{species.count(s):4d}</c><c>{s:2s}</c></rc>\n"
                    for s in kinds)
    calcs = "".join("<calculation>\n <scstep>\n" + energy(e) + " </scstep>\n"
                    + structure(a) + varray("forces", np.zeros((len(a), 3)))
                    + energy(e) + "</calculation>\n" for a, e in zip(frames, energies))
    return f"""<?xml version="1.0" encoding="ISO-8859-1"?>
<modeling>
 <generator>
  <i name="program" type="string">vasp </i>
  <i name="version" type="string">6.3.2  </i>
 </generator>
 <incar>
  <i type="string" name="PREC">accurate</i>
  <i name="IBRION">     2</i>
  <i name="NSW">     {len(frames)}</i>
 </incar>
 <kpoints>
  <generation param="Gamma">
   <v type="int" name="divisions">       1        1        1 </v>
  </generation>
  <varray name="kpointlist" >
   <v>       0.00000000       0.00000000       0.00000000 </v>
  </varray>
  <varray name="weights" >
   <v>       1.00000000 </v>
  </varray>
 </kpoints>
 <parameters>
  <i name="ENCUT">    400.00000000</i>
 </parameters>
 <atominfo>
  <atoms>     {len(a0)} </atoms>
  <types>       {len(kinds)} </types>
  <array name="atoms" >
   <dimension dim="1">ion</dimension>
   <field type="string">element</field>
   <field type="int">atomtype</field>
   <set>
{rc}   </set>
  </array>
  <array name="atomtypes" >
   <dimension dim="1">type</dimension>
   <field type="int">atomspertype</field>
   <field type="string">element</field>
   <set>
{types}   </set>
  </array>
 </atominfo>
{structure(a0, "initialpos")}{calcs}{structure(frames[-1], "finalpos")}</modeling>
"""


def test_read_relaxation_vasprun(tmp_path, samples):
    s = samples[5]
    frames = _trajectory(s, n=2)
    run = tmp_path / "vac_S_1" / "vasprun.xml"
    run.parent.mkdir()
    run.write_text(_vasprun(frames, [-100.5, -101.25]))
    assert len(read(run, index=":", format="vasp-xml")) == 2
    got = read_relaxation(run, "MoS2")
    assert got.info["id"] == "vac_S_1" and got.info["steps"] == 1
    assert got.info["energy_final"] == pytest.approx(-101.25)
    np.testing.assert_allclose(got.atoms.positions, s.atoms.positions, atol=1e-6)
    np.testing.assert_allclose(got.relaxed, s.relaxed, atol=1e-6)
    assert defect_multiset(got) == defect_multiset(s)


def test_read_pairs_skips_bad_pair(tmp_path, samples):
    s, t = samples[0], samples[1]
    write(tmp_path / "a_unrelaxed.extxyz", s.atoms)
    write(tmp_path / "a_relaxed.traj", _trajectory(s))       # last frame is relaxed
    bad = t.atoms.copy()
    bad[0].symbol = "W"
    write(tmp_path / "b_unrelaxed.extxyz", t.atoms)
    write(tmp_path / "b_relaxed.extxyz", bad)
    relaxed = t.atoms.copy()
    relaxed.positions = t.relaxed
    write(tmp_path / "d_unrelaxed.cif", t.atoms)
    write(tmp_path / "d_relaxed.cif", relaxed)
    result = read_pairs([(tmp_path / "a_unrelaxed.extxyz", tmp_path / "a_relaxed.traj"),
                         (tmp_path / "b_unrelaxed.extxyz", tmp_path / "b_relaxed.extxyz"),
                         (tmp_path / "c_unrelaxed.extxyz", tmp_path / "c_relaxed.cif"),
                         (tmp_path / "d_unrelaxed.cif", tmp_path / "d_relaxed.cif")],
                        "MoS2", info={"density": "high"})
    assert [x.info["id"] for x in result.samples] == ["a", "d"]
    np.testing.assert_allclose(result.samples[0].relaxed, s.relaxed, atol=1e-6)
    assert result.samples[0].info["density"] == "high"
    d = result.samples[1]
    assert tuple(d.atoms.pbc) == (True, True, True)       # a plain CIF: fully periodic
    np.testing.assert_allclose(d.displacement, t.displacement, atol=1e-6)
    assert defect_multiset(d) == defect_multiset(t)
    assert [n for n, _ in result.skipped] == ["b", "c"]
    assert "b_unrelaxed.extxyz" in result.skipped[0][1]
    assert "species differ" in result.skipped[0][1]
    assert "c_unrelaxed.extxyz" in result.skipped[1][1]
    with pytest.raises(DataFormatError, match="host"):
        read_pairs([], None)


# ------------------------------------------------------------ generator store
def _store_frame(sample: Sample, sid: str, converged: bool = True,
                 host_key: str = "MoS2_3x3") -> Atoms:
    a = sample.atoms.copy()
    a.arrays["relaxed_positions"] = sample.relaxed
    a.info = {"id": sid, "material": "MoS2", "density": "high", "supercell": "3x3",
              "host_key": host_key, "defects": "V_Mo,Se_S", "steps": 40,
              "converged": converged, "calculator": "test", "seed": 1}
    return a


def test_load_store_synthetic(tmp_path, samples):
    host = samples[0].host.copy()
    host.info = {"host_key": "MoS2_3x3", "material": "MoS2"}
    append_frames(tmp_path / "hosts.extxyz", [host])
    append_frames(tmp_path / "samples.extxyz", [
        _store_frame(samples[0], "a"), _store_frame(samples[1], "b", converged=False),
        _store_frame(samples[2], "a"), _store_frame(samples[3], "c", host_key="XX"),
        _store_frame(samples[4], "d")])
    result = load_store(tmp_path)
    assert [s.info["id"] for s in result.samples] == ["a", "d"]
    assert result.duplicates == ["a"]
    assert result.not_converged == 1
    assert [n for n, _ in result.skipped] == ["b", "c"]
    assert "XX" in result.skipped[1][1]
    a = result.samples[0]
    np.testing.assert_allclose(a.relaxed, samples[0].relaxed, atol=1e-6)
    assert "relaxed_positions" not in a.atoms.arrays
    assert a.info["source"] == str(tmp_path / "samples.extxyz")
    assert a.info["steps"] == 40 and a.info["converged"] is True
    assert "1 not converged" in result.summary()
    # The samples file itself, and dispatch, give the same.
    assert len(load_store(tmp_path / "samples.extxyz")) == 2
    assert len(load_dataset(tmp_path)) == 2
    (tmp_path / "hosts.extxyz").unlink()
    with pytest.raises(DataFormatError, match="hosts.extxyz"):
        load_store(tmp_path)


@pytest.mark.skipif(not (REAL_STORE / "samples.extxyz").exists()
                    or not (REAL_STORE / "hosts.extxyz").exists(),
                    reason="CHGNet store absent")
def test_load_store_real_frames(tmp_path):
    frames = read_frames(REAL_STORE / "samples.extxyz")[:4]  # the file may be growing
    if not frames:
        pytest.skip("CHGNet store is empty")
    hosts = read_frames(REAL_STORE / "hosts.extxyz")
    append_frames(tmp_path / "samples.extxyz", frames)
    append_frames(tmp_path / "hosts.extxyz", hosts)
    result = load_store(tmp_path)
    converged = [f for f in frames if f.info["converged"]
                 and f.info["host_key"] in {h.info["host_key"] for h in hosts}]
    assert len(result) == len(converged)
    assert len(result.skipped) == len(frames) - len(converged)
    for s, f in zip(result.samples, converged):
        assert s.info["id"] == f.info["id"] and s.info["host_key"] == f.info["host_key"]
        np.testing.assert_allclose(s.relaxed, f.arrays["relaxed_positions"], atol=1e-6)
    for s in result.samples[:2]:
        # The host is the relaxed pristine supercell: matching recovers the defects.
        m = s.match
        assert len(m.vacancies) + len(m.substitutions) == len(s.info["defects"].split(","))


# ------------------------------------------------------------ dispatch
def test_load_dataset_dispatch(tree, tmp_path, samples):
    assert len(load_dataset(tree)) == 8
    assert len(load_dataset(tree / "high_density_defects")) == 6
    write(tmp_path / "r.traj", _trajectory(samples[0]))
    got = load_dataset(tmp_path / "r.traj", host="MoS2")
    assert isinstance(got, LoadResult) and len(got) == 1
    with pytest.raises(DataFormatError, match="give the host"):
        load_dataset(tmp_path / "r.traj")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataFormatError, match="not a data folder"):
        load_dataset(tmp_path / "empty")
    with pytest.raises(DataFormatError, match="no such file"):
        load_dataset(tmp_path / "nothing.xyz")
