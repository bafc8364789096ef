"""The ``definet`` command line: parse arguments, call the library, print.

Subcommands: relax, generate, train, evaluate, residual, plot, models, benchmark.
No logic lives here beyond argument handling and printing.
"""
from __future__ import annotations

import argparse
import json
import sys


def _csv(text: str) -> list[str]:
    return [t for t in text.split(",") if t]


def _cmd_generate(args) -> int:
    from .data.generate import generate
    summary = generate(args.out, args.materials, args.density, args.count,
                       supercell=args.supercell, calculator=args.calculator,
                       workers=args.workers, threads=args.threads, seed=args.seed,
                       fmax=args.fmax, steps=args.steps, progress=not args.quiet,
                       limit=args.limit)
    print(json.dumps(summary))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="definet", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="make defect structures and relax them with an "
                       "oracle calculator (resumable)")
    g.add_argument("--materials", type=_csv, default=["MoS2", "WSe2"],
                   help="comma-separated built-in hosts (MoS2,WSe2,hBN,GaSe,InSe,BP)")
    g.add_argument("--density", choices=("low", "high"), default="low")
    g.add_argument("--count", type=int, required=True,
                   help="low: structures per material; high: per concentration")
    g.add_argument("--supercell", type=int, default=None,
                   help="n for an n×n supercell (default: Table 1 of the paper)")
    g.add_argument("--calculator", default="chgnet",
                   help="chgnet, sevenn, emt or module:function")
    g.add_argument("--workers", type=int, default=1)
    g.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--fmax", type=float, default=0.01)
    g.add_argument("--steps", type=int, default=1000)
    g.add_argument("--limit", type=int, default=None,
                   help="stop after this many new structures")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    g.add_argument("--out", required=True, help="output folder (resumes if it exists)")
    g.set_defaults(func=_cmd_generate)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ValueError as err:
        print(f"definet {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"definet {args.command}: interrupted; finished work is saved",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
