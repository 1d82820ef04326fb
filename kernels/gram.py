"""The Gram engine: splits images into blocks, computes per-image self information once, fills
symmetric matrices from upper-triangular blocks, symmetrizes over horizontal flips, shows progress.

It knows nothing of layer semantics: a backend turns (spec, block of x, block of y, their infos)
into a (Bx, By) float64 block.
"""
from __future__ import annotations

import functools
import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from .layers import Cast, Layer, Serial

__all__ = ["gram", "validate_images", "input_dtype", "default_block_size", "pairs_per_step",
           "JaxBackend", "resolve_backend"]


def input_dtype(spec: Layer) -> str:
    """float64 for a spec that starts with Cast("float64"), else float32."""
    first = spec.layers[0] if isinstance(spec, Serial) and spec.layers else spec
    return first.dtype if isinstance(first, Cast) else "float32"


def validate_images(x, name: str = "x", dtype: str = "float32") -> np.ndarray:
    """Check an NHWC image batch and return it as ``dtype``; ValueError names what is wrong."""
    try:
        arr = np.asarray(x)
    except Exception as err:  # ragged lists and the like
        raise ValueError(f"{name} is not convertible to an array: {err}") from None
    if arr.ndim != 4:
        raise ValueError(f"{name} must be a 4-D NHWC array (N, H, W, C); got shape {arr.shape}")
    if min(arr.shape) < 1:
        raise ValueError(f"{name} has an empty dimension: shape {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool) or np.iscomplexobj(arr):
        raise ValueError(f"{name} must hold real numbers; got dtype {arr.dtype}")
    bad = ~np.isfinite(arr)
    if bad.any():
        images = np.unique(np.nonzero(bad)[0])
        raise ValueError(f"{name} contains {int(bad.sum())} NaN or inf values "
                         f"(in images {images[:5].tolist()}{'...' if len(images) > 5 else ''})")
    with np.errstate(over="ignore"):
        converted = arr.astype(dtype)
    if not np.isfinite(converted).all():
        raise ValueError(f"{name} has values too large for {dtype} "
                         f"(largest magnitude {float(np.abs(arr).max()):.3g})")
    return converted


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


def gram(spec: Layer, x, y=None, *, flip: bool = False, block_size: int | None = None,
         progress: bool = True, backend=None) -> np.ndarray:
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
    """
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

    row_length, col_length = _block_length(len(x), block_size), _block_length(len(y), block_size)
    row_blocks, col_blocks = _blocks(len(x), row_length), _blocks(len(y), col_length)
    pairs = [(i, j) for i in range(len(row_blocks)) for j in range(len(col_blocks))
             if not symmetric or i <= j]
    xs = _pad_rows(x, len(row_blocks) * row_length)
    ys = [_pad_rows(t, len(col_blocks) * col_length) for t in ([y, _flip(y)] if flip else [y])]
    info_x = _infos(backend, spec, xs, row_length)
    info_ys = [info_x if symmetric and k == 0 else _infos(backend, spec, t, col_length)
               for k, t in enumerate(ys)]

    out = np.empty((len(x), len(y)), dtype=np.float64)
    sizes = [(r1 - r0) * (c1 - c0) * len(ys) for (r0, r1), (c0, c1) in
             ((row_blocks[i], col_blocks[j]) for i, j in pairs)]
    with tqdm(total=sum(sizes), unit="pair", disable=not progress, desc="gram") as bar:
        for (i, j), pair_count in zip(pairs, sizes):
            (r0, r1), (c0, c1) = row_blocks[i], col_blocks[j]
            rows = slice(i * row_length, (i + 1) * row_length)
            cols = slice(j * col_length, (j + 1) * col_length)
            block = sum(backend.compute_block(spec, xs[rows], t[cols], _take(info_x, rows),
                                              _take(info, cols))
                        for t, info in zip(ys, info_ys))[: r1 - r0, : c1 - c0]
            if symmetric and i == j:  # mirror the upper triangle: exact symmetry
                block = np.triu(block) + np.triu(block, 1).T
            out[r0:r1, c0:c1] = block
            if symmetric:
                out[c0:c1, r0:r1] = block.T
            bar.update(pair_count)
    return out


def _infos(backend, spec, images, length):
    """Self infos of all images, computed block by block, concatenated along axis 0."""
    parts = [backend.self_info(spec, images[s:s + length]) for s in range(0, len(images), length)]
    return jax.tree.map(lambda *leaves: jnp.concatenate(leaves), *parts)


def _take(info, rows: slice):
    return jax.tree.map(lambda a: a[rows], info)
