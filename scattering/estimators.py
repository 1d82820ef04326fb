"""Images in, labels out: scattering -> projection -> ISTC sparse coding -> classifier, trained by SGD."""
from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import numpy as np
from numpy.typing import ArrayLike
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from ..kernels._shared.images import check_fitted_images, parse_input_dtype, validate_images
from ..kernels._shared.persist import (Persistent, check_stored_classes, stored_array, stored_budget,
                                       stored_history, stored_shape)
from ..kernels._shared.training import (check_class_labels, check_finite_model, check_finite_outputs, encode_labels, named_arrays,
                                        trees_from_arrays)
from . import frontend, model, sparse_coding, train


def _model_config(fields: dict) -> model.ModelConfig:
    """The :class:`model.ModelConfig` of ``dataclasses.asdict(config)`` (read back from JSON)."""
    return model.ModelConfig(**dict(fields, istc=sparse_coding.ISTCConfig(**fields["istc"])))


#: the defaults of the model, ISTC and training settings, read by the classifier's parameters
_MODEL, _ISTC, _TRAIN = model.ModelConfig(), sparse_coding.ISTCConfig(), train.TrainConfig()


class SparseScatteringClassifier(Persistent, ClassifierMixin, BaseEstimator):
    """The sparse scattering network of Zarka et al. (ICLR 2020) as a scikit-learn classifier.

    fit(X, y): X (n, H, W, C) images (uint8 scaled to [0, 1], or floats used as given), y (n,)
    labels (numbers or strings). predict and decision_function refuse images of another shape or
    dtype (uint8 vs floats) than at fit, and a model or outputs with NaN or inf.
    Scattering (J, L, max_order, phase: :mod:`.frontend`) -> :mod:`.model` (projection channels
    ``projection`` with ``kernel_size`` 1 or 3; ISTC with ``dictionary_size`` atoms, ``n_iter``
    iterations, ``tied`` or free W, lambda* from ``lambda_star`` kept >= ``lambda_star_min``;
    ``sparse=False`` drops ISTC, and with ``projection=None`` it is the "scattering + linear"
    baseline; ``head`` "linear" or "mlp" with ``hidden`` units and ``dropout``; ``pool_size``) ->
    :func:`.train.fit` (``epochs``, ``batch_size``, ``lr`` divided by 10 every ``step_epochs``,
    ``momentum``, ``weight_decay``). Defaults: the paper's model sizes (256 / 2048 / 12 iterations);
    on a CPU, projection=128, dictionary_size=512, n_iter=8 is ten times cheaper.

    augment=False: scattering computed once (cached in ``cache_dir`` when given) and trained on;
    augment=True: random crops + flips, scattered online every epoch. ``checkpoint_dir``: a
    checkpoint per epoch; a fit with the same settings and data resumes from it. random_state:
    seeds initialization, data order, augmentation and dropout.

    Attributes: classes_, config_ (:class:`model.ModelConfig`), params_, state_, history_ (per-epoch
    metrics), budget_ (what the run trained on), image_shape_ (H, W, C), input_dtype_ ("uint8" or
    "float32", the images' dtype at fit), feature_shape_ (h, w, K). A diverged fit raises
    :class:`~tangentless.kernels._shared.training.TrainingDivergedError` (a ValueError).
    ``save(path)`` / ``load(path)``: the fitted classifier as arrays + JSON (no pickle).
    """

    def __init__(self, J: int = 2, L: int = 8, max_order: int = 2, phase: bool = False,
                 projection: int | None = _MODEL.projection, kernel_size: int = _MODEL.kernel_size,
                 dictionary_size: int = _ISTC.dictionary_size, n_iter: int = _ISTC.n_iter,
                 tied: bool = _ISTC.tied, lambda_star: float = _ISTC.lambda_star,
                 lambda_star_min: float = _ISTC.lambda_star_min, head: str = _MODEL.head,
                 hidden: int = _MODEL.hidden, dropout: float = _MODEL.dropout,
                 pool_size: int | None = _MODEL.pool_size, sparse: bool = _MODEL.sparse,
                 epochs: int = _TRAIN.epochs, batch_size: int = _TRAIN.batch_size, lr: float = _TRAIN.lr,
                 step_epochs: int = _TRAIN.step_epochs, momentum: float = _TRAIN.momentum,
                 weight_decay: float = _TRAIN.weight_decay, augment: bool = _TRAIN.augment,
                 cache_dir: str | os.PathLike[str] | None = None, checkpoint_dir: str | os.PathLike[str] | None = None,
                 random_state: int | np.random.RandomState | None = 0, progress: bool = False) -> None:
        self.J = J
        self.L = L
        self.max_order = max_order
        self.phase = phase
        self.projection = projection
        self.kernel_size = kernel_size
        self.dictionary_size = dictionary_size
        self.n_iter = n_iter
        self.tied = tied
        self.lambda_star = lambda_star
        self.lambda_star_min = lambda_star_min
        self.head = head
        self.hidden = hidden
        self.dropout = dropout
        self.pool_size = pool_size
        self.sparse = sparse
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.step_epochs = step_epochs
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.augment = augment
        self.cache_dir = cache_dir
        self.checkpoint_dir = checkpoint_dir
        self.random_state = random_state
        self.progress = progress

    def _seed(self) -> int:
        if isinstance(self.random_state, (int, np.integer)) and not isinstance(self.random_state, bool):
            return int(self.random_state)
        return int(check_random_state(self.random_state).randint(2 ** 31 - 1))

    def _features(self, images: np.ndarray) -> np.ndarray:
        return frontend.scatter(images, self.J, self.L, self.max_order, self.phase,
                                progress=self.progress, cache_dir=self.cache_dir)

    def fit(self, X: ArrayLike, y: ArrayLike) -> SparseScatteringClassifier:
        """Train on images X (n, H, W, C) and labels y (n,)."""
        check_class_labels(y)   # the labels on their own first: no, continuous or one-class y
        images = validate_images(X, "X", dtype=None)
        self.classes_, targets = encode_labels(y, len(images))
        self.config_ = model.ModelConfig(
            n_classes=len(self.classes_), projection=self.projection, kernel_size=self.kernel_size,
            sparse=self.sparse, istc=sparse_coding.ISTCConfig(
                dictionary_size=self.dictionary_size, n_iter=self.n_iter, tied=self.tied,
                lambda_star=self.lambda_star, lambda_star_min=self.lambda_star_min),
            head=self.head, hidden=self.hidden, dropout=self.dropout, pool_size=self.pool_size)
        config = train.TrainConfig(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr,
                                   momentum=self.momentum, weight_decay=self.weight_decay,
                                   step_epochs=self.step_epochs, augment=self.augment,
                                   seed=self._seed())
        if self.augment:
            fn = frontend.scattering_fn(images.shape[1:], self.J, self.L, self.max_order, self.phase)
            data: dict[str, Any] = {"images": images, "feature_fn": fn}
            sample = jax.ShapeDtypeStruct((1,) + images.shape[1:], np.float32)
            feature_shape = jax.eval_shape(fn, sample).shape[1:]
        else:
            data = {"features": self._features(images)}
            feature_shape = data["features"].shape[1:]
        result = train.fit(self.config_, config, targets, checkpoint_dir=self.checkpoint_dir,
                           progress=self.progress, **data)
        self.params_, self.state_, self.history_, self.budget_ = (result.params, result.state, result.history,
                                                                  result.budget)
        self.image_shape_, self.input_dtype_ = images.shape[1:], str(images.dtype)
        self.feature_shape_ = tuple(int(d) for d in feature_shape)
        return self

    def decision_function(self, X: ArrayLike) -> np.ndarray:
        """(n, n_classes) logits."""
        check_is_fitted(self, "params_")
        images = validate_images(X, "X", dtype=None)
        check_fitted_images(images, self.image_shape_, self.input_dtype_)
        check_finite_model({"params": self.params_, "state": self.state_}, "cannot predict")
        return check_finite_outputs(train.predict_logits(self.params_, self.state_, self.config_,
                                                         features=self._features(images)))

    def predict_proba(self, X: ArrayLike) -> np.ndarray:
        """(n, n_classes) softmax probabilities, columns in the order of classes_."""
        logits = self.decision_function(X)
        e = np.exp(logits - logits.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    def predict(self, X: ArrayLike) -> np.ndarray:
        """(n,) predicted labels."""
        logits = self.decision_function(X)   # first: NotFittedError before classes_ is read
        return self.classes_[np.argmax(logits, 1)]

    # --- persistence (Persistent: save / load) ---

    def _params_to_json(self) -> dict:
        params = self.get_params(deep=False)
        return dict(params, **{name: None if params[name] is None else str(params[name])
                               for name in ("cache_dir", "checkpoint_dir")})

    def _fitted_state(self) -> tuple[dict, dict]:
        check_finite_model({"params": self.params_, "state": self.state_}, "refusing to save")
        meta = {"config": dataclasses.asdict(self.config_), "history": self.history_, "budget": self.budget_,
                "image_shape": list(self.image_shape_), "input_dtype": self.input_dtype_,
                "feature_shape": list(self.feature_shape_)}
        return meta, {"classes": np.asarray(self.classes_),
                      **named_arrays({"params": self.params_, "state": self.state_})}

    def _restore_fitted_state(self, meta: dict, arrays: dict) -> None:
        arrays = dict(arrays)  # entries are consumed below; the caller's dict stays whole
        self.classes_ = check_stored_classes(stored_array(arrays, "classes", 1, "iufbU"))
        del arrays["classes"]
        self.config_ = _model_config(meta["config"])
        self.history_, self.budget_ = stored_history(meta), stored_budget(meta)
        self.image_shape_ = stored_shape(meta, "image_shape", 3)
        self.feature_shape_ = stored_shape(meta, "feature_shape", 3)
        self.input_dtype_ = parse_input_dtype(meta["input_dtype"])
        if len(self.classes_) != self.config_.n_classes:
            raise ValueError(f"{len(self.classes_)} classes for a model of {self.config_.n_classes} outputs")
        params, state = jax.eval_shape(lambda key: model.init(key, self.config_, self.feature_shape_),
                                       jax.random.key(0))
        trees = trees_from_arrays({"params": params, "state": state}, arrays)
        if arrays:
            raise ValueError(f"entries the model lacks: {sorted(arrays)[:5]}")
        check_finite_model(trees, "cannot load")
        self.params_, self.state_ = trees["params"], trees["state"]
