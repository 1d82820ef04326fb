"""CNN baselines in JAX + optax: the same-architecture network of a kernel spec, and ResNet-9.

Networks are pairs of pure functions in one interface:
``init(key, input_shape (H, W, C)) -> (params, state)`` and
``apply(params, state, x (B, H, W, C), train: bool) -> (outputs (B, K), new_state)``.

- :func:`kernel_network`: the finite-width network of a kernel spec, whose NNGP is the spec's
  kernel; with ``myrtle(depth, head="linear")`` the Myrtle networks of "Neural Kernels Without
  Tangents" (3x3 convs, ReLU, 2x2 average pools, global average pool, linear readout; no bias, no
  batch norm), in the NTK parameterization (the kernel's own) or the standard (He) one.
- :func:`resnet9`: D. Page's ResNet-9 with a channel multiplier ``width``.

:func:`train_cnn` trains either with SGD (Nesterov momentum, weight decay on the weights of ndim >= 2,
PyTorch's rule: added to the gradient before momentum) and a one-cycle learning rate, on MSE to
one-hot labels or cross-entropy with label smoothing; crop + flip + cutout augmentation; checkpoints
after every epoch that resume bit for bit. Data order, checkpoints, resume and the history are the
library's one training loop (:func:`tangentless.kernels._shared.training.train_loop`), driven by this
module's step. :class:`CNNClassifier` wraps both networks as a scikit-learn classifier that saves and
loads itself (``save``/``load``); :func:`paper_recipe` is the paper's recipe for the Myrtle
networks (ZCA whitening in front). Defaults: the "CNN" section of
:mod:`tangentless.kernels._shared.defaults`; why they are what they are: docs/baselines.md.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from numpy.typing import ArrayLike
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from ..kernels import AvgPool, Cast, Conv, GlobalAvgPool, Layer, Relu, Serial, ZCAWhitening, myrtle
from ..kernels.architectures import myrtle_depth
from ..kernels._shared.batch_norm import batch_norm
from ..kernels._shared.defaults import CNN_ARCH_DEFAULTS, CNN_PAPER_RECIPE, CNN_PAPER_ZCA_BIAS, CNN_RECIPE
from ..kernels._shared.images import check_fitted_images, parse_input_dtype, to_unit_range, validate_images
from ..kernels._shared.persist import (Persistent, check_stored_classes, stored_array, stored_budget,
                                       stored_history, stored_shape)
from ..kernels._shared.standardize import fit_standardization, standardize
from ..kernels._shared.training import (check_class_labels, ArrayData, EpochRandom, TrainResult, augment_batch, check_finite_model,
                                        check_finite_outputs, encode_labels, evaluation_scores, fingerprint,
                                        named_arrays, one_cycle, padded_batches, sgd, sgd_update, train_loop,
                                        train_metrics, trees_from_arrays)

LOSSES = ("mse", "xent")
ARCHS = ("myrtle5", "myrtle7", "myrtle10", "resnet9")
PARAMETERIZATIONS = ("ntk", "standard")
#: the layers :func:`standard_network` supports
STANDARD_LAYERS = (Conv, Relu, AvgPool, GlobalAvgPool, Cast)
#: (block, channels at width 1, max-pool 2 after the conv, residual pair of convs after that)
RESNET9_BLOCKS = (("prep", 64, False, False), ("layer1", 128, True, True),
                  ("layer2", 256, True, False), ("layer3", 512, True, True))


# --- networks ------------------------------------------------------------------------------------

#: a network in this module's interface: ``(init, apply)`` (see the module docstring)
Network = tuple[Callable[..., Any], Callable[..., Any]]

def kernel_network(spec: Layer, width: int, num_outputs: int = 10, parameterization: str = "ntk") -> Network:
    """The finite-width network of a kernel spec (its layers, no bias, no batch norm) in this
    module's interface; no state. At init the two compute the same random function up to the input
    scale (standard sees x where NTK sees x / sqrt(C)), so the NNGP of each is the spec's kernel, up
    to the constant said below; they differ in how SGD moves them.

    - "ntk" (``spec.network(width, num_outputs)``, the kernel's own): weights N(0, 1), each conv's
      output divided by sqrt(fan_in), ReLU as sqrt(2) relu, pixels scaled by sqrt(C), readout
      N(0, 1) divided by sqrt(width); output covariance at init = the kernel. Learning rates are in
      NTK units: a hidden conv moves fan_in (9 x width) times slower than in "standard" at the same lr.
    - "standard": :func:`standard_network`, He-initialized weights N(0, 2 / fan_in) used as they are
      (PyTorch's convention, the one the paper's lr 0.1 refers to), plain relu, readout N(0, 1 / width);
      output covariance at init = the kernel / C (C input channels: the kernel sums over them).

    init raises ValueError for image sizes the spec cannot pool (Myrtle: H, W divisible by 4).
    """
    if parameterization not in PARAMETERIZATIONS:
        raise ValueError(f"parameterization must be one of {PARAMETERIZATIONS}; got {parameterization!r}")
    net_init, net_apply = (spec.network(width, num_outputs) if parameterization == "ntk"
                           else standard_network(spec, width, num_outputs))

    def init(key, input_shape):
        h, w, c = input_shape
        spec.output_size((h, w))
        return net_init(key, c), {}

    def apply(params, state, x, train: bool):
        return net_apply(params, x), state

    return init, apply


def _standard_layers(spec) -> tuple:
    """The layers of a spec the standard parameterization supports: Conv, Relu, pools and Casts,
    each Conv followed by a Relu (He's init assumes one); ValueError otherwise."""
    layers = spec.layers if isinstance(spec, Serial) else (spec,)
    unsupported = [type(layer).__name__ for layer in layers if not isinstance(layer, STANDARD_LAYERS)]
    if unsupported:
        raise ValueError(f"the standard parameterization supports {', '.join(t.__name__ for t in STANDARD_LAYERS)}"
                         f" layers; got {', '.join(sorted(set(unsupported)))}")
    if any(isinstance(layer, Conv) and not isinstance(after, Relu) for layer, after in zip(layers, layers[1:] + (None,))):
        raise ValueError("the standard parameterization needs a Relu after every Conv (He's init)")
    return layers


def standard_network(spec: Layer, width: int, num_outputs: int) -> Network:
    """``(init, apply)`` of the standard-parameterized network of a Conv / Relu / pool spec:
    ``init(key, in_channels) -> {"body": per-layer weights, "readout": (width, num_outputs)}``,
    ``apply(params, x (N, H, W, C)) -> (N, num_outputs)``.

    Conv weights (size, size, cin, width) ~ N(0, 2 / (size^2 cin)) (He), convs without bias or
    scaling, relu, the spec's pools; readout after the global pool ~ N(0, 1 / width). At init this
    is the NTK network's function with its pixels divided by sqrt(C): the features are the kernel's
    divided by sqrt(C), the output covariance the kernel / C.
    """
    layers = _standard_layers(spec)
    if width < 1 or num_outputs < 1:
        raise ValueError(f"width and num_outputs must be >= 1; got {width}, {num_outputs}")

    def init(key, in_channels: int):
        keys = jax.random.split(key, len(layers) + 1)
        body: list[Any] = []
        channels = in_channels
        for layer, k in zip(layers, keys):
            if isinstance(layer, Conv):
                fan_in = layer.size ** 2 * channels
                body.append(jax.random.normal(k, (layer.size, layer.size, channels, width)) * math.sqrt(2 / fan_in))
                channels = width
            else:
                body.append(())
        readout = jax.random.normal(keys[-1], (channels, num_outputs)) / math.sqrt(channels)
        return {"body": tuple(body), "readout": readout}

    def apply(params, x):
        h = x
        for layer, weights in zip(layers, params["body"]):
            h = (_conv(h, weights) if isinstance(layer, Conv) else jax.nn.relu(h) if isinstance(layer, Relu)
                 else layer.apply((), h))
        if h.shape[1:3] != (1, 1):
            raise ValueError(f"a readout needs a 1x1 final map (end the spec with GlobalAvgPool); "
                             f"got {h.shape[1]}x{h.shape[2]}")
        return h.reshape(h.shape[0], -1) @ params["readout"]

    return init, apply


def _conv(x, kernel):
    """3x3 "same" convolution, no bias: (B, H, W, Cin) -> (B, H, W, Cout)."""
    return jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _max_pool(x, p: int = 2):
    """(B, H, W, C) -> (B, H // p, W // p, C): p x p maxima, stride p."""
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, p, p, 1), (1, p, p, 1), "VALID")


def resnet9(width: float = 1.0, num_outputs: int = 10, *, scale: float = 0.125, bn_momentum: float = 0.9,
            bn_eps: float = 1e-5) -> Network:
    """``(init, apply)`` of ResNet-9 ("How to train your ResNet", D. Page), channels x ``width``.

    prep conv(64) -> conv(128), maxpool2, + residual(conv(128), conv(128)) -> conv(256), maxpool2 ->
    conv(512), maxpool2, + residual(conv(512), conv(512)) -> global max pool -> linear (no bias) x
    ``scale``; each conv is 3x3 "same", no bias, then batch norm (batch statistics in training,
    running ones with ``bn_momentum`` in evaluation), then ReLU. Channels: round(c * width), at least 1. The global max
    pool replaces Page's maxpool4 (the same on 32x32) so that any H, W >= 8 work (8x8 digits: 8 -> 4
    -> 2 -> 1; odd sizes are floored). Init: PyTorch's defaults, weights U(+-1 / sqrt(fan_in)), batch
    norm scale 1, offset 0. params: {block: {conv: {"kernel", "bn": {"scale", "offset"}}}, "linear":
    (C, num_outputs)}; state: {block: {conv: {"mean", "var"}}}; conv in "conv", "res1", "res2".
    """
    if not width > 0:
        raise ValueError(f"resnet9 width must be > 0 (a channel multiplier); got {width!r}")
    channels = {name: max(1, round(c * width)) for name, c, _, _ in RESNET9_BLOCKS}

    def shapes(c: int) -> dict:
        """(block, conv) -> HWIO kernel shape, and "linear" -> (C, num_outputs), in order."""
        out: dict[Any, tuple[int, ...]] = {}
        for name, _, _, residual in RESNET9_BLOCKS:
            for conv in ("conv", "res1", "res2") if residual else ("conv",):
                out[name, conv] = (3, 3, c, channels[name])
                c = channels[name]
        out["linear"] = (c, num_outputs)
        return out

    def init(key, input_shape):
        h, w, c = map(int, input_shape)
        if min(h, w) < 8:
            raise ValueError(f"resnet9 needs images of at least 8x8 (three 2x2 max pools); got {h}x{w}")
        return _init(key, c)

    @functools.partial(jax.jit, static_argnums=1)
    def _init(key, c: int):
        weights = shapes(c)   # one uniform draw cut into all weights: one RNG program to compile
        sizes = [math.prod(shape) for shape in weights.values()]
        draws = jnp.split(jax.random.uniform(key, (sum(sizes),), jnp.float32, -1, 1), np.cumsum(sizes)[:-1])
        weights = {k: u.reshape(shape) / math.sqrt(math.prod(shape[:-1]))
                   for (k, shape), u in zip(weights.items(), draws)}
        params: dict[str, Any] = {"linear": weights.pop("linear")}
        state: dict[str, Any] = {}
        for (name, conv), kernel in weights.items():
            cout = kernel.shape[-1]
            params.setdefault(name, {})[conv] = {"kernel": kernel, "bn": {"scale": jnp.ones(cout),
                                                                          "offset": jnp.zeros(cout)}}
            state.setdefault(name, {})[conv] = {"mean": jnp.zeros(cout), "var": jnp.ones(cout)}
        return params, state

    def apply(params, state, x, train: bool):
        new_state: dict[str, Any] = {}

        def conv_bn(h, block, conv):
            p = params[block][conv]
            h, new_state[block][conv] = batch_norm(_conv(h, p["kernel"]), p["bn"], state[block][conv],
                                                   train=train, momentum=bn_momentum, eps=bn_eps)
            return jax.nn.relu(h)

        for name, _, pool, residual in RESNET9_BLOCKS:
            new_state[name] = {}
            x = conv_bn(x, name, "conv")
            if pool:
                x = _max_pool(x)
            if residual:
                x = x + conv_bn(conv_bn(x, name, "res1"), name, "res2")
        return jnp.max(x, axis=(1, 2)) @ params["linear"] * scale, new_state

    return init, apply


# --- training ------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class CNNTrainConfig:
    """Budget and optimization of :func:`train_cnn` (defaults: ``CNN_RECIPE``, Page's ResNet-9
    recipe, 10 epochs).

    lr: the one-cycle peak (:func:`one_cycle`) over ``schedule_epochs`` (None: ``epochs``); training
    the first ``epochs`` of a longer schedule is what lets a run stop and resume to the same result.
    loss: "mse" (batch mean of the squared distance |output - one_hot|^2) or "xent" (softmax
    cross-entropy to labels smoothed by ``label_smoothing``). augment: random crops of the images
    zero-padded by ``crop_padding``, horizontal flips, and (``cutout`` > 0) a ``cutout`` x
    ``cutout`` square set to 0 (the mean, for standardized images) inside each image.
    """

    epochs: int = CNN_RECIPE["epochs"]
    batch_size: int = CNN_RECIPE["batch_size"]
    lr: float = CNN_RECIPE["lr"]
    momentum: float = CNN_RECIPE["momentum"]
    nesterov: bool = CNN_RECIPE["nesterov"]
    weight_decay: float = CNN_RECIPE["weight_decay"]
    warmup: float = CNN_RECIPE["warmup"]
    schedule_epochs: int | None = None
    loss: str = CNN_RECIPE["loss"]
    label_smoothing: float = CNN_RECIPE["label_smoothing"]
    augment: bool = CNN_RECIPE["augment"]
    crop_padding: int = CNN_RECIPE["crop_padding"]
    cutout: int = CNN_RECIPE["cutout"]
    seed: int = 0
    eval_batch_size: int = CNN_RECIPE["eval_batch_size"]

    def __post_init__(self):
        for name in ("epochs", "batch_size", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1; got {getattr(self, name)}")
        if self.schedule_epochs is not None and self.schedule_epochs < self.epochs:
            raise ValueError(f"schedule_epochs ({self.schedule_epochs}) must be >= epochs ({self.epochs}): "
                             f"the learning rate reaches 0 at the end of the schedule")
        if not (self.lr > 0 and self.weight_decay >= 0 and 0 <= self.momentum < 1 and 0 <= self.warmup < 1):
            raise ValueError(f"need lr > 0, weight_decay >= 0, 0 <= momentum < 1, 0 <= warmup < 1; got "
                             f"{self.lr}, {self.weight_decay}, {self.momentum}, {self.warmup}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}; got {self.loss!r}")
        if not 0 <= self.label_smoothing < 1 or (self.loss == "mse" and self.label_smoothing):
            raise ValueError(f"label_smoothing must be in [0, 1), and 0 with the mse loss; got "
                             f"{self.label_smoothing} with {self.loss!r}")
        if self.crop_padding < 0 or self.cutout < 0:
            raise ValueError(f"crop_padding and cutout must be >= 0; got {self.crop_padding}, {self.cutout}")

    @property
    def horizon(self) -> int:
        """Epochs of the learning-rate schedule."""
        return self.schedule_epochs or self.epochs


def per_example_loss(outputs, labels, loss: str, label_smoothing: float = 0.0):
    """(B,) loss of outputs (B, K) for integer labels (B,): "mse", the squared distance to the
    one-hot label summed over the K outputs; "xent", softmax cross-entropy to the one-hot label
    smoothed by ``label_smoothing``."""
    targets = jax.nn.one_hot(labels, outputs.shape[-1], dtype=outputs.dtype)
    if loss == "mse":
        return jnp.sum((outputs - targets) ** 2, -1)
    return optax.softmax_cross_entropy(outputs, optax.smooth_labels(targets, label_smoothing))


def loss_fn(outputs, labels, loss: str, label_smoothing: float = 0.0):
    """Batch mean of :func:`per_example_loss`."""
    return per_example_loss(outputs, labels, loss, label_smoothing).mean()


@functools.lru_cache(maxsize=16)
def _evaluation_loss(loss: str, label_smoothing: float):
    """:func:`per_example_loss` of one setting, one object per setting (its jitted scores compile once)."""
    return functools.partial(per_example_loss, loss=loss, label_smoothing=label_smoothing)


def make_optimizer(config: CNNTrainConfig) -> optax.GradientTransformation:
    """SGD at unit learning rate: weight decay (on leaves of ndim >= 2) added to the gradient, then
    (Nesterov) momentum, PyTorch's rule; the training step scales the result by -lr."""
    return sgd(config.momentum, config.weight_decay, config.nesterov)


def _step_settings(config: CNNTrainConfig) -> CNNTrainConfig:
    """The fields a training step uses (loss and optimizer), the others at their defaults."""
    return CNNTrainConfig(loss=config.loss, label_smoothing=config.label_smoothing, momentum=config.momentum,
                          nesterov=config.nesterov, weight_decay=config.weight_decay)


@functools.lru_cache(maxsize=32)
def _training(apply, settings: CNNTrainConfig):
    """(optimizer, jitted (params, state, opt_state, x, y, lr) -> (params, state, opt_state,
    {"loss", "train_top1"})) for :func:`_step_settings`. The learning rate is an input, so one
    compilation (per network and batch shape) serves every schedule, seed and budget."""
    optimizer = make_optimizer(settings)

    def step(params, state, opt_state, x, y, lr):
        def objective(p):
            out, new_state = apply(p, state, x, True)
            return loss_fn(out, y, settings.loss, settings.label_smoothing), (out, new_state)

        (loss, (out, new_state)), grads = jax.value_and_grad(objective, has_aux=True)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return sgd_update(params, updates, lr), new_state, opt_state, train_metrics(out, y, loss)

    return optimizer, jax.jit(step)


def cutout(images: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    """Copy of images (B, H, W, C) with a size x size square set to 0 in each image, its top-left
    corner uniform over the positions that keep it inside (size >= H or W: everything)."""
    b, h, w, _ = images.shape
    top = rng.integers(0, max(h - size, 0) + 1, b)[:, None]
    left = rng.integers(0, max(w - size, 0) + 1, b)[:, None]
    rows = (np.arange(h) >= top) & (np.arange(h) < top + size)
    cols = (np.arange(w) >= left) & (np.arange(w) < left + size)
    return np.where((rows[:, :, None] & cols[:, None, :])[..., None], 0, images).astype(images.dtype)


def augmentation(config: CNNTrainConfig):
    """None without ``config.augment``; else (images, :class:`EpochRandom`) -> crops and flips
    (stream 1), then cutout (stream 2) when ``config.cutout``."""
    if not config.augment:
        return None

    def augment(images: np.ndarray, rng: EpochRandom) -> np.ndarray:
        images = augment_batch(images, rng(1), config.crop_padding)
        return cutout(images, rng(2), config.cutout) if config.cutout else images

    return augment


def train_batches(data: ArrayData, config: CNNTrainConfig, epoch: int, batch: int):
    """(images (batch, H, W, C), labels) of epoch ``epoch``: the permutation of stream
    ``default_rng([seed, epoch, 0])``, then with augment crops and flips (``[seed, epoch, 1]``) and
    cutout (``[seed, epoch, 2]``)."""
    return data.train_batches(config.seed, epoch, batch, augmentation(config))


@functools.lru_cache(maxsize=16)
def _forward(apply):
    return jax.jit(lambda params, state, x: apply(params, state, x, False)[0])


def _outputs(apply, params, state, data: ArrayData, batch_size: int):
    """(evaluation-mode outputs (n, K), labels or None) per batch of ``data`` in order."""
    forward = _forward(apply)
    for x, n, labels in padded_batches(data.eval_batches(batch_size), batch_size, len(data)):
        yield forward(params, state, jnp.asarray(x, jnp.float32))[:n], labels


def predict_outputs(apply, params, state, images, batch_size: int = CNN_RECIPE["eval_batch_size"]) -> np.ndarray:
    """Evaluation-mode outputs (N, K) of images (N, H, W, C), in batches padded to one shape."""
    data = images if isinstance(images, ArrayData) else ArrayData(images)
    return np.concatenate([np.asarray(out) for out, _ in _outputs(apply, params, state, data, batch_size)])


def _evaluate(apply, params, state, data: ArrayData, config: CNNTrainConfig) -> dict:
    """{"test_top1", "test_top5", "test_loss" (the training loss)} of a labelled set."""
    scores = evaluation_scores(_outputs(apply, params, state, data, config.eval_batch_size),
                               _evaluation_loss(config.loss, config.label_smoothing), len(data))
    return {f"test_{k}": v for k, v in scores.items()}


def train_cnn(init, apply, images, labels, config: CNNTrainConfig, *, eval_set=None, checkpoint_dir=None,
              model_fingerprint: dict | None = None, progress: bool = False) -> TrainResult:
    """Train ``(init, apply)`` (the module's interface) from scratch or resume, to ``config.epochs``.

    images: (N, H, W, C) floats, already preprocessed (:func:`preprocess`); labels: (N,) ints in
    [0, K), K the network's outputs. Epoch e: a permutation in batches of min(batch_size, N), the last
    incomplete one dropped, augmented as ``config`` says; params from ``jax.random.key(seed)``.
    eval_set: (images, labels) preprocessed the same way, scored after every epoch.
    history (the names of :func:`~tangentless.kernels._shared.training.train_loop`): per epoch
    {"epoch", "lr" (at its last step), "loss", "train_top1" (training batches, train mode),
    "seconds", "images_per_s" (training only; the first epoch of a call includes compilation), and
    with eval_set "test_top1", "test_top5", "test_loss" (the training loss on eval_set)}. budget:
    epochs, schedule_epochs, batch_size used, train_images, steps_per_epoch.

    checkpoint_dir: ``checkpoint.npz`` written atomically after every epoch; a call finding one
    resumes from it, bit for bit, when config (less ``epochs``; the schedule's horizon included),
    ``model_fingerprint`` (a JSON-able description of the network), data shape and labels match,
    and it has at most ``epochs`` epochs; otherwise CheckpointError.
    """
    images = images if hasattr(images, "dtype") else np.asarray(images)
    if not np.issubdtype(images.dtype, np.floating):
        raise ValueError(f"images must be preprocessed floats (see preprocess); got dtype {images.dtype}")
    params, state = init(jax.random.key(config.seed), tuple(images.shape[1:]))
    sample = jax.ShapeDtypeStruct((1,) + tuple(images.shape[1:]), jnp.float32)
    n_outputs = jax.eval_shape(lambda p, s, x: apply(p, s, x, False)[0], params, state, sample).shape[-1]
    data = ArrayData(images, labels, n_outputs)
    if len(data) < 2:
        raise ValueError(f"need at least 2 training images; got {len(data)}")
    eval_data = None if eval_set is None else ArrayData(eval_set[0], eval_set[1], n_outputs, "eval_set labels")
    batch = min(config.batch_size, len(data))
    steps = len(data) // batch
    optimizer, train_step = _training(apply, _step_settings(config))

    def start(resuming: bool) -> dict:
        return {"params": params, "state": state, "opt_state": optimizer.init(params)}

    def step(trees, x, y, lr, index):
        p, s, o, metrics = train_step(trees["params"], trees["state"], trees["opt_state"],
                                      jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.int32), lr)
        return {"params": p, "state": s, "opt_state": o}, metrics

    def end_of_epoch(trees) -> dict:
        if eval_data is None:
            return {}
        return _evaluate(apply, trees["params"], trees["state"], eval_data, config)

    train = dataclasses.asdict(config)
    train.pop("epochs")
    train["schedule_epochs"] = config.horizon
    trees, history = train_loop(
        start, step, lambda epoch: train_batches(data, config, epoch, batch), epochs=config.epochs,
        steps_per_epoch=steps, batch_size=batch, schedule=one_cycle(config.lr, config.horizon * steps, config.warmup),
        fingerprint=fingerprint(model=model_fingerprint or {}, train=train, data=data.fingerprint()),
        checkpoint_dir=checkpoint_dir, end_of_epoch=end_of_epoch, progress=progress)
    budget = {"epochs": config.epochs, "schedule_epochs": config.horizon, "batch_size": batch,
              "train_images": len(data), "steps_per_epoch": steps}
    return TrainResult(trees["params"], trees["state"], history, budget)


# --- scikit-learn classifier -----------------------------------------------------------------------

@functools.lru_cache(maxsize=16)
def build_network(arch: str, width, num_outputs: int, parameterization: str | None = None):
    """``(init, apply)`` of an :data:`ARCHS` name (cached: one jitted forward per network). Myrtle:
    :func:`kernel_network` in ``parameterization`` (None: the family's, ``CNN_ARCH_DEFAULTS``);
    ResNet-9 has its own (PyTorch's) standard parameterization and refuses "ntk"."""
    if arch not in ARCHS:
        raise ValueError(f"arch must be one of {ARCHS}; got {arch!r}")
    if parameterization is None:
        parameterization = CNN_ARCH_DEFAULTS[_family(arch)]["parameterization"]
    if parameterization not in PARAMETERIZATIONS:
        raise ValueError(f"parameterization must be one of {PARAMETERIZATIONS}; got {parameterization!r}")
    if arch == "resnet9":
        if parameterization != "standard":
            raise ValueError(f"resnet9 has only the standard parameterization; got {parameterization!r}")
        return resnet9(width, num_outputs)
    if isinstance(width, bool) or not isinstance(width, (int, np.integer)) or width < 1:
        raise ValueError(f"{arch} width must be a positive integer (channels per layer); got {width!r}")
    return kernel_network(myrtle(myrtle_depth(arch), head="linear"), int(width), num_outputs, parameterization)


def _family(arch: str) -> str:
    """The ``CNN_ARCH_DEFAULTS`` key of an :data:`ARCHS` name."""
    return "resnet9" if arch == "resnet9" else "myrtle"


def preprocess(images: np.ndarray, stats: dict) -> np.ndarray:
    """uint8 images scaled to [0, 1] (floats kept), then (x - mean) / std per channel: float32."""
    return standardize(to_unit_range(images), stats).astype(np.float32)


def _tree_templates(init, image_shape) -> dict:
    """{"params", "state"} of ``init`` for images of ``image_shape`` as ShapeDtypeStructs (nothing computed)."""
    params, state = jax.eval_shape(lambda key: init(key, tuple(image_shape)), jax.random.key(0))
    return {"params": params, "state": state}


def paper_recipe(arch: str = "myrtle10", **overrides) -> Pipeline:
    """The Myrtle networks' recipe of "Neural Kernels Without Tangents" as a scikit-learn pipeline:
    ZCA whitening with bias ``CNN_PAPER_ZCA_BIAS`` (1e-4), then ``CNNClassifier(arch,
    **CNN_PAPER_RECIPE)``: standard parameterization, MSE to one-hot labels, SGD lr 0.1 Nesterov 0.9,
    weight decay 5e-4, crop + flip + cutout. The paper's 400 epochs at width 2048 are scaled to a CPU
    budget (width 64, 20 epochs, batch 32); ``overrides`` (CNNClassifier keywords) change any of it.
    The pipeline is not a saved model (``save``/``load`` are the classifier's), and ZCA refuses
    constant images."""
    return make_pipeline(ZCAWhitening(bias=CNN_PAPER_ZCA_BIAS), CNNClassifier(arch, **{**CNN_PAPER_RECIPE, **overrides}))


class CNNClassifier(Persistent, ClassifierMixin, BaseEstimator):
    """A CNN baseline as a scikit-learn classifier: a Myrtle network (:func:`kernel_network` of
    ``myrtle(depth, head="linear")``) or ResNet-9 (:func:`resnet9`), trained by :func:`train_cnn`.

    Myrtle: the paper's network, a linear readout after the global average pool, in
    ``parameterization`` "standard" (He init, the default) or "ntk" (:func:`kernel_network`). The
    kernel's normalized head (``head="project"``: dense, per-pixel normalization, ReLU) does not train by SGD:
    its features of different images are nearly collinear at init and the outputs collapse to the
    class mean (10-20% on digits where the linear readout reaches 60-98%).

    fit(X, y): X (n, H, W, C) uint8 (scaled to [0, 1]) or floats (used as given), y (n,) labels
    (numbers or strings); predict and decision_function refuse images of another shape or dtype
    (uint8 vs floats) than at fit, and a model or outputs with NaN or inf. Images are then
    standardized per channel with the training set's mean and std (``standardization_``). Myrtle
    needs H and W divisible by 4 (32x32 CIFAR; 8x8 digits: 8 -> 4 -> 2 -> global pool), ResNet-9
    H, W >= 8. ``None`` settings take the family's default (``CNN_ARCH_DEFAULTS`` of
    :mod:`tangentless.kernels._shared.defaults`): Myrtle width 64 channels (the paper: 2048 for
    Myrtle10), batch 32, lr 0.1, loss "mse" (to one-hot labels), parameterization "standard";
    ResNet-9 width 1.0 (channel multiplier), batch 512, lr 0.4, loss "xent" with label smoothing
    0.2 (0 for mse), its own standard parameterization (PyTorch's init).
    SGD Nesterov 0.9, ``weight_decay`` on the weights, one-cycle lr (20% warmup) over ``epochs``.
    With "ntk", weight decay acts on N(0, 1) weights whose gradients are sqrt(fan_in) times smaller:
    it shrinks every hidden conv (use weight_decay=0 and lr ~ 4 there; docs/baselines.md).
    augment: crops (padding H / 8), flips and cutout (side H / 4); flips do not suit digits, use
    augment=False there. checkpoint_dir: a checkpoint per epoch; a fit with the same settings and
    data resumes from it. random_state seeds init, data order and augmentation. A diverged fit raises
    :class:`~tangentless.kernels._shared.training.TrainingDivergedError` (a ValueError).

    Attributes: classes_, params_, state_, history_ (per epoch), budget_ (what the run trained on),
    standardization_ ({"mean", "std"} (C,)), image_shape_ (H, W, C), input_dtype_ ("uint8" or
    "float32", the images' dtype at fit). ``save(path)`` / ``load(path)``:
    the fitted classifier as arrays + JSON (no pickle).
    """

    def __init__(self, arch: str = "resnet9", width: float | None = None, epochs: int = CNN_RECIPE["epochs"],
                 batch_size: int | None = None, lr: float | None = None,
                 weight_decay: float = CNN_RECIPE["weight_decay"], loss: str | None = None,
                 augment: bool = CNN_RECIPE["augment"], random_state: int | np.random.RandomState | None = 0,
                 checkpoint_dir: str | os.PathLike[str] | None = None, progress: bool = False,
                 parameterization: str | None = None) -> None:
        self.arch = arch
        self.width = width
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.loss = loss
        self.augment = augment
        self.random_state = random_state
        self.checkpoint_dir = checkpoint_dir
        self.progress = progress
        self.parameterization = parameterization

    def _setting(self, name: str):
        value = getattr(self, name)
        if value is not None:
            return value
        if self.arch not in ARCHS:
            raise ValueError(f"arch must be one of {ARCHS}; got {self.arch!r}")
        return CNN_ARCH_DEFAULTS[_family(self.arch)][name]

    def _network(self):
        return build_network(self.arch, self._setting("width"), len(self.classes_), self._setting("parameterization"))

    def _seed(self) -> int:
        if isinstance(self.random_state, (int, np.integer)) and not isinstance(self.random_state, bool):
            return int(self.random_state)
        return int(check_random_state(self.random_state).randint(2 ** 31 - 1))

    def fit(self, X: ArrayLike, y: ArrayLike) -> "CNNClassifier":
        """Train on images X (n, H, W, C) and labels y (n,)."""
        check_class_labels(y)   # the labels on their own first: no, continuous or one-class y
        images = validate_images(X, "X", dtype=None)
        self.classes_, targets = encode_labels(y, len(images))
        init, apply = self._network()
        size = min(images.shape[1:3])
        loss = self._setting("loss")
        config = CNNTrainConfig(epochs=self.epochs, batch_size=self._setting("batch_size"), lr=self._setting("lr"),
                                weight_decay=self.weight_decay, loss=loss,
                                label_smoothing=CNN_RECIPE["label_smoothing"] if loss == "xent" else 0.0,
                                augment=bool(self.augment),
                                crop_padding=max(1, size // 8), cutout=max(1, size // 4), seed=self._seed())
        self.standardization_ = fit_standardization(to_unit_range(images))
        result = train_cnn(init, apply, preprocess(images, self.standardization_), targets, config,
                           checkpoint_dir=self.checkpoint_dir, progress=self.progress,
                           model_fingerprint={"arch": self.arch, "width": self._setting("width"),
                                              "parameterization": self._setting("parameterization")})
        self.params_, self.state_, self.history_, self.budget_ = (result.params, result.state, result.history,
                                                                  result.budget)
        self.image_shape_, self.input_dtype_ = images.shape[1:], str(images.dtype)
        return self

    def decision_function(self, X: ArrayLike) -> np.ndarray:
        """(n, n_classes) network outputs (logits for xent, one-hot regressions for mse)."""
        check_is_fitted(self, "params_")
        images = validate_images(X, "X", dtype=None)
        check_fitted_images(images, self.image_shape_, self.input_dtype_)
        check_finite_model({"params": self.params_, "state": self.state_}, "cannot predict")
        _, apply = self._network()
        return check_finite_outputs(predict_outputs(apply, self.params_, self.state_,
                                                    preprocess(images, self.standardization_)))

    def predict(self, X: ArrayLike) -> np.ndarray:
        """(n,) predicted labels."""
        outputs = self.decision_function(X)
        return self.classes_[np.argmax(outputs, 1)]

    # --- persistence (Persistent: save / load) ---

    def _params_to_json(self) -> dict:
        params = self.get_params(deep=False)
        return dict(params, checkpoint_dir=None if self.checkpoint_dir is None else str(self.checkpoint_dir))

    def _fitted_state(self) -> tuple[dict, dict]:
        check_finite_model({"params": self.params_, "state": self.state_}, "refusing to save")
        meta = {"history": self.history_, "budget": self.budget_, "image_shape": list(self.image_shape_),
                "input_dtype": self.input_dtype_}
        arrays = {"classes": np.asarray(self.classes_), "standardization_mean": self.standardization_["mean"],
                  "standardization_std": self.standardization_["std"],
                  **named_arrays({"params": self.params_, "state": self.state_})}
        return meta, arrays

    def _restore_fitted_state(self, meta: dict, arrays: dict) -> None:
        arrays = dict(arrays)  # entries are consumed below; the caller's dict stays whole
        self.classes_ = check_stored_classes(stored_array(arrays, "classes", 1, "iufbU"))
        self.image_shape_ = stored_shape(meta, "image_shape", 3)
        channels = (self.image_shape_[-1],)
        self.standardization_ = {"mean": stored_array(arrays, "standardization_mean", 1, shape=channels),
                                 "std": stored_array(arrays, "standardization_std", 1, shape=channels)}
        if not (self.standardization_["std"] > 0).all():
            raise ValueError("standardization_std must be > 0")
        for name in ("classes", "standardization_mean", "standardization_std"):
            del arrays[name]
        self.history_, self.budget_ = stored_history(meta), stored_budget(meta)
        self.input_dtype_ = parse_input_dtype(meta["input_dtype"])
        init, _ = self._network()
        trees = trees_from_arrays(_tree_templates(init, self.image_shape_), arrays)
        if arrays:
            raise ValueError(f"entries the network lacks: {sorted(arrays)[:5]}")
        check_finite_model(trees, "cannot load")
        self.params_, self.state_ = trees["params"], trees["state"]
