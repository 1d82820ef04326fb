"""Training of :mod:`tangentless.scattering.model` by the library's one training loop
(:func:`tangentless.kernels._shared.training.train_loop`: data order, resume, checkpoints, history).

Optimizer: SGD with momentum, weight decay added to the gradient before momentum (PyTorch's rule),
on the weights of ndim >= 2 only (projection kernel, D, W, head weights; not biases, batch norm or
log_lambda_star); learning rate lr0 / 10^floor(epoch / step_epochs) (optax's staircase
exponential decay). After every step the ISTC parameters are projected back onto their
constraints (:func:`model.project_onto_constraints`).

Data: either precomputed ``features`` (N, h, w, K) (no augmentation), or ``images`` (N, H, W, C)
(uint8 scaled to [0, 1]) with a ``feature_fn`` (e.g. ``frontend.scattering_fn``) applied online,
optionally after random crops (zero padding ``crop_padding``) and horizontal flips. Standardization
statistics come from the unaugmented training features. Each epoch visits a permutation of the
training set in batches of ``min(batch_size, N)``, the last incomplete batch dropped. Every random
stream is a function of (seed, epoch, step): the permutation and augmentation of epoch e use
``numpy.random.default_rng([seed, e, 0 | 1])``, dropout uses ``fold_in(fold_in(key(seed), 1), step)``,
so a resumed run replays exactly what an uninterrupted one would have done.

Folders (:func:`fit_folder`, for sets too large for memory such as ImageNet): an
:class:`~.imagenet.ImageFolder` streamed by :func:`.imagenet.iterate_batches` with seed (seed, e) in
epoch e (random resized crops and flips with ``augment``), through the same loop; memory is bounded
by the loader's prefetch, not by the folder's size.

Checkpoints (``checkpoint_dir/checkpoint.npz``, written atomically after every epoch): params, state
and optimizer state, epoch, history and a fingerprint of the configuration and data. A run resumes
from it when the fingerprint matches, which allows a larger ``epochs`` and nothing else.
"""
from __future__ import annotations

import dataclasses
import functools
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ..kernels._shared.digest import config_sha256
from ..kernels._shared.images import to_unit_range
from ..kernels._shared.standardize import fit_standardization
from ..kernels._shared.training import (CHECKPOINT, CheckpointError, TrainResult, ArrayData, augment_batch,
                                        check_labels, evaluation_scores, fingerprint, padded_batches, sgd,
                                        sgd_update, step_decay, train_loop, train_metrics)
from . import imagenet, model, sparse_coding

__all__ = ["CHECKPOINT", "CheckpointError", "TrainConfig", "TrainResult", "augment_batch", "fit", "fit_folder",
           "evaluate", "evaluate_folder", "predict_logits", "make_train_step"]

#: ISTC diagnostics averaged over each epoch into the history
DIAGNOSTICS = ("support_size", "sparsity", "rec_error", "lambda0", "lambda_star")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Optimization settings (defaults: the paper's, except a shorter run)."""

    epochs: int = 10
    batch_size: int = 128
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    step_epochs: int = 60
    augment: bool = False
    crop_padding: int = 4
    seed: int = 0
    eval_batch_size: int = 256

    def __post_init__(self):
        for name in ("epochs", "batch_size", "step_epochs", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1; got {getattr(self, name)}")
        if self.lr <= 0 or self.weight_decay < 0 or not 0 <= self.momentum < 1:
            raise ValueError(f"need lr > 0, weight_decay >= 0, 0 <= momentum < 1; got {self.lr}, "
                             f"{self.weight_decay}, {self.momentum}")
        if self.crop_padding < 0:
            raise ValueError(f"crop_padding must be >= 0; got {self.crop_padding}")


# --- data: arrays or folders, raw batches -> features ---------------------------------------------------

def _array_data(features=None, images=None, feature_fn=None, labels=None, n_classes=None,
                label_name="labels") -> tuple[ArrayData, object]:
    """(ArrayData of features (N, h, w, K) or images (N, H, W, C), the feature_fn for images or None)."""
    if (features is None) == (images is None):
        raise ValueError("pass either features or images (with feature_fn), not both or neither")
    if images is not None and feature_fn is None:
        raise ValueError("images need a feature_fn (e.g. frontend.scattering_fn(...))")
    data = ArrayData(features if features is not None else images, labels, n_classes, label_name)
    if data.array.ndim != 4:
        raise ValueError(f"{'features' if images is None else 'images'} must be 4-D NHWC; got "
                         f"shape {data.array.shape}")
    return data, (feature_fn if images is not None else None)


def _features(feature_fn, raw) -> jax.Array:
    """Features (B, h, w, K) float32 of a raw batch: itself, or ``feature_fn`` of the images scaled
    to [0, 1] (uint8) or as they are (floats)."""
    if feature_fn is None:
        return jnp.asarray(raw, jnp.float32)
    return feature_fn(jnp.asarray(to_unit_range(raw)))


def _feature_shape(feature_fn, example_shape) -> tuple:
    """(h, w, K) of one example's features."""
    if feature_fn is None:
        return tuple(example_shape)
    spec = jax.ShapeDtypeStruct((1,) + tuple(example_shape), jnp.float32)
    return tuple(jax.eval_shape(feature_fn, spec).shape[1:])


def _padded_features(feature_fn, batches, batch_size: int, total: int):
    """(features (B, h, w, K), n, labels) per raw batch of n items of a set of ``total``, padded as
    :func:`~tangentless.kernels._shared.training.padded_batches` says."""
    for raw, n, labels in padded_batches(batches, batch_size, total):
        yield _features(feature_fn, raw), n, labels


class _Folder:
    """An :class:`~.imagenet.ImageFolder` streamed by :func:`.imagenet.iterate_batches`: images
    (B, size, size, 3) uint8 and labels. ``loader``: size, resize and optionally num_threads,
    prefetch for iterate_batches; ``standardization_images`` (capped at N): see :func:`fit_folder`,
    None for an evaluation set."""

    def __init__(self, folder, n_classes: int, loader: dict, standardization_images=None):
        if not isinstance(folder, imagenet.ImageFolder):
            raise TypeError(f"folder must be an imagenet.ImageFolder; got {type(folder).__name__}")
        size, resize = loader["size"], loader["resize"]
        if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in (size, resize)) \
                or not 1 <= size <= resize:
            raise ValueError(f"need integers 1 <= size <= resize (the evaluation transform resizes the "
                             f"shorter side to resize, then center-crops size); got size={size!r}, "
                             f"resize={resize!r}")
        self.folder, self.loader = folder, loader
        self.labels = check_labels(folder.labels, len(folder), n_classes, f"labels of {folder}")
        self.example_shape = (size, size, 3)
        if standardization_images is not None:
            if isinstance(standardization_images, bool) or not isinstance(standardization_images, (int, np.integer)) \
                    or standardization_images < 1:
                raise ValueError(f"standardization_images must be a positive integer; got {standardization_images!r}")
            standardization_images = min(int(standardization_images), len(folder))
        self.standardization_images = standardization_images

    def __len__(self):
        return len(self.folder)

    def _stream(self, batch_size: int, **options):
        return imagenet.iterate_batches(self.folder, batch_size, **self.loader, **options)

    def train_batches(self, seed: int, epoch: int, batch: int, augment: bool):
        """Epoch ``epoch``: ``iterate_batches`` shuffled with seed (seed, epoch), full batches, the
        training transform when ``augment`` (else the evaluation one)."""
        return self._stream(batch, train=augment, shuffle=True, seed=(seed, epoch), drop_last=True)

    def eval_batches(self, batch_size: int):
        return self._stream(batch_size, train=False)

    def standardization_batches(self, seed: int, batch_size: int):
        """The first ``standardization_images`` images of a seeded order (seed (seed, 0, 1), which
        no epoch uses), evaluation transform."""
        remaining = self.standardization_images
        for images, labels in self._stream(batch_size, train=False, shuffle=True, seed=(seed, 0, 1)):
            yield images[:remaining], labels[:remaining]
            remaining -= len(images)
            if remaining <= 0:
                return

    def fingerprint(self) -> dict:
        """The number of images, the SHA-256 of the sample list (paths relative to the root, and
        labels), size, resize and standardization_images."""
        root = self.folder.root
        listing = [[pathlib.Path(path).relative_to(root).as_posix(), int(label)]
                   for path, label in self.folder.samples]
        return {"kind": "folder", "images": len(self.folder), "samples_sha256": config_sha256(listing),
                "size": self.loader["size"], "resize": self.loader["resize"],
                "standardization_images": self.standardization_images}


# --- step, evaluation -------------------------------------------------------------------------------

@functools.lru_cache(maxsize=16)
def make_train_step(config: model.ModelConfig, momentum: float, weight_decay: float):
    """(optimizer, jitted (params, state, opt_state, x, y, lr, key) -> (params, state, opt_state,
    metrics)): SGD (:func:`~tangentless.kernels._shared.training.sgd`) at learning rate ``lr``, then
    the constraint projection; metrics: loss, train_top1 and the ISTC diagnostics. Cached: one
    compilation per model, optimizer and batch shape serves every schedule and seed."""
    optimizer = sgd(momentum, weight_decay)

    def step(params, state, opt_state, x, y, lr, key):
        def loss_fn(p):
            logits, new_state, diag = model.apply(p, state, x, config, train=True, rng=key)
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
            return loss, (logits, new_state, diag)

        (loss, (logits, new_state, diag)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = model.project_onto_constraints(sgd_update(params, updates, lr), new_state, config)
        metrics = train_metrics(logits, y, loss)
        metrics.update({k: diag[k] for k in DIAGNOSTICS if k in diag})
        return params, new_state, opt_state, metrics

    return optimizer, jax.jit(step)


@functools.lru_cache(maxsize=16)
def _eval_forward(config):
    return jax.jit(lambda p, s, x: model.apply(p, s, x, config, train=False)[0])


def _cross_entropy(logits, labels):
    """(B,) softmax cross-entropy of logits (B, K) for integer labels (B,)."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def _forward(params, state, config, data, feature_fn, batch_size: int):
    """(logits (n, n_classes) evaluation mode, labels (n,) or None) per batch of ``data`` in order."""
    forward = _eval_forward(config)
    for x, n, labels in _padded_features(feature_fn, data.eval_batches(batch_size), batch_size, len(data)):
        yield forward(params, state, x)[:n], labels


def _scores(params, state, config, data, feature_fn, batch_size: int) -> dict:
    """Top-1, top-5 and mean cross-entropy of a labelled set, accumulated batch by batch."""
    return evaluation_scores(_forward(params, state, config, data, feature_fn, batch_size), _cross_entropy,
                             len(data))


def predict_logits(params, state, config: model.ModelConfig, *, features=None, images=None,
                   feature_fn=None, batch_size: int = 256) -> np.ndarray:
    """(N, n_classes) evaluation-mode logits of features, or of images through ``feature_fn``;
    in batches padded to one shape (one compilation)."""
    data, fn = _array_data(features, images, feature_fn)
    return np.concatenate([np.asarray(logits) for logits, _ in _forward(params, state, config, data, fn, batch_size)])


def evaluate(params, state, config: model.ModelConfig, labels, *, features=None, images=None,
             feature_fn=None, batch_size: int = 256) -> dict:
    """{"top1", "top5", "loss" (mean cross-entropy)} on a labelled set (features or images)."""
    data, fn = _array_data(features, images, feature_fn, labels, config.n_classes)
    return _scores(params, state, config, data, fn, batch_size)


def _loader(size, resize, num_threads, prefetch) -> dict:
    """iterate_batches' options; num_threads None: its default."""
    options = {"size": size, "resize": resize, "prefetch": prefetch}
    return options if num_threads is None else dict(options, num_threads=num_threads)


def _check_feature_fn(feature_fn) -> None:
    if not callable(feature_fn):
        raise ValueError("a folder needs a feature_fn (e.g. frontend.scattering_fn((224, 224, 3), 4))")


def evaluate_folder(params, state, config: model.ModelConfig, folder, feature_fn, *, size: int = 224,
                    resize: int = 256, batch_size: int = 256, num_threads: int | None = None,
                    prefetch: int = 2) -> dict:
    """:func:`evaluate` on an :class:`~.imagenet.ImageFolder` streamed with the evaluation transform
    (shorter side resized to ``resize``, center crop ``size``) through ``feature_fn``."""
    _check_feature_fn(feature_fn)
    data = _Folder(folder, config.n_classes, _loader(size, resize, num_threads, prefetch))
    return _scores(params, state, config, data, feature_fn, batch_size)


# --- fitting ---------------------------------------------------------------------------------------

def fit(model_config: model.ModelConfig, train_config: TrainConfig, labels, *, features=None,
        images=None, feature_fn=None, eval_set=None, checkpoint_dir=None,
        progress: bool = False) -> TrainResult:
    """Train from scratch, or resume from ``checkpoint_dir``'s checkpoint, to ``train_config.epochs``.

    labels: (N,) ints in [0, n_classes). features (N, h, w, K) float, or images (N, H, W, C) with
    ``feature_fn``. eval_set: (X, y) of the same kind, evaluated after every epoch (top-1/top-5).
    Batches of ``min(batch_size, N)``. Per-epoch history (the names of
    :func:`~tangentless.kernels._shared.training.train_loop`): epoch, lr, loss, train_top1
    (training batches, train mode), seconds, images_per_s; with ISTC the means over the epoch's
    steps of support_size and sparsity (per iteration), rec_error, lambda0, lambda_star, and the
    dictionary coherence at the epoch's end; with eval_set test_top1, test_top5, test_loss.
    Datasets too large for memory: :func:`fit_folder`.
    """
    data, fn = _array_data(features, images, feature_fn, labels, model_config.n_classes)
    if len(data) < 2:
        raise ValueError(f"need at least 2 training examples; got {len(data)}")
    if train_config.augment and fn is None:
        raise ValueError("augment=True needs images and a feature_fn (augmentation acts on images)")
    eval_data = None
    if eval_set is not None:
        inputs = {"features": eval_set[0]} if fn is None else {"images": eval_set[0], "feature_fn": fn}
        eval_data, _ = _array_data(**inputs, labels=eval_set[1], n_classes=model_config.n_classes,
                                   label_name="eval_set labels")
    padding = train_config.crop_padding
    augment = (lambda x, rng: augment_batch(x, rng(1), padding)) if train_config.augment else None
    batch = min(train_config.batch_size, len(data))
    return _fit(model_config, train_config, data, fn, batch,
                lambda epoch: data.train_batches(train_config.seed, epoch, batch, augment),
                lambda: data.eval_batches(train_config.eval_batch_size), eval_data, checkpoint_dir, progress)


def fit_folder(model_config: model.ModelConfig, train_config: TrainConfig, folder, feature_fn, *,
               size: int = 224, resize: int = 256, standardization_images: int = 10_000,
               eval_folder=None, checkpoint_dir=None, num_threads: int | None = None,
               prefetch: int = 2, progress: bool = False) -> TrainResult:
    """:func:`fit` on an :class:`~.imagenet.ImageFolder` streamed from disk (ImageNet), in bounded memory.

    Epoch e streams :func:`.imagenet.iterate_batches` (folder, batch_size, shuffle=True,
    seed=(seed, e), drop_last=True), with the training transform (random resized crop to ``size``,
    flip) when ``train_config.augment``, else the evaluation transform (shorter side resized to
    ``resize``, center crop ``size``; ``crop_padding`` is not used). Images (B, size, size, 3)
    scaled to [0, 1] go through ``feature_fn`` -> (B, h, w, K); the paper's ImageNet model:
    ``frontend.scattering_fn((224, 224, 3), 4)``. Memory: the loader's prefetch + 1 batches (and a
    decoded image per thread) plus at most two batches in computation, whatever the folder's size.

    Standardization statistics: the features of the first ``min(standardization_images, N)``
    images of a seeded order (``iterate_batches(..., shuffle=True, seed=(seed, 0, 1))``, a stream
    no epoch uses), evaluation transform. eval_folder: evaluated after every epoch with the
    evaluation transform, top-1/top-5/loss accumulated batch by batch. Labels: the folder's, in
    [0, n_classes). num_threads, prefetch: the loader's (they do not change the result).
    Checkpoints, resume and history as :func:`fit`; the checkpoint's fingerprint holds the folder's
    sample list checksum, so another folder is refused. ValueError: batch_size larger than the
    folder (no full batch), size > resize, labels out of range.
    """
    loader = _loader(size, resize, num_threads, prefetch)
    data = _Folder(folder, model_config.n_classes, loader, standardization_images)
    _check_feature_fn(feature_fn)
    if len(data) < 2:
        raise ValueError(f"need at least 2 training images; {folder} has {len(data)}")
    if train_config.batch_size > len(data):
        raise ValueError(f"batch_size {train_config.batch_size} is larger than {folder}: with the last "
                         f"incomplete batch dropped an epoch would have no step; use batch_size <= {len(data)}")
    eval_data = None if eval_folder is None else _Folder(eval_folder, model_config.n_classes, loader)
    batch = train_config.batch_size
    return _fit(model_config, train_config, data, feature_fn, batch,
                lambda epoch: data.train_batches(train_config.seed, epoch, batch, train_config.augment),
                lambda: data.standardization_batches(train_config.seed, train_config.eval_batch_size),
                eval_data, checkpoint_dir, progress)


def _fit(model_config, train_config, data, feature_fn, batch: int, train_batches, standardization_batches,
         eval_data, checkpoint_dir, progress: bool) -> TrainResult:
    """:func:`fit` and :func:`fit_folder` through the shared loop: ``len(data) // batch`` steps per
    epoch of ``train_batches(epoch)``; standardization statistics from the features of
    ``standardization_batches()`` (skipped when resuming: the checkpoint's state holds them)."""
    steps = len(data) // batch
    optimizer, train_step = make_train_step(model_config, train_config.momentum, train_config.weight_decay)
    key = jax.random.key(train_config.seed)
    dropout_key = jax.random.fold_in(key, 1)
    eval_batch = train_config.eval_batch_size

    def start(resuming: bool) -> dict:
        stats = None if resuming else fit_standardization(
            x[:n] for x, n, _ in _padded_features(feature_fn, standardization_batches(), eval_batch, len(data)))
        params, state = model.init(key, model_config, _feature_shape(feature_fn, data.example_shape), stats)
        return {"params": params, "state": state, "opt_state": optimizer.init(params)}

    def step(trees, raw, labels, lr, index):
        params, state, opt_state, metrics = train_step(
            trees["params"], trees["state"], trees["opt_state"], _features(feature_fn, raw),
            jnp.asarray(labels, jnp.int32), lr, jax.random.fold_in(dropout_key, index))
        return {"params": params, "state": state, "opt_state": opt_state}, metrics

    def end_of_epoch(trees) -> dict:
        entry = {}
        if model_config.sparse:
            entry["coherence"] = float(sparse_coding.coherence(trees["params"]["istc"]["D"]))
        if eval_data is not None:
            scores = _scores(trees["params"], trees["state"], model_config, eval_data, feature_fn, eval_batch)
            entry.update({f"test_{k}": v for k, v in scores.items()})
        return entry

    train = dataclasses.asdict(train_config)
    train.pop("epochs")
    data_print = dict(data.fingerprint(), features=feature_fn is None)
    trees, history = train_loop(
        start, step, train_batches, epochs=train_config.epochs, steps_per_epoch=steps, batch_size=batch,
        schedule=step_decay(train_config.lr, steps, train_config.step_epochs),
        fingerprint=fingerprint(model=dataclasses.asdict(model_config), train=train, data=data_print),
        checkpoint_dir=checkpoint_dir, end_of_epoch=end_of_epoch, progress=progress)
    budget = {"epochs": train_config.epochs, "batch_size": batch, "train_images": len(data),
              "steps_per_epoch": steps}
    return TrainResult(trees["params"], trees["state"], history, budget)
