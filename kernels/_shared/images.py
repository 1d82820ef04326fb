"""Image batches: the one validation every estimator and the Gram engine run on NHWC input, and
the one uint8 -> [0, 1] scaling."""
from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["validate_images", "check_array_content", "to_unit_range", "INPUT_SCALES", "check_fitted_images", "parse_input_dtype"]


def validate_images(x: ArrayLike, name: str = "x", dtype: str | None = "float32") -> np.ndarray:
    """Check an NHWC image batch (N, H, W, C) and return it as ``dtype``; ``dtype=None`` keeps
    uint8 as uint8 (to be scaled by :func:`to_unit_range`) and gives anything else as float32.
    ValueError names what is wrong (sparse, complex or non-numeric input, no images or an empty
    dimension, shape, NaN/inf and in which images, overflow), in that order."""
    arr = check_array_content(x, name)
    if arr.ndim != 4:
        raise ValueError(f"{name} must be a 4-D NHWC array (N, H, W, C); got shape {arr.shape}")
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


def check_array_content(x, name: str = "x") -> np.ndarray:
    """``x`` as a numpy array of real numbers with at least one entry, checked before its shape is:
    ValueError for sparse matrices, complex or non-numeric values, no samples or an empty
    dimension (scikit-learn's wording where it has one); an object array of numbers is read as
    float64, one holding anything else is a TypeError."""
    if hasattr(x, "toarray") or type(x).__module__.startswith("scipy.sparse"):
        raise ValueError(f"{name}: sparse input is not supported (images are dense); pass a numpy array")
    try:
        arr = np.asarray(x)
    except Exception as err:  # ragged lists and the like
        raise ValueError(f"{name} is not convertible to an array: {err}") from None
    if arr.dtype == object:     # numbers held as objects are read as float64
        try:
            arr = arr.astype(np.float64)
        except (TypeError, ValueError) as err:
            raise TypeError(f"{name} must hold real numbers; got dtype object ({err})") from None
    if np.iscomplexobj(arr):
        raise ValueError(f"{name}: Complex data not supported: images hold real numbers (got dtype "
                         f"{arr.dtype})")
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise ValueError(f"{name} must hold real numbers; got dtype {arr.dtype}")
    if arr.ndim and arr.shape[0] == 0:
        raise ValueError(f"{name} has 0 sample(s) (shape={arr.shape}) while a minimum of 1 is required.")
    if arr.ndim > 1 and min(arr.shape[1:]) == 0:
        raise ValueError(f"{name} has 0 feature(s) (shape={arr.shape}) while a minimum of 1 is required.")
    return arr


def to_unit_range(images: np.ndarray) -> np.ndarray:
    """float32 images: uint8 divided by 255 (to [0, 1]), any other dtype cast as it is."""
    if images.dtype == np.uint8:
        return images.astype(np.float32) / np.float32(255.0)
    return images.astype(np.float32, copy=False)


#: the input dtypes of the image models (``validate_images(x, dtype=None)`` gives one of them) and
#: what the models do with each: a model fitted on one refuses the other
INPUT_SCALES = {"uint8": "scaled to [0, 1]", "float32": "used as given"}


def check_fitted_images(images: np.ndarray, image_shape: tuple, fitted: str, name: str = "X",
                        scales: dict = INPUT_SCALES) -> None:
    """ValueError (one line) unless ``images`` (N, H, W, C) (validated: uint8 or float32) have the
    image shape (H, W, C) and the dtype the model was fitted on: the same pixels as uint8 and as
    floats are different inputs (/255 or not). ``scales`` says what the model does with each dtype."""
    if tuple(images.shape[1:]) != tuple(image_shape):
        raise ValueError(f"{name} has images of shape {images.shape[1:]}, the model was fitted on {tuple(image_shape)}")
    got = str(images.dtype)
    if got != fitted:
        kind = "uint8" if fitted == "uint8" else "float"
        raise ValueError(f"{name}: the model was fitted on {fitted} images ({scales[fitted]}); got {got} "
                         f"({scales.get(got, 'not an image dtype')}): pass {kind} images, as at fit")


def parse_input_dtype(value) -> str:
    """A saved model's input dtype, checked: one of :data:`INPUT_SCALES`."""
    if not isinstance(value, str) or value not in INPUT_SCALES:
        raise ValueError(f"input_dtype {value!r} is not one of {sorted(INPUT_SCALES)}")
    return value
