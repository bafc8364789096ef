"""Reliability diagram of an ensemble's per-atom sigma (``definet plot --reliability``).

For each quantile bin of sigma, :func:`ase_definet.uncertainty.calibration` records
the mean calibrated sigma and the root-mean-square error norm of its atoms. A
calibrated ensemble puts those points on the diagonal ``rms error = sigma``;
points above it are over-confident bins, below it under-confident ones.

Sources (any of)
    - a calibration file, as ``calibrate.py`` writes ``calibration.json``: named
      blocks such as ``{"validation": {"raw": CAL, "calibrated": CAL, "groups":
      {"MoS2/high": CAL, ...}}, "test": {"calibration": {"calibrated": CAL, ...},
      ...}}`` (a held-out block may hold its curves directly or under
      ``"calibration"``);
    - a model card JSON with that structure under ``"uncertainty"``;
    - a checkpoint, a ``definet fit`` folder or a shipped model name (its card);
      ``None`` is the shipped default;
    - a single block (``{"raw": CAL, "calibrated": CAL, ...}``) or a single CAL,
      named after the file.

Here CAL is the dict ``calibration()`` returns; its ``reliability`` list holds the bins.
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from .plot import _figure, _save

#: The curve kinds a block may hold, and the keys they are read from (in this order;
#: ``scaled`` is what experiments/ensemble/probe_calibration.py writes).
KINDS = {"calibrated": ("calibrated", "scaled"), "raw": ("raw",)}
_BLOCK_KEYS = ("raw", "calibrated", "scaled")
_EXPECTED = ("a 'reliability' list of {'sigma', 'rms_error', 'n'} bins in blocks such as "
             "{'validation': {'calibrated': {...}, 'raw': {...}, 'groups': {...}}}, "
             "directly or under a model card's 'uncertainty'")


# ---------------------------------------------------------------- reading
def _card_of(source: str | Path | None) -> tuple[dict, str]:
    """The model card of a checkpoint, ``definet fit`` folder or shipped name, and
    the model's name."""
    from .weights import checkpoint_source, read_checkpoint, registry
    path, digest, name = checkpoint_source(source)
    card = dict(read_checkpoint(path, digest).get("meta", {}).get("card", {}) or {})
    if digest is not None:            # the registry's card wins, as in load_model
        card.update(registry()[name].get("card", {}))
    return card, Path(name).stem


def read_uncertainty(source: str | Path | Mapping | None) -> tuple[dict, str]:
    """The uncertainty section of ``source`` and a name for it (the file stem).

    Parameters
    ----------
    source : path, str, mapping or None
        A calibration or model-card JSON file, a checkpoint, a ``definet fit``
        folder, a shipped model name, ``None`` (the shipped default) or the
        parsed content itself.

    Raises
    ------
    ValueError
        A JSON file that cannot be parsed or does not hold an object.
    NoWeightsError
        Neither a file nor a shipped model.
    """
    if isinstance(source, Mapping):
        data, label = source, "calibration"
    else:
        path = None if source is None else Path(source)
        if path is not None and path.is_file() and path.suffix.lower() == ".json":
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError) as err:
                raise ValueError(f"{source}: not a JSON file ({err})") from err
            if not isinstance(data, dict):
                raise ValueError(f"{source}: expected a JSON object, found "
                                 f"{type(data).__name__}")
        else:
            data, label = _card_of(source)
        if path is not None:
            label = path.stem
    section = data.get("uncertainty", data)
    return dict(section) if isinstance(section, Mapping) else {}, label


def _is_cal(obj) -> bool:
    return isinstance(obj, Mapping) and isinstance(obj.get("reliability"), list)


def _block(obj) -> Mapping | None:
    """The raw/calibrated/groups mapping of a named block, or None."""
    if not isinstance(obj, Mapping):
        return None
    if isinstance(obj.get("calibration"), Mapping):    # held-out blocks of calibrate.py
        obj = obj["calibration"]
    has_curve = any(_is_cal(obj.get(k)) for k in _BLOCK_KEYS)
    return obj if has_curve or isinstance(obj.get("groups"), Mapping) else None


def reliability_curves(section: Mapping, label: str = "calibration",
                       kinds: Sequence[str] = ("calibrated",),
                       groups: bool | Sequence[str] = False,
                       blocks: Sequence[str] | None = None) -> dict[str, dict]:
    """Curve name → CAL dict, for each block, kind and (if asked) group.

    Parameters
    ----------
    section : mapping
        An uncertainty section (see the module docstring).
    label : str
        Name of the source, used in messages and for a section that is itself
        one block or one CAL.
    kinds : sequence of {"calibrated", "raw"}
        Which overall curves of each block to take.
    groups : bool or sequence of str
        ``True``: also every material/density group of each block (its
        ``groups``, calibrated); a sequence: only those groups.
    blocks : sequence of str, optional
        Names of the blocks to take (default: every block that has curves).

    Raises
    ------
    ValueError
        Unknown kind, block or group, or no reliability bins at all.
    """
    bad = [k for k in kinds if k not in KINDS]
    if bad:
        raise ValueError(f"unknown curve kind {bad}: choose from {sorted(KINDS)}")
    if _is_cal(section):
        named = {label: {"calibrated": section}}
    elif _block(section) is not None:
        named = {label: _block(section)}
    else:
        named = {k: _block(v) for k, v in section.items() if _block(v) is not None}
    if blocks is not None:
        missing = [b for b in blocks if b not in named]
        if missing:
            raise ValueError(f"{label}: no reliability block {missing} (found "
                             f"{sorted(named) or 'none'})")
        named = {b: named[b] for b in blocks}
    curves: dict[str, dict] = {}
    found: set[str] = set()
    for name, block in named.items():
        for kind in kinds:
            cal = next((block[k] for k in KINDS[kind] if _is_cal(block.get(k))), None)
            if cal is not None:
                curves[name if kind == "calibrated" else f"{name} ({kind})"] = cal
        grp = block.get("groups") if isinstance(block.get("groups"), Mapping) else {}
        found |= set(grp)
        wanted = [] if groups is False else grp if groups is True else groups
        curves.update({f"{name} {g}": grp[g] for g in wanted if _is_cal(grp.get(g))})
    unknown = [] if isinstance(groups, bool) else [g for g in groups if g not in found]
    if unknown:
        raise ValueError(f"{label}: no group {unknown} in any block (found "
                         f"{sorted(found) or 'none'})")
    curves = {k: v for k, v in curves.items() if v["reliability"]}
    if not curves:
        card = " (a model card without an 'uncertainty' section: a single model, or an " \
            "ensemble not calibrated by `definet calibrate`)" \
            if {"config", "elements"} & set(section) else ""
        raise ValueError(f"{label}: no reliability bins (of kind {', '.join(kinds)}){card}; "
                         f"expected {_EXPECTED}; found keys {sorted(section) or 'none'}")
    return curves


def bins_of(cal: Mapping) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sigma, rms_error, n) arrays of a CAL's reliability bins."""
    rows = cal["reliability"]
    try:
        return (np.array([float(r["sigma"]) for r in rows]),
                np.array([float(r["rms_error"]) for r in rows]),
                np.array([int(r.get("n", 0)) for r in rows]))
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"reliability bins need numeric 'sigma' and 'rms_error' "
                         f"({err!r} in {rows[:1]})") from err


# ---------------------------------------------------------------- drawing
def reliability_figure(curves: Mapping[str, Mapping], log: bool = True,
                       title: str = "reliability") -> Figure:
    """A reliability diagram: one line per curve (label = its name) and the diagonal.

    Each curve's line holds exactly its bins' mean calibrated sigma (x) and RMS
    error norm (y), in bin order; on log axes bins with a zero value are left
    out (they cannot be drawn). The diagonal's label is ``"calibrated"``.
    """
    fig, (ax,) = _figure(5.2, 4.6)
    values, texts = [], []
    for k, (name, cal) in enumerate(curves.items()):
        x, y, _ = bins_of(cal)
        keep = (x > 0) & (y > 0) if log else np.isfinite(x) & np.isfinite(y)
        ax.plot(x[keep], y[keep], ls="--" if name.endswith("(raw)") else "-", marker="o",
                ms=3.5, lw=1.4, color=f"C{k % 10}", label=name)
        cov = cal.get("coverage_2sigma")
        texts.append(f"{name}  ({cal.get('n_atoms', '?')} atoms" +
                     (f", {100 * cov:.0f} % within 2σ)" if isinstance(cov, (int, float))
                      else ")"))
        values += [x[keep], y[keep]]
    v = np.concatenate(values)
    v = v[np.isfinite(v) & (v > 0)] if log else v[np.isfinite(v)]
    lo, hi = (float(v.min()), float(v.max())) if v.size else (1e-3, 1.0)
    lo, hi = (lo / 1.5, hi * 1.5) if log else (min(0.0, lo), hi * 1.05 or 1.0)
    ax.plot([lo, hi], [lo, hi], color="k", lw=0.8, ls=":", label="calibrated")
    if log:
        ax.set(xscale="log", yscale="log")
    ax.set(xlim=(lo, hi), ylim=(lo, hi), aspect="equal", title=title,
           xlabel="mean σ in bin (Å; raw: uncalibrated)" if any(
               n.endswith("(raw)") for n in curves) else "mean calibrated σ in bin (Å)",
           ylabel="RMS error norm in bin (Å)")
    ax.legend(ax.get_lines(), [*texts, "calibrated (RMS error = σ)"], fontsize=7,
              loc="upper left")
    return fig


def plot_reliability(source: str | Path | Mapping | None, out_png: str | Path,
                     kinds: Sequence[str] = ("calibrated",),
                     groups: bool | Sequence[str] = False,
                     blocks: Sequence[str] | None = None, log: bool = True) -> Path:
    """Reliability diagram of a calibration file, model card, checkpoint or model name.

    Parameters
    ----------
    source : path, str, mapping or None
        See :func:`read_uncertainty`.
    kinds, groups, blocks
        Which curves: see :func:`reliability_curves`.
    log : bool
        Log-log axes (default) or linear ones.

    Raises
    ------
    ValueError
        The source holds no reliability bins (the message names it and what
        is missing), or an unknown kind, block or group was asked for.
    """
    section, label = read_uncertainty(source)
    # messages name the file or model as given; None by the default model's name
    name = label if source is None or isinstance(source, Mapping) else str(source)
    curves = reliability_curves(section, name, kinds, groups, blocks)
    return _save(reliability_figure(curves, log, f"reliability of σ: {label}"), out_png)
