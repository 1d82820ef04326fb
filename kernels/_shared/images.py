"""Image batches: the one validation every estimator and the Gram engine run on NHWC input, and
the one uint8 -> [0, 1] scaling."""
from __future__ import annotations

import numpy as np

__all__ = ["validate_images", "to_unit_range"]


def validate_images(x, name: str = "x", dtype: str | None = "float32") -> np.ndarray:
    """Check an NHWC image batch (N, H, W, C) and return it as ``dtype``; ``dtype=None`` keeps
    uint8 as uint8 (to be scaled by :func:`to_unit_range`) and gives anything else as float32.
    ValueError names what is wrong (shape, dtype, NaN/inf and in which images, overflow)."""
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
    if dtype is None:
        dtype = "uint8" if arr.dtype == np.uint8 else "float32"
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


def to_unit_range(images: np.ndarray) -> np.ndarray:
    """float32 images: uint8 divided by 255 (to [0, 1]), any other dtype cast as it is."""
    if images.dtype == np.uint8:
        return images.astype(np.float32) / np.float32(255.0)
    return images.astype(np.float32, copy=False)
