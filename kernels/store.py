"""Gram matrices on disk: a Zarr array whose chunks are the engine's blocks, with a record of the
finished blocks, so that an interrupted computation resumes where it stopped (``gram(store=)``).

Layout of ``k.zarr`` (a Zarr v3 array at the root: ``zarr.open_array("k.zarr")`` is K):

- ``zarr.json``: shape (n, m), chunks (row_length, col_length) = the engine's blocks, float64 or
  float32, fill value NaN (an unfinished block reads as NaN, which the solvers refuse), a CRC32C
  checksum on every chunk (any Zarr reader fails on a corrupted chunk instead of returning it),
  and the attribute ``tangentless``: the configuration (:func:`store_config`), with the kernel's
  PSD tolerance for the solvers, ``psd_rtol``.
- ``c/<i>/<j>``: chunk (i, j). K(x, x) is stored whole: block (i, j), i < j, is computed once and
  written as chunk (i, j) and, transposed, as chunk (j, i), so a row block is one plain read
  (twice the disk of the upper half; the solvers need full rows).
- ``tangentless/done/<i>-<j>.json``: the marker of block (i, j), written after its chunks: the
  SHA-256 of each chunk's stored bytes, the run, host and process that wrote it. A block without
  a marker is unfinished, whatever its chunks hold. A block with a NaN or inf (computed, or once
  cast to the store's dtype) is never marked: the run raises
  :class:`~tangentless.kernels.executors.NonFiniteBlockError`, and a resume computes it again.
- ``tangentless/runs/<run>.json``: one record per run: blocks in all, reused (verified), found
  corrupt, computed, and when it started and finished (no "finished": the run was interrupted).

Atomicity: Zarr 3's LocalStore writes a chunk to a temporary file and renames it into place, and
markers are written the same way, so no reader sees a half-written file; a writer killed mid-write
leaves at most a temporary file (Zarr's ``*.partial``, a marker's ``.*.part``; harmless, delete it
when no run is active). Within a run each block has one task, hence one writer per chunk; two
runs writing the same block write the same bytes.
Nothing is fsynced: after a power loss a chunk may be older or shorter than its marker says, so a
resume re-reads every finished block and compares it with its marker; a mismatch is reported with
a :class:`CorruptBlockWarning` and the block recomputed. The store must be on a local or shared
POSIX filesystem (NFS, Lustre, ...), where rename is atomic, at the same absolute path on every
host that runs tasks.
"""
from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import pathlib
import shutil
import socket
import warnings
from dataclasses import dataclass

import numpy as np
import zarr
from zarr.codecs import Crc32cCodec

from ._shared.atomic import atomic_write
from ._shared.digest import array_sha256
from .backend import backend_label
from .executors import require_finite
from .layout import BlockLayout
from .precision import kernel_dtype, psd_rtol

__all__ = ["GramStore", "BlockWriter", "CorruptBlockWarning", "store_config"]

FORMAT = 1
DTYPES = ("float64", "float32")
#: configuration fields that follow from the compared ones: not compared on resume, and added to
#: a store made before they existed
DERIVED = ("psd_rtol",)


class CorruptBlockWarning(UserWarning):
    """A finished block of a store does not match its marker (truncated, corrupted or replaced
    chunk, or an unreadable marker) or holds NaN or inf values (marked by a version that did not
    check); the block is recomputed."""


def _version() -> str:
    try:
        return importlib.metadata.version("tangentless")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def store_config(spec, x: np.ndarray, y: np.ndarray | None, layout: BlockLayout, backend,
                 dtype: str, preprocessing: dict | None) -> dict:
    """The configuration a store records and a resume must match: spec (its repr), preprocessing,
    SHA-256 of x and y (None for K(x, x)), flip, shape, block shape, dtype, compute backend
    (:func:`~.backend.backend_label`: "jax", "cuda", or another backend's class) and version;
    and, derived from spec and dtype (:data:`DERIVED`), ``psd_rtol``: the PSD tolerance of the
    narrower of the spec's kernel dtype and the stored dtype
    (:func:`~tangentless.kernels.precision.psd_rtol`), which the solvers read."""
    if dtype not in DTYPES:
        raise ValueError(f"store_dtype must be one of {DTYPES}; got {dtype!r}")
    try:
        preprocessing = json.loads(json.dumps(preprocessing if preprocessing is not None else {}))
    except (TypeError, ValueError) as err:
        raise ValueError(f"preprocessing must be a JSON-serializable dict: {err}") from None
    if not isinstance(preprocessing, dict):
        raise ValueError(f"preprocessing must be a dict; got {type(preprocessing).__name__}")
    return {"format": FORMAT, "spec": repr(spec), "preprocessing": preprocessing,
            "x_sha256": array_sha256(x), "y_sha256": None if y is None else array_sha256(y),
            "flip": layout.flip, "symmetric": layout.symmetric, "shape": [layout.n, layout.m],
            "block_shape": [layout.row_length, layout.col_length], "dtype": dtype,
            "backend": backend_label(backend),
            "version": _version(), "psd_rtol": psd_rtol(kernel_dtype(spec), dtype)}


def _write_json(path: pathlib.Path, record: dict) -> None:
    """Write ``record`` to ``path`` atomically (:func:`.atomic.atomic_write`)."""
    atomic_write(path, lambda file: file.write(json.dumps(record).encode()))


def _chunk_extents(layout: BlockLayout, i: int, j: int) -> list[tuple[slice, slice]]:
    """(rows, cols) of the chunks block (i, j) is stored in: its own, then for an off-diagonal
    block of K(x, x) that of its transpose (j, i)."""
    extents = [layout.extent(i, j)]
    if layout.symmetric and i != j:
        extents.append(layout.extent(j, i))
    return extents


@dataclass(frozen=True)
class BlockWriter:
    """Writes one block's chunk(s) and then its marker; picklable, so Dask workers run it.
    Returns the SHA-256 of each chunk; :class:`~.executors.NonFiniteBlockError` (nothing
    written) for a block with a NaN or inf once cast to the store's dtype."""
    path: str
    layout: BlockLayout
    dtype: str
    run: str

    def __call__(self, index: tuple[int, int], block: np.ndarray) -> list[str]:
        array = zarr.open_array(self.path, mode="r+")
        with np.errstate(over="ignore"):  # an overflow is refused just below
            stored, checksums = block.astype(self.dtype), []
        require_finite(stored, index, self.layout.extent(*index),
                       f"they exceed {self.dtype}'s range: use store_dtype='float64'")
        for (rows, cols), data in zip(_chunk_extents(self.layout, *index), (stored, stored.T)):
            array[rows, cols] = data
            checksums.append(array_sha256(data))
        i, j = index
        _write_json(_marker_path(pathlib.Path(self.path), i, j),
                    {"block": [i, j], "sha256": checksums, "run": self.run,
                     "host": socket.gethostname(), "pid": os.getpid()})
        return checksums


def _marker_path(root: pathlib.Path, i: int, j: int) -> pathlib.Path:
    return root / "tangentless" / "done" / f"{i}-{j}.json"


def _marker_index(marker: pathlib.Path) -> tuple[int, int] | None:
    """(i, j) from a marker's name "<i>-<j>.json"; None for other names."""
    parts = marker.stem.split("-")
    return (int(parts[0]), int(parts[1])) if len(parts) == 2 and all(
        p.isdigit() for p in parts) else None


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _create_atomically(root: pathlib.Path, layout: BlockLayout, config: dict) -> None:
    """Create the empty store at ``root`` in a temporary sibling folder renamed into place, so that
    another run never sees a half-created store; if another run's store got there first, keep it
    (it is compared with ``config`` like any existing store)."""
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.with_name(f".{root.name}.{os.getpid()}.{os.urandom(4).hex()}.creating")
    try:
        zarr.create_array(tmp, shape=(layout.n, layout.m), chunks=(layout.row_length, layout.col_length),
                          dtype=config["dtype"], fill_value=np.nan, compressors=[Crc32cCodec()],
                          attributes={"tangentless": config})
        os.rename(tmp, root)  # replaces an empty folder; fails if another run's store is there
    except OSError:
        if not (root / "zarr.json").is_file():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class GramStore:
    """A Gram matrix store at ``path`` (see the module docstring); opening checks that it is one.
    It is the Gram engine's sink for ``gram(store=)`` (:class:`~tangentless.kernels.engine.Sink`)."""

    def __init__(self, path):
        self.path = pathlib.Path(path).expanduser().absolute()
        if not (self.path / "zarr.json").is_file():
            raise FileNotFoundError(f"{self.path} is not a Zarr array (no zarr.json)")
        self.array = zarr.open_array(self.path, mode="r")
        self.config = self.array.attrs.get("tangentless")
        if self.config is None:
            raise ValueError(f"{self.path} is a Zarr array but not a tangentless Gram store "
                             "(no 'tangentless' attribute)")

    @classmethod
    def open(cls, path, config: dict, layout: BlockLayout) -> GramStore:
        """Create the store for ``config``, or open an existing one made with the same
        configuration; ValueError naming the fields that differ otherwise."""
        root = pathlib.Path(path).expanduser()
        if not (root / "zarr.json").exists():
            if root.exists() and any(root.iterdir()):
                raise ValueError(f"{root} exists and is not a Zarr array: refusing to write into it")
            _create_atomically(root, layout, config)
        store = cls(root)
        differ = sorted(k for k in config.keys() | store.config.keys()
                        if k not in DERIVED and config.get(k) != store.config.get(k))
        if differ:
            details = "; ".join(f"{k}: stored {_short(store.config.get(k))}, "
                                f"now {_short(config.get(k))}" for k in differ)
            raise ValueError(f"the Gram store {root} was made with a different configuration "
                             f"({details}); refusing to resume: use another path, or delete it")
        missing = {k: config[k] for k in DERIVED if k in config and k not in store.config}
        if missing:  # a store made before these fields: record them
            zarr.open_array(root, mode="r+").update_attributes(
                {"tangentless": {**store.config, **missing}})
            store = cls(root)
        return store

    @property
    def layout(self) -> BlockLayout:
        c = self.config
        (n, m), (row_length, col_length) = c["shape"], c["block_shape"]
        return BlockLayout(n, m, row_length, col_length, c["symmetric"], c["flip"])

    def finished(self) -> tuple[set[tuple[int, int]], list[tuple[int, int]]]:
        """(verified, corrupt) blocks: each marker is checked against the chunks it describes; a
        corrupt block's marker is removed, with a :class:`CorruptBlockWarning` saying why."""
        layout, verified, corrupt = self.layout, set(), []
        pairs = set(layout.pairs)
        for marker in sorted((self.path / "tangentless" / "done").glob("*-*.json")):
            index = _marker_index(marker)
            if index not in pairs:
                continue  # not a marker of this layout (a store's config fixes its layout)
            reason = self._check(marker, layout, index)
            if reason is None:
                verified.add(index)
                continue
            warnings.warn(f"{self.path}: block {index} {reason}; recomputing it",
                          CorruptBlockWarning, stacklevel=4)
            marker.unlink(missing_ok=True)
            corrupt.append(index)
        return verified, corrupt

    def _check(self, marker: pathlib.Path, layout: BlockLayout, index: tuple[int, int]):
        """None if block ``index`` matches its ``marker``, else why not."""
        try:
            record = json.loads(marker.read_text())
            expected = record["sha256"]
            if tuple(record["block"]) != index:
                return f"has the marker of block {tuple(record['block'])}"
        except (OSError, ValueError, KeyError, TypeError) as err:
            return f"has an unreadable marker ({type(err).__name__}: {err})"
        extents = _chunk_extents(layout, *index)
        if len(expected) != len(extents):
            return f"has a marker with {len(expected)} checksums for {len(extents)} chunks"
        for (rows, cols), digest in zip(extents, expected):
            try:
                stored = self.array[rows, cols]
            except (ValueError, OSError) as err:  # CRC mismatch, wrong size, unreadable file
                return f"cannot be read ({type(err).__name__}: {err})"
            if array_sha256(stored) != digest:
                return (f"does not match its marker's SHA-256 "
                        f"(chunk {rows.start}:{rows.stop}, {cols.start}:{cols.stop})")
            if not np.isfinite(stored).all():  # marked finished by a version that did not check
                return (f"holds NaN or inf values "
                        f"(chunk {rows.start}:{rows.stop}, {cols.start}:{cols.stop})")
        return None

    def start_run(self, run: str) -> tuple[list[tuple[int, int]], BlockWriter]:
        """Check the finished blocks, record the run, and return (blocks to compute, writer)."""
        layout = self.layout
        verified, corrupt = self.finished()
        pending = [p for p in layout.pairs if p not in verified]
        _write_json(self._run_path(run), {"run": run, "started": _now(), "blocks": len(layout.pairs),
                                          "reused": len(verified), "corrupt": len(corrupt),
                                          "computed": 0})
        return pending, BlockWriter(str(self.path), layout, self.config["dtype"], run)

    def accept(self, index: tuple[int, int], checksums: list[str]) -> None:
        """Nothing to do: the run's :class:`BlockWriter` stored block ``index`` already."""

    def finish_run(self, run: str, computed) -> zarr.Array:
        """Record the blocks ``computed`` by the run; return the Zarr array (read-only)."""
        layout = self.layout
        record = json.loads(self._run_path(run).read_text())
        record.update(computed=len(computed),
                      evaluations=sum(layout.evaluations(i, j) for i, j in computed),
                      finished=_now())
        _write_json(self._run_path(run), record)
        return self.array

    def runs(self) -> list[dict]:
        """The run records, oldest first."""
        return [json.loads(p.read_text())
                for p in sorted((self.path / "tangentless" / "runs").glob("*.json"))]

    def _run_path(self, run: str) -> pathlib.Path:
        return self.path / "tangentless" / "runs" / f"{run}.json"


def _short(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= 80 else text[:77] + "..."
