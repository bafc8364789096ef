"""Recipes: what a generated data set is made of, from flags or from a file.

A recipe names the host (a built-in name, or any ASE-readable file: a 2D sheet
with a two-number supercell such as ``8x8``, a bulk crystal with three such as
``3x3x3``), its defect types, the density and the count, and the oracle
settings. A recipe file (TOML or JSON) holds the same fields as the flags of
``definet generate``::

    host = "GaN.cif"              # relative to the recipe file
    supercell = "3x3x3"
    defects = "vacancy:Ga,vacancy:N,substitution:Ga>Al"
    concentrations = [0.02, 0.05] # high density; or density = "low" (1-3 defects)
    count = 10                    # low: per host; high: per concentration
    calculator = "chgnet"

:func:`check` refuses a bad recipe before any work starts (and before any folder
is made): an unknown element, a defect of an element the host lacks, an
impossible concentration, an unreadable host file. :func:`run_recipe` then
generates it; the store's manifest records the recipe (``manifest["recipe"]``),
in the same fields, with the host file's absolute path and content hash.
"""
from __future__ import annotations

import json
import tomllib
from collections import Counter
from dataclasses import dataclass, fields
from pathlib import Path

from ase.data import chemical_symbols

from .defects import HIGH_DENSITY_FRACTIONS, LOW_DENSITY_COUNTS, Defect
from .hosts import HostSpec, build_host, file_host, host_spec
from .oracle import FMAX, MAX_STEPS

DEFAULT_MATERIALS = ("MoS2", "WSe2")


@dataclass(frozen=True)
class Recipe:
    """The fields of a data set (see the module docstring for their spelling).

    Attributes
    ----------
    count : int
        Low density: structures per host; high: per concentration.
    host : str, optional
        Path of a host file; excludes ``materials``.
    materials : tuple of str
        Built-in hosts (default MoS2, WSe2 when no ``host`` is given).
    supercell : int or tuple of int, optional
        Needed with ``host``; default for built-ins: the 2DMD supercell.
    defects : tuple of Defect
        Defect types of ``host`` (built-in hosts carry their own).
    density : {"low", "high"}, optional
        Default: ``"high"`` with ``concentrations``, else ``"low"``.
    concentrations : tuple of float, optional
        High-density defects per host site (default 2DMD's 2.5-12.5 %).
    name : str, optional
        Host name in ids (default: the host file's stem).
    """

    count: int
    host: str | None = None
    materials: tuple[str, ...] = ()
    supercell: int | tuple[int, ...] | None = None
    defects: tuple[Defect, ...] = ()
    density: str | None = None
    concentrations: tuple[float, ...] | None = None
    seed: int = 0
    seed_scheme: str | None = None
    calculator: str = "chgnet"
    fmax: float = FMAX
    steps: int = MAX_STEPS
    name: str | None = None

    @property
    def resolved_density(self) -> str:
        return self.density or ("high" if self.concentrations else "low")


FIELDS = tuple(f.name for f in fields(Recipe))


def parse_supercell(value) -> int | tuple[int, ...]:
    """``"3x3x3"`` / ``"8x8"`` / ``[3, 3, 3]`` to a tuple; ``"8"`` / ``8`` to an int."""
    try:
        parts = ([int(v) for v in str(value).lower().split("x")] if isinstance(value, str | int)
                 else [int(v) for v in value])
    except (TypeError, ValueError):
        parts = []
    if not 1 <= len(parts) <= 3 or min(parts) < 1:
        raise ValueError(f"supercell {value!r}: give NxM (a sheet) or NxMxK (bulk), "
                         "positive integers")
    return parts[0] if len(parts) == 1 else tuple(parts)


def parse_defects(value) -> tuple[Defect, ...]:
    """``"vacancy:Ga,substitution:Ga>Al"`` (or a list of such items) to defect types."""
    items = value.split(",") if isinstance(value, str) else list(value)
    out = []
    for item in (str(i).strip() for i in items):
        if not item:
            continue
        kind, _, what = item.partition(":")
        if kind == "vacancy" and what and ">" not in what:
            d = ("vacancy", what, None)
        elif kind == "substitution" and what.count(">") == 1:
            d = ("substitution", *what.split(">"))
        else:
            raise ValueError(f"defect {item!r}: write vacancy:EL or substitution:EL>NEW")
        for el in d[1:]:
            if el is not None and (el not in chemical_symbols or el == "X"):
                raise ValueError(f"defect {item!r}: unknown element {el!r}")
        if d[0] == "substitution" and d[1] == d[2]:
            raise ValueError(f"defect {item!r}: an element cannot replace itself")
        if d not in out:
            out.append(d)
    return tuple(out)


def defects_text(defects) -> str:
    """The inverse of :func:`parse_defects`."""
    return ",".join(f"vacancy:{a}" if k == "vacancy" else f"substitution:{a}>{b}"
                    for k, a, b in defects)


def parse_concentrations(value) -> tuple[float, ...]:
    """``"0.02,0.05"`` or ``[0.02, 0.05]`` to floats."""
    items = value.split(",") if isinstance(value, str) else list(value)
    try:
        return tuple(float(v) for v in items if str(v).strip())
    except ValueError:
        raise ValueError(f"concentrations {value!r}: give numbers, e.g. 0.02,0.05") from None


def read_recipe_file(path: str | Path) -> dict:
    """The fields of a TOML (``.toml``) or JSON recipe file; a host path is made
    relative to the file's folder."""
    path = Path(path)
    try:
        text = path.read_text()
        data = tomllib.loads(text) if path.suffix != ".json" else json.loads(text)
    except (OSError, ValueError) as err:    # TOMLDecodeError and JSONDecodeError too
        raise ValueError(f"recipe {str(path)!r} cannot be read: {err}") from None
    if not isinstance(data, dict):
        raise ValueError(f"recipe {str(path)!r} must hold a table of fields")
    if isinstance(data.get("host"), str):
        data["host"] = str(path.parent / data["host"])
    return data


def make_recipe(given: dict) -> Recipe:
    """A :class:`Recipe` from fields as flags or a file spell them.

    Raises
    ------
    ValueError
        For an unknown field, a missing count, or a value that cannot be parsed.
    """
    unknown = sorted(set(given) - set(FIELDS))
    if unknown:
        raise ValueError(f"unknown recipe field(s) {', '.join(unknown)}; "
                         f"known: {', '.join(FIELDS)}")
    kw = {k: v for k, v in given.items() if v is not None}
    if "count" not in kw:
        raise ValueError("a recipe needs a count (structures per host, or per "
                         "concentration at high density)")
    if isinstance(kw.get("materials"), str):
        kw["materials"] = kw["materials"].split(",")
    conv = {"supercell": parse_supercell, "defects": parse_defects,
            "concentrations": parse_concentrations,
            "materials": lambda v: tuple(m for m in v if m)}
    for k, f in conv.items():
        if k in kw:
            kw[k] = f(kw[k])
    for k, typ in (("count", int), ("seed", int), ("steps", int), ("fmax", float)):
        if k in kw and (isinstance(kw[k], bool) or not isinstance(kw[k], int | float)
                        or typ(kw[k]) != kw[k]):
            raise ValueError(f"recipe field {k} must be a number, got {kw[k]!r}")
    return Recipe(**kw)


def check(recipe: Recipe) -> list[HostSpec]:
    """The host specs of ``recipe``, or a ValueError naming what is wrong.

    Everything is checked before any work: the host file reads, every defect's
    element is in the host, the density and count make sense, and every
    concentration can be drawn (a structure of ``n`` defects may draw one
    defect type ``n`` times, so each type's element needs ``n`` sites).
    """
    r = recipe
    if r.count < 1:
        raise ValueError(f"count must be at least 1, got {r.count}")
    if r.density not in (None, "low", "high"):
        raise ValueError(f"density must be 'low' or 'high', got {r.density!r}")
    if r.concentrations is not None and r.density == "low":
        raise ValueError("concentrations are a high-density setting; "
                         "drop density = 'low' or the concentrations")
    for c in r.concentrations or ():
        if not 0.0 < c <= 1.0:
            raise ValueError(f"concentration {c} is impossible: a fraction of the host "
                             "sites, above 0 and at most 1")
    if r.host is not None and r.materials:
        raise ValueError("give a host file or built-in materials, not both")
    if r.host is None:
        if r.defects:
            raise ValueError("defects go with a host file; built-in hosts carry their "
                             "own defect types")
        specs = [host_spec(m) for m in (r.materials or DEFAULT_MATERIALS)]
    else:
        if not isinstance(r.supercell, tuple):
            raise ValueError("a host file needs a supercell: NxM tiles a 2D sheet, "
                             "NxMxK a bulk crystal (e.g. 8x8 or 3x3x3)")
        if not r.defects:
            raise ValueError("a host file needs defects, e.g. "
                             "vacancy:Ga,substitution:Ga>Al")
        if not Path(r.host).is_file():
            raise ValueError(f"host file {r.host!r} does not exist")
        specs = [file_host(r.host, r.supercell, r.defects, r.name)]
    for spec in specs:
        _check_sites(spec, r)
    return specs


def _check_sites(spec: HostSpec, r: Recipe) -> None:
    host = build_host(spec, spec.supercell if r.supercell is None else r.supercell)
    sites = Counter(host.get_chemical_symbols())
    for kind, el, _ in spec.defect_types:
        if el not in sites:
            raise ValueError(f"{kind} of {el}: host {spec.name} has no {el} "
                             f"(it holds {', '.join(sorted(sites))})")
    if r.resolved_density == "high":
        wanted = [(c, max(1, round(c * len(host))))
                  for c in (r.concentrations or HIGH_DENSITY_FRACTIONS)]
    else:
        wanted = [(None, max(LOW_DENSITY_COUNTS))]
    fewest = min(sites[el] for _, el, _ in spec.defect_types)
    for c, n in wanted:
        if n > fewest:
            what = f"concentration {c}" if c is not None else "low density"
            raise ValueError(
                f"{what} is impossible on {spec.name} {_label(host)} ({len(host)} sites): "
                f"it asks for {n} defects per structure, and one defect type may be "
                f"drawn for all of them, but its element has only {fewest} sites")


def _label(host) -> str:
    return "x".join(map(str, host.info["supercell"]))


def record(recipe: Recipe, specs: list[HostSpec]) -> dict:
    """The recipe as the manifest keeps it: the fields of a recipe file."""
    out = {"count": recipe.count, "density": recipe.resolved_density,
           "seed": recipe.seed, "calculator": recipe.calculator,
           "fmax": recipe.fmax, "steps": recipe.steps}
    if recipe.host is not None:
        out.update(host=str(Path(recipe.host).absolute()), name=specs[0].name,
                   host_digest=specs[0].digest, defects=defects_text(recipe.defects))
    else:
        out["materials"] = [s.name for s in specs]
    if recipe.supercell is not None:
        sc = recipe.supercell
        out["supercell"] = "x".join(map(str, sc)) if isinstance(sc, tuple) else sc
    if out["density"] == "high":
        out["concentrations"] = list(recipe.concentrations or HIGH_DENSITY_FRACTIONS)
    return out


def run_recipe(out: str | Path, recipe: Recipe | dict, workers: int = 1, threads: int = 1,
               limit: int | None = None, progress: bool = True,
               scheduler: str | None = None, recipe_file: str | Path | None = None
               ) -> dict:
    """Check ``recipe`` and generate (or resume) its data set in ``out``.

    ``recipe`` is a :class:`Recipe`, or its fields as a dict: then the fields of
    ``recipe_file`` (if given) are read first and those in the dict override them.
    Returns the summary of :func:`~ase_definet.data.generate.generate`.
    """
    from .generate import generate
    if isinstance(recipe, dict):
        merged = read_recipe_file(recipe_file) if recipe_file is not None else {}
        merged.update({k: v for k, v in recipe.items() if v is not None})
        recipe = make_recipe(merged)
    specs = check(recipe)
    return generate(out, specs, recipe.resolved_density, recipe.count,
                    supercell=recipe.supercell, calculator=recipe.calculator,
                    workers=workers, threads=threads, seed=recipe.seed, fmax=recipe.fmax,
                    steps=recipe.steps, progress=progress, limit=limit,
                    seed_scheme=recipe.seed_scheme,
                    fractions=recipe.concentrations or HIGH_DENSITY_FRACTIONS,
                    scheduler=scheduler, manifest_extra={"recipe": record(recipe, specs)})
