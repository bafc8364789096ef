"""Which samples must share a split, and the strata a split balances.

Four relations tie samples together (:func:`relations`):

- ``duplicate``: the same id, or the same species at the same places
  (:func:`~ase_definet.data.splits.duplicate_clusters`);
- ``symmetry``: the same defects on sites that one space-group operation of
  the host supercell maps onto each other (a rotated, mirrored or translated
  copy);
- ``pattern``: the same defect kinds (substitution, vacancy) on the same
  canonical site pattern of hosts with as many sites and operations, in any
  material (MoS2 and WSe2 8×8 share one index space);
- ``id``: generator ids equal but for the material (``MoS2_8x8-high-c050-00012``
  and ``WSe2_8x8-high-c050-00012``) in stores planned with the legacy seed
  scheme, whose streams drew the same sites in every material of one shape.

The union of the four is a sample's *class*; a split never separates one.
Site keys are compared between samples whose hosts list their sites in the
same order (every store of ``definet generate``, one 2DMD folder); a pristine
sample (no defect) has no site pattern and is tied by ``duplicate`` only.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from collections.abc import Sequence

import numpy as np

from ..match import PRISTINE
from .sample import Sample
from .seeding import frame_scheme
from .symmetry import canonical_key, site_permutations

RELATIONS = ("duplicate", "symmetry", "pattern", "id")
_GENERATOR_ID = re.compile(r"^[^_]+_(\d+x\d+(?:x\d+)?-(?:low|high)-.+)$")


@dataclass(frozen=True)
class SitePattern:
    """A sample's defects as host sites, with its two canonical keys.

    Attributes
    ----------
    n_defects : int
        Substituted plus vacant sites.
    symmetry_key : tuple
        Equal for configurations related by a host operation (same host).
    pattern_key : tuple
        Equal for the same kind pattern on hosts of equal size and symmetry.
    """

    n_defects: int
    symmetry_key: tuple
    pattern_key: tuple


def site_pattern(sample: Sample) -> SitePattern | None:
    """The defect sites of ``sample`` from :attr:`Sample.match` (``None``: no defect)."""
    m = sample.match
    on = m.markers != PRISTINE
    if not on.any():
        return None
    sites = m.sites[on]
    kinds = m.markers[on]
    full = list(zip(kinds.tolist(), m.host.numbers[sites].tolist(), m.numbers[on].tolist()))
    table = site_permutations(m.host)
    host = (len(m.host), tuple(m.host.numbers.tolist()),
            tuple(np.round(m.host.cell.lengths(), 2).tolist()))
    return SitePattern(int(on.sum()), (host, canonical_key(table, sites, full)),
                       (len(m.host), len(table), canonical_key(table, sites, kinds.tolist())))


def id_twin_key(info: dict) -> str | None:
    """Generator id without its material, for legacy-scheme stores (else ``None``)."""
    sid = str(info.get("id", ""))
    hit = _GENERATOR_ID.match(sid)
    if hit is None or frame_scheme(info) != "legacy" or "seed" not in info:
        return None
    return hit.group(1)


def stratum(sample: Sample, pattern: SitePattern | None = None) -> str:
    """``material/density[/supercell]/concentration`` of a sample.

    High density: the nominal fraction (``info["fraction"]``) as the id's tag,
    ``c050`` for 5 %; without it, defects per host site. Low density: the
    number of defects, ``n1``, ``n2``, ... (its 1-3 defects are its
    concentrations).
    """
    i = sample.info
    parts = [str(i.get("material", "?")), str(i.get("density", "?"))]
    if i.get("supercell"):
        parts.append(str(i["supercell"]))
    n_def = pattern.n_defects if pattern is not None else 0
    if i.get("density") == "low":
        parts.append(f"n{n_def}")
    else:
        frac = i.get("fraction")
        if frac is None:
            frac = n_def / max(len(sample.match.host), 1)
        parts.append(f"c{round(float(frac) * 1000):03d}")
    return "/".join(parts)


def relations(samples: Sequence[Sample], duplicates: list[list[int]],
              patterns: Sequence[SitePattern | None] | None = None
              ) -> dict[str, list[list[int]]]:
    """The groups (two or more samples) of every relation in :data:`RELATIONS`.

    Parameters
    ----------
    samples : sequence of Sample
    duplicates : list of list of int
        Exact-duplicate clusters of ``samples``.
    patterns : sequence of SitePattern or None, optional
        :func:`site_pattern` of every sample, when known already.
    """
    if patterns is None:
        patterns = [site_pattern(s) for s in samples]
    keyed: dict[str, dict] = {"symmetry": {}, "pattern": {}, "id": {}}
    for i, (s, p) in enumerate(zip(samples, patterns)):
        if p is not None:
            keyed["symmetry"].setdefault(p.symmetry_key, []).append(i)
            keyed["pattern"].setdefault(p.pattern_key, []).append(i)
        k = id_twin_key(s.info)
        if k is not None:
            keyed["id"].setdefault(k, []).append(i)
    out = {"duplicate": [c for c in duplicates if len(c) > 1]}
    for name, groups in keyed.items():
        out[name] = sorted((g for g in groups.values() if len(g) > 1), key=lambda g: g[0])
    return out


def classes(n: int, groups: dict[str, list[list[int]]]) -> list[list[int]]:
    """Union of all relation groups over ``n`` samples: every index once, sorted."""
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for rel in groups.values():
        for g in rel:
            roots = [find(i) for i in g]
            low = min(roots)
            for r in roots:
                parent[r] = low
    out: dict[int, list[int]] = {}
    for i in range(n):
        out.setdefault(find(i), []).append(i)
    return sorted(out.values(), key=lambda c: c[0])
