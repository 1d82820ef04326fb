"""Experiment 2, accuracy against compute: every method trained at several class-balanced
training-set sizes (``FullDataConfig.sizes``), each selecting its hyperparameters on its training
images only (:mod:`.selection`), with its fit, predict and selection seconds measured on this
machine (and, for the kernel, the pairs it computed); and a projection of each method's cost to
the full data set (default CIFAR-10: 50,000 training and 10,000 test images) from those
measurements, with its assumptions written into the report.

Projection (N training and T test images, from the method's records; "measured seconds per
unit" is the slope between its smallest and largest n, so that fixed costs such as compilation
cancel, or with one size the ratio there, which overestimates):
- kernel: pool_test_pairs(N, T, flip) x (measured seconds per pair) + c N^3. Seconds per pair
  from (fit + predict seconds - c n^3) against pairs(n); c = eigh(m) / m^3 from one timed symmetric
  eigendecomposition at m = 400 (the LOO alpha path; above 20,000 points KernelRidgeClassifier
  switches to Cholesky solves with hold-out selection, and the N x N float64 matrix needs
  N^2 x 8 bytes, 20 GB at 50,000: ignored).
- scattering + ridge: (N + T) x (measured seconds per image of features) + c N^3.
- cnn, resnet, istc (SGD): epochs(N) x N x (measured fit seconds per training image and epoch)
  + T x (measured predict seconds per image); epochs(N) = ``network_epochs`` of the chosen
  epochs (min_steps no longer binds at large N).
The projection is of one fit at the chosen hyperparameters; the selection's search multiplies it
by at most the grid size (reported). It uses the methods' configured (reduced) budgets, e.g. the
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
from ..report import (data_label, format_seconds, machines_line, markdown_table, plot_accuracy_vs_cost,
                      selection_table, summarize)
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


def per_unit(measurements: list[tuple[float, float]]) -> tuple[float, str]:
    """Seconds per unit of work from (units, seconds) measurements, ordered by size: the slope
    between the smallest and the largest (fixed costs such as compilation cancel) where the
    largest has more units and the slope is positive, else seconds / units of the largest; and
    which of the two it is."""
    (u0, s0), (u1, s1) = measurements[0], measurements[-1]
    if u1 > u0 and s1 > s0:
        return (s1 - s0) / (u1 - u0), "slope between the smallest and the largest n"
    return max(s1, 0.0) / u1, "ratio at the largest n"


def project(method: str, params: dict, records: list[dict], full: tuple[int, int],
            eigh_c: float) -> dict:
    """The projected seconds of one fit + predict of ``method`` at ``full`` = (N, T) images, from
    its measured ``records`` (n_train, n_test, fit/predict seconds, chosen values; any order):
    ``{"seconds", "from_n", "assumption", "constants"}`` (see the module docstring)."""
    records = sorted(records, key=lambda r: r["n_train"])
    big_n, big_t = full

    def chosen(record):
        return {**params, **{k: v for k, v in record["selection"]["chosen"].items() if k in params}}

    def measured(record):
        return record["fit_seconds"] + record["predict_seconds"] - eigh_c * record["n_train"] ** 3

    last = records[-1]
    if method == "kernel":
        rate, how = per_unit([(r["pairs"], measured(r)) for r in records])
        seconds = pool_test_pairs(big_n, big_t, chosen(last)["flip"]) * rate + eigh_c * big_n ** 3
        assumption = ("kernel pairs (N (N + 1) / 2 + T N, x2 with flips) x measured seconds per "
                      f"pair ({how}) + ridge eigendecomposition c N^3 (c measured)")
        constants = {"seconds_per_pair": rate, "eigh_c": eigh_c}
    elif method in SGD_METHODS:
        rate, how = per_unit([(network_epochs(chosen(r), r["n_train"]) * r["n_train"],
                               r["fit_seconds"]) for r in records])
        per_test = last["predict_seconds"] / last["n_test"]
        epochs = network_epochs(chosen(last), big_n)
        seconds = epochs * big_n * rate + big_t * per_test
        assumption = (f"epochs x N x measured fit seconds per training image and epoch ({how}) "
                      "+ T x measured predict seconds per image")
        constants = {"seconds_per_image_epoch": rate, "predict_seconds_per_image": per_test,
                     "epochs": epochs}
    else:
        rate, how = per_unit([(r["n_train"] + r["n_test"], measured(r)) for r in records])
        seconds = (big_n + big_t) * rate + eigh_c * big_n ** 3
        assumption = ("(N + T) x measured seconds per image of scattering features "
                      f"({how}) + ridge eigendecomposition c N^3 (c measured)")
        constants = {"seconds_per_image": rate, "eigh_c": eigh_c}
    return {"seconds": seconds, "from_n": [r["n_train"] for r in records],
            "assumption": assumption, "constants": constants}


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
              "methods": {m: describe(m, params[m], grids[m]) for m in config.methods},
              "num_classes": len(classes), "available_balanced_train": available,
              "test_size": len(test_index)}
    # every method's params and grid, not only this run's: runs of other methods or sizes into
    # the same folder add to one file
    store = ResultStore(out / f"{NAME}.json", ("method", "n"), header,
                        sha256({"params": dict(config.params),
                                "grids": {m: config.grids.get(m, {}) for m in config.params},
                                "seed": config.seed, "holdout_fraction": config.holdout_fraction},
                               train_images, train_labels, test_images, test_labels))
    if "eigh_c" not in store.payload:
        store.update(eigh_c=eigh_constant())
    jobs = [(m, n) for n in config.sizes for m in config.methods if not store.done(method=m, n=n)]
    for method, n in tqdm(jobs, desc="full-data fits", disable=not progress):
        subset = balanced_subset(train_labels, n, seed=config.seed)
        model, chosen, selection, fit_seconds = select_and_fit(
            method, params[method], grids[method], train_images[subset], train_labels[subset],
            seed=config.seed, fraction=config.holdout_fraction, progress=progress,
            whitening_images=train_images)
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
    """{method: :func:`project` of its records} of a payload."""
    full = tuple(payload["config"]["full"])
    by_method: dict[str, list[dict]] = {}
    for record in payload["records"]:
        by_method.setdefault(record["method"], []).append(record)
    return {m: project(m, payload["config"]["params"][m], records, full, payload["eigh_c"])
            for m, records in by_method.items()}


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
    projected = [[m, ", ".join(map(str, p["from_n"])), format_seconds(p["seconds"]), p["assumption"]]
                 for m, p in payload["projection"].items()]
    # runs of other methods or sizes add to the file: describe what its records hold
    sizes = sorted({r["n"] for r in payload["records"]}) or list(config["sizes"])
    methods = {m: describe(m, config["params"][m], config["grids"].get(m))
               for m in dict.fromkeys(r["method"] for r in payload["records"])}
    title = f"Accuracy against compute: {data_label(payload)}"
    text = (f"# {title}\n\n"
            f"Each method at class-balanced training sets of {', '.join(map(str, sizes))} "
            f"images (one trial each, seed {config['seed']}), tested on {payload['test_size']} test "
            "images; hyperparameters selected on the training images only; seconds measured on this "
            "machine.\n\n"
            + markdown_table(["method", "n train", "test acc %", "fit s", "predict s", "selection s",
                              "kernel pairs"], rows)
            + "\n## Hyperparameter selection (training data only)\n\n"
            + selection_table(payload["records"])
            + f"\n## Projection to {full[0]:,} training and {full[1]:,} test images\n\n"
            + "One fit + predict at the chosen hyperparameters, from the measurements at the sizes "
              "given (the selection search costs up to its grid size times more).\n\n"
            + markdown_table(["method", "from n", "projected", "assumption"], projected)
            + "\n" + markdown_table(["method", "configuration (reduced budget; the selected values "
                                              "replace these: see the selection table)"],
                                    [[m, d] for m, d in methods.items()])
            + f"\n{machines_line(payload)}\n")
    (out / f"{NAME}.md").write_text(text)
    if payload["records"]:
        plot_accuracy_vs_cost(payload["summary"], out / f"{NAME}.png",
                              chance=1 / payload["num_classes"],
                              title=f"{title}; test {payload['test_size']}, sizes "
                                    f"{', '.join(map(str, sizes))}")
    return payload
