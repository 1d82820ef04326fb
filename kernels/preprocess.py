"""ZCA whitening as in "Neural Kernels Without Tangents" (a scikit-learn transformer)."""
from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from ._shared.images import check_array_content
from ._shared.persist import Persistent, stored_array, stored_number, stored_shape


def _as_images(x, name: str) -> np.ndarray:
    """``x`` as an array of (N, H, W, C) images or (N, D) rows of real numbers
    (:func:`~tangentless.kernels._shared.images.check_array_content`)."""
    arr = check_array_content(x, name)
    if arr.ndim < 2:
        raise ValueError(f"{name} must be (N, H, W, C) images or (N, D) rows; got shape {arr.shape}. "
                         "Reshape your data: one image is x[None]")
    return arr


def _normalized_rows(arr: np.ndarray, name: str) -> np.ndarray:
    """(N, ...) images (checked by :func:`_as_images`) -> (N, D) float64 rows, each centred on its
    own mean and scaled to unit norm."""
    rows = arr.reshape(arr.shape[0], -1).astype(np.float64)
    if rows.shape[1] == 1:
        raise ValueError(f"{name} has 1 feature(s) per image: centring each image on its own mean "
                         "leaves nothing to whiten")
    if not np.isfinite(rows).all():
        raise ValueError(f"{name} contains NaN or inf values")
    rows = rows - rows.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    if (norms == 0).any():
        constant = np.flatnonzero(norms[:, 0] == 0)
        shown = ", ".join(map(str, constant[:10])) + (", ..." if constant.size > 10 else "")
        raise ValueError(f"{name} has {constant.size} constant images (index {shown}), which "
                         "cannot be scaled to unit norm")
    return rows / norms


class ZCAWhitening(Persistent, TransformerMixin, BaseEstimator):
    """Per-image centring and unit-norm scaling, then X @ W with W = V (E + bias)^-1/2 V^T.

    (E, V) is the eigendecomposition of the training rows' second-moment matrix X^T X / n.
    ``bias`` is added to the eigenvalues (1e-5 for kernels, 1e-4 for networks in the paper).
    Fit on training images only; ``transform`` keeps the input's shape and its float dtype (float64
    stays float64, float32 and integer or bool pixels give float32).
    Attributes: whitening_ (D, D) float64, n_features_in_ (D), input_shape_ (per-image shape).
    ``save(path)`` / ``ZCAWhitening.load(path)``: arrays + JSON, no pickle.
    """

    def __init__(self, bias: float = 1e-5):
        self.bias = bias

    def fit(self, x: ArrayLike, y: Any = None) -> ZCAWhitening:
        if not (isinstance(self.bias, (int, float, np.floating)) and np.isfinite(self.bias)
                and self.bias >= 0):
            raise ValueError(f"bias must be finite and >= 0, got {self.bias}")
        arr = _as_images(x, "x")
        rows = _normalized_rows(arr, "x")
        eigenvalues, eigenvectors = np.linalg.eigh(rows.T @ rows / rows.shape[0])
        eigenvalues = np.clip(eigenvalues, 0.0, None) + self.bias
        if (eigenvalues <= 0).any():
            raise ValueError("the image covariance is singular and bias=0: use a positive bias")
        self.whitening_ = (eigenvectors / np.sqrt(eigenvalues)) @ eigenvectors.T
        self.n_features_in_ = rows.shape[1]
        self.input_shape_ = arr.shape[1:]
        return self

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags

    def _fitted_state(self) -> tuple[dict, dict]:
        return ({"n_features_in": self.n_features_in_, "input_shape": list(self.input_shape_)},
                {"whitening": self.whitening_})

    def _restore_fitted_state(self, meta: dict, arrays: dict) -> None:
        self.n_features_in_ = d = stored_number(meta, "n_features_in", integer=True, minimum=1)
        self.input_shape_ = stored_shape(meta, "input_shape")
        if int(np.prod(self.input_shape_)) != d:
            raise ValueError(f"input_shape {self.input_shape_} does not hold n_features_in = {d}")
        self.whitening_ = stored_array(arrays, "whitening", 2, shape=(d, d))

    def transform(self, x: ArrayLike) -> np.ndarray:
        check_is_fitted(self, "whitening_")
        arr = _as_images(x, "x")
        if arr.shape[1:] != self.input_shape_:
            raise ValueError(f"X has {int(np.prod(arr.shape[1:]))} features, but ZCAWhitening is "
                             f"expecting {self.n_features_in_} features as input (per-image shape "
                             f"{arr.shape[1:]}; fitted on {self.input_shape_})")
        rows = _normalized_rows(arr, "x") @ self.whitening_
        dtype = np.float64 if arr.dtype == np.float64 else np.float32
        return rows.reshape(arr.shape).astype(dtype)
