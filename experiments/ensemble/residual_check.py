"""Residual check of the rule (README.md): the chosen policy against the raw mean.

    python experiments/ensemble/residual_check.py MODEL NONE_REPORT POLICY [POLICY_REPORT]

NONE_REPORT is `definet residual --uncertainty-policy none` on the 32 validation
structures (4 per group). A policy that only withholds (no `shrink`) hands the
calculator either the raw mean or the unrelaxed input, so its residual runs are
those of NONE_REPORT: a withheld structure ends where the input ends (CHGNet + BFGS
on CPU is deterministic), the others where the raw mean ends. Which structures it
withholds is read from MODEL's predictions (no relaxation). A policy that shrinks
needs POLICY_REPORT, its own residual run.

Counts, per threshold, the structures whose end energy from the start is more than
5 meV above the end from the unrelaxed input, and the median steps. Rule: the choice
stands if its count at fmax 0.01 is not above the raw mean's; exit 0, else 1.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from ase_definet.inference import Predictor
from ase_definet.data.load import load_samples
from ase_definet.uncertainty import parse_policy

DATA = "weights/data/chgnet-2dmd-tight"
ABOVE_MEV = 5.0


def ends(records: list[dict], fmax: str, withheld: dict[str, bool] | None = None):
    """(steps, end energy above the input's end in meV) of every record's start."""
    out = []
    for r in records:
        held = bool(withheld and withheld[r["id"]])
        start = r["unrelaxed"] if held else r["predicted"]
        out.append((start[fmax]["steps"],
                    1000.0 * (start[fmax]["energy"] - r["unrelaxed"][fmax]["energy"])))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("none_report")
    ap.add_argument("policy")
    ap.add_argument("policy_report", nargs="?")
    a = ap.parse_args()
    none = json.loads(Path(a.none_report).read_text())
    policy = parse_policy(a.policy)
    records = none["per_structure"]
    withheld = None
    if a.policy_report:
        p_records = {r["id"]: r for r in json.loads(Path(a.policy_report).read_text())
                     ["per_structure"]}
        p_records = [p_records[r["id"]] for r in records]
    elif policy.shrink is None:
        ids = {r["id"] for r in records}
        samples = [s for s in load_samples(DATA, progress_note=lambda m: None).samples
                   if s.info["id"] in ids]
        preds = Predictor(a.model, device="cpu", uncertainty_policy=policy.name).predict(
            [s.atoms for s in samples], [s.host for s in samples])
        withheld = {s.info["id"]: p.withheld for s, p in zip(samples, preds)}
        p_records = records
    else:
        ap.error(f"{policy.name} shrinks: give its own residual report")
    print(f"residual check on the {len(records)} structures of {a.none_report}; "
          f"policy {policy.name}"
          + (f" (withholds {sum(withheld.values())})" if withheld else ""))
    print("| fmax | start | median steps | ends > 5 meV above the input's |\n|---|---|---|---|")
    counts = {}
    for fmax in none["fmax"]:
        key = f"{fmax:g}"
        steps_in = [r["unrelaxed"][key]["steps"] for r in records]
        print(f"| {key} | unrelaxed input | {np.median(steps_in):g} | |")
        for name, recs, held in (("none", records, None), (policy.name, p_records, withheld)):
            e = ends(recs, key, held)
            counts[(key, name)] = sum(d > ABOVE_MEV for _, d in e)
            print(f"| {key} | {name} | {np.median([s for s, _ in e]):g} | "
                  f"{counts[(key, name)]} |")
    ok = counts[("0.01", policy.name)] <= counts[("0.01", "none")]
    print("rule: " + ("the choice stands" if ok else "take the next candidate"))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
