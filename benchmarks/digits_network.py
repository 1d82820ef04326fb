"""The Myrtle5 network on the quickstart digits: why it failed and how its defaults were chosen,
measured; JSON to ``--out`` (default benchmarks/results/digits_network.json). The tables of
docs/baselines.md's first section come from this script.

The data are the quickstart's (``QUICKSTART`` in ``tangentless.kernels._shared.defaults``): 600
class-balanced training images of scikit-learn's digits and 600 other class-balanced test images.
Every choice is made on the training images only: they are split once, stratified, into 450 to
fit and 150 held out. Four parts:

- ``diagnosis``: settings of the network (parameterization, lr, weight decay, epochs, batch) fitted
  on the 450, no augmentation: held-out and training accuracy, output rms over the held-out images
  at init and after training, the mean output at the true class (its one-hot target is 1) and the
  mean largest output, and per
  layer (the convs, then the readout) the weight norm over its init and the relative change
  ||W - W0|| / ||W0||;
- ``grid``: the defaults' selection grid (lr x epochs x batch, standard parameterization, width 64,
  weight decay 5e-4, no augmentation, seeds 0 and 1), held-out accuracy;
- ``test``: before / after on the 600 test images, fitted on the 600 training images (seconds:
  fit + predict, in this order, one process);
- ``warm``: the quickstart-sized fits twice each in one process (the first compiles).

Parts run separately (``--parts``) update their entries of an existing ``--out`` and keep the
others; ``runs`` records each part's machine and command.

Usage: python -m tangentless.benchmarks.digits_network [--parts diagnosis,grid,test,warm]
       [--out benchmarks/results/digits_network.json]
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

import numpy as np

from .machine import describe_machine
from .report import write_json

DEFAULT_OUT = pathlib.Path("benchmarks/results/digits_network.json")
PARTS = ("diagnosis", "grid", "test", "warm")
#: no augmentation (flips make other digits), width 64, 20 epochs, batch 32 unless a setting says
BASE = {"arch": "myrtle5", "width": 64, "epochs": 20, "batch_size": 32, "augment": False}
#: diagnosis: {name: CNNClassifier settings over BASE}
DIAGNOSIS = {
    "NTK, lr 1, wd 5e-4": {"parameterization": "ntk", "lr": 1.0, "weight_decay": 5e-4},
    "NTK, lr 1, wd 0": {"parameterization": "ntk", "lr": 1.0, "weight_decay": 0.0},
    "standard (He), lr 0.1, wd 5e-4": {"parameterization": "standard", "lr": 0.1, "weight_decay": 5e-4},
    "NTK, lr 0.5, wd 5e-4": {"parameterization": "ntk", "lr": 0.5, "weight_decay": 5e-4},
    "NTK, lr 2, wd 5e-4": {"parameterization": "ntk", "lr": 2.0, "weight_decay": 5e-4},
    "NTK, lr 4, wd 5e-4": {"parameterization": "ntk", "lr": 4.0, "weight_decay": 5e-4},
    "NTK, lr 4, wd 0": {"parameterization": "ntk", "lr": 4.0, "weight_decay": 0.0},
    "NTK, lr 16, wd 0": {"parameterization": "ntk", "lr": 16.0, "weight_decay": 0.0},
    "NTK, lr 1, wd 5e-4, 100 epochs": {"parameterization": "ntk", "lr": 1.0, "weight_decay": 5e-4,
                                       "epochs": 100},
    "standard, lr 0.1, batch 128": {"parameterization": "standard", "lr": 0.1, "batch_size": 128},
    "standard, lr 0.1, crop + flip + cutout": {"parameterization": "standard", "lr": 0.1, "augment": True},
    "standard, lr 0.1, 10 epochs": {"parameterization": "standard", "lr": 0.1, "epochs": 10},
    "standard, lr 0.1, 10 epochs, ZCA 1e-4": {"parameterization": "standard", "lr": 0.1, "epochs": 10,
                                              "zca": 1e-4},
    "standard, lr 0.01": {"parameterization": "standard", "lr": 0.01},
    "standard, lr 0.03": {"parameterization": "standard", "lr": 0.03},
}
GRID = {"lr": (0.05, 0.1, 0.2), "epochs": (10, 20), "batch_size": (32, 64), "seeds": (0, 1)}
#: test: {name: settings}; "paper_recipe" rows go through tangentless.benchmarks.cnn.paper_recipe
TEST = {
    "Myrtle5, old defaults (NTK, batch 128, lr 1.0), width 64, 10 epochs":
        {"parameterization": "ntk", "batch_size": 128, "lr": 1.0, "epochs": 10},
    "Myrtle5, new defaults, 10 epochs": {"epochs": 10},
    "Myrtle5, new defaults, 20 epochs": {},
    "Myrtle5, new defaults, 20 epochs, seed 1": {"random_state": 1},
    "Myrtle5, new defaults, 20 epochs, seed 2": {"random_state": 2},
    "Myrtle5, new defaults, width 32, 20 epochs": {"width": 32},
    "Myrtle5, new defaults with crop + flip + cutout, 10 epochs": {"epochs": 10, "augment": True},
    "Myrtle5, NTK, lr 4, weight decay 0, 20 epochs": {"parameterization": "ntk", "lr": 4.0, "weight_decay": 0.0},
    "ResNet-9 x1/8, the quickstart's (lr 0.1, cross-entropy, 20 epochs)":
        {"arch": "resnet9", "width": 0.125, "lr": 0.1, "loss": "xent"},
    "paper_recipe(\"myrtle5\") (ZCA 1e-4, crop + flip + cutout, 20 epochs)": {"paper_recipe": True},
    "paper_recipe(\"myrtle5\", augment=False)": {"paper_recipe": True, "augment": False},
}
WARM = {
    "Myrtle5, new defaults (standard, width 64, lr 0.1)": {},
    "Myrtle5 as in the quickstart before (NTK, width 32, lr 1.0)":
        {"parameterization": "ntk", "width": 32, "lr": 1.0},
    "ResNet-9 x1/8, the quickstart's (cross-entropy, lr 0.1)":
        {"arch": "resnet9", "width": 0.125, "lr": 0.1, "loss": "xent"},
}


def digits_splits() -> dict[str, np.ndarray]:
    """The images, labels and the index sets: train (600), test (600), fit (450), held (150)."""
    from sklearn.model_selection import train_test_split

    from ..kernels._shared.defaults import QUICKSTART
    from .datasets import balanced_subset, load_digits_images

    images, labels = load_digits_images()
    train = balanced_subset(labels, QUICKSTART["train"], seed=QUICKSTART["seed"])
    rest = np.setdiff1d(np.arange(len(labels)), train)
    test = rest[balanced_subset(labels[rest], QUICKSTART["test"], seed=QUICKSTART["seed"])]
    fit, held = train_test_split(train, test_size=0.25, stratify=labels[train], random_state=0)
    return {"images": images, "labels": labels, "train": train, "test": test, "fit": fit, "held": held}


def make_model(settings: dict):
    """A CNNClassifier (or the paper's pipeline) of BASE updated by ``settings``."""
    from sklearn.pipeline import make_pipeline

    from ..kernels import ZCAWhitening
    from .cnn import CNNClassifier, paper_recipe

    if settings.get("paper_recipe"):   # the recipe's own settings, changed only where asked
        return paper_recipe(BASE["arch"], **{k: v for k, v in settings.items() if k != "paper_recipe"})
    settings = {**BASE, **settings}
    zca = settings.pop("zca", None)
    model = CNNClassifier(**settings)
    return make_pipeline(ZCAWhitening(bias=zca), model) if zca is not None else model


def weight_layers(params) -> list[np.ndarray]:
    """The network's weight arrays (convs, then the readout), in order."""
    import jax

    return [np.asarray(leaf) for leaf in jax.tree_util.tree_leaves(params) if np.ndim(leaf) >= 2]


def diagnose(settings: dict, data: dict) -> dict:
    """Fit on the 450, score the 150 held out, and the output / weight statistics at init and after."""
    import jax

    from .cnn import predict_outputs, preprocess

    x, y, fit, held = data["images"], data["labels"], data["fit"], data["held"]
    model = make_model(settings)
    model.fit(x[fit], y[fit])
    net = model[-1] if hasattr(model, "steps") else model
    x_held = model[:-1].transform(x[held]) if hasattr(model, "steps") else x[held]
    init, apply = net._network()
    params0, state0 = init(jax.random.key(net._seed()), tuple(x_held.shape[1:]))
    inputs = preprocess(x_held, net.standardization_)
    out0 = predict_outputs(apply, params0, state0, inputs)
    out1 = net.decision_function(x_held)
    true = np.searchsorted(net.classes_, y[held])
    w0, w1 = weight_layers(params0), weight_layers(net.params_)
    return {"held_out": float(np.mean(model.predict(x[held]) == y[held])),
            "train": float(np.mean(model.predict(x[fit]) == y[fit])),
            "output_rms_init": float(np.sqrt(np.mean(out0 ** 2))),
            "output_rms_trained": float(np.sqrt(np.mean(out1 ** 2))),
            "true_class_output": float(np.mean(out1[np.arange(len(true)), true])),
            "top_output": float(np.mean(out1.max(axis=1))),
            "weight_norm_over_init": [float(np.linalg.norm(b) / np.linalg.norm(a)) for a, b in zip(w0, w1)],
            "relative_weight_change": [float(np.linalg.norm(b - a) / np.linalg.norm(a)) for a, b in zip(w0, w1)]}


def held_out_accuracy(settings: dict, data: dict) -> float:
    x, y = data["images"], data["labels"]
    model = make_model(settings).fit(x[data["fit"]], y[data["fit"]])
    return float(np.mean(model.predict(x[data["held"]]) == y[data["held"]]))


def timed_test(settings: dict, data: dict) -> dict:
    """Fit on the 600 training images, score the 600 test images; seconds of fit + predict."""
    x, y = data["images"], data["labels"]
    tic = time.perf_counter()
    model = make_model(settings).fit(x[data["train"]], y[data["train"]])
    accuracy = float(np.mean(model.predict(x[data["test"]]) == y[data["test"]]))
    return {"test": accuracy, "seconds": round(time.perf_counter() - tic, 1)}


def run_grid(data: dict) -> list[dict]:
    from ..kernels._shared.training import TrainingDivergedError

    rows = []
    for lr in GRID["lr"]:
        for epochs in GRID["epochs"]:
            for batch in GRID["batch_size"]:
                per_seed = []
                for seed in GRID["seeds"]:
                    settings = {"parameterization": "standard", "lr": lr, "epochs": epochs,
                                "batch_size": batch, "weight_decay": 5e-4, "random_state": seed}
                    try:
                        per_seed.append(held_out_accuracy(settings, data))
                    except TrainingDivergedError:
                        per_seed.append(None)
                done = [a for a in per_seed if a is not None]
                rows.append({"lr": lr, "epochs": epochs, "batch_size": batch, "held_out_per_seed": per_seed,
                             "held_out_mean": float(np.mean(done)) if len(done) == len(per_seed) else None})
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated among {', '.join(PARTS)}")
    parser.add_argument("--out", type=pathlib.Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    parts = args.parts.split(",")
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        parser.error(f"unknown parts {unknown}; choose among {', '.join(PARTS)}")
    data = digits_splits()
    report = json.loads(args.out.read_text()) if args.out.is_file() else {}
    if report and report.get("benchmark") != "digits_network":
        parser.error(f"{args.out} is not a digits_network results file")
    report.update({"benchmark": "digits_network", "images": {k: len(data[k]) for k in ("train", "test", "fit", "held")},
                   "base": BASE})
    command = " ".join(["python -m tangentless.benchmarks.digits_network", *(sys.argv[1:] if argv is None else argv)])
    run = {"machine": describe_machine(), "command": command}
    report["runs"] = {**report.get("runs", {}), **{part: run for part in parts}}
    if "diagnosis" in parts:
        report["diagnosis"] = []
        for name, settings in DIAGNOSIS.items():
            report["diagnosis"].append({"setting": name, "settings": settings, **diagnose(settings, data)})
            print(json.dumps(report["diagnosis"][-1]), file=sys.stderr, flush=True)
    if "grid" in parts:
        report["grid"] = run_grid(data)
    if "test" in parts:
        report["test"] = []
        for name, settings in TEST.items():
            report["test"].append({"model": name, "settings": settings, **timed_test(settings, data)})
            print(json.dumps(report["test"][-1]), file=sys.stderr, flush=True)
    if "warm" in parts:
        report["warm"] = []
        for name, settings in WARM.items():
            first, second = timed_test(settings, data), timed_test(settings, data)
            report["warm"].append({"model": name, "settings": settings, "test": first["test"],
                                   "test_second": second["test"], "seconds_first": first["seconds"],
                                   "seconds_second": second["seconds"]})
            print(json.dumps(report["warm"][-1]), file=sys.stderr, flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, report)
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
