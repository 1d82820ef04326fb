"""Finding (1) of "Neural Kernels Without Tangents": across architectures, the test errors of
networks and of their kernels correlate. Each Myrtle depth (5, 7, 10) gives a kernel and its
network (:func:`tangentless.benchmarks.cnn.kernel_network`, no batch norm, no bias); both train
on the same class-balanced n images (``ARCHITECTURES["n"]``) and are tested on the same fixed
test set, each selecting its hyperparameters on those n images only (:mod:`.selection`: the
kernel's ZCA bias and alpha by exact leave-one-out, the network's peak lr and epochs on a
stratified hold-out). The kernel is deterministic given the images (one trial); the network is
trained ``network_trials`` times (initialization and augmentation differ).

Each architecture is one :mod:`.small_data` run (sizes (n,), pool of n images) in
``out/<arch>/``, so it resumes there, and :func:`write_outputs` combines them into
``out/architectures.{json,md,png}``: per architecture the kernel's and the network's test error
(mean and standard deviation over the network's trials) and, across architectures, the Pearson
correlation of the two errors (with three architectures a descriptive number, not a test).
"""
from __future__ import annotations

import copy
import dataclasses
import json
import pathlib

import numpy as np
from matplotlib.figure import Figure

from ...kernels.architectures import MYRTLE_NAMES
from ...kernels._shared.defaults import ARCHITECTURES, SELECTION_GRIDS, SMALL_DATA_PARAMS
from ..report import machine_line, markdown_table, percent, write_json
from . import small_data
from .methods import all_params
from . import selection

NAME = "architectures"


def default_params() -> dict:
    """Changes to ``EXPERIMENT_PARAMS``: ``SMALL_DATA_PARAMS`` then ``ARCHITECTURES["params"]``."""
    params = copy.deepcopy(SMALL_DATA_PARAMS)
    for method, changes in ARCHITECTURES["params"].items():
        params.setdefault(method, {}).update(changes)
    return params


def default_grids() -> dict:
    """``SELECTION_GRIDS`` with ``ARCHITECTURES["grids"]`` in place of its entries."""
    grids = selection.default_grids(SELECTION_GRIDS)
    grids.update(copy.deepcopy(ARCHITECTURES["grids"]))
    return grids


@dataclasses.dataclass
class ArchitecturesConfig:
    """archs: Myrtle names (``MYRTLE_NAMES``); n: the common training-set size (a multiple of the
    number of classes); network_trials: trainings of each network on the n images; test_size: a
    class-balanced subset of the test set (None: all of it); seed: the n images and the test
    subset; params: changes to ``EXPERIMENT_PARAMS`` for "kernel" and "cnn" (their ``arch`` is
    set per architecture); grids: their selection grids."""
    archs: tuple[str, ...] = MYRTLE_NAMES
    n: int = ARCHITECTURES["n"]
    network_trials: int = ARCHITECTURES["network_trials"]
    test_size: int | None = None
    seed: int = 0
    params: dict = dataclasses.field(default_factory=default_params)
    grids: dict = dataclasses.field(default_factory=default_grids)

    def check(self) -> None:
        """ValueError naming the first inconsistent setting."""
        unknown = [a for a in self.archs if a not in MYRTLE_NAMES]
        if not self.archs or unknown:
            raise ValueError(f"archs must be among {', '.join(MYRTLE_NAMES)}; got {list(self.archs)}")
        if len(set(self.archs)) != len(self.archs):
            raise ValueError(f"archs must not repeat; got {list(self.archs)}")
        if self.network_trials < 1:
            raise ValueError(f"network_trials must be >= 1; got {self.network_trials}")

    def small_data_config(self, arch: str, method: str) -> small_data.SmallDataConfig:
        """The small-data run of ``method`` ("kernel" or "cnn") at architecture ``arch``."""
        params = copy.deepcopy(self.params)
        for m in ("kernel", "cnn"):
            params.setdefault(m, {})["arch"] = arch
        return small_data.SmallDataConfig(
            sizes=(self.n,), trials=1 if method == "kernel" else self.network_trials,
            methods=(method,), pool_size=self.n, test_size=self.test_size, seed=self.seed,
            params=all_params(params), grids=copy.deepcopy(self.grids))


def run(train_images: np.ndarray, train_labels: np.ndarray, test_images: np.ndarray,
        test_labels: np.ndarray, config: ArchitecturesConfig, out: str | pathlib.Path, *,
        data: str = "", progress: bool = True) -> dict:
    """Run (or resume) every architecture's kernel and network, then :func:`write_outputs`.
    Images NHWC, labels (N,) integers 0..C-1; the test images are used for accuracy only."""
    config.check()
    out = pathlib.Path(out)
    for arch in config.archs:
        for method in ("kernel", "cnn"):
            small_data.run(train_images, train_labels, test_images, test_labels,
                           config.small_data_config(arch, method), out / arch, data=data,
                           progress=progress)
    return write_outputs(out, config.archs, data=data)


def correlation(x: list[float], y: list[float]) -> float | None:
    """Pearson correlation of x and y; None for fewer than 3 points or a constant side."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(x) < 3 or x.std() == 0 or y.std() == 0:
        return None
    return float(np.corrcoef(x, y)[0, 1])


def _row(arch: str, payload: dict) -> dict:
    by_method = {row["method"]: row for row in payload["summary"]}
    missing = {"kernel", "cnn"} - set(by_method)
    if missing:
        raise ValueError(f"{arch}: no {', '.join(sorted(missing))} results yet")
    kernel, network = by_method["kernel"], by_method["cnn"]
    chosen = {r["method"]: r["selection"]["chosen"] for r in payload["records"] if r["trial"] == 0}
    return {"arch": arch, "n": kernel["n"], "kernel_error": 1 - kernel["mean"],
            "network_error": 1 - network["mean"], "network_error_std": network["std"],
            "network_trials": network["trials"], "network_errors": [1 - a for a in network["accuracies"]],
            "kernel_chosen": chosen.get("kernel"), "network_chosen_trial0": chosen.get("cnn"),
            "kernel_seconds": kernel["cost_seconds"], "network_seconds": network["cost_seconds"]}


def write_outputs(out: str | pathlib.Path, archs, *, data: str = "") -> dict:
    """``out/architectures.{json,md,png}`` from the architectures' small-data results."""
    out = pathlib.Path(out)
    payloads = {a: json.loads((out / a / "small_data.json").read_text()) for a in archs}
    rows = [_row(a, p) for a, p in payloads.items()]
    r = correlation([row["kernel_error"] for row in rows], [row["network_error"] for row in rows])
    first = next(iter(payloads.values()))
    payload = {"experiment": NAME, "data": data, "archs": list(archs), "rows": rows,
               "pearson_r": r, "test_size": first["config"]["test_size"],
               "machine": first["machine"],
               "methods": {a: small_data.method_descriptions(p) for a, p in payloads.items()},
               "grids": {m: first["config"]["grids"].get(m) for m in ("kernel", "cnn")}}
    write_json(out / f"{NAME}.json", payload)
    table = markdown_table(
        ["architecture", "kernel error %", "network error % (trials)", "kernel chosen",
         "kernel s", "network s/trial"],
        [[row["arch"], f"{100 * row['kernel_error']:.1f}",
          f"{percent(row['network_error'], row['network_error_std'])} ({row['network_trials']})",
          ", ".join(f"{k}={v:g}" for k, v in (row["kernel_chosen"] or {}).items()),
          f"{row['kernel_seconds']:.0f}", f"{row['network_seconds']:.0f}"] for row in rows])
    n = rows[0]["n"]
    text = (f"# Network error against kernel error across architectures: {data}\n\n"
            f"Each Myrtle architecture's kernel and network on the same {n} class-balanced "
            f"training images, tested on {payload['test_size']} test images; hyperparameters "
            "selected on the training images only (kernel: ZCA bias and alpha by leave-one-out; "
            "network: peak lr and epochs on a stratified hold-out). Pearson correlation of the "
            f"errors across the {len(rows)} architectures: "
            + ("n/a" if r is None else f"{r:.2f}") + ".\n\n" + table +
            f"\nMachine: {machine_line(payload['machine'])}.\n")
    (out / f"{NAME}.md").write_text(text)
    _plot(rows, r, out / f"{NAME}.png", f"{data}, n = {n}")
    return payload


def _plot(rows: list[dict], r: float | None, path: pathlib.Path, title: str) -> None:
    fig = Figure(figsize=(5.2, 4.6), layout="constrained")
    ax = fig.add_subplot()
    for i, row in enumerate(rows):
        ax.errorbar(100 * row["kernel_error"], 100 * row["network_error"],
                    yerr=None if row["network_error_std"] is None else 100 * row["network_error_std"],
                    fmt="o", color=f"C{i}", capsize=3, label=row["arch"])
    values = [100 * row[k] for row in rows for k in ("kernel_error", "network_error")]
    low, high = min(values) - 2, max(values) + 2
    ax.plot([low, high], [low, high], "k--", lw=1, label="equal error")
    ax.set_xlabel("kernel test error (%)")
    ax.set_ylabel("network test error (%)")
    ax.set_title(f"{title}; Pearson r = " + ("n/a" if r is None else f"{r:.2f}"), fontsize="medium")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
