"""Pre-relaxation straight into the POSCAR trees that defect packages write.

ShakeNBreak writes ``<defect>_<charge>/<Unperturbed|Rattled|Bond_Distortion_X%>/POSCAR``
and doped writes ``<defect>_<charge>/vasp_<gam|std|nkred_std|ncl>/POSCAR`` (and the
pristine ``<formula>_bulk/vasp_*/POSCAR``). :func:`relax_tree` finds every file
named ``POSCAR`` under a folder, pre-relaxes those that match the host in batches
(:func:`ase_definet.batch.relax_many`, the one prediction path) and writes each
back as a VASP POSCAR: in place, keeping the original beside it as
``POSCAR.unrelaxed``, or into a mirror tree. A structure that cannot be matched
or predicted (an interstitial, an atom moved beyond the tolerance, an element
outside the model card) is reported and skipped; the others are still written.

The unrelaxed structure is always read from ``POSCAR.unrelaxed`` where it exists,
so a second in-place run predicts again from the original and never overwrites it.
"""
from __future__ import annotations

import io
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ase import Atoms
from ase.io import read, write

from .errors import DefiNetInputError, InputFileError

POSCAR = "POSCAR"
#: Name of the original kept beside a POSCAR that was overwritten in place.
ORIGINAL = "POSCAR.unrelaxed"
#: Exit status of ``definet relax TREE`` when some POSCARs were skipped.
EXIT_SKIPPED = 4
#: A ``<defect>_<charge>`` folder, as both packages name them (``v_Si_-1``, ``Ge_Si_+1``).
_CHARGE_FOLDER = re.compile(r"^(?P<defect>.+)_(?P<charge>[+-]?\d+)$")


@dataclass
class TreeEntry:
    """One POSCAR of a tree and what became of it.

    ``status`` is ``"pending"``, ``"relaxed"``, ``"reverted"`` (the prediction
    failed the sanity checks; the input positions were written), ``"pristine"``
    (no defect found: left as is) or ``"skipped"`` (``reason`` says why, ``error``
    names the exception class). ``residual_steps`` and ``converged`` are set
    with a calculator; ``output`` is the POSCAR written.
    """

    root: Path
    path: Path
    defect: str | None = None
    charge: str | None = None
    status: str = "pending"
    reason: str | None = None
    error: str | None = None
    max_move: float | None = None
    residual_steps: int | None = None
    converged: bool | None = None
    output: Path | None = None

    @property
    def rel(self) -> Path:
        """The POSCAR's path relative to the tree."""
        return self.path.relative_to(self.root)

    @property
    def source(self) -> Path:
        """The unrelaxed structure: ``POSCAR.unrelaxed`` if an earlier run kept it."""
        original = self.path.with_name(ORIGINAL)
        return original if original.is_file() else self.path


def find_poscars(root: str | Path) -> list[TreeEntry]:
    """Every file named ``POSCAR`` under ``root``, sorted, with defect and charge.

    Defect and charge come from the nearest folder named ``<defect>_<charge>``
    (``None`` where there is none, e.g. doped's ``Si_bulk``).

    Raises
    ------
    InputFileError
        ``root`` is not a folder, or holds no POSCAR.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputFileError(f"cannot read {root}: not a folder")
    entries = []
    for path in sorted(p for p in root.rglob(POSCAR) if p.is_file()):
        entry = TreeEntry(root, path)
        for folder in path.relative_to(root).parents:
            m = _CHARGE_FOLDER.match(folder.name)
            if m:
                entry.defect, entry.charge = m["defect"], m["charge"]
                break
        entries.append(entry)
    if not entries:
        raise InputFileError(f"cannot read {root}: no file named {POSCAR} under it")
    return entries


def check_output(root: str | Path, output: str | Path | None, inplace: bool) -> None:
    """Refuse a mirror folder that is missing, is the tree or lies inside it.

    Raises
    ------
    InputFileError
        Neither or both of ``output`` and ``inplace``, or a bad ``output``.
    """
    if inplace == (output is not None):
        raise InputFileError("a folder input needs either --inplace (write each POSCAR "
                             "back, keeping POSCAR.unrelaxed) or -o DIR (a mirror tree), "
                             "not " + ("both" if inplace else "neither"))
    if output is None:
        return
    root, out = Path(root).resolve(), Path(output).resolve()
    if out == root or root in out.parents:
        raise InputFileError(f"cannot write the mirror tree {output} inside {root} "
                             "(a later run would find its POSCARs); use --inplace or "
                             "another folder")
    if out.exists() and not out.is_dir():
        raise InputFileError(f"cannot write the mirror tree {output}: not a folder")


def write_poscar(atoms: Atoms, path: Path, template: Path) -> None:
    """Write ``atoms`` as a VASP POSCAR with the comment line of ``template``.

    Element order and selective-dynamics flags (ASE constraints) follow
    ``atoms``, which keeps the order of the file it was read from; coordinates
    are written as Direct. The file is replaced atomically, so an interrupted run
    never leaves a half-written POSCAR.
    """
    buf = io.StringIO()
    write(buf, atoms, format="vasp", direct=True)
    comment = template.read_text().split("\n", 1)[0]
    text = comment + "\n" + buf.getvalue().split("\n", 1)[1]
    tmp = path.with_name(path.name + ".definet-tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _gate(entry: TreeEntry, host, predictor) -> Atoms | None:
    """Read and check one POSCAR; ``None`` (and the entry marked) if it is not relaxed."""
    try:
        atoms = read(entry.source, format="vasp")
    except Exception as err:          # ASE's readers raise anything on garbage
        entry.status, entry.reason = "skipped", f"cannot read {entry.source.name}: {err}"
        return None
    try:
        match, _, _ = predictor.prepare(atoms, host)    # match + model-card checks
    except DefiNetInputError as err:
        entry.status, entry.reason, entry.error = "skipped", str(err), type(err).__name__
        return None
    if not match.vacancies and not match.substitutions:
        entry.status, entry.reason = "pristine", "no defect found: left as is"
        return None
    return atoms


def _save(entry: TreeEntry, atoms: Atoms, output: Path | None) -> None:
    """Write one result in place (keeping the original) or into the mirror tree."""
    if output is None:
        original = entry.path.with_name(ORIGINAL)
        if not original.exists():                   # never replace a kept original
            shutil.copy2(entry.path, original)
        write_poscar(atoms, entry.path, original)
        entry.output = entry.path
        return
    folder = output / entry.rel.parent
    folder.mkdir(parents=True, exist_ok=True)
    for sibling in entry.path.parent.iterdir():     # INCAR, KPOINTS, ...: a runnable tree
        if sibling.is_file() and not sibling.name.startswith(POSCAR):
            shutil.copy2(sibling, folder / sibling.name)
    entry.output = folder / POSCAR
    write_poscar(atoms, entry.output, entry.source)


def relax_tree(root: str | Path, host, predictor, output: str | Path | None = None,
               batch_size: int = 8, progress: Callable[[TreeEntry], None] | None = None,
               **relax_kwargs) -> list[TreeEntry]:
    """Pre-relax every matching POSCAR under ``root`` and write it back.

    Parameters
    ----------
    root : folder
        A doped or ShakeNBreak tree (any folder of POSCARs works).
    host : ase.Atoms or str
        The pristine host (:func:`~ase_definet.match.load_host`).
    predictor : ase_definet.inference.Predictor
    output : folder, optional
        ``None``: write in place, copying each original to ``POSCAR.unrelaxed``
        first unless that file exists already (then it is the input and stays
        untouched). Otherwise the mirror tree, ``output/<same relative path>/POSCAR``,
        with the other files of each folder copied beside it.
    batch_size : int
        Structures per forward pass.
    progress : callable, optional
        Called with each entry once its fate is known.
    **relax_kwargs
        ``calculator``, ``fmax``, ``steps``, ``on_violation``, ``workers``,
        ``scheduler``, ... of :func:`~ase_definet.batch.relax_many` (the residual
        steps may run on dask workers; the POSCARs are written here, in path order).

    Returns
    -------
    list of TreeEntry
        Every POSCAR found, in path order, with its status.
    """
    from .batch import relax_many
    from .relax_io import structure_record
    entries = find_poscars(root)
    output = None if output is None else Path(output)
    todo: list[tuple[TreeEntry, Atoms]] = []
    for entry in entries:
        atoms = _gate(entry, host, predictor)
        if atoms is None:
            if progress:
                progress(entry)
        else:
            todo.append((entry, atoms))
    done = 0
    for frames in relax_many((a for _, a in todo), host, predictor, batch_size=batch_size,
                             **relax_kwargs):
        for atoms in frames:
            entry = todo[done][0]
            done += 1
            rec = structure_record(atoms, str(entry.rel))
            entry.status = "reverted" if rec["prediction"] == "reverted" else "relaxed"
            entry.reason = "; ".join(rec["warnings"]) or None
            entry.max_move = rec["max_move"]
            entry.residual_steps, entry.converged = rec["residual_steps"], rec["converged"]
            _save(entry, atoms, output)
            if progress:
                progress(entry)
    return entries


def format_table(entries: list[TreeEntry]) -> str:
    """One row per POSCAR (path, defect, charge, status, largest move), then the
    reason of every skipped or reverted one and a total line."""
    rows = [("path", "defect", "charge", "status", "largest move (Å)")]
    for e in entries:
        status = e.status
        if e.converged is not None:
            n = e.residual_steps
            status += (f", {n} step{'' if n == 1 else 's'}"
                       + ("" if e.converged else ", NOT converged"))
        rows.append((str(e.rel), e.defect or "-", e.charge or "-", status,
                     "-" if e.max_move is None else f"{e.max_move:.3f}"))
    widths = [max(len(r[k]) for r in rows) for k in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    for e in entries:
        if e.status in ("skipped", "reverted") and e.reason:
            lines.append(f"{e.status}: {e.rel}: {e.reason}")
    if any(e.error == "UnmatchedAtomError" for e in entries):
        lines.append("hint: doped and ShakeNBreak rattle every atom (std 10 % of the bond "
                     "length); a --tolerance below half the host bond (e.g. 0.8 Å for "
                     "Si) matches rattled POSCARs, while an interstitial stays unmatched")
    counts = {s: sum(e.status == s for e in entries)
              for s in ("relaxed", "reverted", "pristine", "skipped")}
    lines.append(f"total: {len(entries)} POSCARs: "
                 + ", ".join(f"{n} {s}" for s, n in counts.items()))
    return "\n".join(lines)
