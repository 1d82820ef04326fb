"""Why the kernel's own network (Myrtle5) trails ResNet-9 on small CIFAR-10 training sets, measured
on training images only; JSON to ``--out`` (default benchmarks/results/network_diagnosis.json).

Each variant trains on one trial's n images of the small-data pool (the protocol's pool of 1,280
class-balanced training images, seed 0; trial ``--trial``) and is scored on 1,000 class-balanced
*training* images outside the pool (never the test set), and on its own n images ("fit").
Variants are (method, changes to its ``EXPERIMENT_PARAMS``); ``zca`` puts ZCA whitening with that
bias, fitted on the n images, in front. The table in docs/baselines.md comes from this script.

Usage: python -m tangentless.benchmarks.network_diagnosis [--n 160] [--trial 0]
       [--variants JSON] [--data FOLDER] [--out benchmarks/results/network_diagnosis.json]
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

import numpy as np

from .data_folder import resolve_data
from .machine import describe_machine
from .report import write_json

DEFAULT_OUT = pathlib.Path("benchmarks/results/network_diagnosis.json")
#: the variants of docs/baselines.md: {name: [method, changes]}
VARIANTS = {
    "base (lr 0.1, 15 epochs)": ["cnn", {"epochs": 15, "min_steps": 100}],
    "no augmentation": ["cnn", {"epochs": 15, "min_steps": 100, "augment": False}],
    "lr 0.3": ["cnn", {"epochs": 15, "min_steps": 100, "lr": 0.3}],
    "lr 0.01": ["cnn", {"epochs": 15, "min_steps": 100, "lr": 0.01}],
    "width 64": ["cnn", {"epochs": 15, "min_steps": 100, "width": 64}],
    "cross-entropy": ["cnn", {"epochs": 15, "min_steps": 100, "loss": "xent"}],
    "ZCA 0.1": ["cnn", {"epochs": 15, "min_steps": 100, "zca": 0.1}],
    "ZCA 0.01": ["cnn", {"epochs": 15, "min_steps": 100, "zca": 0.01}],
    "ZCA 1e-4": ["cnn", {"epochs": 15, "min_steps": 100, "zca": 1e-4}],
    "ZCA 0.01 + cross-entropy": ["cnn", {"epochs": 15, "min_steps": 100, "zca": 0.01, "loss": "xent"}],
    "60 epochs": ["cnn", {"epochs": 60, "min_steps": 100}],
    "60 epochs, lr 0.03": ["cnn", {"epochs": 60, "min_steps": 100, "lr": 0.03}],
    "60 epochs, cross-entropy": ["cnn", {"epochs": 60, "min_steps": 100, "loss": "xent"}],
    "60 epochs, cross-entropy, lr 0.03": ["cnn", {"epochs": 60, "min_steps": 100, "loss": "xent",
                                                  "lr": 0.03}],
    "120 epochs": ["cnn", {"epochs": 120, "min_steps": 100}],
    "NTK, lr 2, no weight decay, 60 epochs": ["cnn", {"epochs": 60, "min_steps": 100, "lr": 2.0,
                                                      "parameterization": "ntk", "weight_decay": 0.0}],
    "ResNet-9 x1/8, 15 epochs": ["resnet", {"epochs": 15, "min_steps": 100}],
    "ResNet-9 x1/8, 60 epochs": ["resnet", {"epochs": 60, "min_steps": 100}],
}


def split(labels: np.ndarray, n: int, trial: int) -> tuple[np.ndarray, np.ndarray]:
    """(training indices: the protocol's trial ``trial`` at size n, held-out training indices)."""
    from .datasets import balanced_subset
    from .experiments.small_data import trial_seed

    pool = balanced_subset(labels, 1280, seed=0)
    outside = np.setdiff1d(np.arange(len(labels)), pool)
    held = outside[balanced_subset(labels[outside], 1000, seed=1)]
    return pool[balanced_subset(labels[pool], n, seed=trial_seed(0, trial))], held


def run_variant(method: str, changes: dict, x, y, train, held, seed: int) -> dict:
    from sklearn.pipeline import make_pipeline

    from ..kernels import ZCAWhitening
    from .experiments.methods import all_params, make_estimator

    changes = dict(changes)
    zca = changes.pop("zca", None)
    model = make_estimator(method, {**all_params()[method], **changes}, len(train), random_state=seed)
    if zca is not None:
        model = make_pipeline(ZCAWhitening(bias=zca), model)
    tic = time.perf_counter()
    model.fit(x[train], y[train])
    seconds = time.perf_counter() - tic
    return {"held_out": float(np.mean(model.predict(x[held]) == y[held])),
            "fit": float(np.mean(model.predict(x[train]) == y[train])), "seconds": round(seconds, 1)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=160)
    parser.add_argument("--trial", type=int, default=0)
    parser.add_argument("--variants", type=json.loads, default=VARIANTS,
                        help='JSON {name: [method, {param: value}]} (default: docs/baselines.md\'s)')
    parser.add_argument("--data", type=pathlib.Path,
                        help="data folder holding cifar10/train.npz (default: the data folder)")
    parser.add_argument("--out", type=pathlib.Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    data = np.load(resolve_data("cifar10", args.data) / "train.npz")
    x, y = data["images"], data["labels"]
    train, held = split(y, args.n, args.trial)
    rows = []
    for name, (method, changes) in args.variants.items():
        rows.append({"variant": name, "method": method, "changes": changes,
                     **run_variant(method, changes, x, y, train, held, args.trial)})
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    report = {"benchmark": "network_diagnosis", "machine": describe_machine(),
              "command": " ".join(sys.argv), "n": args.n, "trial": args.trial,
              "held_out_images": len(held), "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, report)
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
