"""The Gram engine: splits images into blocks, computes per-image self information once, fills
symmetric matrices from upper-triangular blocks, symmetrizes over horizontal flips, shows progress,
and runs the blocks here or on a Dask cluster, into memory or into a resumable Zarr store.

It knows nothing of layer semantics: a backend turns (spec, block of x, block of y, their infos)
into a (Bx, By) float64 block.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime
import functools
import math
import uuid
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from ._shared.images import validate_images
from .layers import Cast, Layer, Serial

__all__ = ["gram", "validate_images", "input_dtype", "default_block_size", "pairs_per_step",
           "JaxBackend", "resolve_backend", "builtin_backend_name", "BlockLayout", "block_task"]


def input_dtype(spec: Layer) -> str:
    """float64 for a spec that starts with Cast("float64"), else float32."""
    first = spec.layers[0] if isinstance(spec, Serial) and spec.layers else spec
    return first.dtype if isinstance(first, Cast) else "float32"


def default_block_size(height: int, width: int) -> int:
    """Images per block: 16 at 32x32, more for smaller images (a block is one XLA call; memory
    is set by :func:`pairs_per_step`, not by the block). Smaller blocks waste less on the
    diagonal blocks of a symmetric Gram, which are computed whole."""
    return int(min(256, max(16, 16 * 1024 // (height * width))))


@functools.partial(jax.jit, static_argnums=0)
def _self_info(spec, x):
    """Per-image infos: pytree with leaves (B, 1, h, w), one image at a time (cache-sized)."""
    return jax.lax.map(lambda xi: spec.self_pixel_kernel(xi[None])[1], x)


def pairs_per_step(height: int, width: int) -> int:
    """Image pairs evaluated together: enough for ~1M tensor entries (4 MiB in float32) per step."""
    return max(1, 2 ** 20 // (height * width) ** 2)


@functools.partial(jax.jit, static_argnums=0)
def _cross_block(spec, x, y, info_x, info_y):
    """(Bx, By) float64 block: for each image of x, the images of y a few pairs per step.

    A step's tensors stay near the cache size (one pair at 32x32), which measured 3-5x faster
    than whole batches (see benchmarks/kernel_throughput.py).
    """
    def row(args):
        xi, ix = args

        def pair(args):
            yj, iy = args
            return spec.pixel_kernel(xi[None], yj[None], ix, iy).reshape(()).astype(jnp.float64)

        return jax.lax.map(pair, (y, info_y), batch_size=pairs_per_step(*x.shape[1:3]))

    return jax.lax.map(row, (x, info_x))


class JaxBackend:
    """Runs the layer math through XLA on JAX's default device (CPU or GPU)."""

    def self_info(self, spec: Layer, x: np.ndarray):
        with jax.enable_x64(True):
            return _self_info(spec, jnp.asarray(x))

    def compute_block(self, spec: Layer, x, y, info_x, info_y) -> np.ndarray:
        with jax.enable_x64(True):
            return np.asarray(_cross_block(spec, jnp.asarray(x), jnp.asarray(y), info_x, info_y))


def builtin_backend_name(backend) -> str | None:
    """"jax" or "cuda" for the built-in backend objects, None for others."""
    from .cuda import CudaBackend

    return {JaxBackend: "jax", CudaBackend: "cuda"}.get(type(backend))


def resolve_backend(backend, spec: Layer, image_shape):
    """The backend object for ``gram``'s ``backend`` option (see :func:`gram`); a backend whose
    ``unsupported(spec, image_shape)`` gives a reason is replaced by JaxBackend, with a warning."""
    from . import cuda

    if backend is None:
        backend = "cuda" if cuda.available() else "jax"
    if isinstance(backend, str):
        if backend not in ("jax", "cuda"):
            raise ValueError(f"backend must be None, 'jax', 'cuda' or a backend object; got {backend!r}")
        backend = JaxBackend() if backend == "jax" else cuda.CudaBackend()
    reason = backend.unsupported(spec, tuple(image_shape)) if hasattr(backend, "unsupported") else None
    if reason:
        warnings.warn(f"{type(backend).__name__} cannot run this spec ({reason}); using the JAX backend",
                      cuda.CudaFallbackWarning, stacklevel=3)
        return JaxBackend()
    return backend


def _block_length(n: int, block_size: int) -> int:
    """The most even split of n rows into blocks of at most block_size."""
    return math.ceil(n / math.ceil(n / block_size))


def _blocks(n: int, length: int) -> list[tuple[int, int]]:
    """[(start, stop)] of consecutive blocks of ``length`` rows (the last one may be shorter)."""
    return [(s, min(s + length, n)) for s in range(0, n, length)]


def _pad_rows(x: np.ndarray, rows: int) -> np.ndarray:
    """Repeat the last image so that every block has the same shape (one compilation)."""
    return x if len(x) == rows else np.concatenate([x, np.repeat(x[-1:], rows - len(x), axis=0)])


def _flip(x: np.ndarray) -> np.ndarray:
    return x[:, :, ::-1, :]


@dataclasses.dataclass(frozen=True)
class BlockLayout:
    """How the engine splits K (n, m) into blocks of row_length x col_length images.

    Block (i, j) is K[row block i, column block j]. symmetric: K(x, x); only blocks i <= j are
    computed, the others are their transposes. flip: a block is K(x, y) + K(x, flip y).
    Image blocks are keyed (source, b), source "x", "y" or "flip" (flipped y, or flipped x when
    symmetric), and padded to full length by repeating the last image (one compilation).
    """
    n: int
    m: int
    row_length: int
    col_length: int
    symmetric: bool
    flip: bool

    @property
    def row_blocks(self) -> list[tuple[int, int]]:
        return _blocks(self.n, self.row_length)

    @property
    def col_blocks(self) -> list[tuple[int, int]]:
        return _blocks(self.m, self.col_length)

    @property
    def pairs(self) -> list[tuple[int, int]]:
        """The blocks the engine computes, (i, j) in row-major order."""
        return [(i, j) for i in range(len(self.row_blocks)) for j in range(len(self.col_blocks))
                if not self.symmetric or i <= j]

    def extent(self, i: int, j: int) -> tuple[slice, slice]:
        """Rows and columns of K covered by block (i, j)."""
        (r0, r1), (c0, c1) = self.row_blocks[i], self.col_blocks[j]
        return slice(r0, r1), slice(c0, c1)

    def evaluations(self, i: int, j: int) -> int:
        """Image pairs in block (i, j), counted twice with flip (the backend's work)."""
        rows, cols = self.extent(i, j)
        return (rows.stop - rows.start) * (cols.stop - cols.start) * (2 if self.flip else 1)

    def inputs(self, i: int, j: int) -> list[tuple[str, int]]:
        """Keys of the image blocks that block (i, j) reads: the x block, then one y block per term."""
        terms = ["x" if self.symmetric else "y"] + (["flip"] if self.flip else [])
        return [("x", i)] + [(t, j) for t in terms]

    def needed(self, pairs) -> list[tuple[str, int]]:
        """Sorted keys of the image blocks that the blocks ``pairs`` read."""
        return sorted({key for i, j in pairs for key in self.inputs(i, j)})

    def image_blocks(self, x: np.ndarray, y: np.ndarray) -> dict[tuple[str, int], np.ndarray]:
        """{(source, b): (length, H, W, C) padded images} for every image block."""
        sources = {"x": (x, len(self.row_blocks), self.row_length)}
        if not self.symmetric:
            sources["y"] = (y, len(self.col_blocks), self.col_length)
        if self.flip:
            sources["flip"] = (_flip(y), len(self.col_blocks), self.col_length)
        parts = {}
        for name, (images, count, length) in sources.items():
            padded = _pad_rows(images, count * length)
            parts.update({(name, b): padded[b * length:(b + 1) * length] for b in range(count)})
        return parts

    def task_arguments(self, i: int, j: int, images: dict, infos: dict) -> tuple:
        """The arguments of :func:`block_task` between ``spec`` and ``writer`` for block (i, j);
        ``images`` and ``infos`` map image-block keys to arrays, or to Dask futures of them."""
        kx, *kys = self.inputs(i, j)
        rows, cols = self.extent(i, j)
        return (images[kx], [images[k] for k in kys], infos[kx], [infos[k] for k in kys],
                (rows.stop - rows.start, cols.stop - cols.start), self.symmetric and i == j)


def block_task(backend, spec: Layer, x_block, y_blocks, info_x, info_ys, size: tuple[int, int],
               diagonal: bool, writer=None, index: tuple[int, int] | None = None):
    """One block of K: the sum over ``y_blocks`` (one, or two with flip) of the backend's
    (length, length) blocks, cropped to ``size``; ``diagonal``: a diagonal block of K(x, x), made
    exactly symmetric from its upper triangle. Returns the float64 block of shape ``size``, or
    with a ``writer`` what ``writer(index, block)`` returns (a store's checksums)."""
    block = sum(backend.compute_block(spec, x_block, y, info_x, info_y)
                for y, info_y in zip(y_blocks, info_ys))[: size[0], : size[1]]
    if diagonal:
        block = np.triu(block) + np.triu(block, 1).T
    return block if writer is None else writer(index, block)


def _in_process(backend, spec: Layer, layout: BlockLayout, images: dict, pairs, writer):
    """Yield ((i, j), :func:`block_task` result) for the blocks ``pairs``, computed here in order."""
    infos = {key: backend.self_info(spec, images[key]) for key in layout.needed(pairs)}
    for i, j in pairs:
        yield (i, j), block_task(backend, spec, *layout.task_arguments(i, j, images, infos),
                                 writer, (i, j))


def _prepare(spec, x, y, flip: bool, block_size, backend):
    """Validated (x, y, backend, layout); y is x for the symmetric K(x, x)."""
    if not isinstance(spec, Layer):
        raise TypeError(f"spec must be a tangentless.kernels Layer, got {type(spec).__name__}")
    dtype = input_dtype(spec)
    x = validate_images(x, "x", dtype)
    symmetric = y is None
    y = x if symmetric else validate_images(y, "y", dtype)
    if x.shape[1:] != y.shape[1:]:
        raise ValueError(f"x and y must have the same (H, W, C); got {x.shape[1:]} and {y.shape[1:]}")
    size = spec.output_size(x.shape[1:3])
    if size != (1, 1):
        raise ValueError(f"the spec maps {x.shape[1]}x{x.shape[2]} images to {size[0]}x{size[1]} maps; "
                         "end it with GlobalAvgPool() to get one number per image pair")
    backend = resolve_backend(backend, spec, x.shape[1:])
    if block_size is None:
        hook = getattr(backend, "preferred_block_size", None)
        block_size = hook(spec, x.shape[1:]) if hook else default_block_size(*x.shape[1:3])
    if not isinstance(block_size, (int, np.integer)) or block_size < 1:
        raise ValueError(f"block_size must be an integer >= 1, got {block_size!r}")
    layout = BlockLayout(len(x), len(y), _block_length(len(x), int(block_size)),
                         _block_length(len(y), int(block_size)), symmetric, bool(flip))
    return x, y, backend, layout


def gram(spec: Layer, x, y=None, *, flip: bool = False, block_size: int | None = None,
         progress: bool = True, backend=None, store=None, store_dtype: str = "float64",
         preprocessing: dict | None = None, scheduler=None, workers: int | None = None,
         retries: int = 3):
    """Kernel matrix K[a, b] = k(x_a, y_b) of a layer spec, float64 of shape (len(x), len(y)).

    x, y: NHWC float images (N, H, W, C) of the same H, W, C; y=None gives the symmetric K(x, x)
    from upper-triangular blocks only. flip=True returns K(x, y) + K(x, flip(y)) (horizontal flip),
    the kernel of training on originals plus mirror images, at twice the plain cost.
    block_size: images per block, i.e. per backend call (default: the backend's
    ``preferred_block_size`` where it has one, else :func:`default_block_size`); on the JAX backend
    memory is set by the few image pairs evaluated per step (:func:`pairs_per_step`), not by the block.
    The spec must end with a 1 x 1 map (e.g. GlobalAvgPool).
    The pixels enter the spec in float32, or in float64 where the spec starts with Cast("float64").
    backend: None (default: "cuda" where CuPy sees a GPU, else "jax"), "jax" (XLA on JAX's default
    device), "cuda" (the fused kernels of csrc/, :class:`tangentless.kernels.cuda.CudaBackend`), or
    an object with ``self_info(spec, x)`` and ``compute_block(spec, x, y, info_x, info_y)``, and
    optionally ``unsupported(spec, image_shape) -> reason or None`` and ``preferred_block_size``.
    A backend that cannot run the spec is replaced by the JAX one with a
    :class:`~tangentless.kernels.cuda.CudaFallbackWarning` that says why.

    store: a path ("k.zarr"): K goes to a Zarr array on disk, one chunk per block, and that array
    is returned (read-only) instead of a numpy array. An existing store is resumed: its finished
    blocks are checked against their SHA-256 and kept (a corrupt one is recomputed, with a
    :class:`~tangentless.kernels.store.CorruptBlockWarning`), the others computed; the matrix is
    bit-identical to an uninterrupted run's. A store made with another spec, inputs, flip, block
    size, dtype, preprocessing, backend or library version is refused with a ValueError. K(x, x)
    is stored whole (both triangles). Layout and guarantees: :mod:`tangentless.kernels.store`.
    store_dtype: "float64" or "float32" (half the disk; blocks are computed in float64 either way).
    preprocessing: a JSON-serializable dict recorded in the store and checked on resume (e.g.
    ``{"zca_bias": 1e-5}``); the input checksums cover the preprocessed images themselves.
    scheduler: None (blocks computed in this process), a ``dask.distributed.Client``, a scheduler
    address ("tcp://host:8786"), or "local": a LocalCluster of ``workers`` processes (default: one
    per CPU core) of one thread each, closed on return. One Dask task per block, retried
    ``retries`` times on errors; the task of a worker that dies is rescheduled by Dask. With a
    store the workers write their blocks themselves and return only checksums (across hosts the
    store must be on a shared filesystem). GPUs and clusters: :mod:`tangentless.kernels.distributed`.
    """
    x, y, backend, layout = _prepare(spec, x, y, flip, block_size, backend)
    if workers is not None and scheduler != "local":
        raise ValueError(f"workers= is the size of a local cluster: pass scheduler='local' with it "
                         f"(got scheduler={scheduler!r})")
    if not isinstance(retries, (int, np.integer)) or retries < 0:
        raise ValueError(f"retries must be an integer >= 0, got {retries!r}")
    if store is None and preprocessing is not None:
        raise ValueError("preprocessing= is recorded in a store: pass store= as well")
    if store is not None:
        from .store import GramStore, store_config
        config = store_config(spec, x, None if layout.symmetric else y, layout, backend,
                              store_dtype, preprocessing)
    run = _run_id()
    with _connection(scheduler, workers) as client:
        if store is None:
            out, pending, writer = np.empty((layout.n, layout.m)), layout.pairs, None
        else:
            out, gram_store = None, GramStore.open(store, config, layout)
            pending, writer = gram_store.start_run(run)
        images = layout.image_blocks(x, y)
        if client is None:
            results = _in_process(backend, spec, layout, images, pending, writer)
        else:
            from .distributed import block_results
            results = block_results(client, int(retries), backend, spec, layout, images, pending,
                                    writer, run)
        computed = _collect(results, layout, pending, out, progress)
    return out if store is None else gram_store.finish_run(run, computed)


def _connection(scheduler, workers):
    """A context giving the Dask client of ``scheduler``, or None to compute in this process."""
    if scheduler is None:
        return contextlib.nullcontext()
    from .distributed import connect
    return connect(scheduler, workers)


def _collect(results, layout: BlockLayout, pending, out: np.ndarray | None, progress: bool):
    """Consume the generator ``results`` ((i, j), block or checksums) under a progress bar over
    all pairs, placing blocks into ``out`` (K(x, x): both triangles) unless it is None (a store
    holds them); closes it on error. Returns the (i, j) of the blocks done, in completion order."""
    total = sum(layout.evaluations(i, j) for i, j in layout.pairs)
    todo = sum(layout.evaluations(i, j) for i, j in pending)
    done = []
    with contextlib.closing(results), tqdm(total=total, initial=total - todo, unit="pair",
                                            disable=not progress, desc="gram") as bar:
        for (i, j), result in results:
            if out is not None:
                rows, cols = layout.extent(i, j)
                out[rows, cols] = result
                if layout.symmetric:
                    out[cols, rows] = result.T
            done.append((i, j))
            bar.update(layout.evaluations(i, j))
    return done


def _run_id() -> str:
    """A unique, time-sortable name for one gram call (Dask task keys, store run records)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    return f"{now:%Y%m%dT%H%M%S.%f}-{uuid.uuid4().hex[:8]}"
