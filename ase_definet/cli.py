"""The ``definet`` command line: call the library, print (parser: cli_parser).

Subcommands: relax, generate, tighten, train, fit, evaluate, residual, plot,
audit-split, models.
No logic lives here beyond argument handling and printing.
"""
from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path

from ase.io.formats import UnknownFileTypeError

from .cli_parser import EXIT_NOT_CONVERGED, WORKER_COMMANDS, build_parser
from .match import DEFAULT_TOLERANCE


def _cmd_generate(args) -> int:
    from .data.recipe import FIELDS, run_recipe
    given = {k: getattr(args, k) for k in FIELDS if getattr(args, k, None) is not None}
    summary = run_recipe(args.out, given, workers=args.workers, threads=args.threads,
                         limit=args.limit, progress=not args.quiet,
                         scheduler=args.scheduler, recipe_file=args.recipe)
    print(json.dumps(summary))
    return 0


def _cmd_audit_split(args) -> int:
    from .data.audit import run_audit
    _, text = run_audit(args.data, args.split_file, args.json)
    print(text)
    return 0


def _cmd_tighten(args) -> int:
    from .data.splits import read_split
    from .data.tighten import tighten
    ids = None
    if args.split_file:
        split = read_split(args.split_file)
        ids = [i for name in args.subset for i in split[name]]
    summary = tighten(args.source, args.out, fmax=args.fmax, steps=args.steps,
                      optimizer=args.optimizer, calculator=args.calculator,
                      where=args.where, ids=ids, workers=args.workers,
                      threads=args.threads, limit=args.limit, progress=not args.quiet,
                      scheduler=args.scheduler)
    print(json.dumps(summary))
    return 0


def _predictor(args):
    from .inference import Predictor
    return Predictor(args.model, device=args.device, strict=not args.no_strict,
                     tolerance=getattr(args, "tolerance", DEFAULT_TOLERANCE),
                     uncertainty_policy=getattr(args, "uncertainty_policy", None))


def _selected(args):
    from .data.load import load_samples
    samples = load_samples(args.data, args.host, lambda m: print(m, file=sys.stderr),
                           where=getattr(args, "where", None),
                           input_forces=getattr(args, "input_forces", None)).samples
    if args.subset != "all":
        if args.split_file:
            from .data.splits import apply_split
            samples = list(apply_split(samples, args.split_file, unassigned="drop")[args.subset])
        else:
            samples = [s for s in samples if s.info.get("split") == args.subset]
    if getattr(args, "per_group", None):
        from .data.splits import first_per_group
        samples = first_per_group(samples, args.per_group)
    if not samples:
        raise ValueError("no samples selected (check --data, --subset, --where)")
    for s in samples:            # matched lazily, so with the user's --tolerance
        s.tolerance = getattr(args, "tolerance", s.tolerance)
    return samples


def _cmd_relax(args) -> int:
    from tqdm.auto import tqdm
    from .batch import FrameWriter, relax_many
    from .errors import DefiNetInputError, InputFileError
    from .match import load_host
    from .relax_io import InputFrames, failed_where, format_record, output_format, \
        structure_record
    if any(Path(p).is_dir() for p in args.inputs):
        return _cmd_relax_tree(args)
    if args.inplace:
        raise InputFileError("--inplace is for a folder input (a tree of POSCARs); "
                             "for files, name the output with -o")
    args.output = args.output or "relaxed.extxyz"
    fmt = output_format(args.output, args.format)     # refuse a bad -o before any work
    inputs = InputFrames(args.inputs)
    inputs.check()
    host = load_host(args.host)                       # a bad --host is the host's fault
    predictor = _predictor(args)
    writer, records = None, []
    try:
        # leave=False: the bar clears itself, before an error message or the total line
        with tqdm(desc="relax", unit="struct", disable=args.quiet, leave=False) as bar:
            for frames in relax_many(inputs, host, predictor,
                                     batch_size=args.batch_size, calculator=args.calculator,
                                     fmax=args.fmax, steps=args.steps,
                                     on_violation=args.on_violation, start=args.start,
                                     workers=args.workers, scheduler=args.scheduler):
                # opened at the first result: a run that fails first writes nothing
                writer = writer or FrameWriter(args.output, fmt)
                writer.write(frames)
                for atoms in frames:
                    records.append(structure_record(atoms, inputs.sources[len(records)]))
                    if not args.quiet:
                        bar.write(format_record(records[-1]))     # above the bar
                bar.update(len(frames))
    except BaseException as err:
        if writer is not None:        # an error or Ctrl-C later on: keep what finished
            _finish_relax(args, fmt, writer, records)
        if isinstance(err, DefiNetInputError) and not isinstance(err, InputFileError):
            # the frames read but not yet recorded are the batch that failed
            err.args = (f"{failed_where(inputs.sources[len(records):])}: {err}",)
        raise
    return _finish_relax(args, fmt, writer, records)


def _cmd_relax_tree(args) -> int:
    """``definet relax TREE``: every POSCAR of a doped/ShakeNBreak folder."""
    from tqdm.auto import tqdm
    from .errors import InputFileError
    from .match import load_host
    from .trees import EXIT_SKIPPED, check_output, format_table, relax_tree
    if len(args.inputs) != 1:
        raise InputFileError("give one folder (a doped or ShakeNBreak tree), or files "
                             "only: " + " ".join(args.inputs))
    if args.format not in (None, "vasp"):
        raise InputFileError(f"a folder input is written back as POSCARs, not --format "
                             f"{args.format}")
    check_output(args.inputs[0], args.output, args.inplace)
    host = load_host(args.host)
    predictor = _predictor(args)
    with tqdm(desc="relax", unit="POSCAR", disable=args.quiet, leave=False) as bar:
        entries = relax_tree(args.inputs[0], host, predictor, output=args.output,
                             batch_size=args.batch_size, progress=lambda e: bar.update(),
                             calculator=args.calculator, fmax=args.fmax, steps=args.steps,
                             on_violation=args.on_violation, start=args.start,
                             workers=args.workers, scheduler=args.scheduler)
    print(format_table(entries))
    if any(e.status == "skipped" for e in entries):
        return EXIT_SKIPPED
    return EXIT_NOT_CONVERGED if any(e.converged is False for e in entries) else 0


def _finish_relax(args, fmt: str, writer, records: list[dict]) -> int:
    """Close the outputs, write the sidecar, print the total; the exit status."""
    from .relax_io import INFO_FORMATS, format_total, not_converged, write_sidecar
    paths = writer.close()
    if fmt not in INFO_FORMATS:
        paths.append(write_sidecar(args.output, records, paths))
    print(format_total(records))
    for path in paths:
        print(path)
    failed = not_converged(records)
    if failed:
        print(f"definet relax: {len(failed)} of {len(records)} residual relaxations did "
              f"not converge to --fmax {args.fmax} within --steps {args.steps}: "
              + ", ".join(failed[:10]) + (", ..." if len(failed) > 10 else ""),
              file=sys.stderr)
        return EXIT_NOT_CONVERGED
    return 0


def _cmd_train(args) -> int:
    from .train import TrainConfig, run_training
    model = json.loads(args.config) if args.config.strip().startswith("{") else args.config
    cfg = TrainConfig(model=model, lr=args.lr, batch_size=args.batch_size,
                      epochs=args.epochs, seed=args.seed, deterministic=args.deterministic,
                      amp=args.amp, max_time=args.max_time, ema_decay=args.ema_decay,
                      early_stop=args.early_stop, clip_norm=args.clip_norm,
                      weight_decay=args.weight_decay, balance=args.balance,
                      input_noise=args.input_noise)
    summary = run_training(args.data, args.out, cfg, host=args.host, split=args.split_file,
                           split_seed=args.split_seed, device=args.device or "cpu",
                           resume=not args.restart, progress=not args.quiet,
                           exclude=args.exclude, unassigned=args.unassigned, init=args.init,
                           input_forces=args.input_forces)
    print(json.dumps(summary))
    return 0


def _cmd_fit(args) -> int:
    from .data.recipe import FIELDS
    from .evaluate import format_table
    from .fit import fit
    from .train import TrainConfig
    given = {k: getattr(args, k) for k in FIELDS if getattr(args, k, None) is not None}
    model = json.loads(args.config) if args.config.strip().startswith("{") else args.config
    cfg = TrainConfig(model=model, lr=args.lr, batch_size=args.batch_size,
                      epochs=args.epochs, seed=args.seed or 0, max_time=args.max_time)
    result = fit(args.out, given, cfg, workers=args.workers, threads=args.threads or 1,
                 scheduler=args.scheduler, recipe_file=args.recipe,
                 device=args.device or "cpu", progress=not args.quiet)
    print(format_table(result["report"]))
    print(json.dumps({"generate": result["generate"], "train": result["train"],
                      "model": result["model"], "test_json": result["test_json"]}))
    return 0


def _cmd_evaluate(args) -> int:
    from .evaluate import evaluate, format_table, save_report
    report = evaluate(_predictor(args), _selected(args), batch_size=args.batch_size,
                      progress=not args.quiet)
    print(format_table(report))
    if args.json:
        save_report(report, args.json)
    return 0


def _cmd_calibrate(args) -> int:
    from .calibrate import calibrate_ensemble, calibration_text
    from .data.load import load_samples
    from .data.splits import apply_split
    note = lambda m: print(m, file=sys.stderr)  # noqa: E731
    samples = load_samples(args.data, progress_note=note, exclude=args.holdout or None).samples
    parts = apply_split(samples, args.split_file, unassigned="drop")
    held = {"test": list(parts["test"])}
    if args.holdout:
        held["holdout"] = load_samples(args.data, progress_note=note, where=args.holdout).samples
    section = calibrate_ensemble(args.members, list(parts["val"]), args.out, held,
                                 batch_size=args.batch_size, progress=not args.quiet,
                                 device=args.device)
    print(calibration_text(section))
    return 0


def _cmd_residual(args) -> int:
    from .evaluate import save_report
    from .residual import format_residual, residual_study, resume_records
    fmax = [float(f) for f in args.fmax.split(",")]
    done = []
    if args.json and args.resume and Path(args.json).exists():
        done = resume_records(json.loads(Path(args.json).read_text()))
    save = (lambda r: save_report(r, args.json)) if args.json else None
    report = residual_study(_predictor(args), _selected(args), calculator=args.calculator,
                            fmax=fmax, steps=args.steps, n=args.n,
                            progress=not args.quiet, done=done, on_record=save,
                            workers=args.workers, scheduler=args.scheduler,
                            on_error="record" if args.keep_going else "raise")
    print(format_residual(report))
    if args.json:
        save_report(report, args.json)
    return 0


def _cmd_plot(args) -> int:
    from .plot import plot_all, plot_learning_curves
    if args.reliability is not None:
        from .plot_reliability import plot_reliability
        print(plot_reliability(args.reliability or args.model, f"{args.out}/reliability.png",
                               kinds=("calibrated", "raw") if args.raw else ("calibrated",),
                               groups=False if args.groups is None else args.groups or True))
        if args.data is None and not args.metrics:
            return 0
    if args.data is None:
        if not args.metrics:
            raise ValueError("give --data (and a model), --metrics or --reliability")
        print(plot_learning_curves(args.metrics, f"{args.out}/learning_curves.png"))
        return 0
    for p in plot_all(_predictor(args), _selected(args)[: max(args.n, 1) * 50], args.out,
                      metrics_csv=args.metrics, n_structures=args.n,
                      progress=not args.quiet):
        print(p)
    return 0


def _cmd_models(args) -> int:
    from .card import card_text
    from .weights import package_model, registry
    if args.add:
        if not args.name or not args.card:
            raise ValueError("--add needs --name and --card")
        try:
            card = json.loads(Path(args.card).read_text())
        except json.JSONDecodeError as err:
            from .errors import DataFormatError
            raise DataFormatError(f"cannot read model card {args.card}: {err}") from err
        entry = package_model(args.add, args.name, card, out_dir=args.out,
                              default=args.default)
        print(f"{args.name}: sha256 {entry['sha256']}")
        return 0
    reg = registry()
    if not reg:
        print("no shipped models installed")
        return 0
    for name, entry in reg.items():
        flag = " (default)" if entry.get("default") else ""
        print(f"{name}{flag}\n  file: {entry['path']}\n  sha256: {entry['sha256']}")
        if args.json:
            print(json.dumps(entry.get("card", {}), indent=2))
        elif args.verbose:
            print(card_text(entry.get("card", {})))
        else:
            card = entry.get("card", {})
            for key in ("summary", "elements", "defects", "oracle"):
                if key in card:
                    print(f"  {key}: {card[key]}")
    return 0


#: the function that runs each subcommand
COMMANDS = {
    "generate": _cmd_generate,
    "tighten": _cmd_tighten,
    "relax": _cmd_relax,
    "train": _cmd_train,
    "fit": _cmd_fit,
    "evaluate": _cmd_evaluate,
    "calibrate": _cmd_calibrate,
    "residual": _cmd_residual,
    "plot": _cmd_plot,
    "audit-split": _cmd_audit_split,
    "models": _cmd_models,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .process import keep_freed_memory
    keep_freed_memory()      # the definet process is ours to tune; a library's caller's is not
    if args.threads and args.command not in WORKER_COMMANDS:
        import torch
        torch.set_num_threads(args.threads)
    new_folder = _first_missing(getattr(args, "out", None))
    code = 1
    try:
        with warnings.catch_warnings():     # restored when main returns
            warnings.showwarning = _one_line_warning(args.command)
            code = _run(args)
    finally:
        if code != 0 and new_folder is not None:
            # a command that failed before writing anything leaves no empty folder
            _remove_empty(Path(args.out), new_folder)
    return code


def _run(args) -> int:
    try:
        return COMMANDS[args.command](args)
    except BrokenPipeError:
        # the reader went away (``definet models -v | head``): not an error; point
        # stdout at devnull so the interpreter's final flush does not fail again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (ValueError, OSError, UnknownFileTypeError) as err:
        # Bad input is a message and exit code 2, never a traceback.
        print(f"definet {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"definet {args.command}: interrupted; finished work is saved",
              file=sys.stderr)
        return 130


def _one_line_warning(command: str):
    """A warning is one line for the user, without a source location."""
    def show(message, category, filename, lineno, file=None, line=None):
        print(f"definet {command}: warning: {message}", file=file or sys.stderr)
    return show


def _first_missing(path) -> Path | None:
    """The outermost folder of ``path`` that does not exist yet (None if it exists)."""
    if path is None or Path(path).exists():
        return None
    p = Path(path).absolute()
    while not p.parent.exists():
        p = p.parent
    return p


def _remove_empty(leaf: Path, top: Path) -> None:
    """Remove ``leaf`` and its parents up to ``top``, each only while empty."""
    p = leaf.absolute()
    while True:
        try:
            p.rmdir()                   # refuses a folder that holds anything
        except OSError:
            return
        if p == top:
            return
        p = p.parent


if __name__ == "__main__":
    raise SystemExit(main())
