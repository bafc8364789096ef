"""Host scope in the model card (issue #31, item 1): records, invariances, refusals."""
from __future__ import annotations

import json

import numpy as np
import pytest
from ase.build import bulk, make_supercell
from ase.io import read
from conftest import ROOT, UNIT_CELLS, pilot_rows, read_cif_text

from ase_definet.data.cif import read_cif
from ase_definet.data.defects import apply_defects
from ase_definet.data.hosts import build_host
from ase_definet.errors import UnsupportedStructureError
from ase_definet.inference import Predictor
from ase_definet.scope import (
    STRAIN_TOLERANCE,
    check_scope,
    host_scope,
    lattice_strain,
    scope_of_hosts,
)
from ase_definet.weights import load_model, registry

STORE = ROOT / "weights" / "data" / "chgnet-2dmd-tight"
SMALL = {"hidden": 16, "num_rbf": 8, "cutoff": 4.5, "max_neighbors": 24}


def shipped_card() -> dict:
    reg = registry()
    if "definet-2dmd" not in reg:
        pytest.skip("no shipped weights")
    return reg["definet-2dmd"]["card"]


def assert_same_record(a: dict, b: dict, atol: float = 2e-3) -> None:
    """Equal discrete fields, floats equal within ``atol``."""
    def walk(x, y, where):
        if isinstance(x, dict):
            assert x.keys() == y.keys(), where
            for k in x:
                walk(x[k], y[k], f"{where}.{k}")
        elif isinstance(x, list):
            assert len(x) == len(y), where
            for k, (u, v) in enumerate(zip(x, y)):
                walk(u, v, f"{where}[{k}]")
        elif isinstance(x, float) or isinstance(y, float):
            assert abs(x - y) <= atol, (where, x, y)
        else:
            assert x == y, (where, x, y)
    walk(a, b, "record")


def strained(atoms, eps_x: float, eps_y: float | None = None):
    """A copy stretched by eps_x along x and eps_y (default eps_x) along y, atoms
    following: principal strains of exactly eps_x and eps_y."""
    out = atoms.copy()
    f = np.diag([1 + eps_x, 1 + (eps_x if eps_y is None else eps_y), 1.0])
    out.set_cell(out.cell.array @ f, scale_atoms=True)
    return out


def gan_with_ga_vacancy():
    host = bulk("GaN", "wurtzite", a=3.19, c=5.19) * (3, 3, 2)
    ga = host.get_chemical_symbols().index("Ga")
    return apply_defects(host, [ga], [("vacancy", "Ga", None)]), host


# ------------------------------------------------------------------ records
@pytest.mark.parametrize("make", [lambda: read_cif(UNIT_CELLS / "MoS2.cif"),
                                  lambda: bulk("GaN", "wurtzite", a=3.19, c=5.19)],
                         ids=["MoS2-sheet", "GaN-bulk"])
def test_record_is_invariant_under_supercell_rotation_and_translation(make):
    unit = make()
    ref = host_scope(unit)
    assert_same_record(host_scope(unit * (3, 2, 1)), ref)
    # a non-diagonal supercell: other cell vectors, same lattice
    assert_same_record(host_scope(make_supercell(unit, [[2, 1, 0], [-1, 1, 0], [0, 0, 1]])), ref)
    moved = unit * (2, 2, 1)
    moved.rotate(37.0, (0.3, -0.5, 0.8), rotate_cell=True)
    moved.translate((1.3, -0.7, 2.9))
    assert_same_record(host_scope(moved), ref)


def test_sheet_record_ignores_vacuum_size_and_periodicity_flag(mos2_unit_cell):
    """2DMD's MoS2.cif (c = 14.9 Å, pbc all True) and the 8×8 training host
    (c = 20 Å, pbc along c False) are one host."""
    host8 = next(h for h in read(STORE / "hosts.extxyz", ":") if h.info["host_key"] == "MoS2_8x8")
    a, b = host_scope(mos2_unit_cell), host_scope(host8)
    assert a["kind"] == b["kind"] == "sheet" and a["vacuum_axes"] == b["vacuum_axes"] == [2]
    assert a["pbc"] == [True, True, True] and b["pbc"] == [True, True, False]
    assert a["atoms_per_cell"] == 3 and abs(a["lattice"]["lengths"][0] - 3.19) < 0.01
    assert lattice_strain(a["lattice"], b["lattice"]) < 1e-3
    # the same layers stacked 6.1 Å apart leave a ~3 Å gap: layered bulk, not a sheet
    stacked = mos2_unit_cell.copy()
    stacked.set_cell(np.vstack([stacked.cell[:2], [0, 0, 6.1]]), scale_atoms=False)
    stacked.positions[:, 2] -= stacked.positions[:, 2].min()
    assert host_scope(stacked)["kind"] == "bulk"


def test_prototypes_are_told_apart():
    fcc = host_scope(bulk("Cu", "fcc", a=3.6))
    assert fcc["sites"][0]["cn"] == 12 and fcc["atoms_per_cell"] == 1
    for other in (bulk("Cu", "bcc", a=2.87), bulk("Cu", "hcp", a=2.55)):
        diffs = check_diffs(host_scope(other), fcc)
        assert any(d.startswith("other prototype") for d in diffs), diffs
    # MoS2 and WSe2 share a prototype: only the species differ
    mos2, wse2 = (host_scope(build_host(n, 2)) for n in ("MoS2", "WSe2"))
    assert check_diffs(wse2, mos2) == ["species WSe2 vs MoS2"]


def check_diffs(record, covered):
    from ase_definet.scope import compare_hosts
    return compare_hosts(record, covered)[0]


def test_lattice_strain_is_basis_free():
    hexa60 = {"lengths": [3.19, 3.19], "angles": [60.0]}
    hexa120 = {"lengths": [3.19, 3.19], "angles": [120.0]}
    assert lattice_strain(hexa60, hexa120) < 1e-9
    # a 3 % stretch along x of a hexagonal cell, read back from its lengths and angle
    a, b = np.array([[3.19, 0.0], [3.19 / 2, 3.19 * 3 ** 0.5 / 2]]) * [1.03, 1.0]
    cos = a @ b / np.linalg.norm(a) / np.linalg.norm(b)
    stretched = {"lengths": [float(np.linalg.norm(a)), float(np.linalg.norm(b))],
                 "angles": [float(np.degrees(np.arccos(cos)))]}
    assert abs(lattice_strain(stretched, hexa60) - 0.03) < 1e-9
    assert abs(lattice_strain(hexa60, stretched) - 0.03 / 1.03) < 1e-9
    assert lattice_strain(hexa60, {"lengths": [3.0, 3.0, 3.0], "angles": [90.0] * 3}) == np.inf


# ------------------------------------------------------------------ the shipped card
def test_shipped_card_holds_the_six_training_hosts_and_survives_loading():
    card = shipped_card()
    hosts = card["scope"]["hosts"]
    assert sorted(h["formula"] for h in hosts) == ["BN", "GaSe", "InSe", "MoS2", "P", "WSe2"]
    assert {h["kind"] for h in hosts} == {"sheet"}
    assert card["scope"]["strain_tolerance"] == STRAIN_TOLERANCE
    # load_model merges registry and checkpoint cards: the registry's scope survives
    assert load_model("definet-2dmd").card["scope"] == card["scope"]
    # the card's scope is what the store's hosts give (12×12 held out of training)
    frames = [h for h in read(STORE / "hosts.extxyz", ":") if h.info["host_key"] != "MoS2_12x12"]
    fresh = scope_of_hosts(frames, names=[h.info["host_key"] for h in frames])
    assert_same_record(json.loads(json.dumps(fresh)), card["scope"])


def test_supercells_of_one_host_share_one_record():
    frames = read(STORE / "hosts.extxyz", ":")
    scope = scope_of_hosts(frames, names=[h.info["host_key"] for h in frames])
    assert len(frames) == 7 and len(scope["hosts"]) == 6
    mos2 = next(h for h in scope["hosts"] if h["formula"] == "MoS2")
    assert mos2["sources"] == ["MoS2_8x8", "MoS2_12x12"]


def test_real_2dmd_pilot_and_committed_stores_are_in_scope(mos2_unit_cell):
    card = shipped_card()
    for _, cif in pilot_rows():
        check_scope(mos2_unit_cell, read_cif_text(cif), card)      # raises if out of scope
    for store in ("chgnet-2dmd", "chgnet-2dmd-tight"):
        for host in read(ROOT / "weights" / "data" / store / "hosts.extxyz", ":"):
            check_scope(host, host, card)
    for name in ("MoS2", "WSe2", "hBN", "GaSe", "InSe", "BP"):       # built-in hosts
        atoms, _ = mos2_like(name)
        check_scope(name, atoms, card)


def mos2_like(name: str):
    host = build_host(name, 3)
    return apply_defects(host, [0], [("vacancy", host[0].symbol, None)]), host


def test_bulk_gan_is_refused_by_the_shipped_model_and_predicted_with_a_warning():
    """Issue #31: Ga and N are in the card (dopants of GaSe/InSe and BP), so only
    the host scope can tell that bulk wurtzite is outside the training data."""
    shipped_card()
    atoms, host = gan_with_ga_vacancy()
    with pytest.raises(UnsupportedStructureError,
                       match=r"host GaN bulk .* nearest covered host .*bulk vs sheet"):
        Predictor(threads=1).predict([atoms], host)
    with pytest.warns(UserWarning, match="bulk vs sheet.*predicting anyway"):
        pred = Predictor(strict=False, threads=1).predict([atoms], host)[0]
    assert pred.positions.shape == (len(atoms), 3) and np.isfinite(pred.positions).all()


def test_strained_host_is_refused_naming_the_strain():
    card = shipped_card()
    host = build_host("hBN", 4)

    def vac(h):
        return apply_defects(h, [0], [("vacancy", "B", None)])
    for ok in (strained(host, 0.01, 0.0), strained(host, -0.01)):
        check_scope(ok, vac(ok), card)
    bad = strained(host, 0.03, 0.0)
    with pytest.raises(UnsupportedStructureError,
                       match=r"nearest covered host BN sheet .*lattice strain 3\.0 % beyond "
                             r"the 2 % tolerance"):
        check_scope(bad, vac(bad), card)
    with pytest.warns(UserWarning, match="lattice strain"):
        check_scope(bad, vac(bad), card, strict=False)


def test_a_host_changed_in_place_is_checked_again():
    """The scope cache is keyed by content, not by the object."""
    card = shipped_card()
    host = build_host("hBN", 4)
    check_scope(host, host, card)
    host.set_cell(host.cell.array * [[1.04], [1.04], [1.0]], scale_atoms=True)
    with pytest.raises(UnsupportedStructureError, match="lattice strain 4.0 %"):
        check_scope(host, host, card)


def test_cards_without_scope_skip_the_check():
    atoms, host = gan_with_ga_vacancy()
    for card in ({}, {"elements": ["Ga", "N"]}, {"scope": {}}):
        check_scope(host, atoms, card)


# ------------------------------------------------------------------ user-trained checkpoints
@pytest.fixture(scope="module")
def cu_checkpoint(emt_store, tmp_path_factory):
    from ase_definet.train import TrainConfig, run_training
    out = tmp_path_factory.mktemp("cu_run")
    run_training(emt_store, out, TrainConfig(model=SMALL, epochs=1, batch_size=4, seed=0),
                 progress=False)
    return out / "best.pt"


def test_trained_checkpoint_card_lists_what_it_covers(cu_checkpoint):
    from ase_definet.weights import read_checkpoint
    card = read_checkpoint(cu_checkpoint)["meta"]["card"]
    assert {"Cu", "Au", "Ni"} == set(card["elements"])
    assert {"V_Cu", "Au_Cu", "Ni_Cu"} <= set(card["defects"]) and card["hosts"] == ["Cu"]
    (cu,) = card["scope"]["hosts"]
    assert cu["kind"] == "bulk" and cu["atoms_per_cell"] == 1 and cu["sites"][0]["cn"] == 12
    assert abs(cu["lattice"]["lengths"][0] - 3.6 / 2 ** 0.5) < 1e-3     # fcc primitive
    assert load_model(str(cu_checkpoint)).card["scope"] == card["scope"]


def test_trained_checkpoint_refuses_ag_and_bcc_hosts(cu_checkpoint):
    from conftest import cu_host_spec

    from ase_definet.data.hosts import build_host as build
    cu_host_spec()
    predictor = Predictor(str(cu_checkpoint), threads=1)
    host = build("Cu-fcc")
    ok = apply_defects(host, [0], [("vacancy", "Cu", None)])
    assert predictor.predict([ok], host)[0].positions.shape == (len(ok), 3)
    ag = apply_defects(host, [0], [("substitution", "Cu", "Ag")])
    with pytest.raises(UnsupportedStructureError, match=r"elements \['Ag'\]"):
        predictor.predict([ag], host)
    # bcc Cu: every element and defect type is covered, the host is not
    bcc = bulk("Cu", "bcc", a=2.87, cubic=True) * (3, 3, 3)
    with pytest.raises(UnsupportedStructureError,
                       match=r"host Cu bulk .*nearest covered host Cu bulk .*other prototype"):
        predictor.predict([apply_defects(bcc, [0], [("vacancy", "Cu", None)])], bcc)
    w = bulk("W", "bcc", a=3.16, cubic=True) * (3, 3, 3)
    with pytest.raises(UnsupportedStructureError, match=r"elements \['W'\]"):
        predictor.predict([apply_defects(w, [0], [("vacancy", "W", None)])], w)


def test_card_text_lists_the_hosts():
    from ase_definet.scope import scope_lines
    text = "\n".join(scope_lines(shipped_card()))
    assert "MoS2 sheet (a=3.190, b=3.190 Å, 60.0°)" in text and "2 % lattice strain" in text
    assert "P sheet (a=3.300, b=4.601 Å, 90.0°)" in text
    assert "not recorded" in scope_lines({"elements": ["Cu"]})[0]


def test_relaxation_noise_is_tolerated_and_a_disordered_host_is_named():
    """Bug: spglib at 0.01 Å missed the primitive cell of an 8×8 MoS2 host with
    0.005 Å random displacements, which then read as 700 % lattice strain."""
    card = shipped_card()
    for name in ("MoS2", "BP", "GaSe", "hBN"):
        host = build_host(name, 6)
        host.rattle(0.01, seed=1)               # up to ~0.04 Å per coordinate
        check_scope(host, host, card)
    host = build_host("BP", 6)
    host.rattle(0.05, seed=1)
    with pytest.raises(UnsupportedStructureError,
                       match=r"other prototype \(144 vs 4 atoms per primitive cell; or a "
                             "host too distorted"):
        check_scope(host, host, card)
