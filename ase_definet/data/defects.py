"""Random point-defect configurations on a built-in host (2DMD protocol).

A configuration is a set of (host site index, defect) pairs, where a defect is
``("substitution", from, to)`` or ``("vacancy", element, None)``. Two
configurations that differ by an operation of the host supercell's space group
(a translation, rotation or mirror) are the same configuration;
:func:`~ase_definet.data.symmetry.canonical_key` maps both to one key so the
generator never yields the same configuration twice. Stores made before that
rule rejected lattice translations only (``symmetry="translations"``), which
is kept so those job lists stay reproducible.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
from ase import Atoms

from .hosts import HostSpec, host_spec
from .symmetry import canonical_key, site_permutations

Defect = tuple[str, str, "str | None"]

HIGH_DENSITY_FRACTIONS = (0.025, 0.05, 0.075, 0.10, 0.125)
LOW_DENSITY_COUNTS = (1, 2, 3)


@dataclass(frozen=True)
class DefectConfig:
    """One defect configuration on a host supercell.

    Attributes
    ----------
    host : str
        Built-in host name.
    supercell : tuple of int
        Host supercell (n, m).
    sites : tuple of int
        Host site indices carrying a defect, sorted.
    defects : tuple of Defect
        The defect on each site, in the order of ``sites``.
    density : str
        ``"low"`` or ``"high"``.
    fraction : float
        Defects per host site (nominal for high density).
    """

    host: str
    supercell: tuple[int, ...]
    sites: tuple[int, ...]
    defects: tuple[Defect, ...]
    density: str
    fraction: float = field(default=0.0)

    def as_records(self) -> list[dict]:
        """The defects in the 2DMD ``descriptors.csv`` spelling."""
        out = []
        for kind, a, b in self.defects:
            if kind == "vacancy":
                out.append({"type": "vacancy", "element": a})
            else:
                out.append({"type": "substitution", "from": a, "to": b})
        return out


def apply_defects(host: Atoms, sites: tuple[int, ...] | list[int],
                  defects: tuple[Defect, ...] | list[Defect]) -> Atoms:
    """Return a copy of ``host`` with the defects applied.

    Substituted atoms keep their place in the atom order; vacancies are deleted,
    so the result lists the surviving host atoms in host order.
    """
    atoms = host.copy()
    symbols = atoms.get_chemical_symbols()
    drop = []
    for site, (kind, el, new) in zip(sites, defects):
        if symbols[site] != el:
            raise ValueError(f"site {site} holds {symbols[site]}, not {el} ({kind})")
        if kind == "vacancy":
            drop.append(site)
        else:
            symbols[site] = new
    atoms.set_chemical_symbols(symbols)
    if drop:
        del atoms[drop]
    for key in ("cell_index", "basis_index"):
        atoms.arrays.pop(key, None)
    return atoms


def translation_table(host: Atoms) -> np.ndarray:
    """``T[t, s]`` = site that site ``s`` moves to under lattice translation ``t``.

    Needs the ``cell_index`` / ``basis_index`` arrays that
    :func:`~ase_definet.data.hosts.build_host` writes.
    """
    ci = host.arrays["cell_index"]
    bi = host.arrays["basis_index"]
    reps = ci.max(axis=0) + 1
    nb = bi.max() + 1
    lookup = np.empty((*reps, nb), dtype=np.int64)
    lookup[ci[:, 0], ci[:, 1], ci[:, 2], bi] = np.arange(len(host))
    shifts = np.stack(np.meshgrid(*[np.arange(r) for r in reps], indexing="ij"),
                      axis=-1).reshape(-1, 3)
    moved = (ci[None, :, :] + shifts[:, None, :]) % reps
    return lookup[moved[..., 0], moved[..., 1], moved[..., 2], bi[None, :]]


def _draw(spec: HostSpec, symbols: np.ndarray, n_defects: int,
          rng: np.random.Generator) -> tuple[tuple[int, ...], tuple[Defect, ...]]:
    types = spec.defect_types
    chosen = [types[k] for k in rng.integers(len(types), size=n_defects)]
    taken: set[int] = set()
    pairs = []
    for d in chosen:
        free = np.flatnonzero(symbols == d[1])
        free = free[~np.isin(free, list(taken))]
        site = int(rng.choice(free))
        taken.add(site)
        pairs.append((site, d))
    pairs.sort()
    return tuple(p[0] for p in pairs), tuple(p[1] for p in pairs)


def generate_configs(host: Atoms, density: str, count: int, seed: int,
                     fractions: tuple[float, ...] = HIGH_DENSITY_FRACTIONS,
                     counts: tuple[int, ...] = LOW_DENSITY_COUNTS,
                     max_tries: int = 1000, symmetry: str = "full",
                     spec: HostSpec | None = None) -> Iterator[DefectConfig]:
    """Yield distinct random defect configurations on ``host``.

    Parameters
    ----------
    host : ase.Atoms
        A host from :func:`~ase_definet.data.hosts.build_host`.
    density : {"low", "high"}
        Low: 1–3 defects of random types. High: ``round(f * n_sites)`` defects
        for each fraction ``f``, ``count`` per fraction (2DMD: 100 each).
    count : int
        Low density: total number; high density: number per fraction.
    seed : int
        Seed of the random generator; the same arguments give the same list.
    symmetry : {"full", "translations"}
        Which images of a configuration count as the same: every operation of
        the supercell's space group (spglib), or lattice translations only
        (the rule of stores made before the full one; kept to reproduce them).
    spec : HostSpec, optional
        The host's defect types (default: the built-in host ``host.info["host"]``);
        a host read from a file passes its own.

    Yields
    ------
    DefectConfig
        In a fixed order; no two are images of each other under ``symmetry``.
    """
    if density not in ("low", "high"):
        raise ValueError(f"density must be 'low' or 'high', got {density!r}")
    if symmetry not in ("full", "translations"):
        raise ValueError(f"symmetry must be 'full' or 'translations', got {symmetry!r}")
    spec = spec or host_spec(host.info["host"])
    supercell = tuple(int(v) for v in host.info["supercell"])
    symbols = np.array(host.get_chemical_symbols())
    table = site_permutations(host) if symmetry == "full" else translation_table(host)
    rng = np.random.default_rng(seed)
    seen: set = set()
    plan = ([(f, max(1, round(f * len(host)))) for f in fractions] if density == "high"
            else [(None, None)])
    for fraction, n_def in plan:
        made = tries = 0
        while made < count:
            tries += 1
            if tries > max_tries * max(count, 1):
                raise RuntimeError(
                    f"could not draw {count} distinct {density}-density configurations "
                    f"on {spec.name} {supercell}: only {made} exist or were found")
            k = n_def if n_def is not None else int(rng.choice(counts))
            sites, defects = _draw(spec, symbols, k, rng)
            key = canonical_key(table, sites, defects)
            if key in seen:
                continue
            seen.add(key)
            made += 1
            frac = fraction if fraction is not None else k / len(host)
            yield DefectConfig(spec.name, supercell, sites, defects, density, frac)
