"""Shared fixtures: paths to the real 2DMD files beside the repository."""
from __future__ import annotations

import ast
import csv
import gzip
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
PILOT = SHARED / "data" / "2dmd-pilot"
UNIT_CELLS = SHARED / "data" / "2dmd-unit-cells"

torch.set_num_threads(int(__import__("os").environ.get("DEFINET_TEST_THREADS", "2")))


def load_script(path: Path):
    """Import a script outside the package (an example, a benchmark) as a module."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)          # must not run anything at import
    return module


def pilot_rows() -> list[tuple[str, str]]:
    """(descriptor id, CIF text) of the 200 real 2DMD MoS2 structures."""
    with gzip.open(PILOT / "pilot" / "data.csv.gz", "rt") as fh:
        rows = list(csv.reader(fh))
    return [(r[0], r[1]) for r in rows[1:]]


def pilot_descriptors() -> dict[str, list[dict]]:
    with open(PILOT / "descriptors.csv") as fh:
        return {r["_id"]: ast.literal_eval(r["defects"]) for r in csv.DictReader(fh)}


def read_cif_text(text: str):
    from ase_definet.data.cif import read_cif
    return read_cif(text, text=True)


@pytest.fixture(scope="session")
def pilot():
    if not PILOT.exists():
        pytest.skip("../shared/data/2dmd-pilot is not beside the repository")
    desc = pilot_descriptors()
    return [(read_cif_text(cif), desc[did]) for did, cif in pilot_rows()]


@pytest.fixture(scope="session")
def mos2_unit_cell():
    from ase_definet.data.cif import read_cif
    return read_cif(UNIT_CELLS / "MoS2.cif")


def canon(records: list[dict]) -> list[tuple]:
    """Order-free form of a 2DMD defect list."""
    return sorted(tuple(sorted(r.items())) for r in records)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def cu_host_spec():
    """An fcc Cu host with Au/Ni substitutions and Cu vacancies (EMT oracle)."""
    from ase.build import bulk
    from ase_definet.data.hosts import HOSTS, register_host
    if "Cu-fcc" not in HOSTS:
        register_host("Cu-fcc", bulk("Cu", "fcc", a=3.6, cubic=True),
                      [("Cu", "Au"), ("Cu", "Ni")], ["Cu"], (3, 3, 3))
    return HOSTS["Cu-fcc"]


def store_samples(folder):
    """Samples of a generator folder (without depending on the formats module)."""
    from ase_definet.data.sample import Sample
    from ase_definet.data.store import read_frames
    hosts = {h.info["host_key"]: h for h in read_frames(Path(folder) / "hosts.extxyz")}
    out = []
    for f in read_frames(Path(folder) / "samples.extxyz"):
        rel = f.arrays.pop("relaxed_positions")
        out.append(Sample(f, rel, hosts[f.info["host_key"]], dict(f.info)))
    return out


@pytest.fixture(scope="session")
def emt_store(tmp_path_factory):
    """36 EMT-relaxed Cu(Au, Ni) defect structures made by the real generator."""
    from ase_definet.data.generate import generate
    cu_host_spec()
    out = tmp_path_factory.mktemp("emt_store")
    summary = generate(out, ["Cu-fcc"], "low", 36, calculator="emt", workers=0,
                       progress=False, seed=0)
    assert summary["new"] == 36
    return out


class TruePredictor:
    """Returns each sample's reference relaxed positions: a perfect model."""

    def __init__(self, samples):
        # keyed by content, so that samples read back from a file are found too
        self.by_key = {self._key(s.atoms): s for s in samples}

    @staticmethod
    def _key(atoms):
        return atoms.get_positions().round(6).tobytes() + str(atoms.symbols).encode()

    def predict(self, atoms_list, hosts, batch_size=8):
        from ase_definet.inference import Prediction
        found = [self.by_key[self._key(a)] for a in atoms_list]
        return [Prediction(s.relaxed.copy(), s.match) for s in found]


def mos2_defect(n: int = 4):
    """MoS2 n×n with a Mo vacancy, an S vacancy and a Se-on-S substitution."""
    from ase_definet.data.defects import apply_defects
    from ase_definet.data.hosts import build_host
    host = build_host("MoS2", n)
    atoms = apply_defects(host, [0, 1, 5], [("vacancy", "Mo", None),
                                            ("substitution", "S", "Se"),
                                            ("vacancy", "S", None)])
    return atoms, host
