"""Images in: ZCA whitening -> compositional kernel, as a transformer (kernel out,
:class:`CompositionalKernel`) and as a kernel ridge classifier (labels out)."""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from tangentless.kernels import (AvgPool, Cast, Conv, DirectSum, Gaussian, GlobalAvgPool,
                                 GramCache, Layer, Normalize, Polynomial, Relu, Serial, ZCAWhitening,
                                 myrtle, validate_images)
from tangentless.kernels._shared.defaults import KERNEL_ALPHAS
from tangentless.kernels._shared.images import check_fitted_images, parse_input_dtype
from tangentless.kernels._shared.nested import child_state, restore_child
from tangentless.kernels._shared.persist import Persistent, stored_array
from tangentless.kernels._shared.training import check_class_labels, encode_labels
from tangentless.kernels.architectures import myrtle_depth

from .estimators import (KernelRidgeClassifier, NystromRidgeClassifier, alphas_from_json,
                         alphas_to_json)
from .nystrom import uniform_centers

#: the layer types a saved Layer spec may name (anything else in a model file is refused)
LAYER_TYPES = {cls.__name__: cls for cls in (AvgPool, Cast, Conv, DirectSum, Gaussian, GlobalAvgPool,
                                             Normalize, Polynomial, Relu, Serial)}


def spec_to_json(value):
    """A Layer spec as JSON: ``{"layer": <type name>, <field>: <value>, ...}``, nested layers and
    tuples (as lists) encoded alike; the arguments that rebuild it with :func:`spec_from_json`."""
    if isinstance(value, Layer):
        if type(value).__name__ not in LAYER_TYPES:
            raise ValueError(f"cannot save a spec holding a {type(value).__name__} layer; saved specs "
                             f"are made of {', '.join(LAYER_TYPES)}")
        return {"layer": type(value).__name__,
                **{f.name: spec_to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}}
    if isinstance(value, (tuple, list)):
        return [spec_to_json(v) for v in value]
    return value


def spec_from_json(value):
    """The Layer spec (or field value) :func:`spec_to_json` encoded; ValueError for unknown layers."""
    if isinstance(value, list):
        return tuple(spec_from_json(v) for v in value)
    if not isinstance(value, dict):
        return value
    fields = {name: spec_from_json(v) for name, v in value.items() if name != "layer"}
    if value.get("layer") not in LAYER_TYPES:
        raise ValueError(f"unknown layer {value.get('layer')!r} in a saved spec")
    if value["layer"] == "DirectSum":
        return DirectSum(*fields["branches"], weights=fields["weights"])
    return LAYER_TYPES[value["layer"]](**fields)


#: what the kernel classifier does with each input dtype (both are whitened as given)
PIXEL_SCALES = {"uint8": "pixels used as given", "float32": "pixels used as given"}


class _ImageKernel:
    """What the compositional transformer and classifier share: the spec their parameters name,
    ZCA fitted on the training images, and the kernel between images and the training images
    (through ``cache``, a :class:`~tangentless.kernels.GramCache`, where one is given)."""
    # the parameters and fitted state of the classes it is mixed into (annotations only)
    arch: str | Layer
    nonlinearity: str
    head: str
    zca: bool | ZCAWhitening
    zca_bias: float
    flip: bool | str
    block_size: int | None
    progress: bool
    cache: GramCache | None
    spec_: Layer
    zca_: ZCAWhitening | None
    train_images_: np.ndarray
    input_dtype_: str

    def _spec(self) -> Layer:
        if isinstance(self.arch, Layer):
            return self.arch
        try:
            depth = myrtle_depth(self.arch)
        except ValueError as err:
            raise ValueError(f"{err} (arch may also be a Layer spec)") from None
        return myrtle(depth, nonlinearity=self.nonlinearity, head=self.head)

    def _gram(self, x, y=None):
        options = {"flip": self.flip, "block_size": self.block_size, "progress": self.progress}
        if self.cache is not None:
            return self.cache.gram(self.spec_, x, y, **options)
        return self.spec_.gram(x, y, **options)

    def _fit_images(self, raw: np.ndarray) -> None:
        """Fit ZCA on the validated (n, H, W, C) training images (where ``zca``) and keep them
        whitened in ``train_images_``."""
        if self.cache is not None and not isinstance(self.cache, GramCache):
            raise ValueError(f"cache must be a GramCache or None; got {type(self.cache).__name__}")
        self.spec_ = self._spec()
        images = raw.astype(np.float32)
        if isinstance(self.zca, ZCAWhitening):      # fitted elsewhere (e.g. on an unlabeled pool)
            check_is_fitted(self.zca, "whitening_")
            if self.zca.bias != self.zca_bias:
                raise ValueError(f"zca is a ZCAWhitening of bias {self.zca.bias:g} but zca_bias is "
                                 f"{self.zca_bias:g}: pass the same bias")
            self.zca_ = self.zca
        else:
            self.zca_ = ZCAWhitening(bias=self.zca_bias).fit(images) if self.zca else None
        self.train_images_ = self._preprocess(images)
        self.input_dtype_ = str(raw.dtype)

    def _preprocess(self, images, *, blank_is_zero: bool = False):
        """The images ZCA-whitened (where ``zca``). With ``blank_is_zero`` (prediction), a constant
        image, which ZCA's per-image normalization cannot scale, becomes the all-zero image, whose
        kernel values the layers define (their s = 0 case); fitting refuses one, naming it."""
        if self.zca_ is None:
            return images
        if not blank_is_zero:
            return self.zca_.transform(images)
        flat = images.reshape(len(images), -1)
        blank = (flat == flat[:, :1]).all(axis=1)
        whitened = np.zeros(images.shape, np.float32)
        if not blank.all():
            whitened[~blank] = self.zca_.transform(images[~blank])
        return whitened

    def test_kernel(self, X: ArrayLike) -> np.ndarray:
        """(n_test, n_train) kernel between new images and the training images."""
        check_is_fitted(self, "train_images_")
        raw = validate_images(X, "X", dtype=None)
        check_fitted_images(raw, self.train_images_.shape[1:], self.input_dtype_, scales=PIXEL_SCALES)
        images = raw.astype(np.float32)
        return self._gram(self._preprocess(images, blank_is_zero=True), self.train_images_)


class CompositionalKernel(_ImageKernel, TransformerMixin, BaseEstimator):
    """Images in, kernel out: ``CompositionalKernel(...).fit(X).transform(Z)`` is K(Z, X) (n_Z, n_X)
    float64, the compositional kernel between new images and the training images, so that
    scikit-learn's estimators on precomputed kernels run on images in a Pipeline::

        make_pipeline(CompositionalKernel("myrtle5"), KernelRidgeClassifier())
        make_pipeline(CompositionalKernel("myrtle5"), SVC(kernel="precomputed"))
        make_pipeline(CompositionalKernel("myrtle5"), KernelRidgeRegressor())

    ``fit_transform(X)`` (what a Pipeline calls on the training images) is the symmetric K(X, X),
    computed from its upper triangle. Parameters as :class:`CompositionalKernelClassifier`'s
    (arch, nonlinearity, head, zca, zca_bias, flip, block_size, progress); ``cache``: a
    :class:`~tangentless.kernels.GramCache` shared by the clones a search makes, so that folds
    and candidates over the same (whitened) images slice one matrix instead of recomputing it
    (with ``zca=True`` each fold whitens its own training images, which are then other images:
    whiten once outside the search, with ``zca=False`` here, for folds to share values).
    Attributes: spec_, zca_, train_images_ (n, H, W, C) float32 whitened, input_dtype_.
    """

    def __init__(self, arch: str | Layer = "myrtle5", nonlinearity: str = "relu", head: str = "project",
                 zca: bool | ZCAWhitening = True, zca_bias: float = 1e-5, flip: bool | str = True,
                 block_size: int | None = None, progress: bool = False, cache: GramCache | None = None) -> None:
        self.arch = arch
        self.nonlinearity = nonlinearity
        self.head = head
        self.zca = zca
        self.zca_bias = zca_bias
        self.flip = flip
        self.block_size = block_size
        self.progress = progress
        self.cache = cache

    def fit(self, X: ArrayLike, y: Any = None) -> CompositionalKernel:
        """X: (n, H, W, C) training images (y is ignored)."""
        self._fit_images(validate_images(X, "X", dtype=None))
        return self

    def fit_transform(self, X: ArrayLike, y: Any = None) -> np.ndarray:
        """K(X, X) (n, n) float64 of the training images X (n, H, W, C)."""
        return self.fit(X)._gram(self.train_images_)

    def transform(self, X: ArrayLike) -> np.ndarray:
        """K(X, training images) (n_X, n_train) float64."""
        return self.test_kernel(X)


class CompositionalKernelClassifier(_ImageKernel, Persistent, ClassifierMixin, BaseEstimator):
    """Kernel ridge classification with a compositional kernel, fitted on NHWC images.

    arch: "myrtle5" | "myrtle7" | "myrtle10" (built with ``nonlinearity`` and ``head``) or any
    ``tangentless.kernels`` Layer spec ending in a 1x1 map. zca: True (fit the paper's ZCA
    whitening on the training images), False, or a fitted :class:`ZCAWhitening` of bias
    ``zca_bias`` to use as given, e.g. fitted on all the training images at hand, labels unused:
    with fewer training images than pixel values, ZCA fitted on them alone multiplies the
    directions they do not span by up to 1/sqrt(bias), which leave-one-out cannot see (measured:
    CIFAR-10, Myrtle5, n = 200, bias 1e-5: leave-one-out 42.5%, test 22.0%; whitened with all
    4,000 training images: 39.5% and 40.0%); a saved model keeps the whitening it used. flip: use the flip-symmetrized kernel (training on mirror images for free).
    alphas, solver: passed to :class:`KernelRidgeClassifier` (alpha chosen on the training data).
    cache: a :class:`~tangentless.kernels.GramCache` (see :class:`CompositionalKernel`), or None;
    a saved model does not keep it.
    n_centers: None (exact: the n x n training kernel) or M: Nystrom mode, which computes only
    K(X, centers) (n x M) for M training images drawn uniformly (seeded by ``random_state``)
    and keeps only the centers' images: the way to fit where n x n is out of reach.
    :class:`~tangentless.solvers.estimators.NystromRidgeClassifier` fits it (alpha on a
    stratified hold-out; ``solver`` "auto" / "direct" or "falkon"); attribute centers_ (the M
    indices into the training images).
    Memory: keeps the (whitened) training images; the training kernel is n x n float64.
    Attributes: spec_ (the Layer spec), zca_ (fitted :class:`ZCAWhitening` or None),
    train_images_ (n, H, W, C) float32, ridge_ (fitted :class:`KernelRidgeClassifier`, with the
    spec's PSD tolerance ``spec_.psd_rtol``: 1e-5 for kernels with float32 stages), classes_,
    alpha_, input_dtype_ ("uint8" or "float32": the pixels are whitened as given, so prediction
    refuses the other dtype, as it refuses another image shape). ``save(path)`` / ``CompositionalKernelClassifier.load(path)``: arrays + JSON, no pickle
    (a Layer ``arch`` is stored as the arguments that rebuild it).
    """

    def __init__(self, arch: str | Layer = "myrtle5", nonlinearity: str = "relu", head: str = "project",
                 zca: bool | ZCAWhitening = True, zca_bias: float = 1e-5, flip: bool | str = True,
                 alphas: ArrayLike = KERNEL_ALPHAS, solver: str = "auto", block_size: int | None = None,
                 progress: bool = False, cache: GramCache | None = None, n_centers: int | None = None,
                 random_state: int | None = 0) -> None:
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
        self.cache = cache
        self.n_centers = n_centers
        self.random_state = random_state

    def _nystrom_solver(self) -> str:
        if self.solver not in ("auto", "direct", "falkon"):
            raise ValueError(f"with n_centers the solver is 'auto', 'direct' or 'falkon'; got {self.solver!r}")
        return "direct" if self.solver == "auto" else self.solver

    def fit(self, X: ArrayLike, y: ArrayLike) -> CompositionalKernelClassifier:
        """X: (n, H, W, C) images; y: (n,) labels."""
        check_class_labels(y)   # the labels on their own first: no, continuous or one-class y
        raw = validate_images(X, "X", dtype=None)
        encode_labels(y, len(raw))  # shape, class labels, 2+ classes: before ZCA and Gram work
        labels = np.asarray(y)
        if self.n_centers is None:
            self._fit_images(raw)
            self.ridge_ = KernelRidgeClassifier(alphas=self.alphas, solver=self.solver,
                                                psd_rtol=self.spec_.psd_rtol)
            self.ridge_.fit(self._gram(self.train_images_), labels)
            self.centers_ = None
        else:
            solver = self._nystrom_solver()
            if int(self.n_centers) < 1:
                raise ValueError(f"n_centers must be None or >= 1; got {self.n_centers}")
            centers = uniform_centers(len(raw), min(int(self.n_centers), len(raw)),
                                      seed=self.random_state)
            self._fit_images(raw)
            k_nm = self._gram(self.train_images_, self.train_images_[centers])
            self.ridge_ = NystromRidgeClassifier(centers=centers, alphas=self.alphas, solver=solver,
                                                 random_state=self.random_state,
                                                 psd_rtol=self.spec_.psd_rtol).fit(k_nm, labels)
            self.train_images_, self.centers_ = self.train_images_[centers], centers
        self.classes_ = self.ridge_.classes_
        self.alpha_ = self.ridge_.alpha_
        return self

    def _params_to_json(self) -> dict:
        params = self.get_params(deep=False)
        return {**params, "arch": spec_to_json(params["arch"]), "alphas": alphas_to_json(params["alphas"]),
                "cache": None, "zca": bool(params["zca"] is not False)}

    @classmethod
    def _params_from_json(cls, params: dict) -> dict:
        return {**params, "arch": spec_from_json(params["arch"]),
                "alphas": alphas_from_json(params["alphas"])}

    def _fitted_state(self) -> tuple[dict, dict]:
        meta, arrays = child_state("ridge_", self.ridge_)
        meta = {**meta, "input_dtype": self.input_dtype_}
        if self.zca_ is not None:
            zca_meta, zca_arrays = child_state("zca_", self.zca_)
            meta, arrays = {**meta, **zca_meta}, {**arrays, **zca_arrays}
        return meta, {**arrays, "train_images": self.train_images_}

    def _restore_fitted_state(self, meta: dict, arrays: dict) -> None:
        self.spec_ = self._spec()
        self.zca_ = restore_child(ZCAWhitening, "zca_", meta, arrays) if self.zca else None
        ridge = KernelRidgeClassifier if self.n_centers is None else NystromRidgeClassifier
        self.ridge_ = restore_child(ridge, "ridge_", meta, arrays)
        self.centers_ = None if self.n_centers is None else np.asarray(self.ridge_.centers)
        self.train_images_ = stored_array(arrays, "train_images", 4, "f",
                                          shape=(self.ridge_.n_features_in_, None, None, None))
        if self.zca_ is not None and self.train_images_.shape[1:] != self.zca_.input_shape_:
            raise ValueError(f"train_images have shape {self.train_images_.shape[1:]}, the ZCA "
                             f"whitening {self.zca_.input_shape_}")
        self.classes_, self.alpha_ = self.ridge_.classes_, self.ridge_.alpha_
        self.input_dtype_ = parse_input_dtype(meta["input_dtype"])

    def decision_function(self, X: ArrayLike) -> np.ndarray:
        """Ridge outputs, as :meth:`KernelRidgeClassifier.decision_function`."""
        k = self.test_kernel(X)  # first: NotFittedError before ridge_ is read
        return self.ridge_.decision_function(k)

    def predict(self, X: ArrayLike) -> np.ndarray:
        """(n_test,) predicted labels."""
        k = self.test_kernel(X)  # first: NotFittedError before ridge_ is read
        return self.ridge_.predict(k)
