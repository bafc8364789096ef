"""The file side of ``definet relax``: named input frames, checked output formats,
one summary line per structure, and a JSON sidecar for formats without ``info``.

The relaxation itself is :func:`ase_definet.batch.relax_many`; this module only
reads what it records in ``atoms.info`` (``definet``, ``definet_vacancies``,
``definet_substitutions``, ``definet_max_move``, ``definet_residual_steps``,
``definet_converged``, ``definet_warnings``), tolerating keys that are absent.
"""
from __future__ import annotations

import json
from pathlib import Path
from collections.abc import Iterable, Iterator

from ase import Atoms
from ase.io.formats import UnknownFileTypeError, filetype, ioformats

from .errors import DataFormatError, InputFileError

#: ASE formats that store ``atoms.info`` (and so the convergence flag) per frame.
INFO_FORMATS = ("extxyz", "traj")
#: Suffix of the summary written beside outputs in other formats.
SIDECAR_SUFFIX = ".definet.json"


def output_format(path: str | Path, fmt: str | None = None) -> str:
    """The ASE format that will write ``path``, checked before any work is done.

    Raises
    ------
    DataFormatError
        Unknown or read-only format, or a folder that does not exist; the
        message names the file.
    """
    path = Path(path)
    try:
        name = fmt or filetype(str(path), read=False)
        io = ioformats[name]
    except (KeyError, UnknownFileTypeError):
        known = ", ".join(sorted({"extxyz", "traj", "vasp", "cif", "xyz", "json"}))
        what = f"format {fmt!r}" if fmt else "the output format of its name"
        raise DataFormatError(
            f"cannot write {path}: ASE does not know {what} (e.g. {known}; "
            "choose one with --format)") from None
    if not io.can_write:
        raise DataFormatError(f"cannot write {path}: ASE format {name!r} is read-only")
    if not path.parent.is_dir():
        raise DataFormatError(f"cannot write {path}: folder {path.parent} does not exist")
    return name


class InputFrames:
    """Every frame of every input file, in order, remembering each one's source.

    Iterating yields ``Atoms``; :attr:`sources` grows by one label per frame
    (``file`` for a one-frame file, ``file@k`` otherwise). A file ASE cannot
    read, or one without structures, is an :class:`InputFileError` that names it.
    """

    def __init__(self, paths: Iterable[str | Path]):
        self.paths = [Path(p) for p in paths]
        self.sources: list[str] = []

    def check(self) -> None:
        """Fail early on inputs that are missing or not files."""
        for p in self.paths:
            if not p.is_file():
                raise InputFileError(f"cannot read {p}: "
                                     + ("not a file" if p.exists() else "no such file"))

    def __iter__(self) -> Iterator[Atoms]:
        from .batch import iter_structures
        for p in self.paths:
            held, k = None, 0
            try:
                # one frame held back, so a one-frame file is labelled without @0
                for atoms in iter_structures([p]):
                    if held is not None:
                        self.sources.append(f"{p}@{k - 1}")
                        yield held
                    held, k = atoms, k + 1
            except Exception as err:      # ASE readers raise anything on garbage
                raise InputFileError(f"cannot read {p}: {type(err).__name__}: {err}"
                                     ) from err
            if held is None:
                raise InputFileError(f"cannot read {p}: no structures in it")
            self.sources.append(str(p) if k == 1 else f"{p}@{k - 1}")
            yield held


def failed_where(pending: list[str]) -> str:
    """Name the structures of a batch that failed: one, or the first and last."""
    if len(pending) == 1:
        return pending[0]
    return (f"one of {pending[0]} ... {pending[-1]} (--batch-size 1 names it)"
            if pending else "input")


def _count(value) -> int | None:
    """A count recorded as a number or as a list of defects (``None``: not recorded)."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return int(value)
    return len(value) if hasattr(value, "__len__") and not isinstance(value, str) else 1


def structure_record(atoms: Atoms, source: str) -> dict:
    """What ``relax_many`` recorded about one structure (``None`` where absent)."""
    info = atoms.info
    steps = info.get("definet_residual_steps")
    conv = info.get("definet_converged")
    move = info.get("definet_max_move")
    warnings = info.get("definet_warnings") or []
    return {"source": source,
            "prediction": info.get("definet"),      # predicted, kept or reverted
            "vacancies": _count(info.get("definet_vacancies")),
            "substitutions": _count(info.get("definet_substitutions")),
            "max_move": None if move is None else float(move),
            # an ensemble's uncertainty (Å) and policy; None for a single model
            "sigma_mean": _float(info.get("definet_sigma_mean")),
            "sigma_max": _float(info.get("definet_sigma_max")),
            "policy": info.get("definet_policy"),
            "withheld": None if "definet_withheld" not in info
            else bool(info["definet_withheld"]),
            "residual_steps": None if steps is None else int(steps),
            "converged": None if conv is None else bool(conv),
            "warnings": [str(w) for w in ([warnings] if isinstance(warnings, str)
                                          else warnings)]}


def _float(value) -> float | None:
    return None if value is None else float(value)


def _plural(n: int | None, word: str, many: str | None = None) -> str:
    many = many or word + "s"
    return f"? {many}" if n is None else f"{n} {word if n == 1 else many}"


def format_record(rec: dict) -> str:
    """One line: source, defects found, largest move, residual steps and convergence."""
    parts = [f"{_plural(rec['vacancies'], 'vacancy', 'vacancies')}, "
             f"{_plural(rec['substitutions'], 'substitution')}"]
    if rec["max_move"] is not None:
        parts.append(f"largest predicted move {rec['max_move']:.3f} Å")
    if rec.get("sigma_mean") is not None:
        held = ", withheld: input kept" if rec.get("withheld") else ""
        parts.append(f"sigma mean {rec['sigma_mean']:.3f} / max {rec['sigma_max']:.3f} Å "
                     f"({rec.get('policy') or 'none'}{held})")
    if rec["prediction"] == "reverted":
        parts.append("prediction reverted to the input positions")
    if rec["residual_steps"] is not None or rec["converged"] is not None:
        flag = {True: "converged", False: "NOT converged", None: "convergence unknown"}
        parts.append(f"{_plural(rec['residual_steps'], 'residual step')}, "
                     f"{flag[rec['converged']]}")
    if rec["warnings"]:
        parts.append("warning: " + "; ".join(rec["warnings"]))
    return f"{rec['source']}: " + "; ".join(parts)


def format_total(records: list[dict]) -> str:
    """The closing line over all structures."""
    def total(key):
        vals = [r[key] for r in records]
        return None if any(v is None for v in vals) else sum(vals)
    moves = [r["max_move"] for r in records if r["max_move"] is not None]
    parts = [f"{_plural(len(records), 'structure')}, "
             f"{_plural(total('vacancies'), 'vacancy', 'vacancies')}, "
             f"{_plural(total('substitutions'), 'substitution')}"]
    if moves:
        parts.append(f"largest predicted move {max(moves):.3f} Å")
    flags = [r["converged"] for r in records if r["converged"] is not None]
    if flags:
        steps = [r["residual_steps"] for r in records if r["residual_steps"] is not None]
        parts.append(f"{sum(flags)} of {len(flags)} converged"
                     + (f" ({max(steps)} residual steps at most)" if steps else ""))
    warned = sum(bool(r["warnings"]) for r in records)
    if warned:
        reverted = sum(r["prediction"] == "reverted" for r in records)
        parts.append(f"{warned} with warnings ({reverted} reverted)")
    return "total: " + "; ".join(parts)


def not_converged(records: list[dict]) -> list[str]:
    """Sources of the structures whose residual relaxation did not converge."""
    return [r["source"] for r in records if r["converged"] is False]


def sidecar_path(output: str | Path) -> Path:
    """``OUT.definet.json`` beside the output ``OUT``."""
    output = Path(output)
    return output.with_name(output.name + SIDECAR_SUFFIX)


def write_sidecar(output: str | Path, records: list[dict], outputs: list[Path]) -> Path:
    """Write the per-structure records (with each one's output file) as JSON."""
    rows = [dict(r, output=str(o)) for r, o in zip(records, _spread(outputs, len(records)))]
    path = sidecar_path(output)
    path.write_text(json.dumps({"structures": rows}, indent=1) + "\n")
    return path


def _spread(outputs: list[Path], n: int) -> list[Path]:
    """Output file of each structure: one file each, or all in one file."""
    return list(outputs) if len(outputs) == n else [outputs[0]] * n
