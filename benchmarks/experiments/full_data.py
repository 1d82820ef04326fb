"""Experiment 2, accuracy against compute: every method trained at several class-balanced
training-set sizes (``FullDataConfig.sizes``), each selecting its hyperparameters on its training
images only (:mod:`.selection`), with its fit, predict and selection seconds measured on this
machine (and, for the kernel, the pairs it computed); and a projection of each method's cost to
the full data set (default CIFAR-10: 50,000 training and 10,000 test images) from those
measurements, with its assumptions written into the report.

Projection (N training and T test images, from the record at the method's largest measured n):
- kernel: pool_test_pairs(N, T, flip) x (measured seconds per pair) + c N^3. Seconds per pair =
  (fit + predict seconds - c n^3) / pairs(n); c = eigh(m) / m^3 from one timed symmetric
  eigendecomposition at m = 400 (the LOO alpha path; above 20,000 points KernelRidgeClassifier
  switches to Cholesky solves with hold-out selection, and the N x N float64 matrix needs
  N^2 x 8 bytes, 20 GB at 50,000: ignored).
- scattering + ridge: (N + T) x (measured seconds per image of features) + c N^3.
- cnn, resnet, istc (SGD): epochs(N) x N x (measured fit seconds per training image and epoch)
  + T x (measured predict seconds per image); epochs(N) = ``network_epochs`` of the chosen
  epochs (min_steps no longer binds at large N).
The projection is of one fit at the chosen hyperparameters; the selection's search multiplies it
by at most the grid size (reported). Fixed costs at the measured n (e.g. compilation) are counted
as if they grew with n: measured at small n the projection is an overestimate. It uses the methods' configured (reduced) budgets, e.g. the
networks' widths, which the report states; the published recipes cost more.
"""
from __future__ import annotations

import dataclasses
import pathlib
import time

import numpy as np
import scipy.linalg
from tqdm.auto import tqdm

from ...kernels._shared.defaults import (FULL_DATA_METHODS, FULL_DATA_SIZES,
                                         SELECTION_HOLDOUT_FRACTION)
from ...kernels._shared.digest import sha256
from ..datasets import balanced_subset
from ..report import format_seconds, markdown_table, plot_accuracy_vs_cost, selection_table, summarize
from .gram_cache import pool_test_pairs, selection_pairs
from .methods import SGD_METHODS, all_params, describe, network_epochs
from .selection import check_grid, default_grids, select_and_fit
from .store import ResultStore, write_results

NAME = "full_data"
FULL_SIZES = {"cifar10": (50_000, 10_000), "imagenet": (1_281_167, 50_000)}
EIGH_SIZE = 400


@dataclasses.dataclass
class FullDataConfig:
    """sizes: class-balanced training-set sizes to measure (multiples of the number of classes);
    methods: among ``METHODS``; test_size: a class-balanced subset of the test set (None: all of
    it); full: (train, test) sizes of the full data set for the projection; seed: subsets and
    initializations; params: per-method parameters; grids: per-method selection grids (default
    ``SELECTION_GRIDS``); holdout_fraction: for the methods selected on a hold-out split."""
    sizes: tuple[int, ...] = FULL_DATA_SIZES
    methods: tuple[str, ...] = FULL_DATA_METHODS
    test_size: int | None = None
    full: tuple[int, int] = FULL_SIZES["cifar10"]
    seed: int = 0
    params: dict = dataclasses.field(default_factory=all_params)
    grids: dict = dataclasses.field(default_factory=lambda: default_grids(FULL_DATA_METHODS))
    holdout_fraction: float = SELECTION_HOLDOUT_FRACTION

    def check(self, num_classes: int, available: int) -> None:
        """ValueError naming the first inconsistent setting."""
        if not self.sizes or any(n < num_classes or n % num_classes or n > available
                                 for n in self.sizes):
            raise ValueError(f"sizes must be multiples of the number of classes ({num_classes}) up "
                             f"to {available} (the class-balanced training images); got "
                             f"{list(self.sizes)}")
        for method in self.methods:
            check_grid(method, self.grids.get(method, {}), self.params[method])


def eigh_constant() -> float:
    """c in seconds = c n^3 of a symmetric eigendecomposition, from one timed at :data:`EIGH_SIZE`."""
    a = np.random.default_rng(0).standard_normal((EIGH_SIZE, EIGH_SIZE))
    k = a @ a.T
    scipy.linalg.eigh(k)   # warm-up
    tic = time.perf_counter()
    scipy.linalg.eigh(k)
    return (time.perf_counter() - tic) / EIGH_SIZE ** 3


def project(method: str, params: dict, record: dict, full: tuple[int, int], eigh_c: float) -> dict:
    """The projected seconds of one fit + predict of ``method`` at ``full`` = (N, T) images, from
    one measured ``record`` (n_train, n_test, fit/predict seconds, chosen values): ``{"seconds",
    "from_n", "assumption", "constants"}`` (see the module docstring)."""
    n, t = record["n_train"], record["n_test"]
    big_n, big_t = full
    measured = record["fit_seconds"] + record["predict_seconds"]
    chosen = {**params, **{k: v for k, v in record["selection"]["chosen"].items() if k in params}}
    if method == "kernel":
        per_pair = max(measured - eigh_c * n ** 3, 0.0) / record["pairs"]
        seconds = pool_test_pairs(big_n, big_t, chosen["flip"]) * per_pair + eigh_c * big_n ** 3
        assumption = ("kernel pairs (N (N + 1) / 2 + T N, x2 with flips) x measured seconds per "
                      "pair + ridge eigendecomposition c N^3 (c measured)")
        constants = {"seconds_per_pair": per_pair, "eigh_c": eigh_c}
    elif method in SGD_METHODS:
        per_image = record["fit_seconds"] / (network_epochs(chosen, n) * n)
        per_test = record["predict_seconds"] / t
        seconds = network_epochs(chosen, big_n) * big_n * per_image + big_t * per_test
        assumption = ("epochs x N x measured fit seconds per training image and epoch + T x "
                      "measured predict seconds per image")
        constants = {"seconds_per_image_epoch": per_image, "predict_seconds_per_image": per_test,
                     "epochs": network_epochs(chosen, big_n)}
    else:
        per_image = max(measured - eigh_c * n ** 3, 0.0) / (n + t)
        seconds = (big_n + big_t) * per_image + eigh_c * big_n ** 3
        assumption = ("(N + T) x measured seconds per image of scattering features + ridge "
                      "eigendecomposition c N^3 (c measured)")
        constants = {"seconds_per_image": per_image, "eigh_c": eigh_c}
    return {"seconds": seconds, "from_n": n, "assumption": assumption, "constants": constants}


def run(train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray],
        config: FullDataConfig, out: str | pathlib.Path, *, data: str = "",
        progress: bool = True) -> dict:
    """Select, train and test every method at every size; write ``out/full_data.{json,md,png}``.
    Resumable per (method, n)."""
    out = pathlib.Path(out)
    train_images, train_labels = train
    test_index = (np.arange(len(test[1])) if config.test_size is None
                  else balanced_subset(test[1], config.test_size, seed=config.seed))
    test_images, test_labels = test[0][test_index], test[1][test_index]
    classes, counts = np.unique(train_labels, return_counts=True)
    available = len(classes) * int(counts.min())
    config.check(len(classes), available)
    params = {m: config.params[m] for m in config.methods}
    grids = {m: config.grids.get(m, {}) for m in config.methods}
    header = {"experiment": NAME, "data": data, "config": dataclasses.asdict(config),
              "methods": {m: describe(m, params[m]) for m in config.methods},
              "num_classes": len(classes), "available_balanced_train": available,
              "test_size": len(test_index)}
    store = ResultStore(out / f"{NAME}.json", ("method", "n"), header,
                        sha256({"params": params, "grids": grids, "seed": config.seed,
                                "holdout_fraction": config.holdout_fraction},
                               train_images, train_labels, test_images, test_labels))
    if "eigh_c" not in store.payload:
        store.update(eigh_c=eigh_constant())
    jobs = [(m, n) for n in config.sizes for m in config.methods if not store.done(method=m, n=n)]
    for method, n in tqdm(jobs, desc="full-data fits", disable=not progress):
        subset = balanced_subset(train_labels, n, seed=config.seed)
        model, chosen, selection, fit_seconds = select_and_fit(
            method, params[method], grids[method], train_images[subset], train_labels[subset],
            seed=config.seed, fraction=config.holdout_fraction, progress=progress)
        tic = time.perf_counter()
        predictions = model.predict(test_images)
        predict_seconds = time.perf_counter() - tic
        record = {"method": method, "n": n, "n_train": n, "n_test": len(test_labels),
                  "accuracy": float(np.mean(predictions == test_labels)),
                  "fit_seconds": round(fit_seconds, 3), "predict_seconds": round(predict_seconds, 3),
                  "seconds": round(fit_seconds + predict_seconds, 3),
                  "cost_seconds": round(fit_seconds + predict_seconds, 3),
                  "selection_seconds": selection["seconds"], "selection": selection}
        if method == "kernel":
            record["pairs"] = pool_test_pairs(n, len(test_labels), chosen["flip"])
            record["selection_pairs"] = selection_pairs(selection, n, params[method]["flip"])
        store.add(record)
    return write_outputs(store, out)


def projections(payload: dict) -> dict:
    """{method: :func:`project` of its record at the largest measured n} of a payload."""
    full = tuple(payload["config"]["full"])
    largest = {}
    for record in payload["records"]:
        if record["n"] >= largest.get(record["method"], {"n": 0})["n"]:
            largest[record["method"]] = record
    return {m: project(m, payload["config"]["params"][m], r, full, payload["eigh_c"])
            for m, r in largest.items()}


def write_outputs(source: ResultStore | dict, out: str | pathlib.Path) -> dict:
    """Markdown tables, the accuracy-vs-compute plot and the projection of a full-data store or
    payload (and the JSON, rewritten with ``summary`` and ``projection``)."""
    out = pathlib.Path(out)
    payload = write_results(source, out / f"{NAME}.json",
                            lambda p: {"summary": summarize(p["records"]),
                                       "projection": projections(p)})
    config, full = payload["config"], payload["config"]["full"]
    rows = [[r["method"], r["n_train"], f"{100 * r['accuracy']:.2f}", f"{r['fit_seconds']:.1f}",
             f"{r['predict_seconds']:.1f}", f"{r['selection_seconds']:.1f}",
             f"{r['pairs']:,}" if "pairs" in r else "-"]
            for r in sorted(payload["records"], key=lambda r: (r["method"], r["n"]))]
    projected = [[m, p["from_n"], format_seconds(p["seconds"]), p["assumption"]]
                 for m, p in payload["projection"].items()]
    title = f"Accuracy against compute: {payload.get('data', '')}"
    text = (f"# {title}\n\n"
            f"Each method at class-balanced training sets of {', '.join(map(str, config['sizes']))} "
            f"images (one trial each, seed {config['seed']}), tested on {payload['test_size']} test "
            "images; hyperparameters selected on the training images only; seconds measured on this "
            "machine.\n\n"
            + markdown_table(["method", "n train", "test acc %", "fit s", "predict s", "selection s",
                              "kernel pairs"], rows)
            + "\n## Hyperparameter selection (training data only)\n\n"
            + selection_table(payload["records"])
            + f"\n## Projection to {full[0]:,} training and {full[1]:,} test images\n\n"
            + "One fit + predict at the chosen hyperparameters, from the measurement at the largest "
              "n (the selection search costs up to its grid size times more; fixed costs such as "
              "compilation are scaled with n, so a projection from a small n overestimates).\n\n"
            + markdown_table(["method", "from n", "projected", "assumption"], projected)
            + "\n" + markdown_table(["method", "configuration (reduced budget; the selected values "
                                              "replace these: see the selection table)"],
                                    [[m, d] for m, d in payload["methods"].items()])
            + f"\nMachine: {payload['machine']['cpu']}, {payload['machine']['cpu_count']} cores.\n")
    (out / f"{NAME}.md").write_text(text)
    if payload["records"]:
        plot_accuracy_vs_cost(payload["summary"], out / f"{NAME}.png",
                              chance=1 / payload["num_classes"],
                              title=f"{title}; test {payload['test_size']}, sizes "
                                    f"{', '.join(map(str, config['sizes']))}")
    return payload
