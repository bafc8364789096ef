"""Argument groups that several ``definet`` subcommands share (cli_parser builds them).

Each function adds its options to one subparser, so a flag reads the same in
every command that has it.
"""
from __future__ import annotations

import argparse

from .calculators import CALCULATORS
from .match import DEFAULT_TOLERANCE

#: The calculator names every --calculator flag lists, from the one resolver.
CALCULATOR_NAMES = ", ".join(CALCULATORS) + " or module:function"


def tolerance_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE, metavar="TOL",
                   help="largest distance in Å of an atom from its host site; an atom "
                        "farther from every site is refused as an interstitial")


def csv_list(text: str) -> list[str]:
    return [t for t in text.split(",") if t]


def model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None,
                   help="shipped model name, checkpoint path, or a `definet fit` folder "
                        "(its model.pt) (default: shipped default)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument("--no-strict", action="store_true",
                   help="predict even for elements/defects outside the model card")
    p.add_argument("--uncertainty-policy", default=None, metavar="POLICY",
                   help="with an ensemble model, where its members disagree: none (the "
                        "raw mean), shrink:L, withhold:T or shrink:L+withhold:T "
                        "(default: the policy the model card names)")


INPUT_FORCES_HELP = ("forces at each sample's unrelaxed input, an .npz keyed by sample id "
                     "(experiments/force-input/forces.py); read by force_input models")


def data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", nargs="+", required=True,
                   help="data sources: generator folder, 2DMD folder, compact .extxyz.gz, "
                        "or relaxation files (with --host)")
    p.add_argument("--host", default=None, help="host for relaxation files")
    p.add_argument("--split-file", default=None,
                   help="split JSON (e.g. weights/<model>.split.json) to select --subset")
    p.add_argument("--subset", default="all", choices=("all", "train", "val", "test"),
                   help="which part of the split to use (with --split-file, or the "
                        "split recorded in the data)")
    p.add_argument("--where", action="append", default=[], metavar="KEY=VALUE",
                   help="keep samples whose info matches (e.g. supercell=12x12; repeatable)")
    p.add_argument("--input-forces", default=None, metavar="NPZ", help=INPUT_FORCES_HELP)


def recipe_args(p: argparse.ArgumentParser) -> None:
    """The data set's fields, shared by ``generate`` and ``fit`` (data/recipe.py)."""
    p.add_argument("--recipe", default=None, metavar="FILE",
                   help="recipe file (.toml or .json) with the data set's fields")
    p.add_argument("--host", default=None, metavar="FILE",
                   help="host crystal in any ASE-readable format (CIF, POSCAR, extxyz, "
                        "...); needs --supercell and --defects")
    p.add_argument("--supercell", default=None,
                   help="NxM tiles a 2D sheet (vacuum along c), NxMxK a bulk crystal; "
                        "N alone: NxN (default for built-ins: Table 1 of the paper)")
    p.add_argument("--defects", default=None,
                   help="defect types of --host, e.g. "
                        "vacancy:Ga,vacancy:N,substitution:Ga>Al")
    p.add_argument("--density", choices=("low", "high"), default=None,
                   help="low: 1-3 defects per structure; high: --concentrations "
                        "(default 2.5-12.5 %%) of the sites; default low, or high "
                        "with --concentrations")
    p.add_argument("--concentrations", default=None,
                   help="high-density defects per host site, e.g. 0.02,0.05")
    p.add_argument("--count", type=int, default=None,
                   help="low: structures per host; high: per concentration "
                        "(needed here or in the recipe)")
    p.add_argument("--calculator", default=None,
                   help=f"oracle: {CALCULATOR_NAMES} (default: chgnet)")
    cluster_args(p, 1)


def cluster_args(p: argparse.ArgumentParser, workers: int, what: str = "") -> None:
    """--workers and --scheduler: where the calculator's jobs run (data/engine.py)."""
    p.add_argument("--workers", type=int, default=workers,
                   help=f"local dask worker processes, one thread each{what}; 0 "
                        "relaxes in this process")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="run on an existing dask cluster: tcp://HOST:PORT or a "
                        "scheduler file (--workers is then unused)")


def fit_parser(sub) -> None:
    f = sub.add_parser(
        "fit", help="one command to a model: generate, split, train, evaluate (resumable)",
        description="Generate defect structures of a host file (as definet generate),\n"
        "split them (stratified), train DefiNet within --max-time and evaluate the\n"
        "best checkpoint on the test split against the Dummy. OUT then holds data/,\n"
        "run/ (best.pt, split.json, metrics.csv), model.pt (with its card) and\n"
        "test.json; use it with 'definet relax ... --model OUT'. Rerun the same\n"
        "command to resume.",
        epilog="example:\n"
        "  definet fit --host Si.vasp --supercell 2x2x2 \\\n"
        "      --defects vacancy:Si,substitution:Si>Ge --calculator chgnet \\\n"
        "      --count 200 --max-time 1800 --out si_model")
    recipe_args(f)
    f.add_argument("--seed", type=int, default=None,
                   help="seed of the defect sampling, the split and training (default 0)")
    f.add_argument("--config", default="default",
                   help="model preset (default, paper) or a JSON dict of DefiNetConfig "
                        "fields")
    f.add_argument("--max-time", type=float, default=None,
                   help="training time budget in s (default: until early stopping)")
    f.add_argument("--epochs", type=int, default=200, help="most training epochs")
    f.add_argument("--lr", type=float, default=1e-4, help="AdamW learning rate")
    f.add_argument("--batch-size", type=int, default=8, help="training batch size")
    f.add_argument("--device", default=None, help="cpu or cuda (default: cpu)")
    f.add_argument("--quiet", action="store_true", help="no progress bars")
    f.add_argument("--out", required=True, help="fit folder (resumes if it exists)")
