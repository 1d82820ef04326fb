"""Argument types and helpers the ``tangentless`` commands share: paths that must exist, lists of
integers and of methods, ``--set METHOD.NAME=VALUE`` settings and the parameters they give, and the
``--data [--test]`` training and test sets. Errors go through the command's parser (``args.parser``)."""
from __future__ import annotations

import argparse
import json
import os
import pathlib

from ...kernels._shared.defaults import EXPERIMENT_PARAMS, METHODS
from ..data_folder import resolve_data

#: the exact CIFAR-10 subset (train.npz, test.npz), relative to the data folder
#: (:func:`~tangentless.benchmarks.data_folder.resolve_data`)
CIFAR_SUBSET = "cifar10"


def existing_file(text: str) -> pathlib.Path:
    path = pathlib.Path(text).expanduser()
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{path} is a folder, expected a file")
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"no such file: {path}")
    return path


def _writable_folder_problem(folder: pathlib.Path) -> str | None:
    """Why files cannot be written into ``folder`` (an existing path), or None."""
    if not folder.is_dir():
        return f"{folder} is not a folder"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"folder {folder} is not writable"
    return None


def output_file(args, option: str, suffixes: tuple[str, ...] | None = None,
                folder_suffixes: tuple[str, ...] = ()) -> pathlib.Path | None:
    """The output path of ``--option`` (None where not given), checked before any work: a parser
    error unless it ends in one of ``suffixes`` (where given), is not an existing folder (unless
    it ends in one of ``folder_suffixes``: a store such as .zarr), and the folder it goes in
    exists and is writable (a missing folder is not created)."""
    path = getattr(args, option.lstrip("-").replace("-", "_"))
    if path is None:
        return None
    if suffixes and path.suffix not in suffixes:
        args.parser.error(f"{option} {path}: use a {' or '.join(suffixes)} file name")
    if path.is_dir() and path.suffix not in folder_suffixes:
        args.parser.error(f"{option} {path} is a folder, expected a file name")
    parent = path.parent
    if not parent.exists():
        existing = next(p for p in parent.parents if p.exists())
        args.parser.error(f"{option} {path}: " + (f"folder {parent} does not exist" if existing.is_dir()
                                                  else f"{existing} is not a folder"))
    problem = _writable_folder_problem(parent)
    if problem:
        args.parser.error(f"{option} {path}: {problem}")
    return path


def existing_folder(text: str) -> pathlib.Path:
    path = pathlib.Path(text).expanduser()
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"no such folder: {path}")
    return path


def positive_ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def methods(text: str) -> tuple[str, ...]:
    names = tuple(m.strip() for m in text.split(","))
    unknown = [m for m in names if m not in METHODS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown method(s) {unknown}; choose from {', '.join(METHODS)}")
    return names


#: the spellings of a bool value in --set (JSON's true/false, and Python's)
BOOLS = {"true": True, "True": True, "false": False, "False": False}


def setting(text: str) -> tuple[str, str, object]:
    """'cnn.epochs=50' -> ("cnn", "epochs", 50); values are true/false (True/False), JSON (0.1,
    [1, 2]) or text; their types are checked against the parameters' by ``method_params``."""
    key, sep, value = text.partition("=")
    method, dot, name = key.partition(".")
    if not (sep and dot and method and name):
        raise argparse.ArgumentTypeError(f"expected METHOD.NAME=VALUE (e.g. cnn.epochs=50), got {text!r}")
    if method not in METHODS:
        raise argparse.ArgumentTypeError(f"unknown method {method!r} in {text!r}; choose from "
                                         f"{', '.join(METHODS)}")
    if value in BOOLS:
        return method, name, BOOLS[value]
    try:
        parsed = json.loads(value)
    except (json.JSONDecodeError, RecursionError):
        parsed = value
    return method, name, parsed


def set_help() -> str:
    names = "; ".join(f"{m}: {', '.join(p)}" for m, p in EXPERIMENT_PARAMS.items())
    return ("change one method parameter, e.g. --set cnn.epochs=50 --set kernel.flip=false "
            f"(repeatable; values are JSON or text). Parameters: {names}")


def method_settings(args, base: dict | None = None) -> dict:
    """Per-method parameters: defaults, then ``base`` overrides, then the --set settings;
    a parser error for an unknown parameter."""
    from ..experiments.methods import all_params
    overrides = {m: dict((base or {}).get(m, {})) for m in METHODS}
    for method, name, value in getattr(args, "set", None) or []:
        overrides[method][name] = value
    try:
        return all_params(overrides)
    except ValueError as err:
        args.parser.error(f"--set: {err}")


def grid_setting(text: str) -> tuple[str, str, list]:
    """'cnn.lr=[0.03,0.1]' -> ("cnn", "lr", [0.03, 0.1]): a selection grid's values, a JSON list."""
    method, name, value = setting(text)
    if not isinstance(value, list):
        raise argparse.ArgumentTypeError(f"expected METHOD.NAME=[VALUE, ...] (a JSON list, e.g. "
                                         f"cnn.lr=[0.03,0.1]), got {text!r}")
    return method, name, value


def selection_grids(args, methods_run, base: dict | None = None) -> dict:
    """Per-method selection grids: ``base`` (default ``SELECTION_GRIDS`` of ``methods_run``),
    without every parameter fixed by --set, then the --grid settings (``[]`` removes a parameter
    from the grid)."""
    from ..experiments.selection import default_grids
    grids = ({m: {k: list(v) for k, v in g.items()} for m, g in base.items()} if base is not None
             else default_grids(methods_run))
    for method, name, _ in getattr(args, "set", None) or []:
        grids.get(method, {}).pop(name, None)
    for method, name, values in getattr(args, "grid", None) or []:
        if method in grids:
            if values:
                grids[method][name] = values
            else:
                grids[method].pop(name, None)
    return grids


def train_test(args) -> tuple[tuple, tuple, str]:
    """(train images, labels), (test images, labels) and a description from --data [--test] (the
    files' folder and names and their image counts, no machine paths); without --data, the exact
    CIFAR-10 subset in the data folder."""
    from ..datasets import load_npz_images
    data = args.data
    default = resolve_data(CIFAR_SUBSET)
    if data is None:
        if not default.is_dir():
            args.parser.error(f"no data given and the exact CIFAR-10 subset is not at {default} "
                              "($TANGENTLESS_DATA/cifar10, or ~/.cache/tangentless/cifar10 where "
                              "$TANGENTLESS_DATA is unset): pass --data FOLDER (with train.npz and "
                              "test.npz) or --data TRAIN.npz --test TEST.npz")
        data = default
    if not data.exists():
        args.parser.error(f"--data {data}: no such file or folder")
    if data.is_dir():
        train_path, test_path = data / "train.npz", data / "test.npz"
        missing = [p for p in (train_path, test_path) if not p.is_file()]
        if missing:
            args.parser.error(f"--data {data}: expected train.npz and test.npz there; missing "
                              f"{', '.join(p.name for p in missing)}")
    elif getattr(args, "test", None) is None:
        args.parser.error(f"--data {data} is a file: also pass --test TEST.npz")
    else:
        train_path, test_path = data, args.test
    train, test = load_npz_images(train_path), load_npz_images(test_path)
    for path, (_, labels) in ((train_path, train), (test_path, test)):
        if labels is None:
            args.parser.error(f"{path} has no 'labels' array")
    # what the data are, without this machine's paths (reports and plots travel)
    files = (f"{train_path.parent.name}/{train_path.name} ({len(train[1])} images), "
             f"{test_path.parent.name}/{test_path.name} ({len(test[1])} images)")
    name = f"exact CIFAR-10 subset: {files}" if data == default else files
    return train, test, name


def report_folder(args) -> pathlib.Path:
    """--out, created (with missing parents) before any work; a parser error where it, or the
    nearest existing folder above it, is not a writable folder."""
    out = args.out
    if out.exists() and not out.is_dir():
        args.parser.error(f"--out {out} exists and is not a folder")
    existing = next(p for p in (out, *out.parents) if p.exists())
    problem = _writable_folder_problem(existing)
    if problem:
        args.parser.error(f"--out {out}: {problem}")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        args.parser.error(f"--out {out}: cannot create the folder ({err.strerror})")
    return out


def official_indices(path: pathlib.Path):
    """The ``index`` array (official indices) of a test .npz, or None where it has none."""
    import numpy as np
    with np.load(path, allow_pickle=False) as data:
        return data["index"] if "index" in data.files else None
