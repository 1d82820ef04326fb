"""Batch normalization as a pure function, the one used by the scattering model and the CNN baselines."""
from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["batch_norm"]


def batch_norm(x, params, stats, *, train: bool, momentum: float, eps: float):
    """Per-channel batch norm of x (..., C) over all other axes -> (y, new_stats).

    params: {"scale", "offset"} (C,); stats: running {"mean", "var"} (C,). Training: the batch's
    mean and biased variance, and running <- momentum running + (1 - momentum) batch; evaluation:
    the running statistics, returned unchanged."""
    if train:
        axes = tuple(range(x.ndim - 1))
        mean, var = jnp.mean(x, axes), jnp.var(x, axes)
        stats = {"mean": momentum * stats["mean"] + (1 - momentum) * mean,
                 "var": momentum * stats["var"] + (1 - momentum) * var}
    else:
        mean, var = stats["mean"], stats["var"]
    y = (x - mean) * jax.lax.rsqrt(var + eps)
    return y * params["scale"] + params["offset"], stats
