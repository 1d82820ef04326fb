"""Experiment 3: does accuracy carry over to a re-collected test set (CIFAR-10 -> CIFAR-10.1,
ImageNet -> ImageNetV2)? Each method is trained on class-balanced subsets of the training set
(one model per (method, n)), and tested on the original and on the re-collected test set.

Effective robustness (Taori et al. 2020): with logit(a) = ln(a / (1 - a)) and a linear fit
logit(acc_new) = b1 logit(acc_orig) + b0 over a set of models, a model's effective robustness is
rho = acc_new - sigmoid(b1 logit(acc_orig) + b0): its accuracy on the new set above what its
accuracy on the original set predicts. The fit is either given (for ImageNet -> ImageNetV2 the
reference fit over 85 ImageNet models, :data:`IMAGENET_V2_FIT`) or made by least squares over the
models evaluated here (the report says how many).
"""
from __future__ import annotations

import dataclasses
import pathlib
import time

import numpy as np
from tqdm.auto import tqdm

from ...kernels._shared.digest import sha256
from ..datasets import balanced_subset
from ..report import data_label, markdown_table, percent, plot_robustness, selection_table
from .methods import METHODS, all_params, describe
from .selection import default_grids, select_and_fit
from .store import ResultStore, write_results

NAME = "generalization"
IMAGENET_V2_FIT = {"b1": 0.923, "b0": -0.498,
                   "source": "Taori et al. 2020: least squares over 85 standard ImageNet models, "
                             "ImageNet -> ImageNetV2-MatchedFrequency"}


def logit(p):
    """ln(p / (1 - p)) of accuracies in (0, 1); ValueError at 0 or 1 (infinite logit)."""
    p = np.asarray(p, dtype=np.float64)
    if np.any((p <= 0) | (p >= 1)):
        raise ValueError(f"accuracies must lie strictly between 0 and 1 for a logit; got {p}")
    return np.log(p / (1 - p))


def sigmoid(z):
    return 1 / (1 + np.exp(-np.asarray(z, dtype=np.float64)))


def fit_logit_line(orig, new) -> tuple[float, float]:
    """Least-squares (b1, b0) of logit(new) = b1 logit(orig) + b0 over models (k,) accuracies."""
    x, y = logit(orig), logit(new)
    if x.size < 2 or np.ptp(x) == 0:
        raise ValueError(f"a line needs at least 2 models with different original accuracies; got "
                         f"{x.size} model(s) with original accuracies {np.asarray(orig).tolist()}")
    b1, b0 = np.polyfit(x, y, 1)
    return float(b1), float(b0)


def effective_robustness(orig, new, b1: float, b0: float):
    """acc_new - sigmoid(b1 logit(acc_orig) + b0), elementwise."""
    return np.asarray(new, dtype=np.float64) - sigmoid(b1 * logit(orig) + b0)


def analyze(models: list[dict], fit: dict | None = None) -> dict:
    """models: ``{"name", "orig", "new", ...}`` (fractions). fit: ``{"b1", "b0", "source"}`` or
    None to fit over these models. Returns ``{"fit": {...}, "models": [... + drop, rho]}``."""
    orig = np.array([m["orig"] for m in models])
    new = np.array([m["new"] for m in models])
    if fit is None:
        b1, b0 = fit_logit_line(orig, new)
        fit = {"b1": b1, "b0": b0,
               "source": f"least squares over the {len(models)} models evaluated here"}
    rho = effective_robustness(orig, new, fit["b1"], fit["b0"])
    return {"fit": fit, "models": [{**m, "drop": m["orig"] - m["new"], "rho": float(r)}
                                   for m, r in zip(models, rho)]}


@dataclasses.dataclass
class GeneralizationConfig:
    """sizes: training-set sizes n (class-balanced, one model per method and n); methods: among
    ``METHODS``; fit: a given logit fit ``{"b1", "b0", "source"}`` or None to fit over the models
    evaluated; seed: the training subsets; params: per-method parameters; grids: per-method
    selection grids, searched on the training images only (default ``SELECTION_GRIDS``; see
    :mod:`.selection`)."""
    sizes: tuple[int, ...] = (1000,)
    methods: tuple[str, ...] = METHODS
    fit: dict | None = None
    seed: int = 0
    params: dict = dataclasses.field(default_factory=all_params)
    grids: dict = dataclasses.field(default_factory=lambda: default_grids(METHODS))


def run(train: tuple[np.ndarray, np.ndarray], original: tuple[np.ndarray, np.ndarray],
        recollected: tuple[np.ndarray, np.ndarray], config: GeneralizationConfig,
        out: str | pathlib.Path, *, data: str = "", progress: bool = True) -> dict:
    """Train, test on both sets, analyze; write ``out/generalization.{json,md,png}``.

    train, original, recollected: (images NHWC, labels (N,)); the images of all three share their
    (H, W, C). Resumable: a restart skips the (method, n) already evaluated.
    """
    out = pathlib.Path(out)
    if len(config.methods) * len(config.sizes) < 2 and config.fit is None:
        raise ValueError("fitting the logit line needs at least 2 models (methods x sizes); add "
                         "methods or sizes, or pass a given fit")
    params = {m: config.params[m] for m in METHODS}
    grids = {m: config.grids.get(m, {}) for m in METHODS}
    header = {"experiment": NAME, "data": data, "config": dataclasses.asdict(config),
              "methods": {m: describe(m, params[m], grids[m]) for m in config.methods},
              "test_sizes": {"original": len(original[1]), "recollected": len(recollected[1])}}
    store = ResultStore(out / f"{NAME}.json", ("method", "n"), header,
                        sha256({"params": params, "seed": config.seed, "grids": grids}, *train,
                               *original, *recollected))
    jobs = [(m, n) for n in config.sizes for m in config.methods if not store.done(method=m, n=n)]
    for method, n in tqdm(jobs, desc="generalization models", disable=not progress):
        subset = balanced_subset(train[1], n, seed=config.seed)
        model, _, selection, fit_seconds = select_and_fit(
            method, params[method], grids[method], train[0][subset], train[1][subset],
            seed=config.seed, whitening_images=train[0])
        tic = time.perf_counter()
        accuracy = {name: float(np.mean(model.predict(images) == labels))
                    for name, (images, labels) in (("orig", original), ("new", recollected))}
        store.add({"method": method, "n": n, "name": f"{method} (n={n})", **accuracy,
                   "fit_seconds": round(fit_seconds, 3),
                   "predict_seconds": round(time.perf_counter() - tic, 3),
                   "selection_seconds": selection["seconds"], "selection": selection})
    return write_outputs(store, out)


def write_outputs(source: ResultStore | dict, out: str | pathlib.Path) -> dict:
    """Analysis, Markdown table and plot of a generalization store or payload."""
    out = pathlib.Path(out)
    payload = write_results(source, out / f"{NAME}.json",
                            lambda p: {"analysis": analyze(p["records"], p["config"]["fit"])})
    analysis = payload["analysis"]
    fit = analysis["fit"]
    rows = [[m["name"], percent(m["orig"]), percent(m["new"]), f"{100 * m['drop']:.2f}",
             f"{100 * m['rho']:+.2f}", f"{m['fit_seconds']:.1f}"] for m in analysis["models"]]
    text = (f"# Generalization to a re-collected test set: {data_label(payload)}\n\n"
            f"Test images: {payload['test_sizes']['original']} original, "
            f"{payload['test_sizes']['recollected']} re-collected. Accuracies in percent; drop = "
            "original - new; effective robustness rho = new - sigmoid(b1 logit(original) + b0) "
            f"with b1 = {fit['b1']:.4f}, b0 = {fit['b0']:.4f} ({fit['source']}).\n\n"
            + markdown_table(["model", "original", "re-collected", "drop", "rho", "fit s"], rows)
            + "\n## Hyperparameter selection (training data only)\n\n"
            + selection_table([r for r in payload["records"] if "selection" in r])
            + "\n" + markdown_table(["method", "configuration"],
                                    [[m, d] for m, d in payload["methods"].items()]))
    (out / f"{NAME}.md").write_text(text)
    plot_robustness(analysis["models"], out / f"{NAME}.png", fit["b1"], fit["b0"],
                    title=data_label(payload))
    return payload
