"""The one per-channel standardization: statistics fitted on training data in one float64 pass
(Chan's merge, so memmaps and streamed chunks work), applied as (x - mean) / std."""
from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

import numpy as np

if TYPE_CHECKING:
    import jax

#: numpy in, numpy out; JAX in, JAX out
ArrayT = TypeVar("ArrayT", "np.ndarray", "jax.Array")

__all__ = ["fit_standardization", "standardize"]


def fit_standardization(features, chunk: int = 1024) -> dict:
    """Per-channel mean and std (float32 (K,)) over all but the last axis of features (N, h, w, K),
    or of an iterable of such chunks; one pass in float64 (Chan's merge of per-chunk moments), so
    memmaps and streamed features work. A channel constant to rounding (std <= 1e-6 |mean|) gets
    std 1."""
    parts = ((features[i:i + chunk] for i in range(0, len(features), chunk))
             if hasattr(features, "shape") else features)
    count, mean, m2 = 0, np.zeros(()), np.zeros(())
    for part in parts:
        x = np.asarray(part, np.float64)
        x = x.reshape(-1, x.shape[-1])
        if not np.isfinite(x).all():
            raise ValueError("features contain NaN or inf values")
        n_b, mean_b = len(x), x.mean(0)
        m2_b = ((x - mean_b) ** 2).sum(0)
        total = count + n_b
        delta = mean_b - mean
        mean = mean + delta * n_b / total
        m2 = m2 + m2_b + delta ** 2 * count * n_b / total
        count = total
    if count == 0:
        raise ValueError("fit_standardization needs at least one feature vector")
    std = np.sqrt(m2 / count)
    std = np.where(std > 1e-6 * np.abs(mean), std, 1.0)
    return {"mean": mean.astype(np.float32), "std": std.astype(np.float32)}


def standardize(x: ArrayT, stats: dict) -> ArrayT:
    """(..., K) -> (x - mean) / std per channel."""
    return (x - stats["mean"]) / stats["std"]
