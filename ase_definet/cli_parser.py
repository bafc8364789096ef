"""The argument parser of the ``definet`` command: options, help texts, defaults.

:mod:`ase_definet.cli` runs the commands; this module only describes them.
"""
from __future__ import annotations

import argparse
import sys

from .cli_args import (CALCULATOR_NAMES, INPUT_FORCES_HELP, cluster_args, csv_list, data_args,
                       fit_parser, model_args, recipe_args, tolerance_arg)
from .trees import EXIT_SKIPPED


#: subcommands whose --threads means torch threads per worker process
WORKER_COMMANDS = ("generate", "tighten")


DESCRIPTION = """\
Pre-relax crystal point defects (vacancies and substitutions) in one step.

DefiNet, a graph neural network, predicts the relaxed positions of a defect
structure from its unrelaxed positions and its pristine host; a calculator
(CHGNet, EMT, ...) can then finish with a few residual ionic steps. Start with

  definet relax POSCAR --host MoS2          # a built-in host, or your own pristine cell
  definet models                            # the installed models and what they cover

The other commands make training data, train and evaluate models."""


#: Exit status when every output was written but some residual relaxation
#: stopped at --steps without reaching --fmax.
EXIT_NOT_CONVERGED = 3


EPILOG = f"""\
exit status:
  0    success
  1    an unexpected error (a bug: please report the traceback)
  2    bad input or usage; the message names the file or option
  {EXIT_NOT_CONVERGED}    definet relax: outputs written, but some residual relaxation did
       not converge within --steps
  {EXIT_SKIPPED}    definet relax TREE: the others written, but some POSCARs were skipped
  130  interrupted (finished work is saved)

Run 'definet COMMAND --help' for the options of one command."""


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter,
                     argparse.RawDescriptionHelpFormatter):
    """Shows each option's default, except where there is none worth showing."""

    def _get_help_string(self, action):
        text, default = action.help or "", action.default
        # by identity: a default of 0 is worth showing, False (a flag's) is not
        if ("default" in text or default is None or default is False
                or default is argparse.SUPPRESS or default == []):
            return text
        return super()._get_help_string(action)


def _version() -> str:
    import ase
    import torch
    from . import __version__
    return (f"ase_definet {__version__} (torch {torch.__version__}, ase {ase.__version__}, "
            f"python {sys.version.split()[0]})")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="definet", description=DESCRIPTION, epilog=EPILOG,
                                formatter_class=_HelpFormatter)
    p.add_argument("--version", action="version", version=_version(),
                   help="print the versions of ase_definet, torch and ase, and exit")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    g = sub.add_parser(
        "generate", help="make defect structures and relax them with an oracle "
        "calculator (resumable)",
        description="Make defect structures of a built-in host (--materials) or of any\n"
        "host file (--host), relax them with an oracle calculator and store them\n"
        "(resumable: rerun the same command to continue).\n\n"
        "The fields of a data set can come from a recipe file (--recipe, TOML or\n"
        "JSON, field names as the flags: host, supercell, defects, density,\n"
        "concentrations, count, seed, calculator, fmax, steps); flags given\n"
        "override it. A bad recipe is refused before any work, and no folder is\n"
        "made. Jobs run on dask.distributed: a local cluster of --workers\n"
        "processes, or an existing cluster with --scheduler (docs/distributed.md).",
        epilog="examples:\n"
        "  definet generate --host GaN.cif --supercell 3x3x3 \\\n"
        "      --defects vacancy:Ga,vacancy:N,substitution:Ga>Al \\\n"
        "      --concentrations 0.02,0.05 --count 10 --out gan\n"
        "  definet generate --host MoTe2.cif --supercell 6x6 "
        "--defects vacancy:Te --count 50 --out mote2\n"
        "  definet generate --recipe recipe.toml --out DIR\n"
        "  definet generate --materials MoS2 --count 100 --scheduler tcp://HOST:8786 "
        "--out DIR")
    recipe_args(g)
    g.add_argument("--materials", type=csv_list, default=None,
                   help="comma-separated built-in hosts (MoS2,WSe2,hBN,GaSe,InSe,BP); "
                        "default MoS2,WSe2 when no --host is given")
    g.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    g.add_argument("--seed", type=int, default=None,
                   help="random seed of the defect sampling (default 0)")
    g.add_argument("--fmax", type=float, default=None,
                   help="oracle force threshold in eV/Å (default 0.01)")
    g.add_argument("--steps", type=int, default=None,
                   help="oracle step cap (default 1000); runs that hit it are kept "
                        "out of training")
    g.add_argument("--limit", type=int, default=None,
                   help="stop after this many new structures")
    g.add_argument("--seed-scheme", choices=("v2", "legacy"), default=None,
                   help="seed streams: v2 (material in every stream, full-symmetry "
                        "duplicates) or legacy (stores made before); default: the "
                        "store's own, v2 for a new store")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    g.add_argument("--out", required=True, help="output folder (resumes if it exists)")

    t = sub.add_parser("tighten", help="relax the labels of a generator store further, to "
                       "a tighter fmax, into a new store (resumable)")
    t.add_argument("source", help="generator store folder")
    t.add_argument("--out", required=True, help="output folder (resumes if it exists)")
    t.add_argument("--fmax", type=float, default=0.001, help="eV/Å (default 0.001)")
    t.add_argument("--steps", type=int, default=4000, help="step cap of the continuation")
    t.add_argument("--optimizer", default="FIRE",
                   help="ASE optimizer of the continuation (default FIRE, the protocol's)")
    t.add_argument("--calculator", default=None,
                   help="the source's oracle (default; another one is refused)")
    t.add_argument("--where", action="append", default=[], metavar="KEY=VALUE",
                   help="keep frames whose info matches (repeatable)")
    t.add_argument("--split-file", default=None, help="split JSON: keep the ids of --subset")
    t.add_argument("--subset", type=csv_list, default=["train", "val", "test"],
                   help="comma-separated subsets of --split-file (default all three)")
    cluster_args(t, 1)
    t.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    t.add_argument("--limit", type=int, default=None, help="stop after this many new labels")
    t.add_argument("--quiet", action="store_true", help="no progress bar")

    r = sub.add_parser(
        "relax", help="pre-relax defect structures (any ASE format)",
        description="Pre-relax defect structures in one DefiNet step, optionally followed\n"
                    "by residual steps of a calculator. One line per structure reports the\n"
                    "defects found, the largest move and (with --calculator) the residual\n"
                    "steps and whether they converged; a total line follows.",
        epilog="outputs:\n"
               "  extxyz and traj keep each structure's record in its frame's info\n"
               "  (definet_converged, definet_residual_steps, definet_max_move, ...);\n"
               "  formats that cannot (vasp, cif, ...) get it in OUT.definet.json\n"
               "  beside the output OUT.\n\n"
               "exit status:\n"
               "  0 success; 2 bad input (the message names the file);\n"
               f"  {EXIT_NOT_CONVERGED} all outputs written, but some residual relaxation "
               "stopped at\n    --steps without reaching --fmax (listed on stderr);\n"
               "  4 a TREE folder: the others written, but some POSCARs were skipped\n"
               "    (an interstitial, an atom beyond --tolerance; reasons under the table).\n\n"
               "defect-tool folders (doped, ShakeNBreak; docs/defect-tools.md):\n"
               "  definet relax TREE --host BULK --inplace   writes each POSCAR back and\n"
               "    keeps the original as POSCAR.unrelaxed (a rerun starts from it again\n"
               "    and never overwrites it); -o DIR writes a mirror tree instead.")
    r.add_argument("inputs", nargs="+",
                   help="structure files (multi-frame files allowed), or one folder: "
                        "every POSCAR under it (a doped or ShakeNBreak tree)")
    r.add_argument("--host", required=True,
                   help="pristine host: your own pristine cell (a file: supercell or "
                        "unit cell) or a built-in name (MoS2, WSe2, hBN, GaSe, InSe, BP)")
    model_args(r)
    r.add_argument("-o", "--output", default=None,
                   help="output file (default: relaxed.extxyz); its extension picks the "
                        "ASE format; several structures in a one-structure format go to "
                        "OUT_0001.ext, ...; for a folder input, the mirror folder")
    r.add_argument("--inplace", action="store_true",
                   help="for a folder input: write each POSCAR back, the original kept "
                        "beside it as POSCAR.unrelaxed")
    r.add_argument("--format", default=None, help="ASE output format (default: from -o)")
    r.add_argument("--batch-size", type=int, default=8,
                   help="structures per forward pass")
    tolerance_arg(r)
    r.add_argument("--calculator", default=None,
                   help=f"finish with residual steps of this calculator ({CALCULATOR_NAMES}; "
                        "default: none, DefiNet only)")
    r.add_argument("--on-violation", default="revert", choices=("revert", "keep", "calculator"),
                   help="a prediction that fails the sanity checks (atoms too close, an "
                        "atom flung away): restore the input positions, keep it "
                        "(flagged), or restore them for the calculator to relax")
    r.add_argument("--fmax", type=float, default=0.05,
                   help="force threshold of the residual steps in eV/Å (with --calculator)")
    r.add_argument("--steps", type=int, default=1000,
                   help="cap on the residual steps per structure (with --calculator)")
    r.add_argument("--start", default="prediction", choices=("prediction", "lower"),
                   help="with --calculator: start the residual steps from the prediction, "
                        "or from the lower in energy of the prediction and the input (one "
                        "extra calculator call; never a start above doing nothing)")
    cluster_args(r, 0, " for the residual steps (with --calculator; the "
                  "prediction stays here)")
    r.add_argument("--quiet", action="store_true",
                   help="no progress bar and no per-structure lines (the total line "
                        "and the output files are still printed)")

    t = sub.add_parser("train", help="train DefiNet (resumes from OUT/last.pt)")
    t.add_argument("--data", nargs="+", required=True,
                   help="data sources: generator folder, 2DMD folder, compact .extxyz.gz, "
                        "or relaxation files (with --host)")
    t.add_argument("--host", default=None, help="host for relaxation files")
    t.add_argument("--out", required=True, help="run folder")
    t.add_argument("--input-forces", default=None, metavar="NPZ", help=INPUT_FORCES_HELP)
    t.add_argument("--config", default="default",
                   help="preset (default, paper) or a JSON dict of DefiNetConfig fields")
    t.add_argument("--split-file", default=None, help="use this split instead of a new one")
    t.add_argument("--unassigned", default="drop", choices=("drop", "split"),
                   help="samples the split file does not list: leave them out (drop), or "
                        "split them, keeping the file's assignments (split: a grown data set)")
    t.add_argument("--init", default=None, metavar="CHECKPOINT",
                   help="start from this trained model's weights (a file or shipped name's "
                        "file); its training record goes into the new checkpoints")
    t.add_argument("--split-seed", type=int, default=0,
                   help="seed of a new train/val/test split")
    t.add_argument("--exclude", action="append", default=[], metavar="KEY=VALUE",
                   help="leave matching samples out entirely (e.g. supercell=12x12)")
    t.add_argument("--epochs", type=int, default=200, help="most training epochs")
    t.add_argument("--lr", type=float, default=1e-4, help="AdamW learning rate")
    t.add_argument("--batch-size", type=int, default=8, help="global batch size")
    t.add_argument("--ema-decay", type=float, default=0.999,
                   help="decay of the weight average used for validation and saving")
    t.add_argument("--early-stop", type=int, default=10,
                   help="stop after this many validations without improvement")
    t.add_argument("--clip-norm", type=float, default=150.0, help="gradient clipping norm")
    t.add_argument("--weight-decay", type=float, default=0.0, help="AdamW weight decay")
    t.add_argument("--balance", default="none", choices=("none", "group"),
                   help="group: divide each structure's loss (and the validation score) "
                        "by its material/density group's Dummy MAE, so groups that move "
                        "little count as much as those that move most")
    t.add_argument("--input-noise", type=float, default=0.0, metavar="SIGMA",
                   help="std (Å) of Gaussian noise added to the unrelaxed positions in "
                        "each training step, the relaxed target kept (default 0: none)")
    t.add_argument("--seed", type=int, default=0, help="seed of initialisation and shuffling")
    t.add_argument("--max-time", type=float, default=None, help="stop after this many s")
    t.add_argument("--device", default=None, help="cpu or cuda (default: cpu)")
    t.add_argument("--deterministic", action="store_true",
                   help="deterministic kernels (reproducible on GPU, slower)")
    t.add_argument("--amp", action="store_true",
                   help="bf16 mixed precision (CUDA only; ignored on CPU)")
    t.add_argument("--restart", action="store_true", help="ignore OUT/last.pt")
    t.add_argument("--quiet", action="store_true", help="no progress bar")

    fit_parser(sub)

    e = sub.add_parser("evaluate", help="MAE and A3-A6 of a model against the Dummy")
    model_args(e)
    data_args(e)
    e.add_argument("--batch-size", type=int, default=8, help="structures per forward pass")
    tolerance_arg(e)
    e.add_argument("--json", default=None, help="write the report here")
    e.add_argument("--quiet", action="store_true", help="no progress bar")

    c = sub.add_parser("calibrate", help="join ensemble members, calibrate sigma and "
                       "choose the do-no-harm policy on a validation split")
    c.add_argument("members", nargs="+", help="member checkpoints (their best.pt)")
    c.add_argument("--data", nargs="+", required=True, help="labelled data sources")
    c.add_argument("--split-file", required=True,
                   help="split JSON: its val part calibrates, its test part is scored")
    c.add_argument("--holdout", action="append", default=[], metavar="KEY=VALUE",
                   help="samples kept out of val/test and scored as the 'holdout' set "
                        "(e.g. supercell=12x12; repeatable)")
    c.add_argument("--out", required=True,
                   help="folder for best.pt (the ensemble with its uncertainty card), "
                        "calibration.json, test.json, test_none.json, holdout*.json")
    c.add_argument("--batch-size", type=int, default=8, help="structures per forward pass")
    c.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    c.add_argument("--quiet", action="store_true", help="no progress bar")

    s = sub.add_parser("residual", help="residual ionic steps from unrelaxed vs predicted")
    model_args(s)
    data_args(s)
    s.add_argument("--calculator", default="chgnet",
                   help=f"calculator of the residual steps ({CALCULATOR_NAMES})")
    s.add_argument("--fmax", default="0.05,0.01",
                   help="comma-separated force thresholds in eV/Å")
    s.add_argument("--steps", type=int, default=1000, help="step cap per relaxation")
    tolerance_arg(s)
    s.add_argument("-n", "--n", type=int, default=20, help="number of structures")
    s.add_argument("--per-group", type=int, default=None, metavar="K",
                   help="the first K structures of each material/density group (in "
                        "store order; then -n caps the total)")
    s.add_argument("--json", default=None,
                   help="report file, rewritten after every structure")
    cluster_args(s, 0)
    s.add_argument("--resume", action="store_true",
                   help="keep the structures already in --json and relax only the rest")
    s.add_argument("--keep-going", action="store_true",
                   help="a calculator error in one structure (e.g. an SCF that does not "
                        "converge) records it as failed and goes on, instead of ending "
                        "the study; --resume does not retry recorded failures")
    s.add_argument("--quiet", action="store_true", help="no progress bar")

    pl = sub.add_parser("plot", help="learning curves, parity, error vs distance, top views")
    model_args(pl)
    pl.add_argument("--data", nargs="+", default=None,
                    help="data sources for parity, error and top-view plots (with a model)")
    pl.add_argument("--host", default=None, help="host for relaxation files")
    pl.add_argument("--split-file", default=None, help="split JSON to select --subset")
    pl.add_argument("--subset", default="all", choices=("all", "train", "val", "test"),
                    help="which part of the split to plot")
    pl.add_argument("--where", action="append", default=[], metavar="KEY=VALUE",
                    help="keep samples whose info matches (repeatable)")
    pl.add_argument("--metrics", default=None, help="metrics.csv of a training run")
    pl.add_argument("--reliability", nargs="?", const="", default=None, metavar="SOURCE",
                    help="reliability diagram of an ensemble's sigma (reliability.png) from "
                         "a calibration.json, a model card JSON, a checkpoint or a shipped "
                         "model name; alone: the card of --model")
    pl.add_argument("--groups", nargs="*", default=None, metavar="GROUP",
                    help="with --reliability: also one curve per material/density group "
                         "(all, or those named)")
    pl.add_argument("--raw", action="store_true",
                    help="with --reliability: also the uncalibrated curves (dashed)")
    pl.add_argument("-n", "--n", type=int, default=1, help="structures to draw")
    pl.add_argument("--out", default="plots", help="output folder")
    pl.add_argument("--quiet", action="store_true", help="no progress bar")

    a = sub.add_parser("audit-split", help="count twins that sit in different splits "
                       "(symmetry, cross-material, exact duplicates) and each stratum")
    a.add_argument("data", help="data set (generator store, 2DMD folder, ...)")
    a.add_argument("--split-file", required=True, help="split JSON to audit")
    a.add_argument("--json", default=None, metavar="OUT", help="also write the counts here")

    m = sub.add_parser("models", help="list shipped models and their cards")
    m.add_argument("-v", "--verbose", action="store_true",
                   help="print whole cards as text (metrics and the targets they meet or miss)")
    m.add_argument("--json", action="store_true", help="print whole cards as JSON")
    m.add_argument("--add", default=None, metavar="CHECKPOINT",
                   help="ship a trained checkpoint (with --name and --card)")
    m.add_argument("--name", default=None, help="name of the model shipped with --add")
    m.add_argument("--card", default=None, help="model card JSON file")
    m.add_argument("--out", default=None, help="weights folder (default: the repo's weights/)")
    m.add_argument("--default", action="store_true", help="make it the default model")
    for name, command in sub.choices.items():
        command.formatter_class = _HelpFormatter       # every subcommand shows defaults
        if name not in WORKER_COMMANDS:   # these have --threads per worker
            command.add_argument("--threads", type=int, default=None,
                                 help="torch CPU threads (default: torch's choice)")
    return p
