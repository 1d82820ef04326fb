"""The sparse scattering classifier on precomputed scattering maps, as pure functions (NHWC).

features (B, h, w, K) -> standardize (fixed per-channel mean/std) -> projection (learned conv,
1x1 or 3x3 with reflect padding, no bias; ``projection=None`` keeps the K channels) -> each pixel
divided by its L2 norm -> ISTC codes (B, h, w, m) (``sparse=False`` skips it) -> batch norm ->
average pool (size p, stride 1, no padding: h -> h - p + 1) -> flatten -> head ("linear", or "mlp":
Linear-ReLU-Dropout-Linear-ReLU-Dropout-Linear, as the reference code) -> logits (B, n_classes).

Pooling: the paper pools 5x5 on 14x14 maps (ImageNet, J=4). ``pool_size=None`` keeps that ratio of
pool to map size, p = max(1, round(5 h / 14)): 3 on CIFAR's 8x8 maps (J=2), which leaves 6x6
positions, about the paper's share of positions kept (36/64 vs 100/196).

params: {"projection": {"kernel": (k, k, K, P)}, "istc": ..., "bn": {"scale", "offset"},
"head": [{"w", "b"}, ...]}; state: {"standardize": {"mean", "std"}, "istc": ..., "bn": {"mean",
"var"}} (non-gradient arrays). Batch norm: batch statistics (biased variance) in training, running
ones in evaluation; running <- m running + (1 - m) batch with m = ``bn_momentum``.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ..kernels._shared.batch_norm import batch_norm
from ..kernels._shared.standardize import standardize
from . import sparse_coding

HEADS = ("linear", "mlp")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Architecture of :mod:`tangentless.scattering.model` (defaults: the paper's ImageNet model)."""

    n_classes: int = 10
    projection: int | None = 256
    kernel_size: int = 1
    sparse: bool = True
    istc: sparse_coding.ISTCConfig = sparse_coding.ISTCConfig()
    head: str = "linear"
    hidden: int = 4096
    dropout: float = 0.3
    pool_size: int | None = None
    bn_momentum: float = 0.9
    bn_eps: float = 1e-5

    def __post_init__(self):
        if self.n_classes < 2:
            raise ValueError(f"n_classes must be >= 2; got {self.n_classes}")
        if self.projection is not None and self.projection < 1:
            raise ValueError(f"projection must be None or >= 1 channels; got {self.projection}")
        if self.kernel_size not in (1, 3):
            raise ValueError(f"kernel_size must be 1 or 3; got {self.kernel_size}")
        if self.kernel_size == 3 and self.projection is None:
            raise ValueError("kernel_size=3 needs a projection (projection=None is the identity)")
        if self.head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}; got {self.head!r}")
        if self.hidden < 1 or not 0 <= self.dropout < 1:
            raise ValueError(f"need hidden >= 1 and 0 <= dropout < 1; got {self.hidden}, {self.dropout}")
        if self.pool_size is not None and self.pool_size < 1:
            raise ValueError(f"pool_size must be None or >= 1; got {self.pool_size}")
        if not 0 <= self.bn_momentum < 1:
            raise ValueError(f"bn_momentum must be in [0, 1); got {self.bn_momentum}")
        if not isinstance(self.istc, sparse_coding.ISTCConfig):
            raise ValueError(f"istc must be an ISTCConfig; got {type(self.istc).__name__}")

    def pool(self, h: int, w: int) -> int:
        """Average-pool size used on (h, w) maps."""
        p = self.pool_size if self.pool_size is not None else max(1, round(5 * min(h, w) / 14))
        if p > min(h, w):
            raise ValueError(f"pool_size {p} is larger than the {h}x{w} feature maps")
        return p


def projection_conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """Conv (B, h, w, K) -> (B, h, w, P) with kernel (k, k, K, P), k odd, reflect padding, no bias."""
    pad = (kernel.shape[0] - 1) // 2
    if pad:
        x = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="reflect")
    return jax.lax.conv_general_dilated(x, kernel, (1, 1), "VALID",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))


def l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
    """Each pixel's channel vector (..., C) divided by its L2 norm."""
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)


def avg_pool(x: jax.Array, p: int) -> jax.Array:
    """(B, h, w, C) -> (B, h-p+1, w-p+1, C): p x p means, stride 1, no padding."""
    if p == 1:
        return x
    s = jax.lax.reduce_window(x, 0.0, jax.lax.add, (1, p, p, 1), (1, 1, 1, 1), "VALID")
    return s / (p * p)


def _dense_init(key, n_in: int, n_out: int) -> dict:
    bound = 1 / math.sqrt(n_in)
    return {"w": jax.random.uniform(key, (n_in, n_out), jnp.float32, -bound, bound),
            "b": jnp.zeros((n_out,), jnp.float32)}


def head_inputs(config: ModelConfig, shape: tuple[int, int, int]) -> int:
    """Number of inputs of the head for feature maps of shape (h, w, K)."""
    h, w, k = shape
    c = config.istc.dictionary_size if config.sparse else (config.projection or k)
    p = config.pool(h, w)
    return (h - p + 1) * (w - p + 1) * c


def init(key: jax.Array, config: ModelConfig, feature_shape, standardization: dict | None = None):
    """(params, state) for features of shape (h, w, K). ``standardization``: {"mean", "std"} (K,)
    from :func:`~tangentless.kernels._shared.standardize.fit_standardization` (default: identity)."""
    h, w, k = feature_shape
    kp, ki, kh = jax.random.split(key, 3)
    params: dict[str, Any] = {}
    state: dict[str, Any] = {}
    if standardization is None:
        standardization = {"mean": np.zeros(k, np.float32), "std": np.ones(k, np.float32)}
    state["standardize"] = {name: jnp.asarray(standardization[name], jnp.float32).reshape(k)
                            for name in ("mean", "std")}
    channels = k
    if config.projection is not None:
        fan_in = config.kernel_size ** 2 * k
        params["projection"] = {"kernel": jax.random.normal(
            kp, (config.kernel_size, config.kernel_size, k, config.projection), jnp.float32)
            / math.sqrt(fan_in)}
        channels = config.projection
    if config.sparse:
        params["istc"], state["istc"] = sparse_coding.init(ki, config.istc, channels)
        channels = config.istc.dictionary_size
    params["bn"] = {"scale": jnp.ones(channels, jnp.float32), "offset": jnp.zeros(channels, jnp.float32)}
    state["bn"] = {"mean": jnp.zeros(channels, jnp.float32), "var": jnp.ones(channels, jnp.float32)}
    widths = [head_inputs(config, (h, w, k))]
    widths += [config.hidden] * 2 if config.head == "mlp" else []
    widths += [config.n_classes]
    keys = jax.random.split(kh, len(widths) - 1)
    params["head"] = [_dense_init(kk, a, b) for kk, a, b in zip(keys, widths[:-1], widths[1:])]
    return params, state


def _dropout(x, rate: float, key):
    keep = jax.random.bernoulli(key, 1 - rate, x.shape)
    return jnp.where(keep, x / (1 - rate), 0.0)


def encode(params, state, features, config: ModelConfig, *, train: bool):
    """features (B, h, w, K) -> (codes (B, h, w, C) before batch norm, new state, diagnostics)."""
    x = standardize(features, state["standardize"])
    if config.projection is not None:
        x = projection_conv(x, params["projection"]["kernel"])
    x = l2_normalize(x)
    new_state, diagnostics = dict(state), {}
    if config.sparse:
        x, new_state["istc"], diagnostics = sparse_coding.apply(params["istc"], state["istc"], x,
                                                                config.istc, train=train)
    return x, new_state, diagnostics


def apply(params, state, features, config: ModelConfig, *, train: bool, rng=None):
    """features (B, h, w, K) float32 -> (logits (B, n_classes), new_state, diagnostics).

    ``rng``: a PRNG key, needed for the MLP's dropout when ``train``. diagnostics: ISTC's
    (:func:`sparse_coding.apply`), empty when ``sparse=False``.
    """
    x, new_state, diagnostics = encode(params, state, features, config, train=train)
    x, new_state["bn"] = batch_norm(x, params["bn"], state["bn"], train=train,
                                    momentum=config.bn_momentum, eps=config.bn_eps)
    x = avg_pool(x, config.pool(*features.shape[1:3])).reshape(len(x), -1)
    dropout = train and config.head == "mlp" and config.dropout > 0
    if dropout and rng is None:
        raise ValueError("apply(train=True) with the MLP head's dropout needs rng (a PRNG key)")
    keys: Any = jax.random.split(rng, len(params["head"])) if dropout else None
    for i, layer in enumerate(params["head"]):
        x = x @ layer["w"] + layer["b"]
        if i < len(params["head"]) - 1:
            x = jax.nn.relu(x)
            if dropout:
                x = _dropout(x, config.dropout, keys[i])
    return x, new_state, diagnostics


def project_onto_constraints(params, state, config: ModelConfig):
    """Params back onto their constraint sets after an optimizer step (ISTC's
    :func:`.sparse_coding.project_onto_constraints`); the other parameters are unconstrained."""
    if not config.sparse:
        return params
    return dict(params, istc=sparse_coding.project_onto_constraints(params["istc"], state["istc"], config.istc))
