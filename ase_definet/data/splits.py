"""Train/val/test splits: stratified, seeded, leak-free.

Samples are split per stratum (material, density, supercell, concentration:
:func:`~.twins.stratum`), so each keeps the same proportions (2DMD: 8:1:1).
Samples that hold the same configuration — the same id, the same species at
the same positions (to ``tol`` Å, modulo lattice vectors on periodic axes, in
any atom order), an image under a symmetry operation of the host, or the same
site pattern in another material (:mod:`.twins`) — are kept together in one
split, so no configuration is trained on and tested on.

Split files are JSON::

    {"seed": 0, "fractions": [0.8, 0.1, 0.1],
     "train": [ids...], "val": [ids...], "test": [ids...]}
"""
from __future__ import annotations

import dataclasses
import json
import os
import warnings
from pathlib import Path
from collections.abc import Callable, Mapping, Sequence

import numpy as np
from scipy.spatial import cKDTree

from ..errors import DataFormatError
from .assign import SPLITS, assign
from .sample import Sample, minimum_image
from .twins import classes, relations, site_pattern, stratum

#: Default tolerance (Å) under which two configurations are the same.
SAME_TOLERANCE = 1e-6

# Reciprocal-lattice vectors (fractional) of the configuration fingerprint.
_G = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [1, -1, 0],
               [2, 1, 0], [1, 2, 0], [1, 0, 1], [0, 1, 1]], dtype=float)


class Split(dict):
    """``{"train": [...], "val": [...], "test": [...]}`` plus how it was made.

    Attributes
    ----------
    seed : int or None
    fractions : tuple of float or None
    """

    def __init__(self, parts: Mapping[str, list], seed: int | None = None,
                 fractions: Sequence[float] | None = None):
        super().__init__({name: list(parts.get(name, [])) for name in SPLITS})
        self.seed = seed
        self.fractions = None if fractions is None else tuple(float(f) for f in fractions)


# ------------------------------------------------------------ duplicates
def _fingerprint(atoms) -> np.ndarray:
    """A continuous summary equal for identical configurations.

    Weighted structure factors at a few reciprocal vectors are invariant to
    atom order and to lattice translations of single atoms, and move by at
    most ~2π|G|δ/L when atoms move by δ, so near-equal configurations land
    near each other and a KD-tree finds them without rounding boundaries.
    """
    z = atoms.numbers.astype(float)
    w = z / z.sum()
    frac = atoms.cell.scaled_positions(atoms.get_positions()) \
        if atoms.cell.rank == 3 else atoms.get_positions()
    phase = np.exp(2j * np.pi * frac @ _G.T)                  # (n_atoms, n_G)
    s = w @ phase
    return np.concatenate([[len(atoms) * 1e-2, z.mean() * 1e-2],
                           atoms.cell.array.ravel() * 1e-1, s.real, s.imag])


def _fingerprint_radius(samples: Sequence[Sample], tol: float) -> float:
    """KD-tree radius that cannot miss two configurations within ``tol`` Å."""
    cells = np.array([s.atoms.cell.array for s in samples if s.atoms.cell.rank == 3])
    # |Δ fractional| <= |Δr| * (column norm of the inverse cell).
    lmin = 1.0 / np.linalg.norm(np.linalg.pinv(cells), axis=1).max() if len(cells) else 1.0
    per_component = 2 * np.pi * np.abs(_G).sum(axis=1).max() * tol / lmin
    return 2.0 * (np.sqrt(2 * len(_G)) * per_component + 3 * tol) + 1e-12


def same_configuration(a, b, tol: float = SAME_TOLERANCE) -> bool:
    """Whether two structures hold the same species at the same places.

    Positions are compared modulo lattice vectors on periodic axes and in any
    atom order; the cells must agree to ``tol`` Å.
    """
    if len(a) != len(b) or not np.array_equal(np.sort(a.numbers), np.sort(b.numbers)):
        return False
    if not np.allclose(a.cell.array, b.cell.array, rtol=0.0, atol=tol):
        return False
    pbc = np.asarray(a.pbc) | np.asarray(b.pbc)
    if np.array_equal(a.numbers, b.numbers):
        # Fast path: same atom order (copies, re-read files).
        delta = minimum_image(a.positions - b.positions, a.cell.array, pbc)
        if np.linalg.norm(delta, axis=1).max() <= tol:
            return True
    for z in np.unique(a.numbers):
        pa, pb = a.positions[a.numbers == z], b.positions[b.numbers == z]
        delta = (pa[:, None, :] - pb[None, :, :]).reshape(-1, 3)
        dist = np.linalg.norm(minimum_image(delta, a.cell.array, pbc), axis=1)
        dist = dist.reshape(len(pa), len(pb))
        nearest = dist.argmin(axis=1)
        if dist[np.arange(len(pa)), nearest].max() > tol:
            return False
        if len(np.unique(nearest)) != len(pa):
            return False
    return True


def duplicate_clusters(samples: Sequence[Sample], tol: float = SAME_TOLERANCE
                       ) -> list[list[int]]:
    """Indices of samples grouped by configuration (same id or same structure).

    Returns
    -------
    list of list of int
        Every index once; singletons included; ordered by first index.
    """
    parent = list(range(len(samples)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(i: int, j: int) -> None:
        ri, rj = find(i), find(j)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)

    first: dict[str, int] = {}
    for i, s in enumerate(samples):
        sid = s.info.get("id")
        if sid is not None:
            union(first.setdefault(str(sid), i), i)
    if len(samples) > 1:
        prints = [_fingerprint(s.atoms) for s in samples]
        tree = cKDTree(np.vstack(prints))
        for i, j in sorted(tree.query_pairs(_fingerprint_radius(samples, tol))):
            if find(i) != find(j) and same_configuration(samples[i].atoms,
                                                         samples[j].atoms, tol):
                union(i, j)
    clusters: dict[int, list[int]] = {}
    for i in range(len(samples)):
        clusters.setdefault(find(i), []).append(i)
    return sorted(clusters.values(), key=lambda c: c[0])


# ------------------------------------------------------------ splitting
def _check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    f = tuple(float(x) for x in fractions)
    if len(f) != 3 or min(f) < 0 or not np.isclose(sum(f), 1.0):
        raise ValueError(f"fractions must be three non-negative numbers summing to 1, "
                         f"got {fractions!r}")
    return f


def twin_classes(samples: Sequence[Sample], tol: float = SAME_TOLERANCE
                 ) -> tuple[list[list[int]], list[str], dict[str, list[list[int]]]]:
    """Classes (samples that must share a split), strata and relation groups.

    Returns
    -------
    classes : list of list of int
        Every index once (:func:`~.twins.classes`).
    strata : list of str
        :func:`~.twins.stratum` of every sample.
    groups : dict
        The groups of every relation (:func:`~.twins.relations`).
    """
    patterns = [site_pattern(s) for s in samples]
    groups = relations(samples, duplicate_clusters(samples, tol), patterns)
    return (classes(len(samples), groups),
            [stratum(s, p) for s, p in zip(samples, patterns)], groups)


def split_samples(samples: Sequence[Sample], fractions: Sequence[float] = (0.8, 0.1, 0.1),
                  seed: int = 0, respect_existing: bool = True,
                  tol: float = SAME_TOLERANCE) -> Split:
    """Split samples into train/val/test, stratified by material, density and concentration.

    Twins never sit in two splits: exact duplicates, configurations related by
    a symmetry operation of the host, and equal site patterns across materials
    (:mod:`.twins`) form one class, and classes are assigned whole
    (:func:`~.assign.assign`). Strata are :func:`~.twins.stratum`
    (``MoS2/high/8x8/c050``, ``MoS2/low/8x8/n2``); each split of each stratum
    is within one structure of its fraction where the classes allow it.

    Parameters
    ----------
    samples : sequence of Sample
    fractions : (float, float, float)
        Train, val, test fractions (sum 1).
    seed : int
        Seeds each class's random draw (with the class's ids), so adding a
        material leaves the others' splits alone.
    respect_existing : bool
        Keep ``info["split"]`` where a sample carries one (2DMD csv files, or
        a data set grown since its last split) as far as the twins and the
        strata allow: as few samples as possible move, with a warning.
    tol : float
        Å within which two structures count as the same configuration.

    Returns
    -------
    Split
        Dict of lists of samples (input order within each list), with ``seed``
        and ``fractions`` attributes. Every stratum of three or more samples
        gets a val and a test sample where its classes allow.
    """
    fractions = _check_fractions(fractions)
    samples = list(samples)
    cls, strata, _ = twin_classes(samples, tol)
    existing = [s.info.get("split") if respect_existing and s.info.get("split") in SPLITS
                else None for s in samples]
    conflicts = sum(len({existing[i] for i in c} - {None}) > 1 for c in cls)
    if conflicts:
        warnings.warn(f"{conflicts} configurations carry different existing splits; "
                      "each class was placed as a whole", stacklevel=2)
    # Sort by ids so the split depends on the set of samples, not their order.
    keys = ["\n".join(sorted(str(samples[i].info.get("id", f"#{i:09d}")) for i in c))
            for c in cls]
    where = [""] * len(samples)
    for c, name in zip(cls, assign(cls, strata, existing, fractions, seed, keys)):
        for i in c:
            where[i] = name
    moved = sum(e is not None and e != w for e, w in zip(existing, where))
    if moved > conflicts:
        warnings.warn(f"{moved} samples left their existing split, to keep twins "
                      "together and each stratum within one structure of its fractions",
                      stacklevel=2)
    return Split({k: [s for s, w in zip(samples, where) if w == k] for k in SPLITS},
                 seed=seed, fractions=fractions)


# ------------------------------------------------------------ files
def _ids(items: Sequence) -> list[str]:
    out: dict[str, None] = {}          # ordered set: a duplicated id is listed once
    for item in items:
        if isinstance(item, Sample):
            sid = item.info.get("id")
            if sid is None:
                raise DataFormatError("a split file needs every sample to have info['id']")
            item = sid
        out[str(item)] = None
    return list(out)


def write_split(split: Mapping[str, Sequence], path: str | os.PathLike,
                seed: int | None = None, fractions: Sequence[float] | None = None) -> Path:
    """Write a split (of samples or ids) as JSON; returns the path.

    ``seed`` and ``fractions`` default to the attributes of a :class:`Split`.
    """
    ids = {name: _ids(split.get(name, [])) for name in SPLITS}
    _check_disjoint(ids, str(path))
    seed = getattr(split, "seed", None) if seed is None else seed
    fractions = getattr(split, "fractions", None) if fractions is None else fractions
    doc = {"seed": seed, "fractions": None if fractions is None else list(fractions),
           **ids}
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def _check_disjoint(ids: Mapping[str, Sequence[str]], where: str) -> None:
    seen: dict[str, str] = {}
    for name in SPLITS:
        for i in ids.get(name, []):
            if i in seen and seen[i] != name:
                raise DataFormatError(f"{where}: id {i!r} is in both {seen[i]} and {name}")
            seen[i] = name


def read_split(path: str | os.PathLike) -> dict:
    """Read a split JSON file: ``{"seed", "fractions", "train", "val", "test"}``.

    Raises
    ------
    DataFormatError
        Unreadable JSON, missing lists, or an id in two splits.
    """
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise DataFormatError(f"{path}: unreadable split file ({err})") from err
    if not isinstance(doc, dict) or not all(isinstance(doc.get(n), list) for n in SPLITS):
        raise DataFormatError(f"{path}: a split file needs lists train, val and test")
    out = {"seed": doc.get("seed"), "fractions": doc.get("fractions")}
    out.update({n: [str(i) for i in doc[n]] for n in SPLITS})
    _check_disjoint(out, str(path))
    return out


def apply_split(samples: Sequence[Sample], split_json, unassigned: str = "error",
                tol: float = SAME_TOLERANCE) -> Split:
    """Assign samples to the splits a split file (or its dict) names by id.

    Parameters
    ----------
    samples : sequence of Sample
    split_json : path or mapping
        A file from :func:`write_split` or the dict :func:`read_split` returns.
    unassigned : {"error", "drop", "split", "train", "val", "test"}
        What to do with samples whose id the split does not list. ``"split"``
        draws them with :func:`split_samples` (the file's seed and fractions),
        the listed samples counting towards each stratum's quotas: how a data
        set that grew keeps its test set when a model is trained further.
    tol : float
        A configuration found under different ids in different splits is moved
        to its latest split (test over val over train), with a warning.

    Raises
    ------
    DataFormatError
        Samples the split does not list, when ``unassigned="error"``.
    """
    doc = read_split(split_json) if isinstance(split_json, (str, os.PathLike)) \
        else dict(split_json)
    if unassigned not in ("error", "drop", "split", *SPLITS):
        raise ValueError(f"unassigned must be 'error', 'drop', 'split' or a split name, "
                         f"got {unassigned!r}")
    where = {str(i): name for name in SPLITS for i in doc.get(name, [])}
    samples = list(samples)
    if unassigned == "split":
        # Work on copies: the caller's samples keep their own info["split"].
        labelled = [dataclasses.replace(s, info=dict(s.info)) for s in samples]
        for s in labelled:
            s.info.pop("split", None)
            if str(s.info.get("id")) in where:
                s.info["split"] = where[str(s.info.get("id"))]
        fractions = doc.get("fractions") or (0.8, 0.1, 0.1)
        seed = doc.get("seed") if doc.get("seed") is not None else 0
        parts = split_samples(labelled, fractions, seed=seed, tol=tol)
        originals = {id(c): o for c, o in zip(labelled, samples)}
        return Split({k: [originals[id(c)] for c in v] for k, v in parts.items()},
                     seed=seed, fractions=fractions)
    missing = [s for s in samples if str(s.info.get("id")) not in where]
    if missing and unassigned == "error":
        ids = [str(s.info.get("id")) for s in missing[:5]]
        raise DataFormatError(f"{len(missing)} samples are in no split, e.g. {ids}; "
                              "pass unassigned='drop' or a split name")
    labelled = []
    for s in samples:
        name = where.get(str(s.info.get("id")), unassigned)
        if name in SPLITS:
            labelled.append((s, name))
    clusters = duplicate_clusters([s for s, _ in labelled], tol)
    parts: dict[str, list[int]] = {n: [] for n in SPLITS}
    moved = 0
    for members in clusters:
        names = {labelled[i][1] for i in members}
        target = max(names, key=SPLITS.index)
        moved += len(names) > 1
        parts[target] += members
    if moved:
        warnings.warn(f"{moved} configurations appear under ids in different splits; "
                      "each was moved to its latest split (test over val over train)",
                      stacklevel=2)
    return Split({k: [labelled[i][0] for i in sorted(v)] for k, v in parts.items()},
                 seed=doc.get("seed"), fractions=doc.get("fractions"))


def first_per_group(items: Sequence, per_group: int,
                    key: Callable[[object], str] | None = None) -> list:
    """The first ``per_group`` items of each ``material/density`` group, in order.

    A sample stratified like the data set, fixed by the store's order: what a
    study too costly for every structure (the residual steps) runs on, so that
    no group weighs more than it does in the split.

    Parameters
    ----------
    items : sequence
        Samples, or anything ``key`` maps to a group.
    per_group : int
        How many of each group to keep (at least 1).
    key : callable, optional
        Group of an item; default :attr:`Sample.group`.
    """
    if per_group < 1:
        raise ValueError(f"per_group must be at least 1, got {per_group}")
    key = key or (lambda s: s.group)
    taken: dict[str, int] = {}
    out = []
    for item in items:
        g = key(item)
        if taken.get(g, 0) < per_group:
            taken[g] = taken.get(g, 0) + 1
            out.append(item)
    return out
