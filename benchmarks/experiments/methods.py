"""The methods the experiments compare, as plain parameter dicts (every reduced budget is a field,
so every report states it; defaults: ``EXPERIMENT_PARAMS`` in ``tangentless.kernels._shared.defaults``)
and as estimators with ``fit(images, labels)`` / ``predict(images)``.

- ``kernel``: ZCA whitening -> compositional Myrtle kernel (flip-symmetrized) -> kernel ridge,
  alpha by exact leave-one-out (:class:`~tangentless.solvers.CompositionalKernelClassifier`).
- ``scattering``: scattering (J=2) -> standardization -> unit-norm rows -> RBF kernel
  exp(-|a - b|^2) -> kernel ridge, alpha by exact leave-one-out
  (:class:`~tangentless.scattering.ScatteringRidgeClassifier`). Chosen over "+ linear" (SGD)
  because on the exact CIFAR subset it was both stronger (65.1% vs 61.1% at n=4000,
  benchmarks/results/scattering_bench.json) and cheap: no training loop, and below a few thousand
  images the solve takes well under a second.
- ``cnn``: the kernel's own architecture as a finite network (Myrtle5, ``CNNClassifier``), 32
  channels instead of the paper's 2048, in the standard (He-initialized) parameterization, MSE to
  one-hot labels and peak lr 0.1 as in the paper (why the NTK parameterization at lr 1.0 trained
  badly: docs/baselines.md).
- ``resnet``: ResNet-9 at 1/8 of its channels (prep conv 8, widest 64), ``CNNClassifier``.
- ``istc``: the sparse scattering network of Zarka et al. (scattering J=2 -> 1x1 projection ->
  ISTC sparse coding -> linear head, trained by SGD; ``SparseScatteringClassifier``) at a
  CPU-sized dictionary: projection 64, 256 atoms, 4 ISTC iterations instead of the paper's
  256 / 2048 / 12 (roughly 30 times cheaper per image). Its cost grows linearly in n (epochs x
  images), unlike the O(n^3) solve of ``scattering``.
The network budgets are CPU budgets (narrow, tens of epochs), far below the published recipes:
``epochs`` passes over the training set, at least ``min_steps`` SGD steps (small n would
otherwise get a handful of steps).
"""
from __future__ import annotations

import copy
import math

from ..cnn import ARCHS, LOSSES, CNNClassifier
from ...kernels import myrtle
from ...kernels._shared.defaults import EXPERIMENT_PARAMS, METHODS
from ...kernels.architectures import MYRTLE_NAMES, myrtle_depth
from ...scattering import ScatteringRidgeClassifier, SparseScatteringClassifier
from ...solvers import CompositionalKernelClassifier

#: the estimator class each method fits (what a saved model of that method holds)
ESTIMATORS = {"kernel": CompositionalKernelClassifier, "scattering": ScatteringRidgeClassifier,
              "cnn": CNNClassifier, "resnet": CNNClassifier, "istc": SparseScatteringClassifier}

#: the methods trained by SGD for ``epochs`` (>= ``min_steps`` steps): cost linear in n
SGD_METHODS = ("cnn", "resnet", "istc")

#: the values a text parameter may take
CHOICES = {"kernel": {"arch": MYRTLE_NAMES}, "cnn": {"arch": ARCHS, "loss": LOSSES},
           "resnet": {"arch": ARCHS, "loss": LOSSES}}
#: the numeric parameters that may be 0 (every other number must be > 0)
MAY_BE_ZERO = frozenset({"zca_bias", "alphas", "min_steps"})


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_param(method: str, name: str, value) -> None:
    """ValueError (one line naming ``method.name``, the value and what is expected) unless
    ``value`` has the type of the parameter's default: a bool is true or false (nothing else); an
    int an integer; a float any finite number; a list a non-empty list of numbers; a text one of
    :data:`CHOICES` where the parameter has some. Numbers are > 0 (>= 0 for :data:`MAY_BE_ZERO`)."""
    default, least = EXPERIMENT_PARAMS[method][name], 0 if name in MAY_BE_ZERO else None

    def fail(expected: str):
        raise ValueError(f"{method}.{name}={value!r}: expected {expected}")

    bound = ">= 0" if least == 0 else "> 0"
    if isinstance(default, bool):
        if not isinstance(value, bool):
            fail("true or false")
    elif isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int) or not (
                value >= 0 if least == 0 else value > 0):
            fail(f"an integer {bound}")
    elif isinstance(default, float):
        if not _is_number(value) or not (value >= 0 if least == 0 else value > 0):
            fail(f"a number {bound}")
    elif isinstance(default, list):
        if not (isinstance(value, (list, tuple)) and value
                and all(_is_number(v) and (v >= 0 if least == 0 else v > 0) for v in value)):
            fail(f"a non-empty list of numbers {bound}, e.g. [0.001, 0.1]")
    elif isinstance(default, str):
        choices = CHOICES.get(method, {}).get(name)
        if not isinstance(value, str) or (choices and value not in choices):
            fail(f"one of {', '.join(choices)}" if choices else "text")


def method_params(method: str, **overrides) -> dict:
    """A copy of the default parameters of ``method`` with ``overrides`` applied, each checked by
    :func:`check_param`."""
    if method not in EXPERIMENT_PARAMS:
        raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    unknown = set(overrides) - set(EXPERIMENT_PARAMS[method])
    if unknown:
        raise ValueError(f"{method} has no parameter(s) {sorted(unknown)}; it takes "
                         f"{sorted(EXPERIMENT_PARAMS[method])}")
    for name, value in overrides.items():
        check_param(method, name, value)
    return {**copy.deepcopy(EXPERIMENT_PARAMS[method]), **overrides}


def all_params(overrides: dict | None = None) -> dict:
    """Parameters of every method: ``{method: method_params(method, **overrides[method])}``."""
    overrides = overrides or {}
    unknown = set(overrides) - set(METHODS)
    if unknown:
        raise ValueError(f"unknown method(s) {sorted(unknown)}; choose from {', '.join(METHODS)}")
    return {m: method_params(m, **overrides.get(m, {})) for m in METHODS}


def describe(method: str, params: dict, grid: dict | None = None) -> str:
    """One line naming the method and its budget, for tables and legends. A parameter that
    ``grid`` (the method's selection grid) searches reads "<name> selected" instead of its fixed
    value, which selection replaces."""
    searched = set(grid or ())

    def value(key: str, fixed: str, name: str | None = None) -> str:
        return f"{name or key} selected" if key in searched else fixed

    if method == "kernel":
        bias = value("zca_bias", f"bias {params['zca_bias']:g}", "bias")
        flips = value("flip", "flip-symmetrized" if params["flip"] else "", "flips")
        return (f"{params['arch']} kernel, ZCA ({bias}), {flips + ', ' if flips else ''}"
                "kernel ridge (alpha by LOO)")
    if method == "scattering":
        return f"scattering {value('J', 'J=' + str(params['J']))} + RBF kernel ridge (alpha by LOO)"
    epochs = value("epochs", f"{params['epochs']} epochs (>= {params['min_steps']} steps)")
    lr = f"{params['lr']:g}"
    if method == "istc":
        return (f"sparse scattering (ISTC) {value('J', 'J=' + str(params['J']))}, CPU-sized: "
                f"projection {params['projection']}, {params['dictionary_size']} atoms, "
                f"{params['n_iter']} iterations (paper: 256 / 2048 / 12), {epochs}, "
                f"batch {params['batch_size']}, {value('lr', 'lr ' + lr)}")
    return (f"{params['arch']} network, {value('width', 'width ' + str(params['width']))}, {epochs}, "
            f"batch {params['batch_size']}, {params['loss']} loss, {value('lr', 'peak lr ' + lr)}"
            f"{', crop+flip+cutout augmentation' if params['augment'] else ''}")


def network_epochs(params: dict, n: int) -> int:
    """Epochs for n training images: ``params["epochs"]``, raised so that there are at least
    ``params["min_steps"]`` steps of ``min(batch_size, n)`` images."""
    steps_per_epoch = math.ceil(n / min(params["batch_size"], n))
    return max(params["epochs"], math.ceil(params["min_steps"] / steps_per_epoch))


def kernel_spec(params: dict):
    """The Myrtle spec named by ``params["arch"]`` ("myrtle5" | "myrtle7" | "myrtle10")."""
    return myrtle(myrtle_depth(params["arch"]))


def make_estimator(method: str, params: dict, n_train: int, *, random_state: int = 0,
                   progress: bool = False, cache=None, zca=None):
    """An unfitted estimator (``fit(images, labels)``, ``predict(images)``) for a method that
    will train on ``n_train`` images (which sets the networks' epochs); kernel only: ``cache``,
    its :class:`~tangentless.kernels.GramCache`, and ``zca``, a fitted ZCAWhitening of bias
    ``params["zca_bias"]`` (None: fitted on the training images)."""
    if (cache is not None or zca is not None) and method != "kernel":
        raise ValueError(f"a Gram cache or a fitted whitening serves the kernel method, not {method!r}")
    if method == "kernel":
        return CompositionalKernelClassifier(arch=params["arch"], flip=params["flip"],
                                             zca_bias=params["zca_bias"],
                                             zca=True if zca is None else zca,
                                             alphas=tuple(params["alphas"]), progress=progress,
                                             cache=cache)
    if method == "scattering":
        return ScatteringRidgeClassifier(J=params["J"], alphas=tuple(params["alphas"]),
                                         progress=progress)
    if method in SGD_METHODS:
        settings = {k: v for k, v in params.items() if k != "min_steps"}
        return ESTIMATORS[method](**{**settings, "epochs": network_epochs(params, n_train)},
                                  random_state=random_state, progress=progress)
    raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
