"""The ``tangentless`` subcommands ``quickstart``, ``fit``, ``predict`` and ``bench``
(small-data | cifar10 | imagenet). :func:`add_commands` adds them to the parser of
:mod:`tangentless.benchmarks.cli`; each sets ``run`` (the handler) and ``parser`` (for errors)."""
from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

import numpy as np

SHARED_CIFAR = pathlib.Path("../shared/data/cifar10")
DEFAULT_REPORT = pathlib.Path("tangentless-report")
QUICKSTART = {  # digits: 600 class-balanced training and 600 class-balanced test images
    "train": 600, "test": 600, "seed": 0, "methods": ("kernel", "scattering", "cnn", "resnet"),
    "params": {"kernel": {"flip": False},   # mirror images of digits are not digits
               "scattering": {"J": 1},      # 8x8 images: J=2 would leave 2x2 maps
               "cnn": {"augment": False, "epochs": 20},
               "resnet": {"augment": False, "epochs": 20}},
}


# --- argument types ------------------------------------------------------------------------------

def _file(text: str) -> pathlib.Path:
    path = pathlib.Path(text).expanduser()
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"no such file: {path}")
    return path


def _folder(text: str) -> pathlib.Path:
    path = pathlib.Path(text).expanduser()
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"no such folder: {path}")
    return path


def _positive_ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _methods(text: str) -> tuple[str, ...]:
    from .experiments.methods import METHODS

    names = tuple(m.strip() for m in text.split(","))
    unknown = [m for m in names if m not in METHODS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown method(s) {unknown}; choose from {', '.join(METHODS)}")
    return names


def _setting(text: str) -> tuple[str, str, object]:
    """'cnn.epochs=50' -> ("cnn", "epochs", 50); values are JSON (true, 0.1, [1, 2]) or strings."""
    from .experiments.methods import METHODS

    key, sep, value = text.partition("=")
    method, dot, name = key.partition(".")
    if not (sep and dot and method and name):
        raise argparse.ArgumentTypeError(f"expected METHOD.NAME=VALUE (e.g. cnn.epochs=50), got {text!r}")
    if method not in METHODS:
        raise argparse.ArgumentTypeError(f"unknown method {method!r} in {text!r}; choose from "
                                         f"{', '.join(METHODS)}")
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        parsed = value
    return method, name, parsed


def _params(args, base: dict | None = None) -> dict:
    """Per-method parameters: defaults, then ``base`` overrides, then the --set settings;
    a parser error for an unknown parameter."""
    from .experiments.methods import METHODS, all_params

    overrides = {m: dict((base or {}).get(m, {})) for m in METHODS}
    for method, name, value in getattr(args, "set", None) or []:
        overrides[method][name] = value
    try:
        return all_params(overrides)
    except ValueError as err:
        args.parser.error(f"--set: {err}")


def _train_test(args) -> tuple[tuple, tuple, str]:
    """(train images, labels), (test images, labels) and a name from --data [--test]."""
    from .datasets import load_npz_images

    data = args.data
    if data is None:
        if not SHARED_CIFAR.is_dir():
            args.parser.error(f"no data given and the exact CIFAR-10 subset is not at {SHARED_CIFAR} "
                              "(relative to this folder): pass --data FOLDER (with train.npz and "
                              "test.npz) or --data TRAIN.npz --test TEST.npz")
        data = SHARED_CIFAR
    if not data.exists():
        args.parser.error(f"--data {data}: no such file or folder")
    name = f"exact CIFAR-10 subset ({data})" if data == SHARED_CIFAR else str(data)
    if data.is_dir():
        train_path, test_path = data / "train.npz", data / "test.npz"
        missing = [p for p in (train_path, test_path) if not p.is_file()]
        if missing:
            args.parser.error(f"--data {data}: expected train.npz and test.npz there; missing "
                              f"{', '.join(p.name for p in missing)}")
    elif getattr(args, "test", None) is None:
        args.parser.error(f"--data {data} is a file: also pass --test TEST.npz")
    else:
        train_path, test_path = data, args.test
        name = f"{train_path} / {test_path}"
    train, test = load_npz_images(train_path), load_npz_images(test_path)
    for path, (_, labels) in ((train_path, train), (test_path, test)):
        if labels is None:
            args.parser.error(f"{path} has no 'labels' array")
    return train, test, name


def _out(args) -> pathlib.Path:
    if args.out.exists() and not args.out.is_dir():
        args.parser.error(f"--out {args.out} exists and is not a folder")
    return args.out


# --- quickstart ----------------------------------------------------------------------------------

def _quickstart(args) -> int:
    from .datasets import balanced_subset, load_digits_images
    from .experiments.methods import describe, make_estimator
    from .report import markdown_table, percent, write_json

    start = time.perf_counter()
    out = _out(args)
    images, labels = load_digits_images()
    train = balanced_subset(labels, QUICKSTART["train"], seed=QUICKSTART["seed"])
    rest = np.setdiff1d(np.arange(len(labels)), train)
    test = rest[balanced_subset(labels[rest], QUICKSTART["test"], seed=QUICKSTART["seed"])]
    params = _params(args, QUICKSTART["params"])
    rows, results = [], []
    for method in QUICKSTART["methods"]:
        if not args.quiet:
            print(f"[{method}] {describe(method, params[method])}", file=sys.stderr, flush=True)
        model = make_estimator(method, params[method], len(train), progress=not args.quiet)
        tic = time.perf_counter()
        model.fit(images[train], labels[train])
        accuracy = float(np.mean(model.predict(images[test]) == labels[test]))
        seconds = time.perf_counter() - tic
        results.append({"method": method, "configuration": describe(method, params[method]),
                        "accuracy": accuracy, "seconds": round(seconds, 2)})
        rows.append([method, percent(accuracy), f"{seconds:.1f}", describe(method, params[method])])
    table = markdown_table(["method", "test accuracy %", "seconds (fit + predict)", "configuration"],
                           rows)
    data = (f"scikit-learn digits (8x8x1): {len(train)} class-balanced training images, "
            f"{len(test)} other class-balanced images for testing")
    write_json(out / "quickstart.json", {"experiment": "quickstart", "data": data,
                                          "params": params, "results": results,
                                          "seconds_in_command": round(time.perf_counter() - start, 1)})
    (out / "quickstart.md").write_text(f"# Quickstart: {data}\n\n{table}")
    print(f"{data}\n\n{table}\nreport: {out / 'quickstart.json'}, {out / 'quickstart.md'}")
    return 0


# --- fit / predict -------------------------------------------------------------------------------

def _fit(args) -> int:
    from .datasets import load_npz_images
    from .experiments.methods import make_estimator
    from .experiments.persist import save_model

    if args.model.parent and not args.model.parent.is_dir():
        args.parser.error(f"--model {args.model}: folder {args.model.parent} does not exist")
    others = sorted({method for method, _, _ in args.set or []} - {args.method})
    if others:
        args.parser.error(f"--set {others[0]}....: this fit trains {args.method!r}")
    params = _params(args)[args.method]
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


def _predict(args) -> int:
    from .datasets import load_npz_images
    from .experiments.persist import load_model

    if args.out.suffix not in (".npy", ".csv"):
        args.parser.error(f"--out {args.out}: use a .npy or .csv file name")
    method, _, model = load_model(args.model)
    images, labels = load_npz_images(args.data)
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


# --- bench ---------------------------------------------------------------------------------------

def _bench_small_data(args) -> int:
    from .experiments import small_data

    (train_x, train_y), (test_x, test_y), name = _train_test(args)
    config = small_data.SmallDataConfig(
        sizes=args.sizes, trials=args.trials[0] if len(args.trials) == 1 else args.trials,
        methods=args.methods, pool_size=args.pool_size, test_size=args.test_size, seed=args.seed,
        params=_params(args, small_data.SMALL_DATA_PARAMS))
    try:
        config.check(int(max(train_y.max(), test_y.max())) + 1)
    except ValueError as err:
        args.parser.error(str(err))
    small_data.run(train_x, train_y, test_x, test_y, config, _out(args), data=name,
                   progress=not args.quiet)
    print((args.out / "small_data.md").read_text())
    return 0


def _bench_cifar10(args) -> int:
    from .datasets import DatasetNotAvailable, load_cifar10, load_cifar10_1
    from .experiments import full_data, generalization

    out, params = _out(args), _params(args)
    if args.generalization:
        try:
            recollected = load_cifar10_1(args.cifar10_1)
        except DatasetNotAvailable as err:
            args.parser.error(f"{err} Or pass --cifar10-1 FOLDER.")
    if args.data is None:
        train, test, name = load_cifar10("train"), load_cifar10("test"), "CIFAR-10 (official archive)"
    else:
        train, test, name = _train_test(args)
    if args.generalization:
        config = generalization.GeneralizationConfig(sizes=args.sizes, methods=args.methods,
                                                     seed=args.seed, params=params)
        generalization.run(train, test, recollected, config, out,
                           data=f"{name} -> CIFAR-10.1 v6", progress=not args.quiet)
        print((out / "generalization.md").read_text())
    else:
        config = full_data.FullDataConfig(budget_seconds=args.budget, methods=args.methods,
                                          test_size=args.test_size, seed=args.seed, params=params)
        full_data.run(train, test, config, out, data=name, progress=not args.quiet)
        print((out / "full_data.md").read_text())
    return 0


def _bench_imagenet(args) -> int:
    from .datasets import imagenetv2_folder, load_folder_arrays, load_image_folder
    from .experiments import generalization

    if args.v2 is None:
        args.parser.error("--v2 FOLDER is required: download ImageNetV2 MatchedFrequency "
                          "(imagenetv2-matched-frequency.tar.gz, 10,000 images, from "
                          "https://github.com/modestyachts/ImageNetV2), extract it, and pass the "
                          "folder holding the class folders 0..999")
    if args.size % 4:
        args.parser.error(f"--size must be a multiple of 4 (the Myrtle kernel pools twice); got {args.size}")
    load = {"size": args.size, "resize": args.size * 8 // 7, "progress": not args.quiet}
    train = load_folder_arrays(load_image_folder(args.data, class_index=args.class_index),
                               limit=args.train_limit, **load)
    val = load_folder_arrays(load_image_folder(args.val, class_index=args.class_index),
                             limit=args.test_limit, **load)
    v2 = load_folder_arrays(imagenetv2_folder(args.v2), limit=args.test_limit, **load)
    classes, counts = np.unique(train[1], return_counts=True)
    config = generalization.GeneralizationConfig(
        sizes=args.sizes or (len(classes) * int(counts.min()),), methods=args.methods,
        seed=args.seed, fit=generalization.IMAGENET_V2_FIT, params=_params(args))
    generalization.run(train, val, v2, config, _out(args), progress=not args.quiet,
                       data=f"ImageNet ({args.data}, {args.size}x{args.size}) -> ImageNetV2 ({args.v2})")
    print((args.out / "generalization.md").read_text())
    return 0


# --- the parser ----------------------------------------------------------------------------------

def _set_help() -> str:
    from ..kernels._shared.defaults import EXPERIMENT_PARAMS

    names = "; ".join(f"{m}: {', '.join(p)}" for m, p in EXPERIMENT_PARAMS.items())
    return ("change one method parameter, e.g. --set cnn.epochs=50 --set kernel.flip=false "
            f"(repeatable; values are JSON or text). Parameters: {names}")


def _common(p, out_default: pathlib.Path, methods_default: str) -> None:
    p.add_argument("--methods", type=_methods, default=_methods(methods_default),
                   help=f"comma-separated, among kernel, scattering, cnn, resnet "
                        f"(default: {methods_default})")
    p.add_argument("--set", action="append", type=_setting, metavar="METHOD.NAME=VALUE",
                   help=_set_help())
    p.add_argument("--seed", type=int, default=0, help="seed of all subsets (default 0)")
    p.add_argument("--out", type=pathlib.Path, default=out_default,
                   help=f"report folder; a rerun with the same settings resumes there "
                        f"(default {out_default})")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def add_commands(subparsers) -> None:
    """Add quickstart, fit, predict and bench to an ``add_subparsers()`` object."""
    q = subparsers.add_parser(
        "quickstart", help="compare a kernel, scattering and CNNs on the bundled digits (< 2 min)",
        description="Train a Myrtle5 compositional kernel, wavelet scattering + kernel ridge, the "
                    "Myrtle5 network and a narrow ResNet-9 on 600 of scikit-learn's bundled 8x8 digits, "
                    "test on 600 others, print accuracy and time per method, and write the report "
                    "(JSON + Markdown). Downloads nothing.")
    q.add_argument("--out", type=pathlib.Path, default=DEFAULT_REPORT,
                   help=f"report folder (default {DEFAULT_REPORT})")
    q.add_argument("--quiet", action="store_true", help="no progress bars")
    q.set_defaults(run=_quickstart, parser=q)

    f = subparsers.add_parser(
        "fit", help="train a model on an .npz of images and labels and save it",
        description="Train one method on all images of an .npz file ('images' (N, H, W, C) uint8 or "
                    "float, 'labels' (N,)) and save the fitted model as an .npz of plain arrays with a "
                    "JSON config (no pickle). Then use 'tangentless predict'.")
    f.add_argument("--data", type=_file, required=True, help="training .npz with 'images' and 'labels'")
    f.add_argument("--method", choices=["kernel", "scattering", "cnn", "resnet"], default="kernel",
                   help="kernel: Myrtle5 kernel ridge (ZCA, flips); scattering: scattering + RBF kernel "
                        "ridge; cnn: Myrtle5 network; resnet: ResNet-9 (default kernel)")
    f.add_argument("--model", type=pathlib.Path, required=True, help="where to write the model (.npz)")
    f.add_argument("--set", action="append", type=_setting, metavar="METHOD.NAME=VALUE",
                   help=_set_help())
    f.add_argument("--quiet", action="store_true", help="no progress bars")
    f.set_defaults(run=_fit, parser=f)

    p = subparsers.add_parser(
        "predict", help="predict labels of images with a saved model",
        description="Load a model written by 'tangentless fit', predict the images of an .npz and "
                    "write the labels; prints the accuracy when the .npz has 'labels'.")
    p.add_argument("--model", type=_file, required=True, help="model .npz from 'tangentless fit'")
    p.add_argument("--data", type=_file, required=True, help=".npz with 'images' (and optionally 'labels')")
    p.add_argument("--out", type=pathlib.Path, required=True, help="predictions: a .npy or .csv file")
    p.set_defaults(run=_predict, parser=p)

    b = subparsers.add_parser(
        "bench", help="run an experiment: small-data, cifar10 or imagenet",
        description="Run one of the benchmark experiments; each writes JSON, a Markdown table and "
                    "plots to --out and resumes there when rerun with the same settings.")
    targets = b.add_subparsers(dest="target", required=True, metavar="{small-data,cifar10,imagenet}")

    s = targets.add_parser(
        "small-data", help="the kernel paper's small-data protocol (n = 10 ... 1280, several trials)",
        description="Class-balanced training sets of n images drawn from one pool, several trials per "
                    "n, one fixed test set; mean and standard deviation of the test accuracy per method. "
                    "The kernel matrix of pool + test images is computed once (the main cost: about "
                    "(P^2/2 + T P) x 2 kernel evaluations with flips, ~450/s for Myrtle5 at 32x32 on "
                    "2 CPU cores) and cached in --out. Rerunning into the same --out with more sizes, "
                    "trials or methods adds to the results there (e.g. many kernel trials, then a "
                    "few network trials); other changes need a new --out. Default data: the exact "
                    f"CIFAR-10 subset at {SHARED_CIFAR}.")
    s.add_argument("--data", type=pathlib.Path,
                   help="folder with train.npz and test.npz, or a training .npz (then --test)")
    s.add_argument("--test", type=_file, help="test .npz when --data is a file")
    s.add_argument("--sizes", type=_positive_ints, default=(10, 20, 40, 80, 160, 320, 640, 1280),
                   help="comma-separated training-set sizes, multiples of the number of classes "
                        "(default 10,20,40,80,160,320,640,1280)")
    s.add_argument("--trials", type=_positive_ints, default=(20,),
                   help="trials per size: one number, or one per size (default 20)")
    s.add_argument("--pool-size", type=int,
                   help="training images in the pool the trials draw from (default: the largest size)")
    s.add_argument("--test-size", type=int,
                   help="class-balanced subset of the test set (default: all test images)")
    _common(s, pathlib.Path("results-small-data"), "kernel,scattering,cnn,resnet")
    s.set_defaults(run=_bench_small_data, parser=s)

    c = targets.add_parser(
        "cifar10", help="full-data comparison within a time budget (or CIFAR-10.1 generalization)",
        description="Each method on the largest class-balanced training set a time budget allows "
                    "(sized from costs measured first), with the projected cost of full CIFAR-10. "
                    "With --generalization: train at --sizes and test on CIFAR-10 and CIFAR-10.1 "
                    "(accuracy drop and effective robustness). Default data: the official CIFAR-10 "
                    "archive in $TANGENTLESS_DATA or ~/.cache/tangentless (downloaded if absent).")
    c.add_argument("--data", type=pathlib.Path,
                   help="folder with train.npz and test.npz, or a training .npz (then --test)")
    c.add_argument("--test", type=_file, help="test .npz when --data is a file")
    c.add_argument("--budget", type=float, default=600.0,
                   help="seconds per method for fit + predict (default 600)")
    c.add_argument("--test-size", type=int, help="class-balanced subset of the test set (default: all)")
    c.add_argument("--generalization", action="store_true",
                   help="run the CIFAR-10 -> CIFAR-10.1 experiment instead")
    c.add_argument("--cifar10-1", type=_folder,
                   help="folder with cifar10.1_v6_data.npy and cifar10.1_v6_labels.npy "
                        "(default: $TANGENTLESS_DATA or ~/.cache/tangentless)")
    c.add_argument("--sizes", type=_positive_ints, default=(500, 1000, 2000),
                   help="with --generalization: training-set sizes (default 500,1000,2000)")
    _common(c, pathlib.Path("results-cifar10"), "kernel,scattering,cnn,resnet")
    c.set_defaults(run=_bench_cifar10, parser=c)

    i = targets.add_parser(
        "imagenet", help="ImageNet -> ImageNetV2 generalization at low resolution",
        description="Train the methods on a subset of an ImageNet-style training folder (resized to "
                    "--size), test on a subset of the validation folder and of ImageNetV2, and report "
                    "the accuracy drop and the effective robustness against the published logit fit "
                    "(b1 = 0.923, b0 = -0.498; Taori et al. 2020).")
    i.add_argument("--data", type=_folder, required=True,
                   help="ImageNet training folder (class folders, e.g. n01440764/)")
    i.add_argument("--val", type=_folder, required=True,
                   help="ImageNet validation folder in the same layout")
    i.add_argument("--v2", type=_folder, help="ImageNetV2 MatchedFrequency folder (class folders 0..999)")
    i.add_argument("--class-index", type=_file,
                   help="imagenet_class_index.json mapping the training and validation folders' "
                        "names to ImageNet-1k indices (default: sorted folder names, which are the "
                        "standard indices when all 1,000 wnid folders are present)")
    i.add_argument("--size", type=int, default=32, help="image side after resize + center crop (default 32)")
    i.add_argument("--train-limit", type=int, default=10000,
                   help="training images, spread evenly over the folder (default 10000)")
    i.add_argument("--test-limit", type=int, default=2000,
                   help="images from each test folder (default 2000)")
    i.add_argument("--sizes", type=_positive_ints,
                   help="training-set sizes, multiples of the number of classes (default: all loaded)")
    _common(i, pathlib.Path("results-imagenet"), "scattering,kernel")
    i.set_defaults(run=_bench_imagenet, parser=i)
