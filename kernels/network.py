"""The finite-width network of a layer spec (the network whose NNGP is the spec's kernel)."""
from __future__ import annotations

import math
from typing import Any, Callable

import jax
import jax.numpy as jnp


def network(spec: Any, width: int, num_outputs: int | None = None
            ) -> tuple[Callable[..., dict[str, Any]], Callable[..., jax.Array]]:
    """Return ``(init, apply)`` for the network of ``spec`` (a :class:`~tangentless.kernels.Layer`,
    or any object with its ``init`` and ``apply``) with ``width`` channels per layer.

    ``init(key, in_channels) -> params``; ``apply(params, x) -> out`` for NHWC pixels x (N, H, W, C).
    The pixels enter scaled by sqrt(C), so that channel averages reproduce the kernel's channel sums.
    Without ``num_outputs``, ``out`` is the last feature map (N, H', W', width'), whose channel-averaged
    products converge to the kernel as the width grows. With ``num_outputs``, a linear readout
    (weights N(0, 1 / width'), no bias) follows a 1 x 1 map: out (N, num_outputs), each output an
    independent draw with covariance equal (in the limit) to the kernel.
    """
    if width < 1:
        raise ValueError(f"width must be >= 1, got {width}")
    if num_outputs is not None and num_outputs < 1:
        raise ValueError(f"num_outputs must be >= 1, got {num_outputs}")

    def init(key, in_channels: int):
        body_key, readout_key = jax.random.split(key)
        body, channels = spec.init(body_key, in_channels, width)
        if num_outputs is None:
            return {"body": body}
        return {"body": body, "readout": jax.random.normal(readout_key, (channels, num_outputs))}

    def apply(params, x):
        h = spec.apply(params["body"], x * math.sqrt(x.shape[-1]))
        if "readout" not in params:
            return h
        if h.shape[1:3] != (1, 1):
            raise ValueError(f"a readout needs a 1x1 final map (end the spec with GlobalAvgPool); "
                             f"got {h.shape[1]}x{h.shape[2]}")
        features = h.reshape(h.shape[0], -1)
        return features @ params["readout"] / math.sqrt(features.shape[-1])

    return init, apply


def empirical_kernel(features: jax.Array) -> jnp.ndarray:
    """Channel-averaged feature products of (N, 1, 1, C) or (N, C) features: (N, N)."""
    f = features.reshape(features.shape[0], -1)
    return f @ f.T / f.shape[-1]
