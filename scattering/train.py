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
import os
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from . import model, sparse_coding

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


class _Data:
    """A training or evaluation set: features, or images + feature function."""

    def __init__(self, features=None, images=None, feature_fn=None):
        if (features is None) == (images is None):
            raise ValueError("pass either features or images (with feature_fn), not both or neither")
        if images is not None and feature_fn is None:
            raise ValueError("images need a feature_fn (e.g. frontend.scattering_fn(...))")
        array = features if features is not None else images
        self.array = array if hasattr(array, "ndim") else np.asarray(array)  # memmaps stay lazy
        if self.array.ndim != 4:
            raise ValueError(f"{'features' if images is None else 'images'} must be 4-D NHWC; got "
                             f"shape {self.array.shape}")
        self.feature_fn = feature_fn if images is not None else None

    def __len__(self):
        return len(self.array)

    def batch(self, idx, rng=None, padding=0):
        """Features (B, h, w, K) float32 of the items ``idx``, augmented when ``rng`` is given."""
        x = np.asarray(self.array[idx])
        if self.feature_fn is None:
            return jnp.asarray(x, jnp.float32)
        x = to_float_images(x)
        if rng is not None:
            x = augment_batch(x, rng, padding)
        return self.feature_fn(jnp.asarray(x))

    @property
    def feature_shape(self) -> tuple:
        """(h, w, K) of one example's features."""
        if self.feature_fn is None:
            return tuple(self.array.shape[1:])
        spec = jax.ShapeDtypeStruct((1,) + tuple(self.array.shape[1:]), jnp.float32)
        return tuple(jax.eval_shape(self.feature_fn, spec).shape[1:])

    def chunks(self, size):
        for i in range(0, len(self), size):
            yield np.asarray(self.batch(np.arange(i, min(i + size, len(self)))))


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


def _logits(params, state, config, data: _Data, batch_size: int) -> np.ndarray:
    forward = _eval_forward(config)
    out = []
    for i in range(0, len(data), batch_size):
        idx = np.arange(i, min(i + batch_size, len(data)))
        x = data.batch(idx)
        if len(idx) < batch_size and len(data) > batch_size:
            x = jnp.concatenate([x, jnp.repeat(x[-1:], batch_size - len(idx), 0)])
        out.append(np.asarray(forward(params, state, x))[:len(idx)])
    return np.concatenate(out)


def predict_logits(params, state, config: model.ModelConfig, *, features=None, images=None,
                   feature_fn=None, batch_size: int = 256) -> np.ndarray:
    """(N, n_classes) evaluation-mode logits of features, or of images through ``feature_fn``;
    in batches padded to one shape (one compilation)."""
    return _logits(params, state, config, _Data(features, images, feature_fn), batch_size)


@functools.lru_cache(maxsize=16)
def _eval_forward(config):
    return jax.jit(lambda p, s, x: model.apply(p, s, x, config, train=False)[0])


def _scores(params, state, config, data: _Data, labels, batch_size: int) -> dict:
    logits = jnp.asarray(_logits(params, state, config, data, batch_size))
    top1, top5, loss = _topk_counts(logits, jnp.asarray(labels))
    n = len(labels)
    return {"top1": float(top1) / n, "top5": float(top5) / n, "loss": float(loss) / n}


def evaluate(params, state, config: model.ModelConfig, labels, *, features=None, images=None,
             feature_fn=None, batch_size: int = 256) -> dict:
    """Top-1, top-5 accuracy and mean cross-entropy on a labelled set (features or images)."""
    return _scores(params, state, config, _Data(features, images, feature_fn), labels, batch_size)


# --- checkpoints -------------------------------------------------------------------------------

def _flatten(tree) -> dict:
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in leaves}


def save_checkpoint(path, trees: dict, meta: dict) -> None:
    """Write ``trees`` (name -> pytree of arrays) and JSON ``meta`` atomically to ``path``."""
    path = pathlib.Path(path)
    arrays = {f"{name}{key}": leaf for name, tree in trees.items() for key, leaf in _flatten(tree).items()}
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.savez(f, __meta__=np.array(json.dumps(meta)), **arrays)
    os.replace(tmp, path)


def load_checkpoint(path, templates: dict) -> tuple[dict, dict]:
    """Read a checkpoint into the structure of ``templates`` (name -> pytree) -> (trees, meta).
    CheckpointError when unreadable or when names, shapes or dtypes differ."""
    try:
        with np.load(path, allow_pickle=False) as f:
            stored = {k: f[k] for k in f.files}
        meta = json.loads(stored.pop("__meta__").item())
    except Exception as err:
        raise CheckpointError(f"checkpoint {path} is unreadable (corrupted or truncated?): "
                              f"{type(err).__name__}: {err}") from None
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


def fingerprint(model_config, train_config, data: _Data, labels) -> dict:
    """What a checkpoint must match to be resumed: the configurations (less ``epochs``), the data's
    kind and shape and a checksum of the labels."""
    tc = dataclasses.asdict(train_config)
    tc.pop("epochs")
    return {"model": dataclasses.asdict(model_config), "train": tc,
            "data": {"kind": "features" if data.feature_fn is None else "images",
                     "shape": list(data.array.shape),
                     "labels_sha1": hashlib.sha1(np.ascontiguousarray(labels)).hexdigest()}}


def _check_fingerprint(path, stored: dict, current: dict) -> None:
    if stored == current:
        return
    diffs = [f"{part}.{key}: checkpoint {stored.get(part, {}).get(key)!r}, now {value!r}"
             for part, fields in current.items() for key, value in fields.items()
             if stored.get(part, {}).get(key) != value]
    raise CheckpointError(f"checkpoint {path} was written by a different configuration or data; "
                          f"refusing to resume ({'; '.join(diffs) or 'layout differs'})")


# --- the loop ----------------------------------------------------------------------------------

def _epoch_metrics(records: list) -> dict:
    stacked = jax.device_get(jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *records))
    return {k: np.mean(v, 0).tolist() for k, v in stacked.items()}


def fit(model_config: model.ModelConfig, train_config: TrainConfig, labels, *, features=None,
        images=None, feature_fn=None, eval_set=None, checkpoint_dir=None,
        progress: bool = False) -> TrainResult:
    """Train from scratch, or resume from ``checkpoint_dir``'s checkpoint, to ``train_config.epochs``.

    labels: (N,) ints in [0, n_classes). features (N, h, w, K) float, or images (N, H, W, C) with
    ``feature_fn``. eval_set: (X, y) of the same kind, evaluated after every epoch (top-1/top-5).
    Per-epoch history: lr, loss, top1 (training batches, train mode), seconds and images_per_s
    (training only; the first epoch of a call includes compilation); with ISTC the means over the
    epoch's steps of support_size and sparsity (per iteration), rec_error, lambda0, lambda_star,
    and the dictionary coherence at the epoch's end; with eval_set test_top1/top5/loss.
    """
    data = _Data(features, images, feature_fn)
    if len(data) < 2:
        raise ValueError(f"need at least 2 training examples; got {len(data)}")
    labels = np.asarray(labels)
    if labels.shape != (len(data),):
        raise ValueError(f"labels must have shape ({len(data)},); got {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0 \
            or labels.max() >= model_config.n_classes:
        raise ValueError(f"labels must be integers in [0, {model_config.n_classes})")
    if train_config.augment and data.feature_fn is None:
        raise ValueError("augment=True needs images and a feature_fn (augmentation acts on images)")
    batch = min(train_config.batch_size, len(data))
    steps = len(data) // batch
    optimizer = make_optimizer(train_config, steps)
    train_step = make_train_step(model_config, optimizer)
    if eval_set is not None:
        eval_data = (_Data(eval_set[0]) if data.feature_fn is None
                     else _Data(images=eval_set[0], feature_fn=feature_fn))
        eval_labels = np.asarray(eval_set[1])
        if eval_labels.shape != (len(eval_data),):
            raise ValueError(f"eval_set labels must have shape ({len(eval_data)},); got {eval_labels.shape}")

    key = jax.random.key(train_config.seed)
    current = fingerprint(model_config, train_config, data, labels)
    ckpt = None if checkpoint_dir is None else pathlib.Path(checkpoint_dir) / CHECKPOINT
    resume = ckpt is not None and ckpt.exists()
    stats = None if resume else model.fit_standardization(data.chunks(train_config.eval_batch_size))
    params, state = model.init(key, model_config, data.feature_shape, stats)
    opt_state = optimizer.init(params)
    history, start = [], 0
    if resume:   # the fresh trees serve as templates; the checkpoint's state holds the statistics
        trees, meta = load_checkpoint(ckpt, {"params": params, "state": state, "opt_state": opt_state})
        _check_fingerprint(ckpt, meta.get("fingerprint", {}), current)
        params, state, opt_state = trees["params"], trees["state"], trees["opt_state"]
        history, start = meta["history"], meta["epoch"]

    dropout_key = jax.random.fold_in(key, 1)
    for epoch in range(start, train_config.epochs):
        tic = time.perf_counter()
        order_rng = np.random.default_rng([train_config.seed, epoch, 0])
        aug_rng = np.random.default_rng([train_config.seed, epoch, 1]) if train_config.augment else None
        perm = order_rng.permutation(len(data))
        records = []
        for i in tqdm(range(steps), desc=f"epoch {epoch + 1}/{train_config.epochs}",
                      disable=not progress, leave=False):
            idx = perm[i * batch:(i + 1) * batch]
            x = data.batch(idx, aug_rng, train_config.crop_padding)
            y = jnp.asarray(labels[idx], jnp.int32)
            step_key = jax.random.fold_in(dropout_key, epoch * steps + i)
            params, state, opt_state, metrics = train_step(params, state, opt_state, x, y, step_key)
            records.append(metrics)
        entry = {"epoch": epoch + 1, "lr": train_config.lr * 0.1 ** (epoch // train_config.step_epochs)}
        entry.update(_epoch_metrics(records))
        seconds = time.perf_counter() - tic
        entry.update(seconds=seconds, images_per_s=steps * batch / seconds)
        if model_config.sparse:
            entry["coherence"] = float(sparse_coding.coherence(params["istc"]["D"]))
        if eval_set is not None:
            scores = _scores(params, state, model_config, eval_data, eval_labels,
                             train_config.eval_batch_size)
            entry.update({f"test_{k}": v for k, v in scores.items()})
        history.append(entry)
        if progress:
            tqdm.write(" ".join(f"{k}={v:.4g}" for k, v in entry.items() if isinstance(v, float)))
        if ckpt is not None:
            ckpt.parent.mkdir(parents=True, exist_ok=True)
            save_checkpoint(ckpt, {"params": params, "state": state, "opt_state": opt_state},
                            {"epoch": epoch + 1, "history": history, "fingerprint": current})
    return TrainResult(params, state, history)
