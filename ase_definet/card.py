"""Model cards: what a shipped model covers, how it was made, how well it does.

A card is a JSON-able dict stored in the checkpoint and in ``registry.json``;
:func:`card_markdown` renders the same facts for the README.

    python -m ase_definet.card RUN_DIR --data DATA --test REPORT.json
        [--holdout REPORT.json] [--residual REPORT.json] -o card.json
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
from collections import Counter
from pathlib import Path
from typing import Iterable

from .data.sample import density_of


def oracle_note(manifest: dict, store: str | Path | None = None) -> str:
    """Where the labels come from, as the data set's manifest records it.

    ``store`` is the folder the manifest belongs to: a tightened store names its
    source relative to itself, which the note resolves to a path a reader can use.
    """
    oracle = manifest.get("oracle") or {}
    calcs = ", ".join(oracle.get("calculators") or ["an unrecorded calculator"])
    optimizer = oracle.get("optimizer", "FIRE")
    if isinstance(optimizer, dict):  # a store whose labels came from several optimizers
        optimizer = " or ".join(f"{name} ({n:,} labels)" for name, n in optimizer.items())
    tightened = manifest.get("tightened")
    if tightened:
        source = tightened.get("source")
        if store is not None and source and not Path(source).is_absolute():
            source = os.path.normpath(Path(store) / source)
        how = (f"the labels of {source} continued with {optimizer} to "
               f"fmax {oracle.get('fmax', '?')} eV/Å, fixed cell, host pre-relaxed by the "
               "same potential")
    else:
        how = (f"{optimizer}, fixed cell, fmax {oracle.get('fmax', '?')} eV/Å, host "
               f"pre-relaxed by the same potential")
    return (f"Labels are relaxations with {calcs} ({how}), NOT DFT. Expect DFT-relaxed "
            "geometries to differ from these labels by the potential's own error. To "
            "train on the real 2DMD DFT data: `definet train --data "
            "/path/to/2DMD/high_density_defects /path/to/2DMD/low_density_defects --out "
            "runs/2dmd`, then `definet models --add`.")


def _training_log(run: Path) -> dict:
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    # the best epoch is the one the score selected (logs before ``balance`` have
    # no val_score column and selected on the MAE)
    best = min(rows, key=lambda r: float(r.get("val_score") or r["val_mae"]))
    return {"epochs": len(rows),
            "wall_time_s": round(sum(float(r["time"]) for r in rows), 1),
            "best_epoch": int(best["epoch"]), "best_val_mae": float(best["val_mae"])}


def _with_history(log: dict, init: dict | None) -> dict:
    """This run's training record plus the totals over the models it continued."""
    if not init:
        return log
    parent = init.get("training") or {}

    def total(key: str) -> float | None:
        # None where the parent did not record it (a plain training checkpoint
        # has no wall time): an unknown total, not a smaller one
        before = parent.get(f"total_{key}", parent.get(key))
        return None if before is None else round(log[key] + before, 1)

    epochs = total("epochs")
    return dict(log, initialised_from=init,
                total_epochs=None if epochs is None else int(epochs),
                total_wall_time_s=total("wall_time_s"))


def card_summary(materials: Iterable[str]) -> str:
    """One line naming the materials, in case-insensitive order (hBN beside GaSe)."""
    names = sorted(set(materials), key=str.lower)
    return f"DefiNet for point defects in {', '.join(names)}; trained on CHGNet labels"


def build_card(run: str | Path, data: str | Path, test_report: dict,
               holdout_report: dict | None = None, residual_report: dict | None = None,
               name: str = "definet-2dmd") -> dict:
    """Assemble a card from a training run folder, its data and its reports."""
    from .data.load import load_samples
    from .weights import coverage, read_checkpoint
    run, data = Path(run), Path(data)
    ckpt = read_checkpoint(run / "best.pt")
    meta = ckpt.get("meta", {})
    # the samples this run could see: its exclusions (e.g. the 12×12 holdout, or
    # materials a specialist leaves out) are outside the card's scope
    samples = load_samples(data, progress_note=lambda m: None,
                           exclude=meta.get("excluded")).samples
    manifest_path = data / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    card = {
        "name": name,
        "summary": card_summary(s.info.get("material", "?") for s in samples),
        "config": ckpt["config"],
        "parameters": sum(v.numel() for v in ckpt["state_dict"].values()),
        **coverage(samples),
        "oracle": oracle_note(manifest, data),
        "data": {"source": str(data), "structures": manifest.get("structures"),
                 "groups": manifest.get("groups"), "split": str(run / "split.json"),
                 "n_train": meta.get("n_train"), "n_val": meta.get("n_val"),
                 # what the test metrics rest on: a run started before its data set
                 # was complete is tested later on a longer list than it trained with
                 "n_test": test_report["overall"]["n"],
                 "excluded": meta.get("excluded", [])},
        "training": dict(_with_history(_training_log(run), meta.get("init")),
                         recipe=meta.get("train_config"),
                         hardware=f"{platform.machine()} {meta.get('device', 'cpu')}, "
                                  f"{meta.get('threads', '?')} torch threads × "
                                  f"{meta.get('world_size', 1)} process(es)",
                         code_version=ckpt.get("code_version")),
        "test": _slim(test_report),
    }
    if holdout_report:
        card["scalability_holdout"] = _slim(holdout_report)
    if residual_report:
        from .residual import summarize_by_density
        card["residual_steps"] = residual_report.get("summary")
        records = residual_report.get("per_structure", [])
        card["residual_steps_by_density"] = summarize_by_density(
            records, residual_report.get("fmax", []))
        card["residual_steps_n"] = len(records)
        # what the sample is made of: medians over 18 low- and 6 high-density
        # structures describe low density, whatever the split holds
        groups = Counter(r.get("group", "?") for r in records)
        card["residual_steps_groups"] = dict(sorted(groups.items(), key=lambda g: g[0].lower()))
        card["residual_calculator"] = residual_report.get("calculator", "chgnet")
    return card


def _slim(report: dict) -> dict:
    return {"overall": report["overall"], "groups": report.get("groups", {})}


def _row(name: str, block: dict) -> str:
    m, d, imp = block["model"], block["dummy"], block["improvement"]
    cells = [f"{fmt_num(m.get(k), '.4f')} / {fmt_num(d.get(k), '.4f')} "
             f"({fmt_num(imp.get(k), '+.1f')} %)" for k in ("mae", "a3", "a4", "a5", "a6")]
    return f"| {name} | {block.get('n', '')} | " + " | ".join(cells) + " |"


def card_markdown(card: dict) -> str:
    """The card's metrics as markdown tables (model / Dummy (improvement %))."""
    lines = ["| set | n | MAE | A3 | A4 | A5 | A6 |", "|---|---|---|---|---|---|---|"]
    lines.append(_row("test, all", card["test"]["overall"]))
    for g, block in sorted(card["test"]["groups"].items()):
        lines.append(_row(f"test, {g}", block))
    if "scalability_holdout" in card:
        lines.append(_row("MoS2 12×12 (never trained on)",
                          card["scalability_holdout"]["overall"]))
    return "\n".join(lines)


#: Targets of the shipped 2DMD weights (issue #5): minimum improvement over the
#: Dummy in % (MAE of all atoms and A3) per density, for the never-trained 12×12
#: set, and for the residual steps (median, fewer steps) with the largest
#: allowed energy difference between the two end points.
TARGETS = {"low": 85.0, "high": 70.0, "holdout": 80.0, "residual": 85.0, "dE_meV": 5.0}


def meets_target(improvement: dict, target: float) -> bool:
    """Both the MAE and the A3 improvement (%) reach ``target``; a missing or NaN
    value misses it."""
    return all(v is not None and v == v and v >= target
               for v in (improvement.get("mae"), improvement.get("a3")))


def group_order(group: str) -> tuple[bool, str]:
    """Sort key of ``material/density`` groups: low density first, then by name."""
    return density_of(group) != "low", group


def _verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


def targets_markdown(card: dict) -> str:
    """Measured improvements against :data:`TARGETS`, one row per test group."""
    lines = ["| set | n | MAE improvement | A3 improvement | target | verdict |",
             "|---|---|---|---|---|---|"]

    def row(name: str, block: dict, target: float) -> None:
        imp = block["improvement"]
        mae, a3 = imp.get("mae"), imp.get("a3")
        ok = meets_target(imp, target)
        lines.append(f"| {name} | {block.get('n', '')} | {fmt_num(mae)} % | {fmt_num(a3)} % "
                     f"| ≥ {target:.0f} % | {_verdict(ok)} |")

    for g, block in sorted(card["test"]["groups"].items(), key=lambda kv: group_order(kv[0])):
        density = density_of(g)
        if density in TARGETS:
            row(g, block, TARGETS[density])
    if "scalability_holdout" in card:
        row("MoS2 12×12, never trained on", card["scalability_holdout"]["overall"],
            TARGETS["holdout"])
    sets = [("", card.get("residual_steps") or {}, card.get("residual_steps_n", ""))]
    sets += [(f", {d} density", r["summary"], r["n"])
             for d, r in (card.get("residual_steps_by_density") or {}).items()]
    for label, summary, n in sets:
        for fmax, r in summary.items():
            red, de = r.get("reduction_pct"), r.get("dE_meV_max")
            ok = (red is not None and red >= TARGETS["residual"] and de is not None
                  and de <= TARGETS["dE_meV"])
            lines.append(f"| residual steps to fmax {fmax} eV/Å{label} | {n} | "
                         f"{fmt_num(red)} % fewer (medians; per structure "
                         f"{fmt_num(r.get('median_reduction_pct'))} %) | max abs(ΔE) {fmt_num(de)} meV "
                         f"(median {fmt_num(r.get('dE_meV_median'))}) | "
                         f"≥ {TARGETS['residual']:.0f} %, ≤ {TARGETS['dE_meV']:.0f} meV | "
                         f"{_verdict(ok)} |")
    return "\n".join(lines)


def fmt_num(value, spec: str = ".1f") -> str:
    """A number for a table; JSON null (NaN in the report) prints as n/a."""
    return "n/a" if value is None or value != value else format(value, spec)


def _residual_lines(card: dict) -> list[str]:
    from .residual import lower_higher
    res = card.get("residual_steps")
    if not res:
        return ["Residual-step study: not run."]
    lines = [f"Residual steps with {card.get('residual_calculator', 'chgnet')} + BFGS on "
             f"{card.get('residual_steps_n', '?')} test structures"
             + (" (" + ", ".join(f"{g} {n}" for g, n in card["residual_steps_groups"].items())
                + ")" if card.get("residual_steps_groups") else "")
             + " (median; from the unrelaxed input vs from the DefiNet prediction):", "",
             "| fmax (eV/Å) | from unrelaxed | from DefiNet | reduction | "
             "median per-structure reduction | max abs(ΔE) (meV) | DefiNet's end lower / "
             "higher |",
             "|---|---|---|---|---|---|---|"]
    for fmax, r in res.items():
        lines.append(
            f"| {fmax} | {r.get('median_steps_unrelaxed')} | {r.get('median_steps_predicted')} "
            f"| {fmt_num(r.get('reduction_pct'))} % | {fmt_num(r.get('median_reduction_pct'))} % "
            f"| {fmt_num(r.get('dE_meV_max'))} | {lower_higher(r) or 'n/a'} |")
    return lines


def _history_lines(t: dict) -> list[str]:
    init = t.get("initialised_from")
    if not init:
        return []
    parent = init.get("training") or {}
    minutes = lambda s: "?" if s is None else f"{s / 60:.0f}"  # noqa: E731
    epochs = lambda n: "?" if n is None else f"{n:.0f}"  # noqa: E731
    return [f"- started from the weights of `{init['checkpoint']}` (sha256 "
            f"`{init['sha256'][:12]}…`; {epochs(parent.get('epochs'))} epochs, "
            f"{minutes(parent.get('wall_time_s'))} min), with its test split kept; "
            f"in total {epochs(t['total_epochs'])} epochs, "
            f"{minutes(t['total_wall_time_s'])} min of training"]


# build.sh's data store and variables, with its defaults (tests/test_card.py checks
# them against the script): the reproduce line names only what differs
_BUILD_DATA = "weights/data/chgnet-2dmd"
_BUILD_VARS = {"lr": ("LR", 1.5e-3), "batch_size": ("BATCH", 2), "seed": ("SEED", 0),
               "max_time": ("MAX_TIME", 2400.0), "balance": ("BALANCE", "group"),
               "weight_decay": ("WD", 0.0), "input_noise": ("NOISE", 0.0)}


def reproduce_line(card: dict) -> str:
    """The ``weights/build.sh`` command that trains this card's run again."""
    d, t = card["data"], card["training"]
    recipe = t.get("recipe") or {}
    env = [f"DATA={d['source']}"] if d.get("source") != _BUILD_DATA else []
    for key, (var, default) in _BUILD_VARS.items():
        value = recipe.get(key)
        if value is not None and value != default:
            env.append(f"{var}={value:g}" if isinstance(value, float) else f"{var}={value}")
    extra = [e for e in d.get("excluded", []) if e != "supercell=12x12"]  # build.sh's own
    if extra:
        env.append(f"EXCLUDE={','.join(extra)}")
    init = t.get("initialised_from")
    if not init:
        return f"`{' '.join(env + ['bash weights/build.sh'])}`"
    # the parent file is usually the earlier default, since replaced by this model
    env += ["INIT=parent.pt", f"SPLIT={d.get('split', 'split.json')}"]
    return (f"`{' '.join(env + ['bash weights/build.sh'])}`, parent.pt being the "
            f"checkpoint with sha256 `{init['sha256'][:12]}…` (`{init['checkpoint']}` "
            "when this run started; in the git history)")


def card_readme(card: dict) -> str:
    """The model card as the ``weights/README.md`` text."""
    t = card["training"]
    d = card["data"]
    lines = [
        f"# Shipped weights: `{card['name']}`", "",
        card["summary"] + ".", "",
        f"**{card['oracle']}**", "",
        "## Scope",
        f"- elements: {', '.join(card['elements'])}",
        f"- defect types (V_X vacancy of X, Y_X = Y on an X site): "
        f"{', '.join(card['defects'])}",
        "- anything else is refused unless `strict=False` (then a warning)", "",
        "## Model",
        f"- configuration: `{json.dumps(card['config'])}` ({card['parameters']:,} parameters)",
        f"- file: `{card['name']}.pt`, sha256 in `registry.json` (checked before loading)", "",
        "## Data",
        f"- `{d['source']}`: {d['structures']} structures (manifest.json lists them per "
        f"material/density/supercell); split {d['n_train']}/{d['n_val']}/{d['n_test']} "
        f"train/val/test, stratified by material and density (`{card['name']}.split.json`)",
        f"- left out of training entirely: {', '.join(d['excluded']) or 'nothing'}", "",
        "## Training",
        f"- {t['epochs']} epochs, {t['wall_time_s'] / 60:.0f} min on {t['hardware']}; "
        f"best validation MAE {t['best_val_mae']:.4f} Å"
        + (f" (epoch {t['best_epoch']})" if "best_epoch" in t else ""),
        *_history_lines(t),
        f"- recipe: `{json.dumps({k: v for k, v in (t.get('recipe') or {}).items() if k != 'model'})}`",
        f"- reproduce: {reproduce_line(card)} (data: `{d['source']}/recipe.sh`)", "",
        "## Test metrics (Å; model / Dummy (improvement))",
        "Dummy = the unrelaxed structure as prediction. MAE over x, y, z of all real atoms; "
        "A_x over atoms within x Å of a defect site (periodic images included); per "
        "structure, then averaged.", "",
        card_markdown(card), "",
        *_residual_lines(card), "",
        "## Against the targets (improvement over the Dummy, test split)", "",
        targets_markdown(card), "",
    ]
    return "\n".join(lines)


def card_text(card: dict) -> str:
    """A card as readable text: :func:`card_readme` when the card has all its
    sections (a card from :func:`build_card`), else its JSON."""
    try:
        return card_readme(card)
    except (KeyError, TypeError, ValueError):
        return json.dumps(card, indent=2)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="build a model card JSON")
    ap.add_argument("run")
    ap.add_argument("--data", required=True)
    ap.add_argument("--test", required=True)
    ap.add_argument("--holdout", default=None)
    ap.add_argument("--residual", default=None)
    ap.add_argument("--name", default="definet-2dmd")
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("--readme", default=None, help="also write the card as markdown here")
    a = ap.parse_args(argv)
    load = lambda p: json.loads(Path(p).read_text()) if p else None  # noqa: E731
    card = build_card(a.run, a.data, load(a.test), load(a.holdout), load(a.residual),
                      a.name)
    Path(a.output).write_text(json.dumps(card, indent=1) + "\n")
    if a.readme:
        Path(a.readme).parent.mkdir(parents=True, exist_ok=True)
        Path(a.readme).write_text(card_readme(card))
    print(card_markdown(card))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
