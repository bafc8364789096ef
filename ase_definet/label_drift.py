"""How far the labels move when their relaxation is continued to a tighter fmax.

A tightened store (``definet tighten``) continues every label of a source store
from fmax 0.01 to 0.001 eV/Å. Flat, soft modes of the potential energy surface
let atoms drift a long way at forces that small, so the two label sets of one
structure differ by an amount that can be a sizeable share of the Dummy's error.
That share is what a low-density MAE must be read against: a model trained on
the continued labels scores much better against them than against the looser
ones, though both are "the relaxed structure".

Per structure, the drift is the mean over real atoms and x, y, z of
``|tight - loose|`` (minimum image), and the Dummy's MAE is measured against the
tight labels; both are averaged per structure, per ``material/density`` group
and per density.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .data.sample import Sample, density_of
from .metrics import absolute_errors


def _row(tight: Sample, loose: Sample) -> tuple[float, float, float]:
    a = tight.atoms
    if len(a) != len(loose.atoms) or not np.allclose(a.positions, loose.atoms.positions,
                                                     atol=1e-4):
        raise ValueError(f"{tight.info.get('id')}: the two stores hold different unrelaxed "
                         "structures under this id")
    cell, pbc = a.cell.array, a.pbc
    return (float(absolute_errors(tight.relaxed, loose.relaxed, cell, pbc).mean()),
            float(absolute_errors(tight.relaxed, a.positions, cell, pbc).mean()),
            float(absolute_errors(loose.relaxed, a.positions, cell, pbc).mean()))


def _block(rows: list[tuple[float, float, float]]) -> dict:
    drift, dummy, dummy_loose = (float(np.mean(c)) for c in zip(*rows))
    return {"n": len(rows), "drift": drift, "dummy": dummy, "dummy_loose": dummy_loose,
            "drift_pct_of_dummy": 100.0 * drift / dummy if dummy > 0 else float("nan")}


def label_drift(tight: Sequence[Sample], loose: Sequence[Sample]) -> dict:
    """Drift between two label sets of the same structures (matched by ``id``).

    Parameters
    ----------
    tight, loose : sequence of Sample
        The continued (e.g. fmax 0.001) and the original (fmax 0.01) labels.
        Structures found in only one of them are left out.

    Returns
    -------
    dict
        ``{"groups": {group: block}, "densities": {density: block}}`` with
        ``block = {"n", "drift", "dummy", "dummy_loose", "drift_pct_of_dummy"}``
        (Å, per structure then averaged; ``dummy`` against the tight labels).

    Raises
    ------
    ValueError
        When no id is in both, or one id names two different unrelaxed structures.
    """
    by_id = {s.info.get("id"): s for s in loose}
    groups: dict[str, list] = {}
    for s in tight:
        other = by_id.get(s.info.get("id"))
        if other is not None:
            groups.setdefault(s.group, []).append(_row(s, other))
    if not groups:
        raise ValueError("the two label sets share no structure id")
    densities: dict[str, list] = {}
    for g, rows in groups.items():
        densities.setdefault(density_of(g), []).extend(rows)
    return {"groups": {g: _block(r) for g, r in sorted(groups.items())},
            "densities": {d: _block(r) for d, r in sorted(densities.items())}}


def store_label_drift(tight: str | Path, loose: str | Path,
                      exclude: list[str] | None = None) -> dict:
    """:func:`label_drift` of two data folders, with the folders recorded."""
    from .data.load import load_samples
    quiet = lambda m: None  # noqa: E731
    out = label_drift(load_samples(tight, progress_note=quiet, exclude=exclude).samples,
                      load_samples(loose, progress_note=quiet, exclude=exclude).samples)
    return {"tight": str(tight), "loose": str(loose), **out}


def drift_markdown(drift: dict, test: dict | None = None,
                   loose_test: dict | None = None) -> str:
    """The card's paragraph and table on label drift.

    ``test`` and ``loose_test`` are evaluation reports (or their ``overall`` /
    ``groups`` parts) of one model on the same structures, against the tight and
    the loose labels; with both, the low-density groups' improvements are quoted
    side by side.
    """
    from .textfmt import fmt_num
    lines = []
    low = drift["densities"].get("low")
    if low:
        lines.append(
            "Between fmax 0.01 and 0.001 eV/Å the labels' flat, soft modes move the atoms "
            f"of the low-density structures by {fmt_num(low['drift'], '.4f')} Å per "
            f"coordinate on average, {fmt_num(low['drift_pct_of_dummy'], '.0f')} % of the "
            f"Dummy's MAE ({fmt_num(low['dummy'], '.4f')} Å; {low['n']} structures). The "
            "low-density labels are defined to about that much: a low-density MAE far "
            "below it says how closely the model follows the continued relaxation, not "
            "that its geometry is better known than the labels.")
    both = [g for g in (test or {}).get("groups", {})
            if g in (loose_test or {}).get("groups", {}) and density_of(g) == "low"]
    for g in both:
        t, lo = test["groups"][g], loose_test["groups"][g]
        lines.append(
            f"{g} (test, n = {t['n']}): against the fmax-0.01 labels the model removes "
            f"{fmt_num(lo['improvement'].get('mae'), '.0f')} % of the Dummy's error (MAE "
            f"{fmt_num(lo['model'].get('mae'), '.4f')} Å), against the continued labels "
            f"{fmt_num(t['improvement'].get('mae'), '.0f')} % (MAE "
            f"{fmt_num(t['model'].get('mae'), '.4f')} Å).")
    lines += ["", "| group | n | label drift 0.01 → 0.001 (Å) | Dummy MAE (Å) | "
              "drift / Dummy MAE |", "|---|---|---|---|---|"]
    for g, b in drift["groups"].items():
        lines.append(f"| {g} | {b['n']} | {fmt_num(b['drift'], '.4f')} | "
                     f"{fmt_num(b['dummy'], '.4f')} | "
                     f"{fmt_num(b['drift_pct_of_dummy'], '.0f')} % |")
    return "\n".join(lines)


def main(argv=None) -> int:
    """``python -m ase_definet.label_drift TIGHT LOOSE [--json OUT]``: print the table."""
    import argparse
    import json
    ap = argparse.ArgumentParser(description="label drift between two stores of one data set")
    ap.add_argument("tight")
    ap.add_argument("loose")
    ap.add_argument("--exclude", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--json", default=None, help="write the measurement here")
    a = ap.parse_args(argv)
    drift = store_label_drift(a.tight, a.loose, a.exclude or None)
    if a.json:
        Path(a.json).write_text(json.dumps(drift, indent=1) + "\n")
    print(drift_markdown(drift))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
