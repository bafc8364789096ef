"""The split audit: cross-split twins found where planted, zero on a clean split."""
from __future__ import annotations

import json

from ase_definet.cli import main
from ase_definet.data.audit import ROWS, audit_split, format_audit
from ase_definet.data.sample import Sample
from ase_definet.data.splits import SPLITS, split_samples, write_split

from conftest import store_samples
from symmetry_helpers import twin_population


def _doc(samples, name_of):
    doc = {k: [] for k in SPLITS}
    for i, s in enumerate(samples):
        doc[name_of(i)].append(s.info["id"])
    return doc


def test_audit_finds_planted_twins_and_counts_them():
    samples, groups = twin_population()
    # a naive split by position: every planted group lands in two or three splits
    naive = _doc(samples, lambda i: SPLITS[i % 3])
    where = {sid: k for k in SPLITS for sid in naive[k]}
    r = audit_split(samples, naive)["relations"]
    assert r["symmetry"]["groups"] == 8 and r["symmetry"]["crossing"] == 8
    assert r["pattern"]["groups"] == 8 and r["pattern"]["crossing"] == 8
    pair = [SPLITS[i % 3] for i in groups[-1]]            # the last two samples
    assert pair == ["val", "test"]
    assert r["id"] == {"groups": 1, "crossing": 1, "test~train": 0, "val~train": 0,
                       "test~val": 1}
    assert r["duplicate"]["groups"] == 0 and r["class"]["crossing"] == 9
    # test~train: test structures with a twin in train, counted from the groups
    expected = 0
    for g in groups[:-1]:
        names = [where[samples[i].info["id"]] for i in g[:4]]
        expected += names.count("test") if "train" in names else 0
    assert r["symmetry"]["test~train"] == expected > 0


def test_audit_is_zero_on_the_splitters_split_and_sees_a_copied_structure():
    samples, _ = twin_population()
    split = split_samples(samples, seed=1)
    result = audit_split(samples, {k: [s.info["id"] for s in v] for k, v in split.items()})
    assert all(v == 0 for row in ROWS for c, v in result["relations"][row].items()
               if c != "groups")
    assert result["relations"]["class"]["groups"] == 9 and result["unlisted"] == 0
    assert sum(sum(c.values()) for c in result["strata"].values()) == len(samples)
    # an exact copy under a new id, listed in another split than its original
    s0 = split["test"][0]
    copy = Sample(s0.atoms.copy(), s0.relaxed, s0.host, {**s0.info, "id": "copy"})
    doc = {k: [s.info["id"] for s in v] for k, v in split.items()}
    doc["train"].append("copy")
    r = audit_split(samples + [copy], doc)["relations"]
    assert r["duplicate"]["crossing"] == 1 and r["duplicate"]["test~train"] == 1
    assert r["class"]["crossing"] == 1
    # samples the split does not list are left out and counted
    doc["train"].remove("copy")
    assert audit_split(samples + [copy], doc)["unlisted"] == 1
    text = format_audit(audit_split(samples, doc))
    assert "symmetry" in text and "MoS2/high/4x4/c100" in text


def test_audit_split_command(tmp_path, emt_store, capsys):
    samples = store_samples(emt_store)
    path = write_split(split_samples(samples, seed=0), tmp_path / "split.json")
    out = tmp_path / "audit.json"
    assert main(["audit-split", str(emt_store), "--split-file", str(path),
                 "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"{len(samples)} structures in the split")
    assert "class" in text and "Cu-fcc/low" in text
    doc = json.loads(out.read_text())
    assert doc["structures"] == len(samples)
    assert doc["relations"]["class"]["crossing"] == 0
