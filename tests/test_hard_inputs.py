"""Hard inputs through the user-facing path: ``DefiNetRelaxer(...).run()``.

One test per case of the README's "Hard inputs" table (docs_hard_inputs.md).
Every bad input must raise a subclass of ``DefiNetInputError`` (a
``ValueError``) whose message names the culprit; every awkward but valid
input must give the same answer as its tidy equivalent.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk
from ase.constraints import FixAtoms, FixCartesian, FixedLine, FixedPlane
from ase.geometry import get_distances

from ase_definet import DefiNet, DefiNetConfig, DefiNetRelaxer
from ase_definet.data.defects import apply_defects
from ase_definet.data.hosts import build_host
from ase_definet.errors import (CheckpointError, DefiNetInputError, DeviceError,
                                EmptyStructureError, HostDefectError, NonFiniteError,
                                SiteCollisionError, StructureTooLargeError, SupercellError,
                                UnmatchedAtomError, UnsupportedStructureError)
from ase_definet.inference import Predictor
from ase_definet.weights import load_model, save_checkpoint, sha256

from conftest import mos2_defect

CARD = {"elements": ["Mo", "S", "Se", "W"], "defects": ["V_S", "V_Mo", "Se_S", "W_Mo"]}


@pytest.fixture(scope="module")
def net() -> DefiNet:
    torch.manual_seed(0)
    return DefiNet(DefiNetConfig(hidden=16, num_rbf=8))


@pytest.fixture(scope="module")
def predictor(net) -> Predictor:
    return Predictor(net, device="cpu")


def relax(atoms: Atoms, host, model, **kwargs) -> DefiNetRelaxer:
    r = DefiNetRelaxer(atoms, host=host, model=model, logfile=None, **kwargs)
    r.run()
    return r


def raises_input_error(exc: type, atoms: Atoms, host, model, match: str | None = None):
    """The relaxer raises ``exc``; ``except ValueError`` catches it too."""
    with pytest.raises(exc, match=match) as info:
        relax(atoms, host, model)
    assert isinstance(info.value, DefiNetInputError) and isinstance(info.value, ValueError)
    try:
        relax(atoms, host, model)
    except ValueError:
        pass
    else:  # pragma: no cover
        pytest.fail("not caught by except ValueError")
    return info.value


def lattice_residual(a: np.ndarray, b: np.ndarray, cell: np.ndarray, pbc) -> float:
    """Largest |a - b| after removing whole lattice vectors along periodic axes."""
    frac = (a - b) @ np.linalg.inv(cell)
    pbc = np.asarray(pbc, dtype=bool)
    frac[:, pbc] -= np.rint(frac[:, pbc])
    return float(np.abs(frac @ cell).max())


# ---------------------------------------------------------------- bad structures
def test_empty_structure(net):
    _, host = mos2_defect(3)
    raises_input_error(EmptyStructureError, Atoms(cell=host.cell, pbc=host.pbc), host, net,
                       "holds no atoms")


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_coordinates(net, value):
    atoms, host = mos2_defect(3)
    atoms.positions[7, 2] = value
    raises_input_error(NonFiniteError, atoms, host, net, r"atom\(s\) \[7\]")
    cell, _ = mos2_defect(3)
    cell.cell[0, 1] = value
    raises_input_error(NonFiniteError, cell, host, net, "non-finite cell")


def test_cell_not_a_supercell_of_the_host(net):
    atoms, host = mos2_defect(3)
    strained = atoms.copy()
    strained.set_cell(atoms.cell.array * [[1.07], [1.0], [1.0]], scale_atoms=True)
    raises_input_error(SupercellError, strained, host, net, "not an integer supercell")
    # 3×3 structure against a 4×4 host: the cell is 3/4 of the host's.
    raises_input_error(SupercellError, atoms, build_host("MoS2", 4), net,
                       r"0\.75")


def test_host_with_a_defect(net):
    atoms, host = mos2_defect(3)
    broken = host.copy()
    broken.positions[5] = broken.positions[4] + [0.05, 0.0, 0.0]   # two atoms, one site
    raises_input_error(HostDefectError, atoms, broken, net, r"host atoms 4 and 5")
    # What cannot be detected: the host is trusted to be pristine. A host that
    # lacks an atom is only caught when the structure has an atom on that site
    # (an unmatched atom)...
    holey = host.copy()
    del holey[2]
    raises_input_error(UnmatchedAtomError, host.copy(), holey, net, "atom 2")
    # ...while a structure missing the same atom looks pristine there, and a
    # wrong element in the host turns into a phantom substitution.
    same_hole = atoms.copy()
    del same_hole[1]                       # atom 1 of `atoms` is host site 2
    r = relax(same_hole, holey, net)
    assert len(r.match.vacancies) == 2 and len(r.match.substitutions) == 1
    wrong = host.copy()
    wrong[8].symbol = "Se"
    r = relax(host.copy(), wrong, net)
    assert r.match.substitutions == [(8, "Se", "S")]


def test_interstitial_message_names_atom_and_distance(net):
    atoms, host = mos2_defect(3)
    extra = atoms + Atoms("S", positions=[host.positions[0] + [0.9, 0.9, 0.0]])
    err = raises_input_error(UnmatchedAtomError, extra, host, net)
    k = len(atoms)
    d = get_distances(extra.positions[k], host.positions, cell=host.cell, pbc=host.pbc)[1]
    m = re.search(rf"atom {k} \(S at .*\) is (\d+\.\d+) Å from the nearest host site", str(err))
    assert m, str(err)
    assert float(m.group(1)) == pytest.approx(d.min(), abs=1e-3)
    assert "tolerance 0.5 Å" in str(err)


def test_atom_displaced_beyond_tolerance(net):
    atoms, host = mos2_defect(3)
    atoms.positions[3] += [0.0, 0.0, 0.8]
    raises_input_error(UnmatchedAtomError, atoms, host, net,
                       r"atom 3 \(\w+ at .*\) is 0\.800 Å")
    # Just inside the tolerance is a (strongly displaced) pristine atom.
    ok, _ = mos2_defect(3)
    ok.positions[3] += [0.0, 0.0, 0.45]
    assert len(relax(ok, host, net).match.vacancies) == 2


def test_two_atoms_on_one_site(net):
    atoms, host = mos2_defect(3)
    # atoms[0] is the Se on host site 1; move the S of site 2 next to it.
    atoms.positions[1] = host.positions[1] + [0.2, 0.0, 0.0]
    raises_input_error(SiteCollisionError, atoms, host, net,
                       r"atoms \[0, 1\] are all assigned to host site 1")


# ---------------------------------------------------------------- model card
def test_element_outside_model_card(net):
    atoms, host = mos2_defect(3)
    atoms[atoms.get_chemical_symbols().index("S")].symbol = "Te"   # Te on an S site
    carded = Predictor(net, device="cpu")
    carded.card = CARD
    err = raises_input_error(UnsupportedStructureError, atoms.copy(), host, carded,
                             r"elements \['Te'\] are not in the model card")
    assert "Te_S" in str(err) and "strict=False" in str(err)
    loose = Predictor(net, device="cpu", strict=False)
    loose.card = CARD
    lax = atoms.copy()
    with pytest.warns(UserWarning, match=r"\['Te'\].*predicting anyway"):
        relax(lax, host, loose)
    assert np.abs(lax.positions - atoms.positions).max() > 1e-3


def test_defect_type_outside_model_card(net, monkeypatch):
    atoms, host = mos2_defect(3)
    atoms[atoms.get_chemical_symbols().index("S")].symbol = "Mo"   # antisite Mo_S
    monkeypatch.setattr(net, "card", CARD, raising=False)   # card on the network
    err = raises_input_error(UnsupportedStructureError, atoms.copy(), host, net,
                             r"defect types \['Mo_S'\] are not in the model card")
    assert "elements" not in str(err)
    lax = atoms.copy()
    with pytest.warns(UserWarning, match="Mo_S"):
        relax(lax, host, net, strict=False)
    assert np.abs(lax.positions - atoms.positions).max() > 1e-3
    relax(mos2_defect(3)[0], host, net)        # in-card defects pass strict mode


# ---------------------------------------------------------------- awkward but valid
def test_pbc_false_along_vacuum_axis(predictor):
    atoms, host = mos2_defect(4)               # 20 Å of vacuum along c
    assert tuple(atoms.pbc) == (True, True, False)
    ref = atoms.copy()
    relax(ref, host, predictor)
    full = atoms.copy()
    full.pbc = True
    h = host.copy()
    h.pbc = True
    relax(full, h, predictor)
    assert np.abs(full.positions - ref.positions).max() < 1e-6
    by_name = atoms.copy()
    relax(by_name, "MoS2", predictor)
    assert np.abs(by_name.positions - ref.positions).max() < 1e-6


def test_non_orthogonal_and_left_handed_cells(predictor):
    atoms, host = mos2_defect(4)               # hexagonal: non-orthogonal already
    ref = atoms.copy()
    r0 = relax(ref, host, predictor)
    counts = (len(r0.match.vacancies), len(r0.match.substitutions))
    cases = {
        # same lattice, other basis: (a, a + b, c) and the left-handed (b, a, c)
        "sheared": np.array([[1, 0, 0], [1, 1, 0], [0, 0, 1]]),
        "swapped (left-handed)": np.array([[0, 1, 0], [1, 0, 0], [0, 0, 1]]),
    }
    for name, u in cases.items():
        a = atoms.copy()
        a.set_cell(u @ atoms.cell.array, scale_atoms=False)
        a.wrap()
        r = relax(a, host, predictor)
        assert (len(r.match.vacancies), len(r.match.substitutions)) == counts, name
        assert a.get_chemical_symbols() == atoms.get_chemical_symbols()
        disp = a.positions - r.match.positions[:len(a)]     # prediction − unrelaxed
        assert np.abs(disp - (ref.positions - atoms.positions)).max() < 1e-5, name
    # A mirror image (z → −z) has a left-handed cell; the prediction mirrors.
    mirror = np.diag([1.0, 1.0, -1.0])
    ma, mh = atoms.copy(), host.copy()
    for x in (ma, mh):
        x.set_cell(x.cell.array @ mirror, scale_atoms=False)
        x.positions = x.positions @ mirror
    assert np.linalg.det(ma.cell.array) < 0
    r = relax(ma, mh, predictor)
    assert (len(r.match.vacancies), len(r.match.substitutions)) == counts
    assert np.abs(ma.positions - ref.positions @ mirror).max() < 1e-5
    # 3D: primitive fcc (non-orthogonal) and its inversion image (left-handed).
    out = []
    for sign in (1.0, -1.0):
        h = bulk("Cu", "fcc", a=3.6)
        h.set_cell(sign * h.cell.array, scale_atoms=True)
        a = h.repeat(3)
        del a[4]
        a[7].symbol = "Au"
        relax(a, h, predictor)
        assert a.get_chemical_symbols().count("Au") == 1 and len(a) == 26
        out.append(a.positions)
    assert np.abs(out[1] + out[0]).max() < 1e-5         # inversion-equivariant


def test_atoms_outside_cell_or_wrapped_differently(predictor, rng):
    atoms, host = mos2_defect(4)
    ref = atoms.copy()
    relax(ref, host, predictor)
    moved = atoms.copy()
    shifts = np.zeros((len(atoms), 3))
    shifts[:, :2] = rng.integers(-3, 4, size=(len(atoms), 2))   # per-atom images
    shifts[:, :2] += [2, -1]                                    # whole layer outside
    moved.positions += shifts @ atoms.cell.array
    assert (moved.get_scaled_positions(wrap=False)[:, :2] > 1).any()
    relax(moved, host, predictor)
    assert np.abs(moved.positions - shifts @ atoms.cell.array - ref.positions).max() < 1e-5
    # The host may be wrapped differently too (and shifted by lattice vectors).
    h = host.copy()
    h.positions += np.column_stack([rng.integers(-2, 3, size=(len(h), 2)),
                                    np.zeros(len(h))]) @ host.cell.array
    a = atoms.copy()
    relax(a, h, predictor)
    assert lattice_residual(a.positions, ref.positions, atoms.cell.array, atoms.pbc) < 1e-5
    assert np.abs(a.positions - ref.positions).max() < 1e-5     # atoms' own frame kept


def test_line_and_plane_constraints_honoured(predictor):
    atoms, host = mos2_defect(3)
    before = atoms.positions.copy()
    line, plane = np.array([1.0, 2.0, 0.5]), np.array([0.0, 1.0, 1.0])
    atoms.set_constraint([FixAtoms(indices=[0]), FixCartesian(1, mask=(0, 0, 1)),
                          FixedLine([2, 3], line), FixedPlane([4, 5], plane)])
    relax(atoms, host, predictor)
    d = atoms.positions - before
    assert np.array_equal(d[0], np.zeros(3))
    assert d[1, 2] == 0.0 and np.abs(d[1, :2]).max() > 0
    for k in (2, 3):
        assert np.linalg.norm(d[k]) > 1e-4
        assert np.linalg.norm(np.cross(d[k], line)) < 1e-9 * max(1, np.linalg.norm(d[k]))
    for k in (4, 5):
        assert np.linalg.norm(d[k]) > 1e-4 and abs(d[k] @ plane) < 1e-9
    assert np.abs(d[6:]).max() > 1e-3          # the rest moved freely


# ---------------------------------------------------------------- size, device
# Run in a fresh process: ru_maxrss is the peak of the whole process, which the
# tests before this one would already have set.
# The peak is VmHWM of /proc/self/status, not ru_maxrss: Linux carries ru_maxrss
# over fork and execve, so a child of a large pytest process starts at its parent's
# peak (the bug: "grown by 0.00 GB" in a full run), while VmHWM belongs to the new
# program's own memory map.
_BIG_RELAX = """
import json
import numpy as np, torch

def hwm_kib():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])

torch.set_num_threads(1)
from ase_definet import DefiNet, DefiNetConfig, DefiNetRelaxer
from ase_definet.data.defects import apply_defects
from ase_definet.data.hosts import build_host
from ase_definet.inference import Predictor
torch.manual_seed(0)
net = DefiNet(DefiNetConfig(hidden=16, num_rbf=8))
host = build_host("MoS2", 41)
atoms = apply_defects(host, [0, 1], [("vacancy", "Mo", None), ("substitution", "S", "Se")])
rss0 = hwm_kib()
r = DefiNetRelaxer(atoms, host="MoS2", model=Predictor(net, device="cpu"), logfile=None)
r.run()
peak = hwm_kib()
print(json.dumps({"n": len(atoms), "vacancies": len(r.match.vacancies),
                  "finite": bool(np.isfinite(atoms.positions).all()),
                  "grown_gb": (peak - rss0) / 2 ** 20}))
"""


def test_five_thousand_atoms_bounded_memory(net):
    host = build_host("MoS2", 41)              # 41 × 41 × 3 = 5043 sites
    atoms = apply_defects(host, [0, 1], [("vacancy", "Mo", None),
                                         ("substitution", "S", "Se")])
    assert len(atoms) == 5042
    small = Predictor(net, device="cpu", max_memory_gb=0.01)
    err = raises_input_error(StructureTooLargeError, atoms.copy(), "MoS2", small,
                             r"5043 nodes and \d+ edges needs about .* GB.*max_memory_gb=0\.01")
    assert "raise the limit" in str(err)
    # the default 8 GB limit lets it through; the peak it adds stays under 1 GB
    out = subprocess.run([sys.executable, "-c", _BIG_RELAX], capture_output=True, text=True,
                         env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["n"] == 5042 and got["vacancies"] == 1 and got["finite"]
    assert 0 < got["grown_gb"] < 1.0, f"peak RSS grew by {got['grown_gb']:.2f} GB"


def test_cuda_without_cuda_is_a_device_error(net):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    for device in ("cuda", "cuda:0"):
        with pytest.raises(DeviceError, match="no CUDA") as info:
            Predictor(net, device=device)
        assert isinstance(info.value, ValueError)
    with pytest.raises(DeviceError):
        DefiNetRelaxer(*mos2_defect(3), model=net, device="cuda")


def test_unknown_or_unavailable_device_is_a_device_error(net):
    with pytest.raises(DeviceError, match="tpu"):
        Predictor(net, device="tpu")
    if not torch.backends.mps.is_available():
        with pytest.raises(DeviceError, match="mps"):
            Predictor(net, device="mps")


# ---------------------------------------------------------------- checkpoints
@pytest.fixture
def good_checkpoint(net, tmp_path):
    path = tmp_path / "good.pt"
    save_checkpoint(path, net, meta={"card": CARD})
    return path


def checkpoint_error(path, match: str | None = None) -> CheckpointError:
    with pytest.raises(CheckpointError, match=match) as info:
        Predictor(str(path), device="cpu")
    assert str(path) in str(info.value) and isinstance(info.value, ValueError)
    return info.value


def test_good_checkpoint_loads_with_its_card(net, good_checkpoint):
    p = Predictor(str(good_checkpoint), device="cpu")
    assert p.card == CARD
    for a, b in zip(p.model.state_dict().values(), net.state_dict().values()):
        assert torch.equal(a, b)


def test_corrupt_checkpoint(tmp_path):
    path = tmp_path / "random.pt"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    checkpoint_error(path, "cannot read checkpoint")
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    checkpoint_error(empty, "cannot read checkpoint")


def test_truncated_checkpoint(good_checkpoint, tmp_path):
    raw = good_checkpoint.read_bytes()
    path = tmp_path / "truncated.pt"
    path.write_bytes(raw[:len(raw) // 2])
    checkpoint_error(path, "cannot read checkpoint")


def test_tampered_checkpoint_in_registry(good_checkpoint, tmp_path, monkeypatch):
    folder = tmp_path / "weights"
    folder.mkdir()
    (folder / "x.pt").write_bytes(good_checkpoint.read_bytes())
    right = sha256(folder / "x.pt")
    reg = {"models": {"hard-inputs-test": {"file": "x.pt", "sha256": right,
                                           "default": True, "card": {}}}}
    (folder / "registry.json").write_text(json.dumps(reg))
    monkeypatch.setenv("ASE_DEFINET_WEIGHTS", str(folder))
    assert load_model("hard-inputs-test").card == CARD          # untouched file loads
    raw = bytearray((folder / "x.pt").read_bytes())
    raw[len(raw) // 2] ^= 0xFF                                   # flip one byte
    (folder / "x.pt").write_bytes(bytes(raw))
    for name in ("hard-inputs-test", None):                      # by name and as default
        with pytest.raises(CheckpointError) as info:
            Predictor(name, device="cpu")
        msg = str(info.value)
        assert str(folder / "x.pt") in msg and f"expected {right}" in msg
        assert sha256(folder / "x.pt") in msg


def test_checkpoint_lacking_config(good_checkpoint, tmp_path):
    ckpt = torch.load(good_checkpoint, weights_only=True)
    del ckpt["config"]
    path = tmp_path / "noconfig.pt"
    torch.save(ckpt, path)
    checkpoint_error(path, "lacks its model config")
    plain = tmp_path / "plain_state_dict.pt"
    torch.save(ckpt["state_dict"], plain)        # a bare state_dict is not a checkpoint
    checkpoint_error(plain, "not an ase_definet checkpoint")


@pytest.mark.parametrize("change", ["renamed keys", "hidden 32", "unknown config key"])
def test_incompatible_architecture(good_checkpoint, tmp_path, change):
    ckpt = torch.load(good_checkpoint, weights_only=True)
    if change == "renamed keys":
        ckpt["state_dict"] = {k.replace("layers.", "blocks."): v
                              for k, v in ckpt["state_dict"].items()}
        expect = "weights do not fit the DefiNet architecture"
    elif change == "hidden 32":
        ckpt["config"] = dict(ckpt["config"], hidden=32)
        expect = "weights do not fit.*size mismatch"
    else:
        ckpt["config"] = dict(ckpt["config"], spin_channels=2)
        expect = r"incompatible model config.*spin_channels"
    path = tmp_path / "incompatible.pt"
    torch.save(ckpt, path)
    checkpoint_error(path, expect)


class _Payload:
    """Unpickling this would run ``_touch(marker)``: arbitrary code execution."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (_touch, (self.marker,))


def _touch(path: str) -> None:
    with open(path, "w") as fh:
        fh.write("code from a checkpoint ran")


def test_pickled_object_is_not_executed(tmp_path):
    marker = tmp_path / "executed"
    path = tmp_path / "evil.pt"
    torch.save({"format": "ase_definet-checkpoint", "format_version": 1,
                "config": {}, "state_dict": {}, "meta": _Payload(str(marker))}, path)
    assert not marker.exists()
    checkpoint_error(path, "cannot read checkpoint")
    assert not marker.exists()
    # The payload is real: an unsafe load would have run it.
    torch.load(path, weights_only=False)
    assert marker.exists()
    os.remove(marker)
