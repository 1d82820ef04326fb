"""Checksums: SHA-256 everywhere, of arrays with their dtype and shape, and of JSON-able configs."""
from __future__ import annotations

import hashlib
import json

import numpy as np

__all__ = ["array_sha256", "config_sha256", "file_sha256", "sha256"]


def _update_array(digest, a) -> None:
    a = np.ascontiguousarray(a)
    digest.update(f"{a.dtype.str}{a.shape}".encode())
    digest.update(memoryview(a).cast("B") if a.size else b"")


def array_sha256(a: np.ndarray) -> str:
    """SHA-256 (hex) of an array's dtype, shape and C-order bytes: equal arrays of another dtype or
    shape get other digests."""
    digest = hashlib.sha256()
    _update_array(digest, a)
    return digest.hexdigest()


def config_sha256(config) -> str:
    """SHA-256 (hex) of a JSON-able value, keys sorted (the same dict in any order, the same digest)."""
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()


def sha256(config, *arrays: np.ndarray) -> str:
    """SHA-256 (hex) of a JSON-able config followed by arrays (each with its dtype and shape)."""
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode())
    for a in arrays:
        _update_array(digest, a)
    return digest.hexdigest()


def file_sha256(path) -> str:
    """SHA-256 (hex) of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
