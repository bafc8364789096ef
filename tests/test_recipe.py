"""Any host from a file, recipes, and bad recipes refused before any work (issue #32)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from ase.build import bulk
from ase.io import write

from ase_definet.cli import main
from ase_definet.data.generate import SAMPLES, plan_jobs
from ase_definet.data.hosts import build_host
from ase_definet.data.recipe import check, make_recipe, parse_defects, run_recipe
from ase_definet.data.store import read_frames
from ase_definet.match import match_host

from conftest import UNIT_CELLS

CU_DEFECTS = "vacancy:Cu,substitution:Cu>Au,substitution:Cu>Ni"


@pytest.fixture
def cu_file(tmp_path):
    path = tmp_path / "Cu.cif"
    write(path, bulk("Cu", "fcc", a=3.6, cubic=True))
    return path


def test_bulk_host_from_a_toml_recipe_end_to_end(tmp_path, cu_file):
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(f'host = "{cu_file.name}"\nsupercell = "2x2x2"\n'
                      f'defects = "{CU_DEFECTS}"\ncount = 5\ncalculator = "emt"\nseed = 3\n')
    out = tmp_path / "store"
    s = run_recipe(out, {}, workers=0, progress=False, recipe_file=recipe)
    assert s["new"] == 5 and s["planned"] == 5
    frames = read_frames(out / SAMPLES)
    hosts = read_frames(out / "hosts.extxyz")
    assert len(hosts) == 1 and len(hosts[0]) == 32 and all(hosts[0].pbc)
    key = hosts[0].info["host_key"]
    assert key.startswith("Cu_2x2x2_") and {f.info["host_key"] for f in frames} == {key}
    for f in frames:        # the structures are defects of that host, as labelled
        m = match_host(f, hosts[0])
        labels = sorted([f"V_{e}" for e, _ in m.vacancies]
                        + [f"{n}_{o}" for _, o, n in m.substitutions])
        assert labels == sorted(f.info["defects"].split(","))
    manifest = json.loads((out / "manifest.json").read_text())
    rec = manifest["recipe"]
    assert rec["host"] == str(cu_file) and rec["defects"] == CU_DEFECTS
    assert rec["supercell"] == "2x2x2" and rec["count"] == 5 and rec["density"] == "low"
    # the manifest's recipe is a recipe: rerunning it resumes with nothing to do
    again = run_recipe(out, dict(rec, host_digest=None), workers=0, progress=False)
    assert again["new"] == 0 and again["already_done"] == 5


def test_the_same_host_as_a_file_or_a_registered_spec_plans_the_same_sites(cu_file):
    from conftest import cu_host_spec
    spec = check(make_recipe({"host": str(cu_file), "supercell": "2x2x2",
                              "defects": CU_DEFECTS, "count": 30, "name": "Cu-fcc"}))[0]
    registered = cu_host_spec()
    assert set(spec.defect_types) == set(registered.defect_types)
    a = plan_jobs([spec], "low", 30, (2, 2, 2), seed=4)
    b = plan_jobs(["Cu-fcc"], "low", 30, (2, 2, 2), seed=4)
    # the file's host key carries a content hash; the draws are the same
    assert [j.sites for j in a] == [j.sites for j in b]
    assert all(j.host_key.startswith("Cu-fcc_2x2x2_") for j in a)


def test_a_2d_sheet_from_a_cif_with_explicit_concentrations():
    recipe = make_recipe({"host": str(UNIT_CELLS / "MoS2.cif"), "supercell": "4x4",
                          "defects": "vacancy:S,substitution:Mo>W",
                          "concentrations": "0.05,0.1", "count": 3})
    spec, = check(recipe)
    host = build_host(spec, recipe.supercell)
    assert len(host) == 48 and list(host.pbc) == [True, True, False]
    jobs = plan_jobs([spec], recipe.resolved_density, 3, recipe.supercell, 0,
                     fractions=recipe.concentrations)
    assert len(jobs) == 6 and len({j.id for j in jobs}) == 6
    assert sorted({len(j.sites) for j in jobs}) == [2, 5]      # 0.05, 0.1 of 48 sites
    assert {d for j in jobs for d in j.defects} <= {("vacancy", "S", None),
                                                   ("substitution", "Mo", "W")}
    assert {j.id.split("-")[-2] for j in jobs} == {"c050", "c100"}


@pytest.mark.parametrize("change, message", [
    ({"defects": "vacancy:Xx"}, "unknown element 'Xx'"),
    ({"defects": "substitution:Cu>Qq"}, "unknown element 'Qq'"),
    ({"defects": "substitution:Ga>Al"}, "substitution of Ga: host Cu has no Ga"),
    ({"defects": "interstitial:Cu"}, "write vacancy:EL or substitution:EL>NEW"),
    ({"concentrations": "0.05,1.5"}, "concentration 1.5 is impossible"),
    ({"supercell": "2x2x2", "density": "low", "concentrations": "0.1"},
     "concentrations are a high-density setting"),
    ({"supercell": None}, "a host file needs a supercell"),
    ({"count": 0}, "count must be at least 1"),
    ({"host": "missing.cif"}, "does not exist"),
    ({"colour": "red"}, "unknown recipe field"),
])
def test_bad_recipes_are_refused_before_any_folder_is_made(tmp_path, cu_file, change,
                                                           message):
    fields = {"host": str(cu_file), "supercell": "2x2x2", "defects": CU_DEFECTS,
              "count": 2, "calculator": "emt"}
    fields.update(change)
    if fields["host"] == "missing.cif":
        fields["host"] = str(tmp_path / "missing.cif")
    out = tmp_path / "never" / "store"
    with pytest.raises(ValueError, match=message):
        run_recipe(out, {k: v for k, v in fields.items() if v is not None}, workers=0,
                   progress=False)
    assert not (tmp_path / "never").exists()


def test_a_concentration_the_host_cannot_hold_is_refused(tmp_path):
    path = tmp_path / "NaCl.cif"
    write(path, bulk("NaCl", "rocksalt", a=5.64, cubic=True))     # 4 Na, 4 Cl
    fields = {"host": str(path), "supercell": "1x1x1", "defects": "vacancy:Na,vacancy:Cl",
              "count": 1}
    check(make_recipe(dict(fields, concentrations="0.5")))          # 4 defects: fine
    out = tmp_path / "store"
    with pytest.raises(ValueError, match=r"concentration 0.75 is impossible on NaCl "
                       r"1x1x1 \(8 sites\): it asks for 6 defects .* only 4 sites"):
        run_recipe(out, dict(fields, concentrations="0.5,0.75"), workers=0)
    assert not out.exists()


def test_an_unreadable_host_file_is_refused(tmp_path):
    bad = tmp_path / "garbage.cif"
    bad.write_text("this is not a crystal\n")
    out = tmp_path / "store"
    with pytest.raises(ValueError, match="garbage.cif' cannot be read as a structure"):
        run_recipe(out, {"host": str(bad), "supercell": "2x2x2",
                         "defects": "vacancy:Cu", "count": 1}, workers=0)
    assert not out.exists()


def test_cli_refuses_a_bad_recipe_file_with_a_message_and_no_folder(tmp_path, cu_file,
                                                                    capsys):
    recipe = tmp_path / "r.json"
    recipe.write_text(json.dumps({"host": str(cu_file), "supercell": [2, 2, 2],
                                  "defects": ["vacancy:Cu", "substitution:Si>Al"],
                                  "count": 1, "calculator": "emt"}))
    out = tmp_path / "new" / "store"
    assert main(["generate", "--recipe", str(recipe), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "substitution of Si: host Cu has no Si" in err
    assert not (tmp_path / "new").exists()


def test_cli_host_flags_override_the_recipe(tmp_path, cu_file, capsys):
    recipe = tmp_path / "r.toml"
    recipe.write_text(f'host = "{cu_file.name}"\nsupercell = [2, 2, 2]\n'
                      f'defects = ["vacancy:Cu"]\ncount = 1\ncalculator = "emt"\n')
    out = tmp_path / "store"
    assert main(["generate", "--recipe", str(recipe), "--count", "2",
                 "--defects", "substitution:Cu>Au", "--workers", "0", "--quiet",
                 "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["new"] == 2
    frames = read_frames(out / SAMPLES)
    assert {d for f in frames for d in f.info["defects"].split(",")} <= {"Au_Cu"}
    assert json.loads((out / "manifest.json").read_text())["recipe"]["count"] == 2


def test_defect_spelling_round_trips():
    from ase_definet.data.recipe import defects_text
    d = parse_defects(" vacancy:Ga,substitution:Ga>Al,,vacancy:Ga")
    assert d == (("vacancy", "Ga", None), ("substitution", "Ga", "Al"))
    assert parse_defects(defects_text(d)) == d
    with pytest.raises(ValueError, match="cannot replace itself"):
        parse_defects("substitution:Ga>Ga")
    assert np.isscalar(make_recipe({"count": 1, "supercell": "8"}).supercell)


WITHOUT_DASK = """
import sys

class NoDask:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("dask", "distributed"):
            raise ImportError(f"{{name}} is an extra")

sys.meta_path.insert(0, NoDask())
from ase_definet.data.recipe import run_recipe
fields = {fields!r}
print(run_recipe({out!r}, fields, workers=0, progress=False)["new"])
try:
    run_recipe({out!r}, dict(fields, count=2), workers=1, progress=False)
except ImportError as err:
    print(err)
"""


def test_without_the_dask_extra_workers_0_runs_and_workers_name_the_extra(tmp_path,
                                                                          cu_file):
    import subprocess
    import sys
    fields = {"host": str(cu_file), "supercell": "2x2x2", "defects": "vacancy:Cu",
              "count": 1, "calculator": "emt"}
    code = WITHOUT_DASK.format(fields=fields, out=str(tmp_path / "store"))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, check=True).stdout.splitlines()
    assert out[0] == "1"
    assert "pip install 'ase_definet[dask]' (or run with workers=0)" in out[1]
