"""On-disk cache of computed features, keyed by a configuration and a checksum of the input.

One ``.npz`` file per entry, named by the SHA-256 of the configuration (a JSON-able dict) and of
the input (dtype, shape and bytes), holding the array, its SHA-256 and the configuration. Writes
go to a temporary file in the same folder, then ``os.replace`` (atomic): an interrupted write
leaves no entry. An entry that cannot be read, or whose array or configuration does not match its stored
checksum, is recomputed with a warning and never returned.
"""
from __future__ import annotations

import json
import pathlib
import warnings
import zipfile
from typing import Callable

import numpy as np

from ..kernels._shared.atomic import atomic_write
from ..kernels._shared.digest import array_sha256, sha256

__all__ = ["cache_path", "cached", "load", "save"]


def _config_json(config: dict) -> str:
    return json.dumps(config, sort_keys=True)


def cache_path(cache_dir, config: dict, data: np.ndarray) -> pathlib.Path:
    """The entry for ``config`` and ``data`` (its dtype, shape and bytes): ``<SHA-256>.npz``."""
    return pathlib.Path(cache_dir).expanduser() / f"{sha256(config, data)}.npz"


class CorruptEntry(Exception):
    """A cache file that cannot be read or fails its checksum."""


def load(path: pathlib.Path, config: dict) -> np.ndarray:
    """The array stored at ``path``; CorruptEntry if unreadable or not matching its checksum."""
    try:
        with np.load(path, allow_pickle=False) as f:
            array, digest, stored = f["array"], str(f["sha256"]), str(f["config"])
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
        raise CorruptEntry(f"cannot read it ({type(err).__name__}: {err})") from None
    if array_sha256(array) != digest:
        raise CorruptEntry("the stored array does not match its checksum")
    if stored != _config_json(config):
        raise CorruptEntry("it holds another configuration")
    return array


def save(path: pathlib.Path, array: np.ndarray, config: dict) -> None:
    """Write atomically: a temporary file in the same folder, fsync, then os.replace."""
    atomic_write(path, lambda f: np.savez(f, array=array, sha256=np.array(array_sha256(array)),
                                          config=np.array(_config_json(config))), fsync=True)


def cached(cache_dir, config: dict, data: np.ndarray,
           compute: Callable[[], np.ndarray]) -> np.ndarray:
    """compute()'s result for (config, data): loaded from ``cache_dir`` when present and intact,
    else computed and stored (a failed write warns and still returns the result)."""
    path = cache_path(cache_dir, config, data)
    if path.exists():
        try:
            return load(path, config)
        except CorruptEntry as err:
            warnings.warn(f"scattering cache entry {path} is corrupt: {err}; recomputing",
                          RuntimeWarning, stacklevel=3)
    result = compute()
    try:
        save(path, result, config)
    except OSError as err:
        warnings.warn(f"could not write the scattering cache entry {path}: {err}",
                      RuntimeWarning, stacklevel=3)
    return result
