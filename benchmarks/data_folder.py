"""The data folder (standard library only, so the command line's parser can name it without
loading the dataset readers): :func:`data_dir` and :func:`resolve_data`, re-exported by
:mod:`tangentless.benchmarks.datasets`."""
from __future__ import annotations

import os
import pathlib


def data_dir(root: str | os.PathLike | None = None) -> pathlib.Path:
    """The data folder, where datasets are looked for and downloaded, in this order: ``root`` where
    given (a function's ``root=``, a command's data option); else ``$TANGENTLESS_DATA`` where set;
    else the user cache folder ``$XDG_CACHE_HOME/tangentless`` (``~/.cache/tangentless`` when
    XDG_CACHE_HOME is unset or not an absolute path, as the XDG spec says). Not created here.
    Every loader, command and benchmark script finds its data through this function (or
    :func:`resolve_data`); none assumes a folder relative to the current directory or the source."""
    if root is not None:
        return pathlib.Path(root).expanduser()
    if os.environ.get("TANGENTLESS_DATA"):
        return pathlib.Path(os.environ["TANGENTLESS_DATA"]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME", "")
    base = pathlib.Path(cache) if os.path.isabs(cache) else pathlib.Path.home() / ".cache"
    return base / "tangentless"


def resolve_data(relative: str | os.PathLike, root: str | os.PathLike | None = None) -> pathlib.Path:
    """``relative`` (e.g. ``"cifar10"`` for the exact CIFAR-10 subset's train.npz and test.npz,
    ``"cifar10_jpeg"``, ``"imagenet/jpeg_subset100"``) inside :func:`data_dir(root) <data_dir>`:
    an explicit ``root`` first, then ``$TANGENTLESS_DATA``, then the user cache folder."""
    return data_dir(root) / relative
