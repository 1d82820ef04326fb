"""The ``tangentless`` command line: :func:`main` (the console script) and :func:`build_parser`.

One module per command group: :mod:`.gram` (``gram``: a Myrtle kernel matrix and its cost),
:mod:`.models` (``quickstart``, ``fit``, ``predict``), :mod:`.bench` (``bench small-data | cifar10 |
imagenet``: the experiments); :mod:`.arguments` holds the argument types and helpers they share.
Each command sets ``run`` (its handler) and, where it reports errors through its parser, ``parser``.
"""
from __future__ import annotations

import argparse
import sys

from . import bench, gram, models

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tangentless",
        description="Theory-grounded baselines for image classification: compositional kernels, "
                    "scattering and the solvers that fit them.")
    commands = parser.add_subparsers(dest="command", required=True)
    gram.add_command(commands)
    models.add_commands(commands)
    bench.add_command(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"tangentless {args.command}: error: {err}", file=sys.stderr)
        return 2
