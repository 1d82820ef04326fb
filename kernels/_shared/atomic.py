"""Atomic file writes, shared by every module that stores results, caches or checkpoints."""
from __future__ import annotations

import os
import pathlib
from typing import BinaryIO, Callable


def atomic_write(path, write: Callable[[BinaryIO], object], *, fsync: bool = False) -> pathlib.Path:
    """Call ``write(file)`` on a new temporary file next to ``path`` (a unique ``.<name>.<pid>.<hex>.part``
    in the same folder, created with the umask's permissions), then ``os.replace`` it onto ``path``:
    ``path`` is either absent/old or complete, never partial. The temporary file is removed on any
    failure or interrupt. ``fsync=True`` flushes the data to disk before the rename. Creates the folder."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.part")
    try:
        with open(tmp, "xb") as file:
            write(file)
            if fsync:
                file.flush()
                os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
