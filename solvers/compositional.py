"""Images in, labels out: ZCA whitening -> compositional kernel -> kernel ridge classification."""
from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import check_is_fitted

from tangentless.kernels import Layer, ZCAWhitening, myrtle, validate_images
from tangentless.kernels.architectures import MYRTLE_STAGES

from .estimators import DEFAULT_ALPHAS, KernelRidgeClassifier


class CompositionalKernelClassifier(ClassifierMixin, BaseEstimator):
    """Kernel ridge classification with a compositional kernel, fitted on NHWC images.

    arch: "myrtle5" | "myrtle7" | "myrtle10" (built with ``nonlinearity`` and ``head``) or any
    ``tangentless.kernels`` Layer spec ending in a 1x1 map. zca: fit the paper's ZCA whitening on the
    training images. flip: use the flip-symmetrized kernel (training on mirror images for free).
    alphas, solver: passed to :class:`KernelRidgeClassifier` (alpha chosen on the training data).
    Memory: keeps the (whitened) training images; the training kernel is n x n float64.
    """

    def __init__(self, arch="myrtle5", nonlinearity="relu", head="project", zca=True, zca_bias=1e-5,
                 flip=True, alphas=DEFAULT_ALPHAS, solver="auto", block_size=None, progress=False):
        self.arch = arch
        self.nonlinearity = nonlinearity
        self.head = head
        self.zca = zca
        self.zca_bias = zca_bias
        self.flip = flip
        self.alphas = alphas
        self.solver = solver
        self.block_size = block_size
        self.progress = progress

    def _spec(self) -> Layer:
        if isinstance(self.arch, Layer):
            return self.arch
        names = {f"myrtle{d}": d for d in MYRTLE_STAGES}
        if self.arch not in names:
            raise ValueError(f"arch must be one of {sorted(names)} or a Layer spec, got {self.arch!r}")
        return myrtle(names[self.arch], nonlinearity=self.nonlinearity, head=self.head)

    def _gram(self, x, y=None):
        return self.spec_.gram(x, y, flip=self.flip, block_size=self.block_size,
                               progress=self.progress)

    def fit(self, X, y):
        """X: (n, H, W, C) images; y: (n,) labels."""
        images = validate_images(X, "X")
        labels = np.asarray(y)
        if labels.ndim != 1 or len(labels) != len(images):
            raise ValueError(f"y must be (n,) labels for the {len(images)} images; got shape "
                             f"{labels.shape}")
        self.spec_ = self._spec()
        self.zca_ = ZCAWhitening(bias=self.zca_bias).fit(images) if self.zca else None
        self.train_images_ = self._preprocess(images)
        self.ridge_ = KernelRidgeClassifier(alphas=self.alphas, solver=self.solver)
        self.ridge_.fit(self._gram(self.train_images_), labels)
        self.classes_ = self.ridge_.classes_
        self.alpha_ = self.ridge_.alpha_
        return self

    def _preprocess(self, images):
        return images if self.zca_ is None else self.zca_.transform(images)

    def test_kernel(self, X) -> np.ndarray:
        """(n_test, n_train) kernel between new images and the training images."""
        check_is_fitted(self, "ridge_")
        images = validate_images(X, "X")
        if images.shape[1:] != self.train_images_.shape[1:]:
            raise ValueError(f"X has images of shape {images.shape[1:]}, the model was fitted on "
                             f"{self.train_images_.shape[1:]}")
        return self._gram(self._preprocess(images), self.train_images_)

    def decision_function(self, X):
        """Ridge outputs, as :meth:`KernelRidgeClassifier.decision_function`."""
        return self.ridge_.decision_function(self.test_kernel(X))

    def predict(self, X):
        """(n_test,) predicted labels."""
        return self.ridge_.predict(self.test_kernel(X))
