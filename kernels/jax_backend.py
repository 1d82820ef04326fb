"""The JAX backend: the layer math of a spec through XLA on JAX's default device (CPU or GPU).

It only calls the spec's ``self_pixel_kernel`` and ``pixel_kernel``, so it knows nothing of the
layers themselves.
"""
from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .backend import register_backend
from .layout import default_block_size

__all__ = ["JaxBackend", "self_infos", "cross_block", "pairs_per_step"]


@functools.partial(jax.jit, static_argnums=0)
def self_infos(spec, x):
    """Per-image infos of images x (B, H, W, C): pytree with leaves (B, 1, h, w), computed one
    image at a time (cache-sized)."""
    return jax.lax.map(lambda xi: spec.self_pixel_kernel(xi[None])[1], x)


#: on an accelerator, the share of its memory one step's tensors may take
ACCELERATOR_MEMORY_FRACTION = 0.25
#: an accelerator whose memory JAX does not report is assumed to have this many bytes
ACCELERATOR_MEMORY_DEFAULT = 16 * 2 ** 30
#: tensors of one pair's largest stage alive at once in a step (a conv's padded input behind its
#: optimization barrier, the shifted-slice sum, the correlation and the nonlinearity's output;
#: rounded up)
LIVE_TENSORS = 6


def pairs_per_step(height: int, width: int, device=None) -> int:
    """Image pairs evaluated together in one step on ``device`` (default: JAX's first device).

    CPU: enough for ~1M tensor entries (4 MiB in float32: one pair at 32x32, kept in cache; see
    benchmarks/kernel_throughput.py). Accelerator: as many as fit in
    :data:`ACCELERATOR_MEMORY_FRACTION` of its memory at :data:`LIVE_TENSORS` float32 tensors of
    (height * width)^2 entries per pair (at 32x32 on an H200, whose ~106 GB JAX reports by
    default: ~1,050 pairs), so the
    device is filled rather than stepping one pair at a time.
    """
    entries = (height * width) ** 2
    device = jax.devices()[0] if device is None else device
    if device.platform == "cpu":
        return max(1, 2 ** 20 // entries)
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    limit = (stats or {}).get("bytes_limit") or ACCELERATOR_MEMORY_DEFAULT
    return max(1, int(ACCELERATOR_MEMORY_FRACTION * limit // (entries * 4 * LIVE_TENSORS)))


@functools.partial(jax.jit, static_argnums=(0, 5))
def cross_block(spec, x, y, info_x, info_y, pairs: int = 1):
    """(Bx, By) float64 block, ``pairs`` image pairs per step: for min(pairs, By) images of y at
    once against max(1, pairs // By) images of x at once (lax.map batches, no gathers).

    On a CPU one pair per step (:func:`pairs_per_step`): a step's tensors stay near the cache size,
    which measured 3-5x faster than whole batches (see benchmarks/kernel_throughput.py).
    """
    by = y.shape[0]

    def row(args):
        xi, ix = args

        def pair(args):
            yj, iy = args
            return spec.pixel_kernel(xi[None], yj[None], ix, iy).reshape(()).astype(jnp.float64)

        return jax.lax.map(pair, (y, info_y), batch_size=min(pairs, by))

    return jax.lax.map(row, (x, info_x), batch_size=max(1, pairs // by))


class JaxBackend:
    """Gram backend "jax": runs the layer math through XLA on JAX's default device (CPU or GPU);
    runs every spec. ``pairs``: image pairs per step (None: :func:`pairs_per_step` for the
    device)."""
    name = "jax"
    pairs: int | None = None  # (a class default: subclasses that skip __init__ keep working)

    def __init__(self, pairs: int | None = None) -> None:
        if pairs is not None and (not isinstance(pairs, int) or pairs < 1):
            raise ValueError(f"pairs must be None or an integer >= 1; got {pairs!r}")
        self.pairs = pairs

    def _pairs(self, image_shape) -> int:
        return self.pairs or pairs_per_step(*image_shape[:2])

    def self_info(self, spec: Any, x: np.ndarray) -> Any:
        with jax.enable_x64(True):
            return self_infos(spec, jnp.asarray(x))

    def compute_block(self, spec: Any, x: np.ndarray, y: np.ndarray, info_x: Any, info_y: Any) -> np.ndarray:
        with jax.enable_x64(True):
            return np.asarray(cross_block(spec, jnp.asarray(x), jnp.asarray(y), info_x, info_y,
                                          self._pairs(x.shape[1:])))

    def unsupported(self, spec: Any, image_shape: tuple[int, int, int]) -> None:
        return None

    def preferred_block_size(self, spec: Any, image_shape: tuple[int, int, int]) -> int:
        """:func:`~tangentless.kernels.layout.default_block_size`, or on a device that takes more
        pairs per step, blocks of about one step (at most 256 images)."""
        default = default_block_size(*image_shape[:2])
        return int(min(256, max(default, math.isqrt(self._pairs(image_shape)))))


register_backend("jax", JaxBackend)
