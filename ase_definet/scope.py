"""Host scope: which pristine hosts a model was trained on, and whether a host is one.

A model card's ``scope`` holds one record per distinct training host
(:func:`host_scope`):

* species: the reduced formula and the element set;
* dimensionality: how many cell axes are periodic *and* filled; an axis that
  is not periodic, or that leaves a gap of more than :data:`VACUUM_GAP` Å of
  empty space (a sheet in a periodic box, as in 2DMD), is open. 3 = bulk,
  2 = sheet, 1 = wire, 0 = molecule;
* lattice: the reduced primitive cell of the periodic axes (spglib finds the
  primitive cell, so a host and its supercells share one record; the open axes
  are left out, so the vacuum size does not matter);
* a structural fingerprint per inequivalent site: coordination number and
  first-shell species, the sorted distances to the first :data:`N_NEIGHBOURS`
  neighbours divided by the host's nearest-neighbour distance (so isotropic
  strain leaves it unchanged) and the sorted bond-angle cosines of the first
  shell (which separate e.g. octahedral from trigonal-prismatic sites).

:func:`check_scope` compares the host of a structure with the card's records:
same formula, same dimensionality, same site fingerprints and a lattice strain
(largest principal stretch between the reduced cells) within the card's
tolerance. Cards without a scope (older checkpoints) skip the check.
"""
from __future__ import annotations

import hashlib
import warnings

import numpy as np
from ase import Atoms
from matscipy.neighbours import neighbour_list

from .errors import UnsupportedStructureError
from .lattice import (
    VACUUM_GAP,
    complete_basis,
    lattice_strain,
    open_axes,
    open_cell,
    primitive_cell,
    reduced_lattice,
)

SCOPE_VERSION = 1
#: Largest principal lattice strain between a host and a covered host.
STRAIN_TOLERANCE = 0.02
#: Neighbours per site in the distance fingerprint.
N_NEIGHBOURS = 24
#: First shell: neighbours within this factor of the site's shortest bond.
SHELL_FACTOR = 1.2
#: Largest relative difference of two normalised neighbour distances of one
#: prototype: above twice the 3 % strain a strained copy may carry, so a
#: strained host reads as strained, not as another prototype.
DISTANCE_TOLERANCE = 0.07
#: Largest difference of two first-shell bond-angle cosines of one prototype.
ANGLE_TOLERANCE = 0.1
_KINDS = {3: "bulk", 2: "sheet", 1: "wire", 0: "molecule"}


# ------------------------------------------------------------------ fingerprint
def _sites(prim: Atoms, dims: int) -> tuple[float, list[dict]]:
    """Nearest-neighbour distance and the inequivalent site fingerprints of a cell.

    ``prim`` is periodic along all three axes; its open axes are long enough
    that no site sees its own image (a molecule: ``dims == 0``).
    """
    n = len(prim)
    k = N_NEIGHBOURS if dims else min(N_NEIGHBOURS, n - 1)
    cutoff = 3.0
    # grow the sphere until every site has k neighbours; below the open axes'
    # padding (25 Å), so a sheet never sees its own periodic image
    while True:
        i, j, d, vec = neighbour_list("ijdD", prim, cutoff)
        if np.bincount(i, minlength=n).min() >= k or cutoff > 16.0:
            break
        cutoff *= 1.5
    if not len(d):
        return 0.0, [{"element": s, "cn": 0, "shell": {}, "distances": [], "cosines": []}
                     for s in sorted(set(prim.get_chemical_symbols()))]
    d_nn = float(d.min())
    kinds: list[dict] = []
    symbols = prim.get_chemical_symbols()
    for a in range(n):
        sel = np.flatnonzero(i == a)
        order = sel[np.argsort(d[sel], kind="stable")]
        dist = d[order][:k]
        first = order[d[order] <= SHELL_FACTOR * d[order][0]]
        shell: dict[str, int] = {}
        for b in j[first]:
            shell[symbols[b]] = shell.get(symbols[b], 0) + 1
        v = vec[first] / d[first][:, None]
        cos = np.sort((v @ v.T)[np.triu_indices(len(first), 1)])
        site = {"element": symbols[a], "cn": len(first),
                "shell": dict(sorted(shell.items())),
                "distances": [float(x) for x in dist / d_nn],
                "cosines": [float(x) for x in cos]}
        if not any(_site_match(site, s, True, tol=1e-3) for s in kinds):
            kinds.append(site)
    return d_nn, kinds


def _site_match(a: dict, b: dict, species: bool, tol: float | None = None) -> bool:
    """Whether two site fingerprints describe the same environment.

    ``species=False`` compares geometry only (coordination, distances, angles):
    the prototype with its elements renamed.
    """
    if a["cn"] != b["cn"]:
        return False
    if species and (a["element"] != b["element"] or a["shell"] != b["shell"]):
        return False
    if not species and sorted(a["shell"].values()) != sorted(b["shell"].values()):
        return False
    da, db = np.asarray(a["distances"]), np.asarray(b["distances"])
    m = min(len(da), len(db))
    dtol = DISTANCE_TOLERANCE if tol is None else tol
    if m and (np.abs(da[:m] - db[:m]) / db[:m]).max() > dtol:
        return False
    ca, cb = np.asarray(a["cosines"]), np.asarray(b["cosines"])
    return not (len(ca) and np.abs(ca - cb).max() > (ANGLE_TOLERANCE if tol is None else tol))


def _round(x, digits: int = 4):
    if isinstance(x, float):
        return round(x, digits) + 0.0               # no -0.0
    if isinstance(x, dict):
        return {k: _round(v, digits) for k, v in x.items()}
    if isinstance(x, list):
        return [_round(v, digits) for v in x]
    return x


def host_scope(host: Atoms, pbc=None) -> dict:
    """The JSON-able scope record of one pristine host (see the module text).

    Keys: ``formula``, ``elements``, ``dimensionality`` and ``kind`` (bulk,
    sheet, wire, molecule), ``pbc`` as given, ``periodic_axes`` (periodic and
    filled) and ``vacuum_axes`` (open: not periodic, or more than
    :data:`~ase_definet.lattice.VACUUM_GAP` Å empty), ``lattice`` (lengths in Å
    and angles in ° of the reduced primitive cell of the periodic axes),
    ``atoms_per_cell``, ``nn_distance`` (Å) and ``sites`` (one fingerprint per
    inequivalent site: ``element``, ``cn``, ``shell`` (first-shell species
    counts), ``distances`` (/ ``nn_distance``), ``cosines``).

    ``pbc`` overrides the host's own periodicity (prediction uses
    ``atoms.pbc | host.pbc``). The record is the same for a unit cell, any
    supercell of it, and rotated or translated copies.
    """
    pbc = np.asarray(host.pbc if pbc is None else pbc, bool)
    vac = open_axes(host, pbc)
    periodic = [i for i in range(3) if i not in vac]
    cell = open_cell(host, periodic)
    prim = primitive_cell(host, cell)
    dims = len(periodic)
    open_dirs = complete_basis(cell, periodic) if dims < 3 else np.zeros((0, 3))
    d_nn, sites = _sites(prim, dims)
    formula, _ = host.symbols.formula.reduce()
    return _round({
        "formula": str(formula), "elements": sorted(set(host.get_chemical_symbols())),
        "dimensionality": dims, "kind": _KINDS[dims],
        "pbc": [bool(p) for p in pbc], "periodic_axes": periodic, "vacuum_axes": vac,
        "lattice": reduced_lattice(prim, dims, open_dirs),
        "atoms_per_cell": len(prim), "nn_distance": d_nn, "sites": sites})


_CACHE: dict[bytes, dict] = {}
#: (host content, id of a card's scope) -> (that scope, nearest host, differences)
_VERDICTS: dict[tuple[bytes, int], tuple] = {}


def _content_key(host: Atoms, pbc) -> bytes:
    h = hashlib.sha1()
    for arr in (host.numbers, np.round(host.get_positions(), 6), np.round(host.cell.array, 6),
                np.asarray(pbc, bool)):
        h.update(np.ascontiguousarray(arr).tobytes())
    return h.digest()


def cached_host_scope(host: Atoms, pbc=None) -> dict:
    """:func:`host_scope`, computed once per host content (prediction runs per structure)."""
    pbc = host.pbc if pbc is None else pbc
    key = _content_key(host, pbc)
    if key not in _CACHE:
        if len(_CACHE) > 256:
            _CACHE.clear()
        _CACHE[key] = host_scope(host, pbc)
    return _CACHE[key]


# ------------------------------------------------------------------ comparison
def _prototype_match(a: dict, b: dict, species: bool) -> bool:
    sa, sb = a["sites"], b["sites"]
    return (all(any(_site_match(x, y, species) for y in sb) for x in sa)
            and all(any(_site_match(y, x, species) for x in sa) for y in sb))


def _anonymous(formula: str) -> list[int]:
    from ase.formula import Formula
    return sorted(Formula(formula).count().values())


def compare_hosts(record: dict, covered: dict, tolerance: float = STRAIN_TOLERANCE
                  ) -> tuple[list[str], float]:
    """What differs between a host record and a covered one, and the lattice strain.

    Returns an empty list when ``record`` is within the scope of ``covered``.
    """
    diffs = []
    if record["formula"] != covered["formula"]:
        diffs.append(f"species {record['formula']} vs {covered['formula']}")
    if record["dimensionality"] != covered["dimensionality"]:
        diffs.append(f"{record['kind']} vs {covered['kind']} ({record['dimensionality']} "
                     f"vs {covered['dimensionality']} periodic axes without vacuum)")
    elif (record["formula"] == covered["formula"]
          and record["atoms_per_cell"] != covered["atoms_per_cell"]):
        diffs.append(f"other prototype ({record['atoms_per_cell']} vs "
                     f"{covered['atoms_per_cell']} atoms per primitive cell; or a host too "
                     "distorted to reduce to its primitive cell: pass the pristine host)")
    else:
        same_formula = record["formula"] == covered["formula"]
        same_shape = _anonymous(record["formula"]) == _anonymous(covered["formula"])
        if not (same_shape and _prototype_match(record, covered, species=same_formula)):
            a, b = _coordination(record), _coordination(covered)
            how = (f"coordination {a} vs {b}" if a != b
                   else f"coordination {a} alike, neighbour shells or bond angles "
                        "differ")
            diffs.append(f"other prototype ({how})")
    strain = lattice_strain(record["lattice"], covered["lattice"])
    if np.isfinite(strain) and strain > tolerance and not diffs:
        diffs.append(f"lattice strain {100 * strain:.1f} % beyond the "
                     f"{100 * tolerance:g} % tolerance")
    return diffs, strain


def _coordination(record: dict) -> str:
    return ", ".join(sorted({f"{s['element']} {s['cn']}" for s in record["sites"]}))


def describe(record: dict) -> str:
    """A host record in a few words: ``MoS2 sheet (a=3.190, b=3.190 Å, 60.0°)``."""
    lat = record["lattice"]
    names = "abc"
    parts = [f"{names[k]}={x:.3f}" for k, x in enumerate(lat["lengths"])]
    text = ", ".join(parts) + (" Å" if parts else "")
    if lat["angles"]:
        text += ", " + ", ".join(f"{x:.1f}°" for x in lat["angles"])
    return f"{record['formula']} {record['kind']}" + (f" ({text})" if text else "")


def nearest_host(record: dict, covered: list[dict], tolerance: float = STRAIN_TOLERANCE
                 ) -> tuple[dict, list[str], float]:
    """The covered record closest to ``record``: fewest differences, most shared
    elements, smallest strain."""
    def rank(c):
        diffs, strain = compare_hosts(record, c, tolerance)
        shared = len(set(record["elements"]) & set(c["elements"])) / \
            len(set(record["elements"]) | set(c["elements"]))
        return len(diffs), -shared, strain, diffs
    scored = [(rank(c), c) for c in covered]
    (_, _, strain, diffs), best = min(scored, key=lambda t: t[0][:3])
    return best, diffs, strain


def check_scope(match_or_host, atoms: Atoms, card: dict, strict: bool = True) -> None:
    """Refuse (or, with ``strict=False``, warn about) a host outside the card's scope.

    Parameters
    ----------
    match_or_host : HostMatch, ase.Atoms or str
        The structure's match, its host, or a host name or file.
    atoms : ase.Atoms
        The defect structure (its periodicity counts, as in the graph).
    card : dict
        A model card; without ``scope`` nothing is checked.

    Raises
    ------
    UnsupportedStructureError
        If ``strict`` and the host matches none of the card's hosts; the
        message names the nearest covered host and what differs.
    """
    scope = (card or {}).get("scope") or {}
    covered = scope.get("hosts") or []
    if not covered:
        return
    host = getattr(match_or_host, "host", match_or_host)
    if not isinstance(host, Atoms):
        from .match import resolve_host
        host = resolve_host(host, atoms)
    pbc = np.asarray(host.pbc) | np.asarray(atoms.pbc)
    record = cached_host_scope(host, pbc)
    # the verdict too is kept per host and card: comparing costs ~2 ms, a forward ~50
    key = (_content_key(host, pbc), id(scope))
    hit = _VERDICTS.get(key)
    if hit is None or hit[0] is not scope:
        if len(_VERDICTS) > 256:
            _VERDICTS.clear()
        tol = float(scope.get("strain_tolerance", STRAIN_TOLERANCE))
        hit = _VERDICTS[key] = (scope, *nearest_host(record, covered, tol)[:2])
    _, best, diffs = hit
    if not diffs:
        return
    msg = (f"the host {describe(record)} is outside the model's scope "
           f"({len(covered)} covered hosts: "
           f"{', '.join(sorted(c['formula'] + ' ' + c['kind'] for c in covered))}); "
           f"nearest covered host {describe(best)} differs by: {'; '.join(diffs)}")
    if strict:
        raise UnsupportedStructureError(
            msg + ". Pass strict=False (CLI: --no-strict) to predict anyway.")
    warnings.warn(msg + "; predicting anyway (strict=False)", stacklevel=3)


# ------------------------------------------------------------------ a card's scope
def scope_lines(card: dict) -> list[str]:
    """The card's hosts as a markdown list item (model card text)."""
    scope = card.get("scope") or {}
    if not scope.get("hosts"):
        return ["- hosts: not recorded in this card (any host is accepted)"]
    tol = 100 * scope.get("strain_tolerance", STRAIN_TOLERANCE)
    return [f"- hosts, up to an integer supercell and {tol:g} % lattice strain (an axis "
            f"with more than {scope.get('vacuum_gap', VACUUM_GAP):g} Å of vacuum makes a "
            f"sheet, whatever its length): "
            + "; ".join(describe(h) for h in scope["hosts"])]


def scope_of_hosts(hosts, pbcs=None, names=None,
                   tolerance: float = STRAIN_TOLERANCE) -> dict:
    """The card's ``scope`` block from pristine hosts; one record per distinct host.

    Hosts that are the same up to a supercell (8×8 and 12×12 MoS2) share one
    record, whose ``sources`` list the names given for them.
    """
    records: list[dict] = []
    hosts = list(hosts)
    pbcs = list(pbcs) if pbcs is not None else [h.pbc for h in hosts]
    names = list(names) if names is not None else [None] * len(hosts)
    for host, pbc, name in zip(hosts, pbcs, names):
        rec = cached_host_scope(host, pbc)
        for known in records:
            diffs, strain = compare_hosts(rec, known, tolerance)
            if not diffs and strain < 1e-3:
                break
        else:
            known = dict(rec, sources=[])
            records.append(known)
        if name and name not in known["sources"]:
            known["sources"].append(name)
    records.sort(key=lambda r: (r["formula"].lower(), r["dimensionality"]))
    return {"version": SCOPE_VERSION, "strain_tolerance": tolerance,
            "vacuum_gap": VACUUM_GAP, "hosts": records}


def scope_of_samples(samples) -> dict:
    """:func:`scope_of_hosts` of the distinct hosts of training samples.

    Samples share host objects (2,419 samples, 7 hosts in the shipped data):
    they are deduplicated by identity before any fingerprinting.
    """
    seen: dict[int, tuple] = {}
    for s in samples:
        if id(s.host) not in seen:
            pbc = np.asarray(s.host.pbc) | np.asarray(s.atoms.pbc)
            name = s.host.info.get("host_key") or s.info.get("host_key") or \
                s.info.get("material")
            seen[id(s.host)] = (s.host, pbc, name)
    hosts, pbcs, names = zip(*seen.values()) if seen else ((), (), ())
    return scope_of_hosts(hosts, pbcs, names)
