"""How much of a new test split the shipped model has already seen in training.

    python experiments/honest-numbers/exposure.py DATA NEW_SPLIT OLD_SPLIT [--json OUT]

For each structure of NEW_SPLIT's test part it asks two questions about
OLD_SPLIT (the split the shipped model was trained with):

* direct: was this very structure (same id) in the old train or val part?
* same-material twin: was an exact duplicate or a symmetry twin of it (same
  host, configuration mapped by a host symmetry operation) in the old train part?
* cross-material twin: was a structure with its site pattern in another
  material of the same supercell shape in the old train part?
* class: was it, or any structure of its twin class (the union of all those
  relations, ``ase_definet.data.splits.twin_classes``), in the old train part?

and prints the counts per ``material/density`` group as a markdown table.
"""
from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

from ase_definet.data.load import load_samples
from ase_definet.data.splits import read_split, twin_classes


def exposure(samples, new: dict, old: dict) -> dict:
    """Per group: new test structures, and how many the old split exposed."""
    ids = [str(s.info.get("id")) for s in samples]
    old_of = {str(i): part for part in ("train", "val", "test") for i in old.get(part, [])}
    new_test = {str(i) for i in new.get("test", [])}
    classes, _, groups = twin_classes(samples)
    in_train = [old_of.get(i) == "train" for i in ids]

    def exposed(lists) -> set[int]:
        """Members of groups in which another member was in the old train part."""
        out = set()
        for g in lists:
            n = sum(in_train[k] for k in g)
            out.update(k for k in g if n - in_train[k] > 0)
        return out
    same = exposed(groups["duplicate"] + groups["symmetry"])
    cross = exposed(groups["pattern"] + groups["id"])
    seen_class = exposed(classes) | {k for k in range(len(ids)) if in_train[k]}
    rows: dict[str, Counter] = {}
    for k, s in enumerate(samples):
        if ids[k] not in new_test:
            continue
        c = rows.setdefault(s.group, Counter())
        c["test"] += 1
        c["in_old_train"] += old_of.get(ids[k]) == "train"
        c["in_old_val"] += old_of.get(ids[k]) == "val"
        c["in_old_test"] += old_of.get(ids[k]) == "test"
        c["same_material_twin_in_old_train"] += k in same
        c["cross_material_twin_in_old_train"] += k in cross
        c["class_in_old_train"] += k in seen_class
    total = Counter()
    for c in rows.values():
        total.update(c)
    return {"groups": {g: dict(c) for g, c in sorted(rows.items())}, "overall": dict(total)}


def markdown(result: dict) -> str:
    head = ("| group | new test | in old train | in old val | in old test | same-material "
            "twin in old train | cross-material twin in old train | itself or any twin in "
            "old train |")
    lines = [head, "|---|---|---|---|---|---|---|---|"]
    for name, c in [*result["groups"].items(), ("all", result["overall"])]:
        lines.append(f"| {name} | {c['test']} | {c['in_old_train']} | {c['in_old_val']} | "
                     f"{c['in_old_test']} | {c['same_material_twin_in_old_train']} | "
                     f"{c['cross_material_twin_in_old_train']} | {c['class_in_old_train']} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data")
    ap.add_argument("new_split")
    ap.add_argument("old_split")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    samples = load_samples(a.data, progress_note=lambda m: None).samples
    result = exposure(samples, read_split(a.new_split), read_split(a.old_split))
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=1) + "\n")
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
