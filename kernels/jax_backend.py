"""The JAX backend: the layer math of a spec through XLA on JAX's default device (CPU or GPU).

It only calls the spec's ``self_pixel_kernel`` and ``pixel_kernel``, so it knows nothing of the
layers themselves.
"""
from __future__ import annotations

import functools

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


def pairs_per_step(height: int, width: int) -> int:
    """Image pairs evaluated together: enough for ~1M tensor entries (4 MiB in float32) per step."""
    return max(1, 2 ** 20 // (height * width) ** 2)


@functools.partial(jax.jit, static_argnums=0)
def cross_block(spec, x, y, info_x, info_y):
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
    """Gram backend "jax": runs the layer math through XLA on JAX's default device (CPU or GPU);
    runs every spec."""
    name = "jax"

    def self_info(self, spec, x: np.ndarray):
        with jax.enable_x64(True):
            return self_infos(spec, jnp.asarray(x))

    def compute_block(self, spec, x, y, info_x, info_y) -> np.ndarray:
        with jax.enable_x64(True):
            return np.asarray(cross_block(spec, jnp.asarray(x), jnp.asarray(y), info_x, info_y))

    def unsupported(self, spec, image_shape) -> None:
        return None

    def preferred_block_size(self, spec, image_shape) -> int:
        """:func:`~tangentless.kernels.layout.default_block_size` (memory is set by
        :func:`pairs_per_step`, not by the block)."""
        return default_block_size(*image_shape[:2])


register_backend("jax", JaxBackend)
