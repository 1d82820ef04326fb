"""Scattering + kernel ridge: scattering features, standardized per feature with the training
images' statistics, scaled to unit-norm rows, an RBF kernel exp(-|a - b|^2) between rows, and kernel
ridge classification with alpha by exact leave-one-out."""
from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import check_is_fitted

from ..kernels._shared.defaults import SCATTERING_ALPHAS
from ..kernels._shared.images import check_fitted_images, parse_input_dtype, validate_images
from ..kernels._shared.nested import child_state, restore_child
from ..kernels._shared.persist import Persistent, stored_array, stored_shape
from ..kernels._shared.standardize import fit_standardization
from ..kernels._shared.training import check_class_labels, encode_labels
from ..solvers import KernelRidgeClassifier
from ..solvers.estimators import AlphaGridParams
from .frontend import scatter

__all__ = ["ScatteringRidgeClassifier", "feature_standardization", "rbf_kernel", "scattering_rows"]


def _flat(features: np.ndarray) -> np.ndarray:
    return features.reshape(len(features), -1)


def feature_standardization(features: np.ndarray) -> dict:
    """Per-feature ``{"mean", "std"}`` (D,) float32 of features (N, ...) flattened to (N, D)
    (:func:`~tangentless.kernels._shared.standardize.fit_standardization`: constant features get
    std 1)."""
    return fit_standardization(_flat(features))


def scattering_rows(features: np.ndarray, stats: dict) -> np.ndarray:
    """Scattering features (N, ...) -> rows (N, D) float64, standardized with ``stats``
    (:func:`feature_standardization`) and scaled to unit norm."""
    rows = (_flat(features).astype(np.float64) - stats["mean"]) / stats["std"]
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)


def rbf_kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """exp(-|a_i - b_j|^2) for unit-norm rows a (N, D), b (M, D): (N, M) float64."""
    return np.exp(-np.maximum(2.0 - 2.0 * (a @ b.T), 0.0))


class ScatteringRidgeClassifier(AlphaGridParams, Persistent, ClassifierMixin, BaseEstimator):
    """Scattering (J) -> standardization (fitted on the training images) -> unit-norm rows ->
    RBF kernel ridge with alpha by exact leave-one-out. Images (N, H, W, C), H and W multiples of
    2^J; uint8 images are scaled to [0, 1]. Keeps the training rows (N, H W C K / 4^J) float64.

    Attributes: standardization_ ({"mean", "std"} (D,) float32), train_rows_ (n, D) float64,
    ridge_ (fitted :class:`~tangentless.solvers.KernelRidgeClassifier`), classes_, alpha_,
    image_shape_ (H, W, C) and input_dtype_ ("uint8" or "float32"): prediction refuses images of
    another shape or dtype (the same pixels as uint8 and as floats are different inputs).
    ``save(path)`` / ``ScatteringRidgeClassifier.load(path)``: arrays + JSON, no pickle.
    """

    def __init__(self, J=2, alphas=SCATTERING_ALPHAS, progress=False):
        self.J = J
        self.alphas = alphas
        self.progress = progress

    def _features(self, images) -> np.ndarray:
        return scatter(images, J=self.J, progress=self.progress)

    def fit(self, X, y):
        """X: (n, H, W, C) images; y: (n,) labels."""
        check_class_labels(y)   # the labels on their own first: no, continuous or one-class y
        images = validate_images(X, "X", dtype=None)
        encode_labels(y, len(images))  # shape, class labels, 2+ classes: before any scattering
        features = self._features(images)
        self.standardization_ = feature_standardization(features)
        self.train_rows_ = scattering_rows(features, self.standardization_)
        self.ridge_ = KernelRidgeClassifier(alphas=self.alphas)
        self.ridge_.fit(rbf_kernel(self.train_rows_, self.train_rows_), y)
        self.classes_, self.alpha_ = self.ridge_.classes_, self.ridge_.alpha_
        self.image_shape_, self.input_dtype_ = tuple(images.shape[1:]), str(images.dtype)
        return self

    def test_kernel(self, X) -> np.ndarray:
        """(n_test, n_train) RBF kernel between the new images' scattering rows and the training rows."""
        check_is_fitted(self, "ridge_")
        images = validate_images(X, "X", dtype=None)
        check_fitted_images(images, self.image_shape_, self.input_dtype_)
        rows = scattering_rows(self._features(images), self.standardization_)
        return rbf_kernel(rows, self.train_rows_)

    def decision_function(self, X):
        """Ridge outputs, as :meth:`KernelRidgeClassifier.decision_function` (what
        ``CalibratedClassifierCV`` turns into probabilities)."""
        k = self.test_kernel(X)   # first: NotFittedError before ridge_ is read
        return self.ridge_.decision_function(k)

    def predict(self, X):
        """(n_test,) predicted labels."""
        k = self.test_kernel(X)   # first: NotFittedError before ridge_ is read
        return self.ridge_.predict(k)

    def _fitted_state(self) -> tuple[dict, dict]:
        meta, arrays = child_state("ridge_", self.ridge_)
        meta = {**meta, "image_shape": list(self.image_shape_), "input_dtype": self.input_dtype_}
        return meta, {**arrays, "train_rows": self.train_rows_,
                      "standardization.mean": self.standardization_["mean"],
                      "standardization.std": self.standardization_["std"]}

    def _restore_fitted_state(self, meta: dict, arrays: dict) -> None:
        self.ridge_ = restore_child(KernelRidgeClassifier, "ridge_", meta, arrays)
        self.train_rows_ = stored_array(arrays, "train_rows", 2,
                                        shape=(self.ridge_.n_features_in_, None))
        d = self.train_rows_.shape[1]
        self.standardization_ = {"mean": stored_array(arrays, "standardization.mean", 1, shape=(d,)),
                                 "std": stored_array(arrays, "standardization.std", 1, shape=(d,))}
        if not (self.standardization_["std"] > 0).all():
            raise ValueError("standardization.std must be > 0")
        self.classes_, self.alpha_ = self.ridge_.classes_, self.ridge_.alpha_
        self.image_shape_ = stored_shape(meta, "image_shape", 3)
        self.input_dtype_ = parse_input_dtype(meta["input_dtype"])
