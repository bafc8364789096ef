"""Figures: learning curves, parity, error vs defect distance, structure views.

Every function writes one PNG and returns its path. Figures are built on
:class:`matplotlib.figure.Figure` with the Agg canvas, not ``pyplot``, so no
global backend is switched and nothing is left open between calls.

Typical CLI use (one prediction pass, then every plot)::

    paths = plot_all(predictor, samples, "figures/", metrics_csv="run/metrics.csv")
"""
from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from .data.sample import Sample, minimum_image
from .evaluate import Displacements, displacement_arrays, predict_samples
from .metrics import RADII, structure_metrics

DPI = 150


# ---------------------------------------------------------------- helpers
def _figure(width: float, height: float, ncols: int = 1) -> tuple[Figure, list]:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, list(axes)


def _save(fig: Figure, out_png: str | Path) -> Path:
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=DPI)
    return out


def read_metrics_csv(path: str | Path) -> dict[str, np.ndarray]:
    """Columns of a training log as float arrays (blank or text cells → NaN)."""
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    names = list(rows[0]) if rows else []

    def num(x):
        try:
            return float(x)
        except (TypeError, ValueError):
            return np.nan
    return {k: np.array([num(r.get(k)) for r in rows]) for k in names}


def _arrays(data) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(true, pred, distance) from Displacements, a mapping or a tuple."""
    if isinstance(data, Displacements):
        return data.true, data.pred, data.distance
    if isinstance(data, Mapping):
        return (np.asarray(data["true"]), np.asarray(data["pred"]),
                None if data.get("distance") is None else np.asarray(data["distance"]))
    true, pred, *rest = data
    return np.asarray(true), np.asarray(pred), (np.asarray(rest[0]) if rest else None)


# ---------------------------------------------------------------- training
def plot_learning_curves(metrics_csv: str | Path, out_png: str | Path) -> Path:
    """Training loss and validation MAE (left), learning rate (right) per epoch.

    The CSV needs an ``epoch`` column; ``train_loss``, ``val_mae`` and ``lr``
    are drawn when present, other columns are ignored.
    """
    cols = read_metrics_csv(metrics_csv)
    if "epoch" not in cols:
        raise ValueError(f"{metrics_csv}: no 'epoch' column (found {sorted(cols)})")
    ep = cols["epoch"]
    fig, (ax, ax_lr) = _figure(9, 3.6, ncols=2)
    for name, label in (("train_loss", "train loss (Å/atom)"), ("val_mae", "val MAE (Å)")):
        y = cols.get(name)
        if y is not None and np.isfinite(y).any():
            ok = np.isfinite(y) & (y > 0)
            ax.plot(ep[ok], y[ok], marker="o", ms=2.5, lw=1.2, label=label)
    val = cols.get("val_mae")
    if val is not None and np.isfinite(val).any():
        best = int(np.nanargmin(val))
        ax.axvline(ep[best], color="0.6", ls=":", lw=1)
        ax.annotate(f"best {val[best]:.4f} Å\n(epoch {ep[best]:g})", (ep[best], val[best]),
                    xytext=(6, 12), textcoords="offset points", fontsize=8,
                    bbox={"boxstyle": "round", "fc": "white", "ec": "0.8", "alpha": 0.8})
    ax.set(xlabel="epoch", ylabel="Å", yscale="log", title="loss and validation MAE")
    ax.legend(fontsize=8)
    lr = cols.get("lr")
    if lr is not None and np.isfinite(lr).any():
        ax_lr.plot(ep, lr, color="tab:green", lw=1.2)
        ax_lr.set_yscale("log")
    ax_lr.set(xlabel="epoch", ylabel="learning rate", title="learning rate")
    return _save(fig, out_png)


# ---------------------------------------------------------------- errors
def plot_parity(data, out_png: str | Path, max_points: int = 60000, seed: int = 0) -> Path:
    """Predicted vs reference displacement components (x, y, z) of all atoms.

    Parameters
    ----------
    data : Displacements, mapping with ``true``/``pred``, or (true, pred)
        Displacements from the unrelaxed positions, ``(n, 3)`` each.
    max_points : int
        Random subsample per component beyond this many atoms (for speed).
    """
    true, pred, _ = _arrays(data)
    rng = np.random.default_rng(seed)
    idx = np.arange(len(true))
    if len(idx) > max_points:
        idx = rng.choice(idx, max_points, replace=False)
    fig, (ax,) = _figure(4.6, 4.4)
    for c, (name, color) in enumerate(zip("xyz", ("tab:blue", "tab:orange", "tab:green"))):
        m = np.abs(pred[:, c] - true[:, c]).mean() if len(true) else np.nan
        ax.scatter(true[idx, c], pred[idx, c], s=4, alpha=0.4, color=color, lw=0,
                   label=f"{name}  (MAE {m:.4f} Å)")
    lim = np.nanmax(np.abs(np.concatenate([true.ravel(), pred.ravel(), [1e-3]])))
    lim *= 1.05
    ax.plot([-lim, lim], [-lim, lim], color="k", lw=0.8)
    ax.set(xlim=(-lim, lim), ylim=(-lim, lim), aspect="equal",
           xlabel="oracle displacement (Å)", ylabel="predicted displacement (Å)",
           title=f"parity, {len(true)} atoms")
    ax.legend(fontsize=8, markerscale=3, loc="upper left")
    return _save(fig, out_png)


def _binned_mean(x: np.ndarray, y: np.ndarray, edges: np.ndarray) -> np.ndarray:
    which = np.digitize(x, edges) - 1
    ok = (which >= 0) & (which < len(edges) - 1)
    sums = np.bincount(which[ok], y[ok], minlength=len(edges) - 1)
    counts = np.bincount(which[ok], minlength=len(edges) - 1)
    return np.divide(sums, counts, out=np.full(len(sums), np.nan), where=counts > 0)


def plot_error_vs_distance(data, out_png: str | Path, bin_width: float = 0.5,
                           radii: Sequence[float] = RADII) -> Path:
    """Per-atom error against the distance to the nearest defect site (periodic).

    Model errors are drawn as points; lines show the binned mean of the
    model and of the Dummy (the oracle displacement itself). Dotted lines mark
    the A_x radii.

    Parameters
    ----------
    data : Displacements, or mapping/tuple with ``true``, ``pred``, ``distance``
    bin_width : float
        Width of the distance bins in Å.
    """
    true, pred, dist = _arrays(data)
    if dist is None:
        raise ValueError("plot_error_vs_distance needs per-atom defect distances")
    err = np.abs(pred - true).mean(axis=1)
    dummy = np.abs(true).mean(axis=1)
    fig, (ax,) = _figure(6.0, 3.8)
    ax.scatter(dist, err, s=3, alpha=0.25, lw=0, color="tab:blue", label="model, per atom")
    finite = dist[np.isfinite(dist)]
    top = finite.max() if finite.size else 1.0
    edges = np.arange(0.0, top + bin_width, bin_width)
    if len(edges) > 1:
        mid = 0.5 * (edges[1:] + edges[:-1])
        ax.plot(mid, _binned_mean(dist, err, edges), color="tab:blue", lw=2,
                marker="o", ms=3, label="model, bin mean")
        ax.plot(mid, _binned_mean(dist, dummy, edges), color="tab:red", lw=2,
                marker="s", ms=3, label="Dummy (unrelaxed), bin mean")
    for r in radii:
        ax.axvline(r, color="0.5", ls=":", lw=0.8)
    ax.set(xlabel="distance to nearest defect site (Å)",
           ylabel="mean |error| over x, y, z (Å)", yscale="symlog",
           title="error vs distance to the nearest defect")
    ax.set_yscale("symlog", linthresh=1e-3)
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8)
    return _save(fig, out_png)


# ---------------------------------------------------------------- structure
def _nice(x: float) -> float:
    """The largest of 1, 2, 5 × 10^k not above ``x``."""
    if not np.isfinite(x) or x <= 0:
        return 0.1
    k = np.floor(np.log10(x))
    return float(max(m for m in (1, 2, 5) if m * 10 ** k <= x) * 10 ** k)


def _style(numbers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Jmol colours and marker areas (∝ covalent radius²) per atom."""
    from ase.data import covalent_radii
    from ase.data.colors import jmol_colors
    return jmol_colors[numbers], 45.0 * covalent_radii[numbers] ** 2


def _cell_outline(ax, cell: np.ndarray) -> None:
    a, b = cell[0, :2], cell[1, :2]
    corners = np.array([[0, 0], a, a + b, b, [0, 0]])
    ax.plot(corners[:, 0], corners[:, 1], color="0.4", lw=0.8, ls="--")


def _panel(ax, sample: Sample, positions: np.ndarray, disp: np.ndarray | None,
           scale: float, title: str) -> None:
    """One top view: atoms (higher z on top), defect marks, scaled arrows."""
    atoms, match = sample.atoms, sample.match
    colors, sizes = _style(atoms.numbers)
    order = np.argsort(positions[:, 2])
    ax.scatter(positions[order, 0], positions[order, 1], c=colors[order], s=sizes[order],
               edgecolors="k", linewidths=0.4, zorder=2)
    subs = [i for i, _, _ in match.substitutions]
    if subs:
        # Redrawn on top: a substituted atom of a lower layer would be hidden.
        ax.scatter(positions[subs, 0], positions[subs, 1], c=colors[subs], s=sizes[subs],
                   edgecolors="k", linewidths=0.4, zorder=3)
        ax.scatter(positions[subs, 0], positions[subs, 1], s=sizes[subs] * 2.5,
                   facecolors="none", edgecolors="crimson", linewidths=1.4, zorder=3)
    if match.vacancies:
        vac = np.array([p for _, p in match.vacancies])
        _, vsize = _style(np.array([_z(s) for s, _ in match.vacancies]))
        ax.scatter(vac[:, 0], vac[:, 1], s=vsize, facecolors="none", edgecolors="k",
                   linewidths=1.2, linestyles=(0, (2, 1.5)), zorder=3)
    if disp is not None:
        x0 = atoms.get_positions()
        ax.quiver(x0[:, 0], x0[:, 1], disp[:, 0] * scale, disp[:, 1] * scale,
                  angles="xy", scale_units="xy", scale=1.0, color="k", width=0.0035,
                  zorder=4)
    _cell_outline(ax, atoms.cell.array)
    ax.set_title(title, fontsize=10)
    ax.set_aspect("equal")
    ax.set_axis_off()


def _common_limits(axes, positions: np.ndarray, cell: np.ndarray, pad: float = 1.5) -> None:
    """Same view box in every panel, so the three structures line up."""
    corners = np.array([[0, 0], cell[0, :2], cell[0, :2] + cell[1, :2], cell[1, :2]])
    pts = np.vstack([corners, positions[:, :2]])
    lo, hi = pts.min(axis=0) - pad, pts.max(axis=0) + pad
    for ax in axes:
        ax.set_xlim(lo[0], hi[0])
        ax.set_ylim(lo[1], hi[1])


def _panel_height(cell: np.ndarray, width: float) -> float:
    """Inches of height that fit the in-plane cell drawn ``width`` inches wide."""
    corners = np.array([[0, 0], cell[0, :2], cell[0, :2] + cell[1, :2], cell[1, :2]])
    span = np.ptp(corners, axis=0)
    return float(np.clip(width * span[1] / max(span[0], 1e-9), 2.0, 8.0))


def _z(symbol: str) -> int:
    from ase.data import atomic_numbers
    return atomic_numbers[symbol]


def _legend_handles(sample: Sample, key_length: float, scale: float) -> list:
    colors, _ = _style(np.unique(sample.atoms.numbers))
    from ase.data import chemical_symbols
    handles = [Line2D([], [], ls="", marker="o", ms=8, mfc=c, mec="k",
                      label=chemical_symbols[z])
               for z, c in zip(np.unique(sample.atoms.numbers), colors)]
    if sample.match.substitutions:
        handles.append(Line2D([], [], ls="", marker="o", ms=11, mfc="none",
                              mec="crimson", mew=1.6, label="substitution"))
    if sample.match.vacancies:
        handles.append(Line2D([], [], ls="", marker="o", ms=9, mfc="none", mec="k",
                              label="vacancy (open circle)"))
    handles.append(Line2D([], [], color="k", lw=1.5, marker=">", markevery=[1],
                          label=f"displacement, drawn ×{scale:g} "
                                f"({key_length:g} Å → {key_length * scale:g} Å)"))
    return handles


def plot_structure(sample: Sample, predicted_positions: np.ndarray, out_png: str | Path,
                   scale: float | None = None, title: str | None = None) -> Path:
    """Top view of one structure, like Fig. 4 of the paper.

    Three panels: unrelaxed, oracle-relaxed and predicted. Atoms are coloured
    by element (Jmol colours), substituted atoms ringed in red, vacancies drawn
    as open dashed circles at their ideal sites. Arrows show the in-plane
    displacement from the unrelaxed positions, magnified by ``scale`` (the same
    in both panels; stated in the legend).

    Parameters
    ----------
    sample : Sample
        The structure, its relaxed positions and host.
    predicted_positions : numpy.ndarray
        Predicted positions of the real atoms (extra placeholder rows ignored).
    scale : float, optional
        Arrow magnification; default: the largest oracle displacement is drawn
        about 2 Å long, rounded to 1, 2 or 5 × 10^k.
    """
    atoms = sample.atoms
    n = len(atoms)
    x0 = atoms.get_positions()
    cell, pbc = atoms.cell.array, atoms.pbc
    true_d = minimum_image(sample.relaxed[:n] - x0, cell, pbc)
    pred_d = minimum_image(np.asarray(predicted_positions, float)[:n] - x0, cell, pbc)
    longest = float(np.linalg.norm(true_d[:, :2], axis=1).max()) if n else 0.0
    if scale is None:
        scale = _nice(2.0 / longest) if longest > 0 else 1.0
    key = _nice(longest) if longest > 0 else 0.1
    m = structure_metrics(x0 + pred_d, x0 + true_d, atoms, sample.match.defect_positions)
    fig, axes = _figure(15, _panel_height(atoms.cell.array, 15 / 3) + 1.0, ncols=3)
    _panel(axes[0], sample, x0, None, scale, "unrelaxed")
    _panel(axes[1], sample, x0 + true_d, true_d, scale, "oracle-relaxed")
    _panel(axes[2], sample, x0 + pred_d, pred_d, scale,
           f"predicted (MAE {m['mae']:.4f} Å, A3 {m['a3']:.4f} Å)")
    _common_limits(axes, np.vstack([x0, x0 + pred_d, x0 + scale * true_d]), atoms.cell.array)
    fig.legend(handles=_legend_handles(sample, key, scale), loc="outside lower center",
               ncol=8, fontsize=9, frameon=False)
    label = title or f"{sample.info.get('id', '')}  {sample.group}".strip()
    fig.suptitle(label, fontsize=11)
    return _save(fig, out_png)


# ---------------------------------------------------------------- all at once
def plot_predictions(samples: Sequence[Sample], predictions: Sequence, out_dir: str | Path,
                     n_structures: int = 1) -> list[Path]:
    """Parity, error-vs-distance and the first ``n_structures`` structure views."""
    out = Path(out_dir)
    data = displacement_arrays(samples, predictions)
    paths = [plot_parity(data, out / "parity.png"),
             plot_error_vs_distance(data, out / "error_vs_distance.png")]
    for k, (s, p) in enumerate(zip(samples[:n_structures], predictions)):
        name = str(s.info.get("id", k)).replace("/", "_")
        pos = np.asarray(getattr(p, "positions", p))
        paths.append(plot_structure(s, pos, out / f"structure_{name}.png"))
    return paths


def plot_all(predictor, samples, out_dir: str | Path, metrics_csv: str | Path | None = None,
             n_structures: int = 1, batch_size: int = 8, progress: bool = True) -> list[Path]:
    """Predict once, then write every figure into ``out_dir``.

    Parameters
    ----------
    predictor : Predictor or object with ``predict(atoms_list, hosts, batch_size)``
    samples : iterable of Sample
    metrics_csv : path, optional
        A training log; adds ``learning_curves.png``.
    n_structures : int
        Number of structure views (the first samples).
    """
    kept, preds = predict_samples(predictor, samples, batch_size, progress)
    paths = plot_predictions(kept, preds, out_dir, n_structures)
    if metrics_csv is not None:
        paths.insert(0, plot_learning_curves(metrics_csv, Path(out_dir) / "learning_curves.png"))
    return paths
