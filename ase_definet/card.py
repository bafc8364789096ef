"""Model cards: what a shipped model covers, how it was made, how well it does.

A card is a JSON-able dict stored in the checkpoint and in ``registry.json``;
:func:`card_markdown` renders the same facts for the README.

    python -m ase_definet.card RUN_DIR --data DATA --test REPORT.json
        [--holdout REPORT.json] [--residual REPORT.json]
        [--loose-data DIR] [--loose-test REPORT.json] [--split S] [--note TEXT] -o card.json
    python -m ase_definet.card --from-card CARD.json --test REPORT.json [...] -o card.json

The second form rescores a shipped card on new reports (a new test split)
without touching the model file.

A card built on a tightened store (labels continued to a smaller fmax) also
measures how far the labels moved (:mod:`ase_definet.label_drift`) against the
store they were continued from (``--loose-data``, by default the source the
manifest names); ``--loose-test`` is the same model's test report against those
looser labels.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from .breakdown import strata_markdown, worse_lines
from .calibrate import calibration_text
from .reproduce import reproduce_line
from .residual_report import residual_lines, summarize, summarize_by_density
from .scope import scope_lines
from .targets import group_order, targets_markdown  # noqa: F401 (group_order: old import path)
from .textfmt import fmt_num
from .training_log import ensemble_training, member_lines, training_log, with_history


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


def card_summary(materials: Iterable[str]) -> str:
    """One line naming the materials, in case-insensitive order (hBN beside GaSe)."""
    names = sorted(set(materials), key=str.lower)
    return f"DefiNet for point defects in {', '.join(names)}; trained on CHGNet labels"


def loose_source(data: str | Path) -> Path | None:
    """The store a tightened store's labels were continued from, if it is on disk."""
    path = Path(data) / "manifest.json"
    manifest = json.loads(path.read_text()) if path.exists() else {}
    source = (manifest.get("tightened") or {}).get("source")
    if not source:
        return None
    source = Path(source) if Path(source).is_absolute() else Path(data) / source
    return source if source.exists() else None


def build_card(run: str | Path, data: str | Path, test_report: dict,
               holdout_report: dict | None = None, residual_report: dict | None = None,
               name: str = "definet-2dmd", loose_data: str | Path | None = None,
               loose_report: dict | None = None, split: str | None = None,
               note: str | None = None) -> dict:
    """Assemble a card from a training run folder, its data and its reports.

    ``loose_data``: a store with the same structures' looser labels, for the
    label-drift section; ``loose_report``: the test report against them;
    ``split`` and ``note``: see :func:`rescore_card`.
    """
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
                 "excluded": meta.get("excluded", [])},
        "training": dict(ensemble_training(meta["members"]) if meta.get("members") else
                         with_history(training_log(run), meta.get("init")),
                         recipe=meta.get("train_config"),
                         hardware=f"{platform.machine()} {meta.get('device', 'cpu')}, "
                                  f"{meta.get('threads', '?')} torch threads × "
                                  f"{meta.get('world_size', 1)} process(es)",
                         code_version=ckpt.get("code_version")),
    }
    if (meta.get("card") or {}).get("uncertainty"):     # from `definet calibrate`
        card["uncertainty"] = meta["card"]["uncertainty"]
    card = rescore_card(card, test_report, holdout_report, loose_report, split, note,
                        residual_report)
    if loose_data is not None:
        card = with_label_drift(card, data, loose_data)
    return card


def with_label_drift(card: dict, data: str | Path, loose_data: str | Path) -> dict:
    """The card with the label drift between its store ``data`` and ``loose_data``."""
    from .label_drift import store_label_drift
    excluded = card.get("data", {}).get("excluded") or None
    return dict(card, label_drift=store_label_drift(data, loose_data, excluded))


def with_residual(card: dict, report: dict, split: str | None = None) -> dict:
    """``card`` with the residual-step study of ``report`` (``split``: the split file its
    structures came from, when it is not the card's test split)."""
    card = {k: v for k, v in card.items() if not k.startswith("residual_")}
    records = report.get("per_structure", [])
    # summarised again by this code, so that an older report gets today's counts
    by_start = summarize(records, report["fmax"]) if records and report.get("fmax") else {}
    card["residual_steps"] = by_start.get("predicted") or report.get("summary")
    card["residual_steps_by_density"] = summarize_by_density(records, report.get("fmax", []))
    lower = by_start.get("lower") or (report.get("summary_by_start") or {}).get("lower")
    if lower:
        card["residual_steps_lower_start"] = lower
    card["residual_steps_n"] = len(records)
    # what the sample is made of: medians over 18 low- and 6 high-density
    # structures describe low density, whatever the split holds
    groups = Counter(r.get("group", "?") for r in records)
    card["residual_steps_groups"] = dict(sorted(groups.items(), key=lambda g: g[0].lower()))
    card["residual_calculator"] = report.get("calculator", "chgnet")
    if split:
        card["residual_steps_split"] = str(split)
    return card


def rescore_card(card: dict, test_report: dict, holdout_report: dict | None = None,
                 loose_report: dict | None = None, split: str | None = None,
                 note: str | None = None, residual_report: dict | None = None) -> dict:
    """A copy of ``card`` with its test metrics taken from new evaluation reports.

    How a shipped model is scored on a new test split without retraining or
    repackaging it. ``split`` names the split file the reports used; ``note`` is
    printed above the test metrics (e.g. that the model trained on some of them).
    Sections of the old card that the new reports do not replace are dropped.
    """
    card = {k: v for k, v in card.items()
            if k not in ("test", "scalability_holdout", "test_loose_labels", "test_note")}
    # what the test metrics rest on: a run started before its data set was
    # complete is tested later on a longer list than it trained with
    card["data"] = dict(card.get("data", {}), n_test=test_report["overall"]["n"])
    if residual_report:                     # a residual study on the same split
        card = with_residual(card, residual_report)
    if split:
        card["data"]["test_split"] = str(split)
        if card.get("residual_steps") and not residual_report:   # not rescored
            # build.sh ships the training split beside the weights as <name>.split.json
            card.setdefault("residual_steps_split", f"{card.get('name', 'model')}.split.json")
    card["test"] = _slim(test_report)
    if holdout_report:
        card["scalability_holdout"] = _slim(holdout_report)
    if loose_report:
        card["test_loose_labels"] = _slim(loose_report)
    if note:
        card["test_note"] = note
    return card


def _slim(report: dict) -> dict:
    """A report without its per-structure records."""
    return {k: report[k] for k in ("overall", "groups", "strata") if k in report}


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


def _strata_lines(card: dict) -> list[str]:
    """Per-concentration tables and worse-than-Dummy counts (cards since issue #29)."""
    sets = [(f"test split (n = {card['test']['overall']['n']})", card["test"])]
    if "scalability_holdout" in card:
        sets.append(("MoS2 12×12, never trained on", card["scalability_holdout"]))
    lines = []
    for title, report in sets:
        if not report.get("strata"):
            continue
        lines += [f"### Per concentration: {title}", "",
                  "High density by defect concentration, low density by number of defects "
                  "(Å; improvement over the Dummy in %). *balanced*: the mean over a "
                  "group's strata of the stratum improvements, every concentration counting "
                  "once; low density is one concentration class, its balanced value is the "
                  "group mean.", "", strata_markdown(report), "",
                  "Structures whose model MAE exceeds the Dummy's: "
                  + "; ".join(worse_lines(report)) + ".", ""]
    return (["## Where it fails", ""] + lines) if lines else []


def _drift_lines(card: dict) -> list[str]:
    if "label_drift" not in card:
        return []
    from .label_drift import drift_markdown
    return ["## How far the labels move between fmax 0.01 and 0.001", "",
            drift_markdown(card["label_drift"], card["test"], card.get("test_loose_labels")),
            ""]


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


def _split_text(card: dict) -> str:
    d = card["data"]
    if d.get("test_split"):        # a card rescored on another split than it trained with
        return (f"trained on split {d['n_train']}/{d['n_val']} train/val "
                f"(`{card['name']}.split.json`); test metrics on the {d['n_test']} test "
                f"structures of `{d['test_split']}`")
    return (f"split {d['n_train']}/{d['n_val']}/{d['n_test']} train/val/test, stratified "
            f"by material and density (`{card['name']}.split.json`)")


def card_readme(card: dict) -> str:
    """The model card as the ``weights/README.md`` text."""
    t = card["training"]
    d = card["data"]
    recipe = {k: v for k, v in (t.get('recipe') or {}).items() if k != 'model'}
    lines = [
        f"# Shipped weights: `{card['name']}`", "",
        card["summary"] + ".", "",
        f"**{card['oracle']}**", "",
        "## Scope",
        f"- elements: {', '.join(card['elements'])}",
        f"- defect types (V_X vacancy of X, Y_X = Y on an X site): "
        f"{', '.join(card['defects'])}",
        *scope_lines(card),
        "- anything else is refused unless `strict=False` (then a warning)", "",
        "## Model",
        f"- configuration: `{json.dumps(card['config'])}` ({card['parameters']:,} parameters)",
        f"- file: `{card['name']}.pt`, sha256 in `registry.json` (checked before loading)", "",
        "## Data",
        f"- `{d['source']}`: {d['structures']} structures (manifest.json lists them per "
        f"material/density/supercell); " + _split_text(card),
        f"- left out of training entirely: {', '.join(d['excluded']) or 'nothing'}", "",
        "## Training",
        (f"- {len(t['members'])} members, {t['epochs']} epochs in all" if t.get("members")
         else f"- {t['epochs']} epochs")
        + f", {t['wall_time_s'] / 60:.0f} min on {t['hardware']}; "
        + ("mean " if t.get("members") else "")
        + f"best validation MAE {t['best_val_mae']:.4f} Å"
        + (f" (epoch {t['best_epoch']})" if "best_epoch" in t else ""),
        *_history_lines(t), *member_lines(t),
        f"- recipe: `{json.dumps(recipe)}`",
        f"- reproduce: {reproduce_line(card)} (data: `{d['source']}/recipe.sh`)", "",
        "## Test metrics (Å; model / Dummy (improvement))",
        "Dummy = the unrelaxed structure as prediction. MAE over x, y, z of all real atoms; "
        "A_x over atoms within x Å of a defect site (periodic images included); per "
        "structure, then averaged."
        + (f" Test split: `{d['test_split']}`." if d.get("test_split") else ""), "",
        *([f"**{card['test_note']}**", ""] if card.get("test_note") else []),
        card_markdown(card), "",
        *residual_lines(card), "",
        *(["## Uncertainty", "", calibration_text(card["uncertainty"]), ""]
          if card.get("uncertainty") else []),
        *_strata_lines(card),
        *_drift_lines(card),
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
    ap.add_argument("run", nargs="?", default=None,
                    help="training run folder (or give --from-card)")
    ap.add_argument("--from-card", default=None,
                    help="rescore this card JSON (a registry.json entry's card) instead")
    ap.add_argument("--split", default=None, help="the split file the reports used")
    ap.add_argument("--note", default=None, help="printed above the test metrics")
    ap.add_argument("--data", default=None)
    ap.add_argument("--test", required=True)
    ap.add_argument("--holdout", default=None)
    ap.add_argument("--residual", default=None)
    ap.add_argument("--name", default="definet-2dmd")
    ap.add_argument("--loose-data", default=None,
                    help="store with the looser labels (default: the tightened store's "
                         "source, when on disk)")
    ap.add_argument("--loose-test", default=None,
                    help="the model's test report against the looser labels")
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("--readme", default=None, help="also write the card as markdown here")
    a = ap.parse_args(argv)
    load = lambda p: json.loads(Path(p).read_text()) if p else None  # noqa: E731
    if a.from_card:
        card = rescore_card(load(a.from_card), load(a.test), load(a.holdout),
                            load(a.loose_test), a.split, a.note, load(a.residual))
        data = a.data or card["data"]["source"]
        loose = a.loose_data or loose_source(data)
        card = with_label_drift(card, data, loose) if loose else card
    elif a.run and a.data:
        card = build_card(a.run, a.data, load(a.test), load(a.holdout), load(a.residual),
                          a.name, a.loose_data or loose_source(a.data), load(a.loose_test),
                          a.split, a.note)
    else:
        ap.error("give RUN and --data, or --from-card")
    Path(a.output).write_text(json.dumps(card, indent=1) + "\n")
    if a.readme:
        Path(a.readme).parent.mkdir(parents=True, exist_ok=True)
        Path(a.readme).write_text(card_readme(card))
    print(card_markdown(card))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
