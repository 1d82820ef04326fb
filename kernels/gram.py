"""The front door of the Gram engine: :func:`gram` checks its options, builds the engine's parts
(a :class:`~.layout.BlockLayout`, a compute backend, an executor and a sink) and runs
:func:`tangentless.kernels.engine.compute`, which documents how to assemble the parts yourself.

A spec is any object with ``pixel_kernel``, ``self_pixel_kernel``, ``output_size`` and
``input_dtype`` (every :class:`~tangentless.kernels.Layer` has them).
"""
from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING, Any, overload

import numpy as np

from ._shared.images import validate_images
from .backend import Backend, resolve_backend
from .engine import MemorySink, compute
from .executors import InProcess
from .layout import BlockLayout, default_block_size
from .precision import check_pixel_range, kernel_dtype

if TYPE_CHECKING:
    import zarr
    from dask.distributed import Client
    from numpy.typing import ArrayLike

    from .store import GramStore

__all__ = ["gram", "prepare_images", "block_layout"]

#: what the engine asks of a spec
SPEC_METHODS = ("pixel_kernel", "self_pixel_kernel", "output_size", "input_dtype")


def prepare_images(spec, x, y=None) -> tuple[np.ndarray, np.ndarray]:
    """Validated (x, y) for ``spec``, in ``spec.input_dtype``; y is x for the symmetric K(x, x).
    TypeError for a spec without :data:`SPEC_METHODS`, ValueError for images it cannot take,
    including pixel magnitudes the precision it computes in cannot carry through the kernel
    (:func:`~.precision.check_pixel_range`; a blank image is fine)."""
    missing = [m for m in SPEC_METHODS if not hasattr(spec, m)]
    if missing:
        raise TypeError(f"spec must be a tangentless.kernels Layer, got {type(spec).__name__} "
                        f"(no {', '.join(missing)})")
    x = validate_images(x, "x", spec.input_dtype)
    y = x if y is None else validate_images(y, "y", spec.input_dtype)
    if x.shape[1:] != y.shape[1:]:
        raise ValueError(f"x and y must have the same (H, W, C); got {x.shape[1:]} and {y.shape[1:]}")
    size = spec.output_size(x.shape[1:3])
    if size != (1, 1):
        raise ValueError(f"the spec maps {x.shape[1]}x{x.shape[2]} images to {size[0]}x{size[1]} maps; "
                         "end it with GlobalAvgPool() to get one number per image pair")
    dtype = kernel_dtype(spec)
    check_pixel_range(x, "x", dtype)
    if y is not x:
        check_pixel_range(y, "y", dtype)
    return x, y


def block_layout(spec, x: np.ndarray, y: np.ndarray, backend, block_size: int | None,
                 symmetric: bool, flip: bool | str) -> BlockLayout:
    """The layout of K(x, y) in blocks of ``block_size`` images (None: the compute backend's
    ``preferred_block_size`` where it has one, else :func:`~.layout.default_block_size`)."""
    if block_size is None:
        hook = getattr(backend, "preferred_block_size", None)
        block_size = hook(spec, x.shape[1:]) if hook else default_block_size(*x.shape[1:3])
    return BlockLayout.split(len(x), len(y), block_size, symmetric, flip)


@overload
def gram(spec: Any, x: ArrayLike, y: ArrayLike | None = None, *, flip: bool | str = False,
         block_size: int | None = None, progress: bool = True, backend: str | Backend | None = None,
         store: None = None, store_dtype: str = "float64", preprocessing: dict | None = None,
         scheduler: str | Client | None = None, workers: int | None = None,
         retries: int = 3) -> np.ndarray: ...


@overload
def gram(spec: Any, x: ArrayLike, y: ArrayLike | None = None, *, flip: bool | str = False,
         block_size: int | None = None, progress: bool = True, backend: str | Backend | None = None,
         store: str | os.PathLike[str], store_dtype: str = "float64",
         preprocessing: dict | None = None, scheduler: str | Client | None = None,
         workers: int | None = None, retries: int = 3) -> zarr.Array: ...


def gram(spec: Any, x: ArrayLike, y: ArrayLike | None = None, *, flip: bool | str = False,
         block_size: int | None = None, progress: bool = True, backend: str | Backend | None = None,
         store: str | os.PathLike[str] | None = None, store_dtype: str = "float64",
         preprocessing: dict | None = None, scheduler: str | Client | None = None,
         workers: int | None = None, retries: int = 3) -> np.ndarray | zarr.Array:
    """Kernel matrix K[a, b] = k(x_a, y_b) of a layer spec, float64 of shape (len(x), len(y)).

    Compute: x, y: NHWC float images (N, H, W, C) of the same H, W, C; y=None gives the symmetric
    K(x, x) from upper-triangular blocks only. flip=True returns K(x, y) + K(x, flip(y))
    (horizontal flip), the kernel of training on originals plus mirror images, at twice the plain
    cost; flip="mirror" returns K(x, flip(y)) alone, at the plain cost (symmetric for y=None), so
    that a search over flips off and on computes K(x, y) once and adds the mirror half. The spec
    must end with a 1 x 1 map (e.g. GlobalAvgPool). The pixels enter the spec in
    float32, or in float64 where the spec starts with Cast("float64") (``spec.input_dtype``).
    Images whose pixel magnitudes the narrowest precision the spec computes in cannot carry
    through the kernel (x 1e20 or x 1e-20 in float32) are refused with a ValueError
    (:mod:`~tangentless.kernels.precision`); a block with a NaN or inf is never accepted
    (:class:`~tangentless.kernels.executors.NonFiniteBlockError`).
    block_size: images per block, i.e. per backend call (default: the compute backend's
    ``preferred_block_size``); on the JAX backend memory is set by the few image pairs evaluated
    per step (:func:`~tangentless.kernels.jax_backend.pairs_per_step`), not by the block.
    backend: the compute backend that evaluates the blocks (:mod:`tangentless.kernels.backend`):
    None (default: the fastest that runs the spec: "cuda" where CuPy sees a GPU, else "numba",
    else "jax"), "jax" (XLA on JAX's default device,
    :class:`~tangentless.kernels.jax_backend.JaxBackend`), "numba" (the fused offset-slab kernel
    on the CPU, :class:`~tangentless.kernels.fused_cpu.FusedCpuBackend`), "cuda" (the fused
    kernels of csrc/, :class:`~tangentless.kernels.cuda.CudaBackend`), or an object with ``self_info(spec, x)`` and
    ``compute_block(spec, x, y, info_x, info_y)``, and optionally ``unsupported(spec,
    image_shape) -> reason or None`` and ``preferred_block_size`` (:class:`~.backend.Backend`).
    A named backend that cannot run the spec is replaced by the JAX one with a
    :class:`~tangentless.kernels.backend.CudaFallbackWarning` that says why.

    Storage: store: a path ("k.zarr"): K goes to a Zarr array on disk, one chunk per block, and
    that array is returned (read-only) instead of a numpy array. An existing store is resumed: its
    finished blocks are checked against their SHA-256 and kept (a corrupt one is recomputed, with a
    :class:`~tangentless.kernels.store.CorruptBlockWarning`), the others computed; the matrix is
    bit-identical to an uninterrupted run's. A store made with another spec, inputs, flip, block
    size, dtype, preprocessing, backend or library version is refused with a ValueError. K(x, x)
    is stored whole (both triangles). Layout and guarantees: :mod:`tangentless.kernels.store`.
    store_dtype: "float64" or "float32" (half the disk; blocks are computed in float64 either way).
    The store records the kernel's PSD tolerance for the solvers, ``attrs["tangentless"]
    ["psd_rtol"]`` (that of the narrower of the spec's :attr:`~.layers.Layer.kernel_dtype` and
    store_dtype).
    preprocessing: a JSON-serializable dict recorded in the store and checked on resume (e.g.
    ``{"zca_bias": 1e-5}``); the input checksums cover the preprocessed images themselves.

    Scheduling: scheduler: None (blocks computed in this process), a ``dask.distributed.Client``,
    a scheduler address ("tcp://host:8786"), or "local": a LocalCluster of ``workers`` processes
    (default: one per CPU core) of one thread each, closed on return. One Dask task per block,
    retried ``retries`` times on errors; the task of a worker that dies is rescheduled by Dask.
    With a store the workers write their blocks themselves and return only checksums (across
    hosts the store must be on a shared filesystem). GPUs and clusters:
    :mod:`tangentless.kernels.distributed`.

    Display: progress: a progress bar over the image pairs.
    """
    symmetric = y is None
    x, y = prepare_images(spec, x, y)
    backend = resolve_backend(backend, spec, x.shape[1:])
    layout = block_layout(spec, x, y, backend, block_size, symmetric, flip)
    _check_scheduling(scheduler, workers, retries)
    if store is None and preprocessing is not None:
        raise ValueError("preprocessing= is recorded in a store: pass store= as well")
    if store is not None:
        from .store import store_config
        config = store_config(spec, x, None if symmetric else y, layout, backend, store_dtype,
                              preprocessing)
    with _executor(scheduler, workers, retries) as executor:
        sink: MemorySink | GramStore
        if store is None:
            sink = MemorySink(layout)
        else:
            from . import store as stores   # Zarr is imported only for a store
            sink = stores.GramStore.open(store, config, layout)
        return compute(spec, x, y, layout=layout, backend=backend, executor=executor, sink=sink,
                       progress=progress)


def _check_scheduling(scheduler, workers, retries) -> None:
    if workers is not None and scheduler != "local":
        raise ValueError(f"workers= is the size of a local cluster: pass scheduler='local' with it "
                         f"(got scheduler={scheduler!r})")
    if not isinstance(retries, (int, np.integer)) or retries < 0:
        raise ValueError(f"retries must be an integer >= 0, got {retries!r}")


@contextlib.contextmanager
def _executor(scheduler, workers, retries):
    """The executor of ``scheduler``: :class:`~.executors.InProcess` for None, else a
    :class:`~tangentless.kernels.distributed.DaskExecutor` on the Client it names (what this
    opens, it closes)."""
    if scheduler is None:
        yield InProcess()
        return
    from .distributed import DaskExecutor, connect
    with connect(scheduler, workers) as client:
        yield DaskExecutor(client, int(retries))
