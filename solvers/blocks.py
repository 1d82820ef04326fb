"""Block sources: kernel matrices read one block K[rows, cols] at a time.

A block source wraps an in-memory array, a numpy memmap, a Zarr array (or the path of one, e.g. a
store written by ``gram(..., store="k.zarr")``) or a callable
``f(rows, cols) -> array`` (a kernel computed on demand, e.g. a Gram engine:
``lambda r, c: spec.gram(x[r], x[c], progress=False)``). The solvers only ever ask it for row blocks
(or row blocks of a few columns), so the full matrix never has to be in memory. Every block is
returned as float64 and checked for its shape and for NaN/inf on the way out.

A source carries the PSD tolerance of its kernel (``psd_rtol``, see ``tangentless.solvers._psd``):
a Gram store's ``attrs["tangentless"]["psd_rtol"]`` where it records one, else that of its
storage dtype. Zarr arrays are read one chunk at a time, so a corrupted chunk fails alone, by
name, and leaves no pending reads behind; NaN in a Zarr array (the fill value of a Gram store's
unwritten chunks) is reported as unfinished blocks to resume.
"""
from __future__ import annotations

import mmap
import os
from typing import Callable

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

from ._psd import check_psd_rtol, psd_tolerance, stored_psd_rtol

__all__ = ["BlockSource", "as_block_source", "row_blocks"]

Index = slice | np.ndarray


def row_blocks(n: int, block_size: int) -> list[slice]:
    """Contiguous slices covering range(n), each of at most ``block_size`` rows."""
    if int(block_size) < 1:
        raise ValueError(f"block_size must be >= 1; got {block_size}")
    return [slice(i, min(i + int(block_size), n)) for i in range(0, n, int(block_size))]


def _length(index: Index, n: int) -> int:
    return len(range(n)[index]) if isinstance(index, slice) else len(index)


def _describe(index: Index) -> str:
    if isinstance(index, slice):
        return f"{index.start or 0}:{'' if index.stop is None else index.stop}"
    return f"<{len(index)} indices>"


def _index(index, n: int, name: str) -> Index:
    """A slice with step 1, or a 1-D array of in-range int64 indices."""
    if isinstance(index, slice):
        start, stop, step = index.indices(n)
        if step != 1:
            raise ValueError(f"{name} slices must have step 1; got {index}")
        return slice(start, max(start, stop))
    arr = np.asarray(index)
    if arr.ndim != 1 or not (np.issubdtype(arr.dtype, np.integer) or arr.size == 0):
        raise ValueError(f"{name} must be a slice or a 1-D integer array; got {index!r}")
    arr = arr.astype(np.int64)
    if arr.size and (arr.min() < -n or arr.max() >= n):
        raise ValueError(f"{name} indices out of range for size {n}")
    return arr % n if arr.size else arr


class BlockSource:
    """A (n, m) matrix read in blocks; ``read(rows, cols)`` does the reading, this class checks it.

    ``rows`` and ``cols`` passed to ``read`` are step-1 slices or 1-D int64 index arrays.
    ``in_memory``: the whole matrix already sits in host memory (a numpy array, not a memmap), so
    a device may copy it once instead of block by block. ``dtype``: the storage dtype (for a
    callable: that of the first block read). ``psd_rtol``: the kernel's PSD tolerance, given or
    from ``dtype``. ``gram_store``: the path of the Gram store the source reads, whose NaN entries
    are unwritten chunks (None: NaN is reported as NaN).
    """

    def __init__(self, read: Callable[[Index, Index], ArrayLike], shape: tuple[int, int],
                 name: str = "K", diagonal: Callable[[], np.ndarray] | None = None,
                 in_memory: bool = False, dtype: DTypeLike | None = None, psd_rtol: float | None = None,
                 gram_store: str | None = None, chunks: tuple[int, int] | None = None) -> None:
        self._read, self._diagonal = read, diagonal
        self.shape = (int(shape[0]), int(shape[1]))
        self.name = name
        self.in_memory = in_memory
        self.dtype = None if dtype is None else np.dtype(dtype)
        self._psd_rtol = None if psd_rtol is None else check_psd_rtol(psd_rtol)
        self.gram_store, self._chunks = gram_store, chunks

    @property
    def psd_rtol(self) -> float:
        """Relative PSD tolerance of the kernel: as given, else ``psd_tolerance(dtype)``."""
        if self._psd_rtol is not None:
            return self._psd_rtol
        return psd_tolerance(np.float64 if self.dtype is None else self.dtype)

    def _non_finite_error(self, where: str, arr: np.ndarray, rows: Index, cols: Index) -> str:
        """The message for a block ``arr`` = K[rows, cols] holding NaN or inf."""
        bad = ~np.isfinite(arr)
        i, j = np.argwhere(bad)[0]
        if self.gram_store is None or not np.isnan(arr).any():
            return (f"block {where} contains {int(bad.sum())} NaN or inf entries "
                    f"(first at local row {i}, column {j})")
        i, j = np.argwhere(np.isnan(arr))[0]
        row = (range(self.shape[0])[rows] if isinstance(rows, slice) else rows)[i]
        col = (range(self.shape[1])[cols] if isinstance(cols, slice) else cols)[j]
        chunk = ("its chunk unknown" if self._chunks is None
                 else f"chunk ({row // self._chunks[0]}, {col // self._chunks[1]})")
        return (f"block {where} reads unfinished blocks of the Gram store {self.gram_store} "
                f"(NaN, its fill value, first at K[{row}, {col}], {chunk}): resume the gram run "
                f"(rerun the same gram call / `tangentless gram --out {self.gram_store}`)")

    def block(self, rows: slice | ArrayLike, cols: slice | ArrayLike, *, keep_float32: bool = False) -> np.ndarray:
        """K[rows, cols] as a (len(rows), len(cols)) float64 array; ValueError on NaN/inf.

        ``keep_float32``: blocks stored as float32 stay float32 (half the bytes to a device).
        """
        rows, cols = _index(rows, self.shape[0], "rows"), _index(cols, self.shape[1], "cols")
        where = f"{self.name}[{_describe(rows)}, {_describe(cols)}]"
        try:
            arr = np.asarray(self._read(rows, cols))
        except (TypeError, ValueError) as err:
            raise ValueError(f"reading block {where} failed: {err}") from err
        expected = (_length(rows, self.shape[0]), _length(cols, self.shape[1]))
        if arr.shape != expected:
            raise ValueError(f"block {where} has shape {arr.shape}; expected {expected}")
        if np.iscomplexobj(arr) or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
            raise ValueError(f"block {where} must hold real numbers; got dtype {arr.dtype}")
        if self.dtype is None:
            self.dtype = arr.dtype
        if not (keep_float32 and arr.dtype == np.float32):
            arr = arr.astype(np.float64, copy=False)
        if not np.isfinite(arr.sum()):  # cheap test first; a sum can also overflow, so confirm
            if not np.isfinite(arr).all():
                raise ValueError(self._non_finite_error(where, arr, rows, cols))
        return arr

    def rows(self, rows: slice | ArrayLike, *, keep_float32: bool = False) -> np.ndarray:
        """K[rows, :] as a (b, m) float64 array (float32 if stored so and ``keep_float32``)."""
        return self.block(rows, slice(None), keep_float32=keep_float32)

    def diagonal(self) -> np.ndarray:
        """diag(K) as a (n,) float64 array (square sources only).

        Arrays read their diagonal directly; callables without a ``diagonal=`` function are
        evaluated on diagonal blocks of 256 rows (256 n entries, not n^2).
        """
        n = self.shape[0]
        if self.shape[0] != self.shape[1]:
            raise ValueError(f"{self.name} has no diagonal: shape {self.shape} is not square")
        if self._diagonal is not None:
            diag = np.asarray(self._diagonal())
            if diag.shape != (n,):
                raise ValueError(f"diagonal of {self.name} has shape {diag.shape}; expected ({n},)")
            diag = diag.astype(np.float64)
        else:
            diag = np.concatenate([np.diagonal(self.block(b, b)) for b in row_blocks(n, 256)])
        if not np.isfinite(diag).all():
            raise ValueError(f"diagonal of {self.name} contains NaN or inf entries")
        return diag


#: what :func:`as_block_source` takes: an array (numpy, memmap, Zarr or array-like), the path of a
#: Zarr array, a :class:`BlockSource`, or a callable ``f(rows, cols) -> array``
SourceLike = ArrayLike | BlockSource | str | os.PathLike | Callable[[Index, Index], ArrayLike]


def _array_shape(obj, name: str) -> tuple[int, int]:
    if len(obj.shape) != 2:
        raise ValueError(f"{name} must be a 2-D kernel matrix; got shape {tuple(obj.shape)}")
    dtype = np.dtype(obj.dtype)
    if dtype.kind not in "biuf":
        raise ValueError(f"{name} must hold real numbers; got dtype {dtype}")
    return int(obj.shape[0]), int(obj.shape[1])


def _is_memory_mapped(arr: np.ndarray) -> bool:
    """Whether ``arr``, or an array it is a view of, is backed by a memory-mapped file."""
    base: object = arr
    while isinstance(base, np.ndarray):
        if isinstance(base, np.memmap):
            return True
        base = base.base
    return isinstance(base, mmap.mmap)


def _numpy_source(arr: np.ndarray, name: str) -> BlockSource:
    def read(rows, cols):
        block = arr[rows]
        whole = isinstance(cols, slice) and cols == slice(0, arr.shape[1])
        return block if whole else block[:, cols]
    return BlockSource(read, _array_shape(arr, name), name, diagonal=lambda: np.diagonal(arr),
                       in_memory=not _is_memory_mapped(arr), dtype=arr.dtype)


def _chunk_bands(index: Index, chunk: int) -> list[tuple[Index, Index]]:
    """``index`` into an axis split by chunks of ``chunk``: (positions in the result, the part
    of ``index`` inside one chunk) for each chunk it touches; slices stay slices."""
    if isinstance(index, slice):
        start, stop = index.start, index.stop
        edges = [start] + list(range(start - start % chunk + chunk, stop, chunk)) + [stop]
        return [(slice(lo - start, hi - start), slice(lo, hi))
                for lo, hi in zip(edges[:-1], edges[1:]) if lo < hi]
    band = index // chunk
    return [(np.flatnonzero(band == b), index[band == b]) for b in np.unique(band)]


def _outer(rows: Index, cols: Index):
    """The index of the (rows x cols) sub-block of a 2-D array: slices as they are, index
    arrays as an open mesh."""
    if isinstance(rows, slice) and isinstance(cols, slice):
        return rows, cols
    as_array = [np.arange(i.start, i.stop) if isinstance(i, slice) else i for i in (rows, cols)]
    return np.ix_(*as_array)


def _store_name(arr) -> str:
    """The path (or URL) of the Zarr array ``arr``."""
    root = getattr(getattr(arr, "store", None), "root", None)
    if root is None:
        return str(getattr(arr, "store_path", arr))
    path = getattr(arr, "path", "")
    return os.path.join(str(root), path) if path else str(root)


def _zarr_source(arr, name: str) -> BlockSource:
    """A source on the Zarr array ``arr``, read one chunk per call.

    Reading a block chunk by chunk costs one call per chunk (a Gram store's chunks are large)
    and means a failing chunk, e.g. one whose checksum does not match, stops the read with
    nothing else pending: a read of many chunks at once leaves zarr's other chunk tasks pending
    when one fails, and Python prints thousands of "Task was destroyed" lines at exit.
    """
    shape = _array_shape(arr, name)
    chunks = (int(arr.chunks[0]), int(arr.chunks[1]))
    store = _store_name(arr)

    def read(rows, cols):
        out = np.empty((_length(rows, arr.shape[0]), _length(cols, arr.shape[1])), arr.dtype)
        for out_rows, chunk_rows in _chunk_bands(rows, chunks[0]):
            for out_cols, chunk_cols in _chunk_bands(cols, chunks[1]):
                try:
                    out[_outer(out_rows, out_cols)] = arr.oindex[chunk_rows, chunk_cols]
                except (ValueError, OSError) as err:
                    first = (chunk_rows.start if isinstance(chunk_rows, slice) else chunk_rows[0],
                             chunk_cols.start if isinstance(chunk_cols, slice) else chunk_cols[0])
                    raise ValueError(f"chunk ({first[0] // chunks[0]}, {first[1] // chunks[1]}) "
                                     f"of {store} could not be read: {err}") from err
        return out

    def diagonal():
        n = min(arr.shape)
        return np.concatenate([np.diagonal(read(b, b)) for b in row_blocks(n, chunks[0])])

    return BlockSource(read, shape, name, diagonal=diagonal, dtype=arr.dtype,
                       psd_rtol=stored_psd_rtol(arr), gram_store=store, chunks=chunks)


def as_block_source(obj: SourceLike, *, shape: tuple[int, int] | None = None, square: bool = True,
                    name: str = "K", diagonal: Callable[[], np.ndarray] | None = None
                    ) -> BlockSource:
    """Wrap ``obj`` as a :class:`BlockSource` of shape (n, m).

    obj: a numpy array or memmap (any real dtype; float32 storage is read as float64), a Zarr
        array (anything with ``oindex``) or the path of one (str or os.PathLike, opened
        read-only), another array-like, a BlockSource, or a callable
        ``f(rows, cols) -> (len(rows), len(cols)) array`` taking step-1 slices or int arrays.
    shape: required for callables, checked against arrays.
    square: require n == m (training kernels).
    diagonal: for callables, an optional function returning diag(K) as (n,).
    """
    if isinstance(obj, BlockSource):
        source = obj
    elif isinstance(obj, np.ndarray):
        source = _numpy_source(obj, name)
    elif hasattr(obj, "oindex") and hasattr(obj, "shape"):
        source = _zarr_source(obj, name)
    elif isinstance(obj, (str, os.PathLike)):
        import zarr
        source = _zarr_source(zarr.open_array(obj, mode="r"), name)
    elif callable(obj):
        if shape is None:
            raise ValueError(f"{name} is a callable: pass shape=(n, m)")
        if len(shape) != 2 or min(shape) < 1:
            raise ValueError(f"{name} shape must be two positive sizes; got {shape}")
        source = BlockSource(obj, shape, name, diagonal=diagonal)
    else:
        try:
            arr = np.asarray(obj)
        except Exception as err:
            raise ValueError(f"{name} is not an array, Zarr array or callable: {err}") from None
        source = _numpy_source(arr, name)
    if min(source.shape) < 1:
        raise ValueError(f"{name} is empty: shape {source.shape}")
    if shape is not None and tuple(shape) != source.shape:
        raise ValueError(f"{name} has shape {source.shape}; expected {tuple(shape)}")
    if square and source.shape[0] != source.shape[1]:
        raise ValueError(f"{name} must be square (n, n); got shape {source.shape}")
    return source
