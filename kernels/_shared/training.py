"""The one training loop of the library's SGD-trained models (the scattering/ISTC classifier and the
CNN baselines), and the pieces they share: data order, augmentation, optimizer, learning-rate
schedules, evaluation scores, checkpoints.

A model drives :func:`train_loop` with its own step function; the loop owns everything else:

- data order and randomness: epoch e draws its permutation from ``numpy.random.default_rng([seed,
  e, 0])`` and augmentation stream k >= 1 from ``default_rng([seed, e, k])`` (:class:`EpochRandom`),
  so a resumed run replays exactly what an uninterrupted one would have done;
- learning rates: an optax schedule evaluated once per step and given to the step as an input (one
  compilation serves every schedule);
- checkpoint and resume: ``checkpoint_dir/checkpoint.npz`` written atomically after every epoch
  (params, state, optimizer state as named arrays, plus JSON: epoch, history, fingerprint); a run
  finding one resumes from it, bit for bit, when its fingerprint (configuration and data, checksums by
  :mod:`.digest`) matches and it has at most ``epochs`` epochs;
- divergence: the step losses of an epoch (kept on the device, fetched once at its end) and then the
  params and state are checked for NaN and inf after every epoch, before its evaluation and its
  checkpoint; a non-finite value raises :class:`TrainingDivergedError` and no checkpoint of the
  diverged state is written;
- progress (tqdm bars and a line per epoch, on stderr: stdout is left to the caller's results) and
  the history, one dict per epoch with one set of names: ``epoch``, ``lr`` (at the epoch's last
  step), the epoch means of the step's metrics (``loss``, ``train_top1``, and any
  model diagnostics), ``seconds``, ``images_per_s`` (training only; the first epoch of a call
  includes compilation), then what ``end_of_epoch`` adds (``test_loss``, ``test_top1``,
  ``test_top5`` from :func:`evaluation_scores`, ...).
"""
from __future__ import annotations

import dataclasses
import functools
import json
import pathlib
import sys
import time
from typing import Any, Callable, Iterable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from sklearn.utils.multiclass import check_classification_targets
from tqdm.auto import tqdm

from .atomic import atomic_write
from .digest import array_sha256

__all__ = ["CHECKPOINT", "CheckpointError", "TrainingDivergedError", "TrainResult", "check_class_labels", "check_labels", "encode_labels",
           "non_finite_leaves", "check_finite_model",
           "check_finite_outputs", "EpochRandom", "augment_batch", "ArrayData", "padded_batches", "decay_mask", "sgd", "sgd_update", "step_decay", "one_cycle",
           "train_metrics", "evaluation_scores", "fingerprint", "named_arrays", "trees_from_arrays", "save_checkpoint",
           "load_checkpoint", "train_loop"]

CHECKPOINT = "checkpoint.npz"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: unreadable, from another configuration or data, or longer
    than the run asked for."""


class TrainingDivergedError(ValueError):
    """Training produced a non-finite loss, params or state (NaN or inf): the learning rate is too
    high for the model and data, most often."""


@dataclasses.dataclass
class TrainResult:
    """Fitted ``params`` and ``state``, ``history`` (one dict of metrics per epoch) and ``budget``
    (what the run trained on: epochs, batch_size, train_images, steps_per_epoch, ...)."""

    params: dict
    state: dict
    history: list
    budget: dict = dataclasses.field(default_factory=dict)


def check_labels(labels, n: int, n_classes: int, name: str = "labels") -> np.ndarray:
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


def check_class_labels(y, name: str = "y") -> np.ndarray:
    """The labels ``y`` (n,) as a plain array (numbers or strings, never object), checked on their
    own, before any image is looked at (so a fit given no, continuous or single-class labels
    says so first): ValueError for None, another shape, continuous or mixed labels, a single
    class."""
    if y is None:
        raise ValueError(f"this classifier requires y to be passed, but the target {name} is None")
    labels = np.asarray(y)
    if labels.ndim != 1:
        raise ValueError(f"{name} must be (n,) labels; got shape {labels.shape}")
    if labels.size == 0:
        raise ValueError(f"{name} has 0 sample(s): no labels to fit")
    check_classification_targets(labels)
    if labels.dtype == object:
        labels = np.asarray(labels.tolist())
        if labels.dtype == object:
            raise ValueError(f"{name} must hold numbers or strings; got objects such as {labels[0]!r}")
    if np.unique(labels).size < 2:
        raise ValueError(f"{name} has one class ({labels[0]!r}); a classifier needs at least 2")
    return labels


def encode_labels(y, n: int, name: str = "y") -> tuple[np.ndarray, np.ndarray]:
    """(classes (c,) sorted, a plain array (numbers or strings, never object), targets (n,) ints in
    [0, c)) of the labels ``y`` (n,) of n images: any discrete labels, strings included
    (:func:`check_class_labels`); ValueError also where there are not n of them."""
    labels = check_class_labels(y, name)
    if len(labels) != n:
        raise ValueError(f"{name} must be (n,) labels for the {n} images; got shape {labels.shape}")
    classes, targets = np.unique(labels, return_inverse=True)
    return classes, targets.reshape(-1)


@jax.jit
def _finite_flags(leaves: list):
    return jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in leaves])


def non_finite_leaves(trees) -> list[str]:
    """The names (``keystr`` paths) of the leaves of a pytree of arrays that hold NaN or inf; one
    device reduction, one transfer."""
    leaves = jax.tree_util.tree_flatten_with_path(trees)[0]
    if not leaves:
        return []
    flags = np.asarray(_finite_flags([leaf for _, leaf in leaves]))
    return [jax.tree_util.keystr(path) for (path, _), ok in zip(leaves, flags) if not ok]


def check_finite_model(trees, what: str) -> None:
    """ValueError (one line, starting with ``what``) when a leaf of ``trees`` holds NaN or inf."""
    bad = non_finite_leaves(trees)
    if bad:
        raise ValueError(f"{what}: the model has non-finite (NaN or inf) values in {len(bad)} parameter arrays "
                         f"({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''}); a diverged fit? refit with a "
                         f"lower learning rate")


def check_finite_outputs(outputs: np.ndarray) -> np.ndarray:
    """outputs (n, K), or ValueError (one line) naming the images whose outputs hold NaN or inf."""
    bad = np.flatnonzero(~np.isfinite(outputs).all(axis=1))
    if bad.size:
        raise ValueError(f"the model's outputs are not finite (NaN or inf) for {bad.size} of {len(outputs)} images "
                         f"(images {bad[:5].tolist()}{'...' if bad.size > 5 else ''}): check their pixel range")
    return outputs


# --- data order and augmentation -------------------------------------------------------------------

class EpochRandom:
    """The random streams of one epoch: ``self(k)`` is ``numpy.random.default_rng([seed, epoch, k])``,
    created on first use and then shared by the epoch's batches. Stream 0 is the data order;
    augmentations use streams 1, 2, ..."""

    def __init__(self, seed: int, epoch: int):
        self.seed, self.epoch = seed, epoch
        self._streams: dict[int, np.random.Generator] = {}

    def __call__(self, stream: int) -> np.random.Generator:
        if stream not in self._streams:
            self._streams[stream] = np.random.default_rng([self.seed, self.epoch, stream])
        return self._streams[stream]


#: an augmentation: (images (B, H, W, C), the epoch's streams) -> augmented images, same shape
Augment = Callable[[np.ndarray, EpochRandom], np.ndarray]


def augment_batch(images: np.ndarray, rng: np.random.Generator, padding: int) -> np.ndarray:
    """Random crops of the zero-padded images (B, H, W, C), same size, then random horizontal flips."""
    b, h, w, _ = images.shape
    padded = np.pad(images, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    dy = np.asarray(rng.integers(0, 2 * padding + 1, b))
    dx = np.asarray(rng.integers(0, 2 * padding + 1, b))
    flip = np.asarray(rng.random(b) < 0.5)
    out = np.empty_like(images)
    for i in range(b):
        crop = padded[i, dy[i]:dy[i] + h, dx[i]:dx[i] + w]
        out[i] = crop[:, ::-1] if flip[i] else crop
    return out


class ArrayData:
    """A set held in an array (N, ...) (images or features; memmaps stay lazy) with labels (N,) in
    [0, n_classes), or None for an unlabelled set."""

    def __init__(self, array, labels=None, n_classes: int | None = None, label_name: str = "labels"):
        self.array = array if hasattr(array, "ndim") else np.asarray(array)
        if labels is not None and n_classes is None:
            raise ValueError(f"{label_name} need n_classes (their range [0, n_classes))")
        self.labels = (None if labels is None or n_classes is None
                       else check_labels(labels, len(self.array), n_classes, label_name))

    def __len__(self):
        return len(self.array)

    @property
    def example_shape(self) -> tuple:
        return tuple(self.array.shape[1:])

    def train_batches(self, seed: int, epoch: int, batch: int, augment: Augment | None = None):
        """(examples (batch, ...), labels (batch,)) of epoch ``epoch``: a permutation (stream 0 of
        :class:`EpochRandom`) in full batches (the last incomplete one dropped), each through
        ``augment`` when given."""
        if self.labels is None:
            raise ValueError("an unlabelled set cannot be trained on: give its labels")
        labels = self.labels
        rng = EpochRandom(seed, epoch)
        perm = rng(0).permutation(len(self))
        for i in range(len(self) // batch):
            idx = perm[i * batch:(i + 1) * batch]
            raw = np.asarray(self.array[idx])
            yield (raw if augment is None else augment(raw, rng)), labels[idx]

    def eval_batches(self, batch_size: int):
        """(examples, labels or None) in order, batches of ``batch_size`` (the last one shorter)."""
        for i in range(0, len(self), batch_size):
            idx = np.arange(i, min(i + batch_size, len(self)))
            yield np.asarray(self.array[idx]), None if self.labels is None else self.labels[idx]

    def fingerprint(self) -> dict:
        """What a checkpoint records of this set: its shape and the SHA-256 of its labels."""
        return {"shape": list(self.array.shape),
                "labels_sha256": None if self.labels is None else array_sha256(self.labels)}


def padded_batches(batches: Iterable, batch_size: int, total: int):
    """(batch (batch_size, ...), n, labels) for each (batch of n rows, labels) of a set of ``total``
    items: with more items than ``batch_size``, short batches get their last row repeated up to
    ``batch_size`` rows (one shape, one compilation); only the first n rows are real."""
    for raw, labels in batches:
        n = len(raw)
        if n < batch_size < total:
            raw = np.concatenate([raw, np.repeat(raw[-1:], batch_size - n, 0)])
        yield raw, n, labels


# --- optimizer and schedules -------------------------------------------------------------------------

def decay_mask(params):
    """True on the leaves that get weight decay: weights of ndim >= 2 (dense and conv kernels,
    dictionaries); not biases, batch-norm scales and offsets, or scalars."""
    return jax.tree_util.tree_map(lambda w: jnp.ndim(w) >= 2, params)


def sgd(momentum: float, weight_decay: float, nesterov: bool = False) -> optax.GradientTransformation:
    """SGD at unit learning rate, PyTorch's rule: weight decay on :func:`decay_mask`'s leaves added
    to the gradient, then (Nesterov) momentum; :func:`sgd_update` applies the result at a learning
    rate."""
    return optax.chain(optax.add_decayed_weights(weight_decay, mask=decay_mask),
                       optax.trace(decay=momentum, nesterov=nesterov))


def sgd_update(params, updates, lr):
    """params - lr * updates, leaf by leaf."""
    return jax.tree_util.tree_map(lambda w, u: w - lr * u, params, updates)


def step_decay(lr: float, steps_per_epoch: int, step_epochs: int) -> optax.Schedule:
    """Step t -> lr / 10^floor(t / (steps_per_epoch step_epochs)): divided by 10 every ``step_epochs``."""
    return optax.exponential_decay(lr, transition_steps=steps_per_epoch * step_epochs, decay_rate=0.1,
                                   staircase=True)


def one_cycle(peak: float, total_steps: int, warmup: float) -> optax.Schedule:
    """Step t in [0, total_steps) -> peak * min((t + 1) / w, (total_steps - t) / (total_steps - w)),
    w = min(round(warmup * total_steps), total_steps - 1): a linear rise to ``peak`` at step w - 1,
    then a linear fall that would reach 0 at step total_steps (no step has lr 0). w = 0: the fall.
    Computed in float32 by optax (the tail's values agree with float64 arithmetic to ~1e-7 peak)."""
    w = min(round(warmup * total_steps), total_steps - 1)
    fall = optax.linear_schedule(peak, 0.0, total_steps - w)
    if not w:
        return fall
    return optax.join_schedules([optax.linear_schedule(peak / w, peak, w - 1), fall], [w])


# --- metrics -----------------------------------------------------------------------------------------

def train_metrics(outputs, labels, loss) -> dict:
    """A step's metrics: {"loss", "train_top1"} of outputs (B, K) for labels (B,)."""
    return {"loss": loss, "train_top1": jnp.mean(jnp.argmax(outputs, -1) == labels)}


@functools.lru_cache(maxsize=16)
def _counts(per_example_loss):
    def counts(outputs, labels):
        top = jax.lax.top_k(outputs, min(5, outputs.shape[-1]))[1]
        return (jnp.sum(top[:, 0] == labels), jnp.sum(jnp.any(top == labels[:, None], -1)),
                jnp.sum(per_example_loss(outputs, labels)))
    return jax.jit(counts)


def evaluation_scores(batches: Iterable, per_example_loss: Callable, n: int) -> dict:
    """{"top1", "top5", "loss" (the mean of ``per_example_loss(outputs, labels) -> (B,)``)} of a
    labelled set of n items given as (outputs (B, K), labels (B,)) batches, accumulated batch by
    batch. ``per_example_loss`` must be hashable and long-lived (a module-level function)."""
    counts = _counts(per_example_loss)
    top1 = top5 = loss = 0.0
    for outputs, labels in batches:
        c = counts(outputs, jnp.asarray(labels, jnp.int32))
        top1, top5, loss = top1 + float(c[0]), top5 + float(c[1]), loss + float(c[2])
    return {"top1": top1 / n, "top5": top5 / n, "loss": loss / n}


def _epoch_metrics(records: list) -> tuple[dict, np.ndarray]:
    """(the epoch means of the steps' metrics, the steps' losses (steps,)), in one transfer."""
    stacked = jax.device_get(jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *records))
    return {k: np.mean(v, 0).tolist() for k, v in stacked.items()}, np.asarray(stacked["loss"])


def _check_diverged(step_losses: np.ndarray, trees: dict, epoch: int, lrs: np.ndarray) -> None:
    """TrainingDivergedError (one line: where, at which learning rate, what to do) when a step loss
    of epoch ``epoch`` (0-based; lrs: the learning rate of every global step), or the params or state
    after it, are not finite."""
    steps = len(step_losses)
    bad = np.flatnonzero(~np.isfinite(step_losses))
    if bad.size:
        i = int(bad[0])
        raise TrainingDivergedError(
            f"training diverged: the loss is {step_losses[i]} at epoch {epoch + 1}, step {i + 1} of {steps} "
            f"(learning rate {lrs[epoch * steps + i]:.4g}); lower the learning rate")
    leaves = non_finite_leaves({"params": trees["params"], "state": trees["state"]})
    if leaves:
        raise TrainingDivergedError(
            f"training diverged: non-finite values in {', '.join(leaves[:3])}{', ...' if len(leaves) > 3 else ''} "
            f"after epoch {epoch + 1} (learning rate {lrs[(epoch + 1) * steps - 1]:.4g}); lower the learning rate")


# --- checkpoints -------------------------------------------------------------------------------------

def fingerprint(**parts: dict) -> dict:
    """What a checkpoint must match to be resumed: named JSON-able parts (e.g. model=..., train=...,
    data=...), JSON-normalized (tuples as lists) so that it compares equal to its stored copy."""
    return json.loads(json.dumps(parts))


def named_arrays(trees: dict) -> dict[str, np.ndarray]:
    """Plain arrays of named pytrees: ``{name + keystr(path): leaf}`` for name -> pytree."""
    return {name + jax.tree_util.keystr(path): np.asarray(leaf)
            for name, tree in trees.items() for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def trees_from_arrays(templates: dict, arrays: dict) -> dict:
    """The inverse of :func:`named_arrays`: the pytrees of ``templates`` (name -> pytree of arrays or
    ShapeDtypeStructs) filled from ``arrays``, whose entries are consumed (popped). ValueError when an
    entry is missing or of another shape or dtype than its template leaf."""
    trees = {}
    for name, template in templates.items():
        leaves, treedef = jax.tree_util.tree_flatten_with_path(template)
        values = []
        for key_path, leaf in leaves:
            key = name + jax.tree_util.keystr(key_path)
            value = arrays.pop(key, None)
            if value is None or value.shape != np.shape(leaf) or value.dtype != leaf.dtype:
                raise ValueError(f"entry {key} is {'missing' if value is None else f'{value.dtype}{value.shape}'}, "
                                 f"expected {leaf.dtype}{np.shape(leaf)}")
            values.append(jnp.asarray(value))
        trees[name] = jax.tree_util.tree_unflatten(treedef, values)
    return trees


def save_checkpoint(path, trees: dict, meta: dict) -> None:
    """Write ``trees`` (name -> pytree of arrays) and JSON ``meta`` atomically to ``path``."""
    contents: dict[str, Any] = {"__meta__": np.array(json.dumps(meta)), **named_arrays(trees)}
    atomic_write(pathlib.Path(path), lambda f: np.savez(f, **contents))


def _check_fingerprint(path, stored: dict, current: dict) -> None:
    if stored == current:
        return
    diffs = [f"{part}.{key}: checkpoint {stored.get(part, {}).get(key)!r}, now {value!r}"
             for part, fields in current.items() for key, value in fields.items()
             if stored.get(part, {}).get(key) != value]
    raise CheckpointError(f"checkpoint {path} was written by a different configuration or data; "
                          f"refusing to resume ({'; '.join(diffs) or 'layout differs'})")


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
    try:
        trees = trees_from_arrays(templates, stored)
    except ValueError as err:
        raise CheckpointError(f"checkpoint {path} does not match the model: {err}") from None
    if stored:
        raise CheckpointError(f"checkpoint {path} has entries the model lacks: {sorted(stored)[:5]}")
    return trees, meta


# --- the loop ----------------------------------------------------------------------------------------

def train_loop(start: Callable[[bool], dict], step: Callable, batches: Callable[[int], Iterable], *,
               epochs: int, steps_per_epoch: int, batch_size: int, schedule: optax.Schedule,
               fingerprint: dict, checkpoint_dir=None, end_of_epoch: Callable[[dict], dict] | None = None,
               progress: bool = False) -> tuple[dict, list]:
    """Train from scratch, or resume from ``checkpoint_dir``'s checkpoint, to ``epochs`` -> (trees, history).

    start(resuming) -> trees {"params", "state", "opt_state"}: the initial values, or, when
    ``resuming``, trees of the right structure only (a checkpoint overwrites them; costly
    data-dependent initialization can be skipped).
    step(trees, x, y, lr, index) -> (trees, metrics): one optimizer step on a batch of
    ``batches(epoch)`` at learning rate lr (np.float32 ``schedule(index)``); index = epoch *
    steps_per_epoch + i, the global step. metrics: a dict of device scalars or vectors, averaged
    over the epoch into the history (:func:`train_metrics`: loss, train_top1); "loss" is required.
    batches(epoch) -> ``steps_per_epoch`` (x, y) batches of ``batch_size`` items.
    end_of_epoch(trees) -> more entries of the epoch's history (evaluation scores, diagnostics).
    fingerprint: what a checkpoint must match (:func:`fingerprint`); CheckpointError otherwise, or
    when the checkpoint has more than ``epochs`` epochs. TrainingDivergedError: a non-finite step
    loss, params or state (checked after every epoch; the diverged state is not checkpointed).
    progress: a bar per epoch and a line of its history, on stderr.
    """
    ckpt = None if checkpoint_dir is None else pathlib.Path(checkpoint_dir) / CHECKPOINT
    resume = ckpt is not None and ckpt.exists()
    trees = start(resume)
    history, first = [], 0
    if resume:
        trees, meta = load_checkpoint(ckpt, trees, fingerprint)
        if meta["epoch"] > epochs:
            raise CheckpointError(f"checkpoint {ckpt} has {meta['epoch']} epochs, more than the "
                                  f"{epochs} asked for")
        history, first = meta["history"], meta["epoch"]
    lrs = np.asarray(jax.vmap(schedule)(jnp.arange(epochs * steps_per_epoch)), np.float32)

    for epoch in range(first, epochs):
        tic = time.perf_counter()
        records: list[dict] = []
        bar = tqdm(batches(epoch), total=steps_per_epoch, disable=not progress,
                   desc=f"epoch {epoch + 1}/{epochs}", unit="batch", leave=False, file=sys.stderr)
        for i, (x, y) in enumerate(bar):
            index = epoch * steps_per_epoch + i
            if records:   # one step in flight at most: queued steps would keep their batches alive
                jax.block_until_ready(records[-1])
            trees, metrics = step(trees, x, y, lrs[index], index)
            records.append(metrics)
        means, step_losses = _epoch_metrics(records)
        _check_diverged(step_losses, trees, epoch, lrs)
        entry = {"epoch": epoch + 1, "lr": float(lrs[(epoch + 1) * steps_per_epoch - 1])}
        entry.update(means)
        seconds = time.perf_counter() - tic
        entry.update(seconds=seconds, images_per_s=steps_per_epoch * batch_size / seconds)
        if end_of_epoch is not None:
            entry.update(end_of_epoch(trees))
        history.append(entry)
        if progress:
            line = " ".join(f"{k}={v:.4g}" for k, v in entry.items() if isinstance(v, float))
            tqdm.write(line, file=sys.stderr)
        if ckpt is not None:
            save_checkpoint(ckpt, trees, {"epoch": epoch + 1, "history": history, "fingerprint": fingerprint})
    return trees, history
