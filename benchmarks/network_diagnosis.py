"""Why the kernel's own network (Myrtle5) trails ResNet-9 on small CIFAR-10 training sets, measured
on training images only; JSON to ``--out`` (default benchmarks/results/network_diagnosis.json).

Each variant trains on one trial's n images of the small-data pool (the protocol's pool of 1,280
class-balanced training images, seed 0; trial ``--trial``) and is scored on 1,000 class-balanced
*training* images outside the pool (never the test set), and on its own n images ("fit").
Variants are (method, changes to its ``EXPERIMENT_PARAMS``); ``zca`` puts ZCA whitening with that
bias, fitted on the n images, in front; ``zca_unlabeled`` one fitted on every training image
outside the held-out set (3,000 of the exact subset's 4,000, labels unused: the kernel's protocol,
which fits its ZCA on all the training images it is given). The table in docs/baselines.md comes
from this script.

Usage: python -m tangentless.benchmarks.network_diagnosis [--n 160] [--trial 0]
       [--variants JSON] [--data FOLDER] [--out benchmarks/results/network_diagnosis.json]
       (ZCA_VARIANTS: --variants zca --out benchmarks/results/network_diagnosis_zca.json)
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
#: the networks with the kernel's whitening: ZCA fitted on the unlabeled training images outside
#: the held-out set, at the kernel's grid of biases and the paper's 1e-4 for networks
ZCA_VARIANTS = {
    "60 epochs": ["cnn", {"epochs": 60, "min_steps": 100}],
    **{f"60 epochs, ZCA {b:g} (3,000 unlabeled)": ["cnn", {"epochs": 60, "min_steps": 100,
                                                             "zca_unlabeled": b}]
       for b in (1e-5, 1e-4, 1e-3, 1e-2, 1e-1)},
    "ResNet-9 x1/8, 60 epochs": ["resnet", {"epochs": 60, "min_steps": 100}],
    **{f"ResNet-9 x1/8, 60 epochs, ZCA {b:g} (3,000 unlabeled)": [
        "resnet", {"epochs": 60, "min_steps": 100, "zca_unlabeled": b}] for b in (1e-3, 1e-2)},
}


def split(labels: np.ndarray, n: int, trial: int) -> tuple[np.ndarray, np.ndarray]:
    """(training indices: the protocol's trial ``trial`` at size n, held-out training indices;
    both positions in ``labels``)."""
    from .datasets import balanced_subset
    from .experiments.small_data import trial_seed

    pool = balanced_subset(labels, 1280, seed=0)
    outside = np.setdiff1d(np.arange(len(labels)), pool)
    held = outside[balanced_subset(labels[outside], 1000, seed=1)]
    return pool[balanced_subset(labels[pool], n, seed=trial_seed(0, trial))], held


def run_variant(method: str, changes: dict, x, y, train, held, seed: int,
                whitened: dict | None = None) -> dict:
    """One variant's held-out and fit accuracy and fit seconds. ``whitened``: {bias: x whitened
    by ZCA fitted outside ``held``}, filled and reused across calls with the same held-out set."""
    from sklearn.pipeline import make_pipeline

    from ..kernels import ZCAWhitening
    from .experiments.methods import all_params, make_estimator

    changes = dict(changes)
    zca = changes.pop("zca", None)
    unlabeled = changes.pop("zca_unlabeled", None)
    model = make_estimator(method, {**all_params()[method], **changes}, len(train), random_state=seed)
    if zca is not None:
        model = make_pipeline(ZCAWhitening(bias=zca), model)
    if unlabeled is not None:
        whitened = {} if whitened is None else whitened
        if unlabeled not in whitened:
            outside = np.setdiff1d(np.arange(len(x)), held)
            whitened[unlabeled] = ZCAWhitening(bias=unlabeled).fit(
                x[outside].astype(np.float32)).transform(x)
        x = whitened[unlabeled]
    tic = time.perf_counter()
    model.fit(x[train], y[train])
    seconds = time.perf_counter() - tic
    return {"held_out": float(np.mean(model.predict(x[held]) == y[held])),
            "fit": float(np.mean(model.predict(x[train]) == y[train])), "seconds": round(seconds, 1)}


def summarize(rows: list[dict]) -> list[dict]:
    """Per variant, over its trials: mean and sample std (None for one trial) of the held-out and
    fit accuracies, and the trials' count."""
    by_variant: dict[str, list[dict]] = {}
    for row in rows:
        by_variant.setdefault(row["variant"], []).append(row)
    def stats(values):
        return float(np.mean(values)), (float(np.std(values, ddof=1)) if len(values) > 1 else None)
    summary = []
    for variant, group in by_variant.items():
        (held, held_std), (fit, _) = (stats([r[k] for r in group]) for k in ("held_out", "fit"))
        summary.append({"variant": variant, "method": group[0]["method"], "trials": len(group),
                        "held_out": held, "held_out_std": held_std, "fit": fit})
    return summary


def _trials(text: str) -> list[int]:
    return [int(part) for part in text.split(",")]


def _variants(text: str) -> dict:
    return ZCA_VARIANTS if text == "zca" else json.loads(text)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=160)
    parser.add_argument("--trial", type=_trials, default=[0],
                        help="trial, or comma-separated trials (each row names its own; default 0)")
    parser.add_argument("--variants", type=_variants, default=VARIANTS,
                        help='JSON {name: [method, {param: value}]}, or "zca" (ZCA_VARIANTS; '
                             "default: VARIANTS, docs/baselines.md's)")
    parser.add_argument("--data", type=pathlib.Path,
                        help="data folder holding cifar10/train.npz (default: the data folder)")
    parser.add_argument("--out", type=pathlib.Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    data = np.load(resolve_data("cifar10", args.data) / "train.npz")
    x, y = data["images"], data["labels"]
    rows, whitened = [], {}   # the held-out set, and so each bias's whitening, is every trial's
    for trial in args.trial:
        train, held = split(y, args.n, trial)
        for name, (method, changes) in args.variants.items():
            rows.append({"variant": name, "method": method, "changes": changes,
                         **({"trial": trial} if len(args.trial) > 1 else {}),
                         **run_variant(method, changes, x, y, train, held, trial, whitened)})
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    report = {"benchmark": "network_diagnosis", "machine": describe_machine(),
              "command": " ".join(["python -m tangentless.benchmarks.network_diagnosis",
                                   *(sys.argv[1:] if argv is None else argv)]), "n": args.n,
              "trial": args.trial[0] if len(args.trial) == 1 else args.trial,
              "held_out_images": len(held), "rows": rows, "summary": summarize(rows)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, report)
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
