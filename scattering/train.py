"""Training of :mod:`tangentless.scattering.model` with optax, resumable checkpoints and diagnostics.

Optimizer: SGD with momentum, weight decay added to the gradient before momentum (PyTorch's rule),
on the leaves of :func:`model.decay_mask` only (projection kernel, D, W, head weights; not biases,
batch norm or log_lambda_star); learning rate lr0 / 10^floor(epoch / step_epochs). After every step
the ISTC parameters are projected back onto their constraints (:func:`model.project_params`).

Data: either precomputed ``features`` (N, h, w, K) (no augmentation), or ``images`` (N, H, W, C)
(uint8 scaled to [0, 1]) with a ``feature_fn`` (e.g. ``frontend.scattering_fn``) applied online,
optionally after random crops (zero padding ``crop_padding``) and horizontal flips. Standardization
statistics come from the unaugmented training features. Each epoch visits a permutation of the
training set in batches of ``min(batch_size, N)``, the last incomplete batch dropped. Every random
stream is a function of (seed, epoch, step): the permutation and augmentation of epoch e use
``numpy.random.default_rng([seed, e, i])``, dropout uses ``fold_in(key(seed), step)``, so a resumed run
replays exactly what an uninterrupted one would have done.

Folders (:func:`fit_folder`, for sets too large for memory such as ImageNet): an
:class:`~.imagenet.ImageFolder` streamed by :func:`.imagenet.iterate_batches` with seed (seed, e) in
epoch e (random resized crops and flips with ``augment``), through the same loop; memory is bounded
by the loader's prefetch, not by the folder's size.

Checkpoints (``checkpoint_dir/checkpoint.npz``, written after every epoch to a temporary file then
``os.replace``d): params, state and optimizer state as flattened arrays, plus JSON metadata (epoch,
metrics history and a fingerprint of the configuration and data). A run resumes from it when the
fingerprint matches, which allows a larger ``epochs`` and nothing else.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from . import imagenet, model, sparse_coding
from ..kernels._shared.atomic import atomic_write

CHECKPOINT = "checkpoint.npz"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: unreadable, or from another configuration."""


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


@dataclasses.dataclass
class TrainResult:
    """Fitted ``params`` and ``state``, and ``history``: one dict of metrics per epoch."""

    params: dict
    state: dict
    history: list


def to_float_images(images: np.ndarray) -> np.ndarray:
    """uint8 images scaled to [0, 1], others cast; float32."""
    if images.dtype == np.uint8:
        return images.astype(np.float32) / 255.0
    return images.astype(np.float32, copy=False)


def augment_batch(images: np.ndarray, rng: np.random.Generator, padding: int) -> np.ndarray:
    """Random crops of the zero-padded images (B, H, W, C), same size, then random horizontal flips."""
    b, h, w, _ = images.shape
    padded = np.pad(images, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    dy = rng.integers(0, 2 * padding + 1, b)
    dx = rng.integers(0, 2 * padding + 1, b)
    flip = rng.random(b) < 0.5
    out = np.empty_like(images)
    for i in range(b):
        crop = padded[i, dy[i]:dy[i] + h, dx[i]:dx[i] + w]
        out[i] = crop[:, ::-1] if flip[i] else crop
    return out


def _padded(batch: np.ndarray, size: int) -> np.ndarray:
    """batch (n, ...) with its last row repeated up to ``size`` rows."""
    return np.concatenate([batch, np.repeat(batch[-1:], size - len(batch), 0)])


def _check_labels(labels, n: int, n_classes: int, name: str = "labels") -> np.ndarray:
    """labels as an array, checked: shape (n,), integers in [0, n_classes)."""
    labels = np.asarray(labels)
    if labels.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},); got {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{name} must be integers in [0, {n_classes}); got dtype {labels.dtype}")
    if n and (labels.min() < 0 or labels.max() >= n_classes):
        raise ValueError(f"{name} must be integers in [0, {n_classes}) (the model's n_classes); got "
                         f"values from {labels.min()} to {labels.max()}")
    return labels


class _Source:
    """A training or evaluation set read as raw batches: features, or images for ``feature_fn``.

    Subclasses set ``feature_fn`` (None: raw batches are features), ``labels`` ((N,) or None),
    ``example_shape`` (one raw example) and yield (raw batch, labels) from ``train_batches`` (one
    epoch, shuffled, full batches only), ``eval_batches`` (in order, unaugmented) and
    ``standardization_batches`` (the items the standardization statistics come from).
    """

    feature_fn = None
    labels = None
    example_shape: tuple

    def features(self, raw) -> jax.Array:
        """Features (B, h, w, K) float32 of a raw batch (uint8 images scaled to [0, 1] first)."""
        if self.feature_fn is None:
            return jnp.asarray(raw, jnp.float32)
        return self.feature_fn(jnp.asarray(to_float_images(raw)))

    @property
    def feature_shape(self) -> tuple:
        """(h, w, K) of one example's features."""
        if self.feature_fn is None:
            return tuple(self.example_shape)
        spec = jax.ShapeDtypeStruct((1,) + tuple(self.example_shape), jnp.float32)
        return tuple(jax.eval_shape(self.feature_fn, spec).shape[1:])

    def padded_features(self, raw_batches, batch_size: int):
        """(features (B, h, w, K), n, labels (n,) or None) per raw batch of n items; with more than
        ``batch_size`` items in the set, short batches are padded to it (one compilation), and only
        the first n rows are real."""
        for raw, labels in raw_batches:
            n = len(raw)
            if n < batch_size < len(self):
                raw = _padded(raw, batch_size)
            yield self.features(raw), n, labels

    def standardization(self, config: TrainConfig) -> dict:
        """:func:`model.fit_standardization` of the features of ``standardization_batches``."""
        batches = self.padded_features(self.standardization_batches(config), config.eval_batch_size)
        return model.fit_standardization(x[:n] for x, n, _ in batches)


class ArrayData(_Source):
    """A set held in arrays: features (N, h, w, K), or images (N, H, W, C) with a feature_fn; labels
    (N,) in [0, n_classes) or None. Memmaps stay lazy."""

    def __init__(self, features=None, images=None, feature_fn=None, labels=None, n_classes=None,
                 label_name="labels"):
        if (features is None) == (images is None):
            raise ValueError("pass either features or images (with feature_fn), not both or neither")
        if images is not None and feature_fn is None:
            raise ValueError("images need a feature_fn (e.g. frontend.scattering_fn(...))")
        array = features if features is not None else images
        self.array = array if hasattr(array, "ndim") else np.asarray(array)
        if self.array.ndim != 4:
            raise ValueError(f"{'features' if images is None else 'images'} must be 4-D NHWC; got "
                             f"shape {self.array.shape}")
        self.feature_fn = feature_fn if images is not None else None
        self.example_shape = tuple(self.array.shape[1:])
        if labels is not None:
            self.labels = _check_labels(labels, len(self.array), n_classes, label_name)

    def __len__(self):
        return len(self.array)

    def train_batches(self, config: TrainConfig, epoch: int, batch: int):
        """Epoch ``epoch``: a permutation (``default_rng([seed, epoch, 0])``) in full batches, images
        cropped and flipped (``default_rng([seed, epoch, 1])``) when ``config.augment``."""
        perm = np.random.default_rng([config.seed, epoch, 0]).permutation(len(self))
        aug_rng = np.random.default_rng([config.seed, epoch, 1]) if config.augment else None
        for i in range(len(self) // batch):
            idx = perm[i * batch:(i + 1) * batch]
            raw = np.asarray(self.array[idx])
            if aug_rng is not None:
                raw = augment_batch(raw, aug_rng, config.crop_padding)
            yield raw, self.labels[idx]

    def eval_batches(self, batch_size: int):
        for i in range(0, len(self), batch_size):
            idx = np.arange(i, min(i + batch_size, len(self)))
            yield np.asarray(self.array[idx]), None if self.labels is None else self.labels[idx]

    def standardization_batches(self, config: TrainConfig):
        """All items, unaugmented."""
        return self.eval_batches(config.eval_batch_size)

    def fingerprint(self) -> dict:
        return {"kind": "features" if self.feature_fn is None else "images",
                "shape": list(self.array.shape),
                "labels_sha1": hashlib.sha1(np.ascontiguousarray(self.labels)).hexdigest()}


class _Folder(_Source):
    """An :class:`~.imagenet.ImageFolder` streamed by :func:`.imagenet.iterate_batches`: images
    (B, size, size, 3) for ``feature_fn``. ``loader``: size, resize and optionally num_threads,
    prefetch for iterate_batches; ``standardization_images`` (capped at N): see :func:`fit_folder`,
    None for an evaluation set."""

    def __init__(self, folder, feature_fn, n_classes: int, loader: dict, standardization_images=None):
        if not isinstance(folder, imagenet.ImageFolder):
            raise TypeError(f"folder must be an imagenet.ImageFolder; got {type(folder).__name__}")
        if not callable(feature_fn):
            raise ValueError("a folder needs a feature_fn (e.g. frontend.scattering_fn((224, 224, 3), 4))")
        size, resize = loader["size"], loader["resize"]
        if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in (size, resize)) \
                or not 1 <= size <= resize:
            raise ValueError(f"need integers 1 <= size <= resize (the evaluation transform resizes the "
                             f"shorter side to resize, then center-crops size); got size={size!r}, "
                             f"resize={resize!r}")
        self.folder, self.feature_fn, self.loader = folder, feature_fn, loader
        self.labels = _check_labels(folder.labels, len(folder), n_classes, f"labels of {folder}")
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

    def train_batches(self, config: TrainConfig, epoch: int, batch: int):
        """Epoch ``epoch``: ``iterate_batches`` shuffled with seed (seed, epoch), full batches, the
        training transform when ``config.augment`` (else the evaluation one)."""
        return self._stream(batch, train=config.augment, shuffle=True, seed=(config.seed, epoch),
                            drop_last=True)

    def eval_batches(self, batch_size: int):
        return self._stream(batch_size, train=False)

    def standardization_batches(self, config: TrainConfig):
        """The first ``standardization_images`` images of a seeded order (seed (seed, 0, 1), which
        no epoch uses), evaluation transform."""
        remaining = self.standardization_images
        for images, labels in self._stream(config.eval_batch_size, train=False, shuffle=True,
                                           seed=(config.seed, 0, 1)):
            yield images[:remaining], labels[:remaining]
            remaining -= len(images)
            if remaining <= 0:
                return

    def fingerprint(self) -> dict:
        root = self.folder.root
        listing = "".join(f"{pathlib.Path(path).relative_to(root).as_posix()}\t{label}\n"
                          for path, label in self.folder.samples)
        return {"kind": "folder", "images": len(self.folder),
                "samples_sha1": hashlib.sha1(listing.encode()).hexdigest(),
                "size": self.loader["size"], "resize": self.loader["resize"],
                "standardization_images": self.standardization_images}


def make_optimizer(config: TrainConfig, steps_per_epoch: int) -> optax.GradientTransformation:
    """SGD + momentum with masked weight decay and the step learning-rate schedule."""
    every = steps_per_epoch * config.step_epochs

    def schedule(count):
        return config.lr * 0.1 ** (count // every)

    return optax.chain(optax.add_decayed_weights(config.weight_decay, mask=model.decay_mask),
                       optax.sgd(schedule, momentum=config.momentum))


def make_train_step(config: model.ModelConfig, optimizer: optax.GradientTransformation):
    """Jitted (params, state, opt_state, x, y, key) -> (params, state, opt_state, metrics)."""

    def step(params, state, opt_state, x, y, key):
        def loss_fn(p):
            logits, new_state, diag = model.apply(p, state, x, config, train=True, rng=key)
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
            return loss, (logits, new_state, diag)

        (loss, (logits, new_state, diag)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = model.project_params(optax.apply_updates(params, updates), new_state, config)
        metrics = {"loss": loss, "top1": jnp.mean(jnp.argmax(logits, -1) == y)}
        metrics.update({k: diag[k] for k in ("support_size", "sparsity", "rec_error", "lambda0",
                                             "lambda_star") if k in diag})
        return params, new_state, opt_state, metrics

    return jax.jit(step)


@jax.jit
def _topk_counts(logits, y):
    k = min(5, logits.shape[-1])
    top = jax.lax.top_k(logits, k)[1]
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, y)
    return jnp.sum(top[:, 0] == y), jnp.sum(jnp.any(top == y[:, None], -1)), jnp.sum(loss)


def _forward(params, state, config, data: _Source, batch_size: int):
    """(logits (n, n_classes) evaluation mode, labels (n,) or None) per batch of ``data`` in order."""
    forward = _eval_forward(config)
    for x, n, labels in data.padded_features(data.eval_batches(batch_size), batch_size):
        yield forward(params, state, x)[:n], labels


def predict_logits(params, state, config: model.ModelConfig, *, features=None, images=None,
                   feature_fn=None, batch_size: int = 256) -> np.ndarray:
    """(N, n_classes) evaluation-mode logits of features, or of images through ``feature_fn``;
    in batches padded to one shape (one compilation)."""
    data = ArrayData(features, images, feature_fn)
    return np.concatenate([np.asarray(logits) for logits, _ in _forward(params, state, config, data, batch_size)])


@functools.lru_cache(maxsize=16)
def _eval_forward(config):
    return jax.jit(lambda p, s, x: model.apply(p, s, x, config, train=False)[0])


def _scores(params, state, config, data: _Source, batch_size: int) -> dict:
    """Top-1, top-5 and mean cross-entropy of a labelled set, accumulated batch by batch."""
    top1 = top5 = loss = 0.0
    for logits, labels in _forward(params, state, config, data, batch_size):
        counts = _topk_counts(logits, jnp.asarray(labels, jnp.int32))
        top1, top5, loss = top1 + float(counts[0]), top5 + float(counts[1]), loss + float(counts[2])
    n = len(data)
    return {"top1": top1 / n, "top5": top5 / n, "loss": loss / n}


def evaluate(params, state, config: model.ModelConfig, labels, *, features=None, images=None,
             feature_fn=None, batch_size: int = 256) -> dict:
    """Top-1, top-5 accuracy and mean cross-entropy on a labelled set (features or images)."""
    return _scores(params, state, config, ArrayData(features, images, feature_fn, labels, config.n_classes),
                   batch_size)


def evaluate_folder(params, state, config: model.ModelConfig, folder, feature_fn, *, size: int = 224,
                    resize: int = 256, batch_size: int = 256, num_threads: int | None = None,
                    prefetch: int = 2) -> dict:
    """:func:`evaluate` on an :class:`~.imagenet.ImageFolder` streamed with the evaluation transform
    (shorter side resized to ``resize``, center crop ``size``) through ``feature_fn``."""
    data = _Folder(folder, feature_fn, config.n_classes, _loader(size, resize, num_threads, prefetch))
    return _scores(params, state, config, data, batch_size)


# --- checkpoints -------------------------------------------------------------------------------

def _flatten(tree) -> dict:
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in leaves}


def save_checkpoint(path, trees: dict, meta: dict) -> None:
    """Write ``trees`` (name -> pytree of arrays) and JSON ``meta`` atomically to ``path``."""
    path = pathlib.Path(path)
    arrays = {f"{name}{key}": leaf for name, tree in trees.items() for key, leaf in _flatten(tree).items()}
    atomic_write(path, lambda f: np.savez(f, __meta__=np.array(json.dumps(meta)), **arrays))


def load_checkpoint(path, templates: dict, expected: dict | None = None) -> tuple[dict, dict]:
    """Read a checkpoint into the structure of ``templates`` (name -> pytree) -> (trees, meta).
    CheckpointError when unreadable, when its fingerprint differs from ``expected`` (a
    :func:`fingerprint`, checked first: the clearer error), or when names, shapes or dtypes differ."""
    try:
        with np.load(path, allow_pickle=False) as f:
            stored = {k: f[k] for k in f.files}
        meta = json.loads(stored.pop("__meta__").item())
    except Exception as err:
        raise CheckpointError(f"checkpoint {path} is unreadable (corrupted or truncated?): "
                              f"{type(err).__name__}: {err}") from None
    if expected is not None:
        _check_fingerprint(path, meta.get("fingerprint", {}), expected)
    trees = {}
    for name, template in templates.items():
        leaves, treedef = jax.tree_util.tree_flatten_with_path(template)
        values = []
        for key_path, leaf in leaves:
            key = name + jax.tree_util.keystr(key_path)
            value = stored.pop(key, None)
            if value is None or value.shape != np.shape(leaf) or value.dtype != np.asarray(leaf).dtype:
                raise CheckpointError(f"checkpoint {path} does not match the model: entry {key} is "
                                      f"{'missing' if value is None else f'{value.dtype}{value.shape}'}, "
                                      f"expected {np.asarray(leaf).dtype}{np.shape(leaf)}")
            values.append(jnp.asarray(value))
        trees[name] = jax.tree_util.tree_unflatten(treedef, values)
    if stored:
        raise CheckpointError(f"checkpoint {path} has entries the model lacks: {sorted(stored)[:5]}")
    return trees, meta


def fingerprint(model_config, train_config, data: _Source) -> dict:
    """What a checkpoint must match to be resumed: the configurations (less ``epochs``) and the
    data: for arrays their kind, shape and a checksum of the labels; for a folder its sample list
    (paths relative to its root and labels, SHA-1), number of images, size, resize and
    standardization_images."""
    tc = dataclasses.asdict(train_config)
    tc.pop("epochs")
    return {"model": dataclasses.asdict(model_config), "train": tc, "data": data.fingerprint()}


def _check_fingerprint(path, stored: dict, current: dict) -> None:
    if stored == current:
        return
    diffs = [f"{part}.{key}: checkpoint {stored.get(part, {}).get(key)!r}, now {value!r}"
             for part, fields in current.items() for key, value in fields.items()
             if stored.get(part, {}).get(key) != value]
    raise CheckpointError(f"checkpoint {path} was written by a different configuration or data; "
                          f"refusing to resume ({'; '.join(diffs) or 'layout differs'})")


# --- the loop ----------------------------------------------------------------------------------

def epoch_metrics(records: list) -> dict:
    stacked = jax.device_get(jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *records))
    return {k: np.mean(v, 0).tolist() for k, v in stacked.items()}


def fit(model_config: model.ModelConfig, train_config: TrainConfig, labels, *, features=None,
        images=None, feature_fn=None, eval_set=None, checkpoint_dir=None,
        progress: bool = False) -> TrainResult:
    """Train from scratch, or resume from ``checkpoint_dir``'s checkpoint, to ``train_config.epochs``.

    labels: (N,) ints in [0, n_classes). features (N, h, w, K) float, or images (N, H, W, C) with
    ``feature_fn``. eval_set: (X, y) of the same kind, evaluated after every epoch (top-1/top-5).
    Batches of ``min(batch_size, N)``. Per-epoch history: lr, loss, top1 (training batches, train
    mode), seconds and images_per_s (training only; the first epoch of a call includes
    compilation); with ISTC the means over the epoch's steps of support_size and sparsity (per
    iteration), rec_error, lambda0, lambda_star, and the dictionary coherence at the epoch's end;
    with eval_set test_top1/top5/loss. Datasets too large for memory: :func:`fit_folder`.
    """
    data = ArrayData(features, images, feature_fn, labels, model_config.n_classes)
    if len(data) < 2:
        raise ValueError(f"need at least 2 training examples; got {len(data)}")
    if train_config.augment and data.feature_fn is None:
        raise ValueError("augment=True needs images and a feature_fn (augmentation acts on images)")
    eval_data = None
    if eval_set is not None:
        inputs = ({"features": eval_set[0]} if data.feature_fn is None
                  else {"images": eval_set[0], "feature_fn": feature_fn})
        eval_data = ArrayData(**inputs, labels=eval_set[1], n_classes=model_config.n_classes,
                            label_name="eval_set labels")
    return _fit(model_config, train_config, data, min(train_config.batch_size, len(data)), eval_data,
                checkpoint_dir, progress)


def _loader(size, resize, num_threads, prefetch) -> dict:
    """iterate_batches' options; num_threads None: its default."""
    options = {"size": size, "resize": resize, "prefetch": prefetch}
    return options if num_threads is None else dict(options, num_threads=num_threads)


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
    data = _Folder(folder, feature_fn, model_config.n_classes, loader, standardization_images)
    if len(data) < 2:
        raise ValueError(f"need at least 2 training images; {folder} has {len(data)}")
    if train_config.batch_size > len(data):
        raise ValueError(f"batch_size {train_config.batch_size} is larger than {folder}: with the last "
                         f"incomplete batch dropped an epoch would have no step; use batch_size <= {len(data)}")
    eval_data = None if eval_folder is None else _Folder(eval_folder, feature_fn, model_config.n_classes, loader)
    return _fit(model_config, train_config, data, train_config.batch_size, eval_data, checkpoint_dir, progress)


def _fit(model_config, train_config, data: _Source, batch: int, eval_data: _Source | None, checkpoint_dir,
         progress: bool) -> TrainResult:
    """The loop of :func:`fit` and :func:`fit_folder`: ``len(data) // batch`` steps per epoch."""
    steps = len(data) // batch
    optimizer = make_optimizer(train_config, steps)
    train_step = make_train_step(model_config, optimizer)
    key = jax.random.key(train_config.seed)
    current = fingerprint(model_config, train_config, data)
    ckpt = None if checkpoint_dir is None else pathlib.Path(checkpoint_dir) / CHECKPOINT
    resume = ckpt is not None and ckpt.exists()
    stats = None if resume else data.standardization(train_config)
    params, state = model.init(key, model_config, data.feature_shape, stats)
    opt_state = optimizer.init(params)
    history, start = [], 0
    if resume:   # the fresh trees serve as templates; the checkpoint's state holds the statistics
        trees, meta = load_checkpoint(ckpt, {"params": params, "state": state, "opt_state": opt_state},
                                      current)
        params, state, opt_state = trees["params"], trees["state"], trees["opt_state"]
        history, start = meta["history"], meta["epoch"]

    dropout_key = jax.random.fold_in(key, 1)
    for epoch in range(start, train_config.epochs):
        tic = time.perf_counter()
        records = []
        batches = tqdm(data.train_batches(train_config, epoch, batch), total=steps, disable=not progress,
                       desc=f"epoch {epoch + 1}/{train_config.epochs}", unit="batch", leave=False)
        for i, (raw, labels) in enumerate(batches):
            x = data.features(raw)
            y = jnp.asarray(labels, jnp.int32)
            step_key = jax.random.fold_in(dropout_key, epoch * steps + i)
            if records:   # one step in flight at most: queued steps would keep their batches alive
                jax.block_until_ready(records[-1])
            params, state, opt_state, metrics = train_step(params, state, opt_state, x, y, step_key)
            records.append(metrics)
        entry = {"epoch": epoch + 1, "lr": train_config.lr * 0.1 ** (epoch // train_config.step_epochs)}
        entry.update(epoch_metrics(records))
        seconds = time.perf_counter() - tic
        entry.update(seconds=seconds, images_per_s=steps * batch / seconds)
        if model_config.sparse:
            entry["coherence"] = float(sparse_coding.coherence(params["istc"]["D"]))
        if eval_data is not None:
            scores = _scores(params, state, model_config, eval_data, train_config.eval_batch_size)
            entry.update({f"test_{k}": v for k, v in scores.items()})
        history.append(entry)
        if progress:
            tqdm.write(" ".join(f"{k}={v:.4g}" for k, v in entry.items() if isinstance(v, float)))
        if ckpt is not None:
            ckpt.parent.mkdir(parents=True, exist_ok=True)
            save_checkpoint(ckpt, {"params": params, "state": state, "opt_state": opt_state},
                            {"epoch": epoch + 1, "history": history, "fingerprint": current})
    return TrainResult(params, state, history)
