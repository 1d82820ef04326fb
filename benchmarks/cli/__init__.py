"""The ``tangentless`` command line: :func:`main` (the console script) and :func:`build_parser`.

One module per command group: :mod:`.gram` (``gram``: a Myrtle kernel matrix and its cost),
:mod:`.models` (``quickstart``, ``fit``, ``predict``), :mod:`.bench` (``bench small-data | cifar10 |
imagenet``: the experiments), :mod:`.shifts` (``shifts``: shifted test sets); :mod:`.arguments` holds the argument types and helpers they share.
Each command sets ``run`` (its handler) and, where it reports errors through its parser, ``parser``.
"""
from __future__ import annotations

import argparse
import pathlib
import sys

from . import bench, gram, models, shifts

__all__ = ["USER_ERRORS", "build_parser", "main"]

#: what the library raises for input a user can get wrong: bad values and files (ValueError, and
#: its ModelFileError, ChecksumError, NotPositiveDefiniteError), unreadable, missing, undecodable
#: or unreachable things (OSError: FileNotFoundError, DatasetNotAvailable, ImageDecodeError,
#: PermissionError, TimeoutError). Reported in one line, exit status 2; anything else is a bug and
#: keeps its traceback.
USER_ERRORS = (ValueError, OSError)


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr (exit status 2), without the usage."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class _Version(argparse.Action):
    """``--version``: print the installed version (``tangentless.__version__``'s source, the
    distribution's metadata, read only when asked) and exit."""

    def __init__(self, option_strings, dest, help="print the version and exit"):
        super().__init__(option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, nargs=0,
                         help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        from importlib.metadata import version
        print(f"{parser.prog} {version('tangentless')}")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="tangentless",
        description="Theory-grounded baselines for image classification: compositional kernels, "
                    "scattering and the solvers that fit them.")
    parser.add_argument("--version", action=_Version)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    gram.add_command(commands)
    models.add_commands(commands)
    bench.add_command(commands)
    shifts.add_command(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:   # before the missing-command check: a top-level --bogus is named as such
        getattr(args, "parser", parser).error(f"unrecognized arguments: {' '.join(unknown)}")
    if args.command is None:
        parser.error("choose a command: gram, quickstart, fit, predict, bench or shifts")
    absent = _absent_folders(getattr(args, "out", None))
    status = 2
    try:
        status = args.run(args)
        return status
    except USER_ERRORS as err:
        message = " ".join(str(err).split()) or type(err).__name__
        print(f"{getattr(args, 'parser', parser).prog}: error: {message}", file=sys.stderr)
        return 2
    finally:   # also on a parser error or an interruption: a refused run leaves no empty --out
        if status != 0:
            _remove_empty(absent)


def _absent_folders(out) -> list[pathlib.Path]:
    """``out`` and those of its parents that do not exist yet, innermost first ([] where ``out``
    is not a path or already exists): what a command may create and a failed one removes."""
    if not isinstance(out, pathlib.Path):
        return []
    return [p for p in (out, *out.parents) if not p.exists()]


def _remove_empty(folders: list[pathlib.Path]) -> None:
    """Remove each of ``folders`` (innermost first) that is now an empty folder; a folder holding
    anything, results of an interrupted run included, is kept, and so are those above it."""
    for folder in folders:
        if not folder.is_dir() or any(folder.iterdir()):
            return
        folder.rmdir()
