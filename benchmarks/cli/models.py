"""The ``tangentless`` commands that train and use models: ``quickstart`` (every method on the
bundled digits, with a report), ``fit`` (train one method on an .npz and save it) and ``predict``
(labels from a saved model)."""
from __future__ import annotations

import json
import pathlib
import sys
import time

import numpy as np

from ...kernels._shared.defaults import METHODS, QUICKSTART, SELECTION_GRIDS
from .arguments import existing_file, output_file, method_settings, report_folder, set_help, setting

DEFAULT_REPORT = pathlib.Path("tangentless-report")


def quickstart_grids() -> dict:
    """Each quickstart method's selection grid: ``SELECTION_GRIDS`` without the parameters that
    ``QUICKSTART["params"]`` fixes for the 8x8 digits (no flips, J=1, the networks' epochs)."""
    fixed = QUICKSTART["params"]
    return {m: {k: list(v) for k, v in SELECTION_GRIDS[m].items() if k not in fixed.get(m, {})}
            for m in QUICKSTART["methods"]}


def run_quickstart(args) -> int:
    """Every method on 600 digits, tested on 600 others, each selecting its hyperparameters on
    the 600 training digits only (:mod:`..experiments.selection`); report in --out."""
    from ..datasets import balanced_subset, load_digits_images
    from ..experiments.methods import describe
    from ..experiments.selection import select_and_fit
    from ..report import markdown_table, percent, plot_methods, write_json

    start = time.perf_counter()
    out = report_folder(args)
    images, labels = load_digits_images()
    train = balanced_subset(labels, QUICKSTART["train"], seed=QUICKSTART["seed"])
    rest = np.setdiff1d(np.arange(len(labels)), train)
    test = rest[balanced_subset(labels[rest], QUICKSTART["test"], seed=QUICKSTART["seed"])]
    params, grids = method_settings(args, QUICKSTART["params"]), quickstart_grids()
    rows, results = [], []
    for method in QUICKSTART["methods"]:
        if not args.quiet:
            print(f"[{method}] {describe(method, params[method], grids[method])}; selecting over "
                  f"{grids[method] or 'its alphas'}", file=sys.stderr, flush=True)
        tic = time.perf_counter()
        model, chosen, selection, _ = select_and_fit(
            method, params[method], grids[method], images[train], labels[train],
            seed=QUICKSTART["seed"], progress=not args.quiet)
        accuracy = float(np.mean(model.predict(images[test]) == labels[test]))
        seconds = time.perf_counter() - tic
        picked = ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}"
                           for k, v in selection["chosen"].items())
        results.append({"method": method, "configuration": describe(method, chosen),
                        "accuracy": accuracy, "seconds": round(seconds, 2), "selection": selection})
        rows.append([method, percent(accuracy), f"{seconds:.1f}",
                     f"{picked} ({selection['grid_size']} points, {_how(selection)})",
                     describe(method, chosen)])
    table = markdown_table(["method", "test accuracy %", "seconds (selection + fit + predict)",
                            "selected on the training digits", "configuration"], rows)
    data = (f"scikit-learn digits (8x8x1): {len(train)} class-balanced training images, "
            f"{len(test)} other class-balanced images for testing")
    write_json(out / "quickstart.json", {"experiment": "quickstart", "data": data,
                                          "params": params, "grids": grids, "results": results,
                                          "seconds_in_command": round(time.perf_counter() - start, 1)})
    plot_methods(results, out / "quickstart.png", chance=1 / len(np.unique(labels)),
                 title=f"{len(train)} training digits, one fit per method (hyperparameters selected "
                       f"on them), {len(test)} test digits; seconds: selection + fit + predict")
    report = f"# Quickstart: {data}\n\n{table}"
    (out / "quickstart.md").write_text(report + "\nPlot: quickstart.png.\n")
    print(report, end="")   # stdout: the result only; where it was written goes to stderr
    if not args.quiet:
        print(f"report: {out / 'quickstart.json'}, {out / 'quickstart.md'}, {out / 'quickstart.png'}",
              file=sys.stderr)
    return 0


def _how(selection: dict) -> str:
    if selection["method"] == "loo":
        return "exact leave-one-out"
    if selection["method"] == "holdout":
        return f"hold-out {selection['holdout_fraction']:g} per class"
    return selection.get("reason", "none")


def run_fit(args) -> int:
    """Train --method on all images of --data and save it to --model."""
    from ..datasets import load_npz_images
    from ..experiments.methods import make_estimator
    from ..experiments.persist import save_model
    output_file(args, "--model")
    others = sorted({method for method, _, _ in args.set or []} - {args.method})
    if others:
        args.parser.error(f"--set {others[0]}....: this fit trains {args.method!r}")
    params = method_settings(args)[args.method]
    images, labels = load_npz_images(args.data)
    if labels is None:
        args.parser.error(f"{args.data} has no 'labels' array to train on")
    model = make_estimator(args.method, params, len(labels), progress=not args.quiet)
    tic = time.perf_counter()
    model.fit(images, labels)
    seconds = time.perf_counter() - tic
    save_model(args.model, args.method, params, model)
    print(json.dumps({"method": args.method, "params": params, "train_images": len(labels),
                      "seconds": round(seconds, 2), "model": str(args.model)}, indent=2))
    return 0


def run_predict(args) -> int:
    """Labels of the images of --data from the model at --model, written to --out."""
    from ..datasets import load_npz_images
    from ..experiments.persist import load_model
    output_file(args, "--out", (".npy", ".csv"))
    method, _, model = load_model(args.model)
    images, labels = load_npz_images(args.data)
    if "progress" in model.get_params(deep=False):   # its own bars, on stderr
        model.set_params(progress=not args.quiet)
    tic = time.perf_counter()
    predictions = np.asarray(model.predict(images))
    if args.out.suffix == ".csv":
        np.savetxt(args.out, predictions, fmt="%d", header="prediction", comments="")
    else:
        np.save(args.out, predictions)
    summary = {"method": method, "images": len(images), "seconds": round(time.perf_counter() - tic, 2),
               "out": str(args.out)}
    if labels is not None:
        summary["accuracy"] = float(np.mean(predictions == labels))
    print(json.dumps(summary, indent=2))
    return 0


def add_commands(subparsers) -> None:
    """Add quickstart, fit and predict to an ``add_subparsers()`` object."""
    q = subparsers.add_parser(
        "quickstart", help="compare a kernel, scattering and CNNs on the bundled digits (< 2 min)",
        description="Train a Myrtle5 compositional kernel, wavelet scattering + kernel ridge, the "
                    "Myrtle5 network and a narrow ResNet-9 on 600 of scikit-learn's bundled 8x8 digits, "
                    "test on 600 others, print accuracy and time per method, and write the report "
                    "(JSON + Markdown). Downloads nothing.")
    q.add_argument("--out", type=pathlib.Path, default=DEFAULT_REPORT,
                   help=f"report folder (default {DEFAULT_REPORT})")
    q.add_argument("--quiet", action="store_true", help="no progress bars")
    q.set_defaults(run=run_quickstart, parser=q)

    f = subparsers.add_parser(
        "fit", help="train a model on an .npz of images and labels and save it",
        description="Train one method on all images of an .npz file ('images' (N, H, W, C) uint8 or "
                    "float, 'labels' (N,)) and save the fitted model as an .npz of plain arrays with a "
                    "JSON config (no pickle). Then use 'tangentless predict'.")
    f.add_argument("--data", type=existing_file, required=True,
                   help="training .npz with 'images' and 'labels'")
    f.add_argument("--method", choices=list(METHODS), default="kernel",
                   help="kernel: Myrtle5 kernel ridge (ZCA, flips); scattering: scattering + RBF kernel "
                        "ridge; cnn: Myrtle5 network; resnet: ResNet-9 (default kernel)")
    f.add_argument("--model", type=pathlib.Path, required=True, help="where to write the model (.npz)")
    f.add_argument("--set", action="append", type=setting, metavar="METHOD.NAME=VALUE",
                   help=set_help())
    f.add_argument("--quiet", action="store_true", help="no progress bars")
    f.set_defaults(run=run_fit, parser=f)

    p = subparsers.add_parser(
        "predict", help="predict labels of images with a saved model",
        description="Load a model written by 'tangentless fit', predict the images of an .npz and "
                    "write the labels; prints the accuracy when the .npz has 'labels'.")
    p.add_argument("--model", type=existing_file, required=True, help="model .npz from 'tangentless fit'")
    p.add_argument("--data", type=existing_file, required=True,
                   help=".npz with 'images' (and optionally 'labels')")
    p.add_argument("--out", type=pathlib.Path, required=True, help="predictions: a .npy or .csv file")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(run=run_predict, parser=p)
