"""The ``tangentless bench`` command: the benchmark experiments ``small-data`` (the kernel paper's
protocol), ``architectures`` (network against kernel error across Myrtle depths), ``cifar10`` (accuracy against measured compute at several sizes with a projection to
full CIFAR-10, or CIFAR-10.1 generalization),
``imagenet`` (ImageNet -> ImageNetV2 generalization) and ``shifts`` (corruptions, deformations and
the JPEG shift, with effective robustness)."""
from __future__ import annotations

import pathlib

import numpy as np

from ...kernels._shared.defaults import (ARCHITECTURES, FULL_DATA_METHODS, FULL_DATA_SIZES, METHODS,
                                         MYRTLE_NAMES, SELECTION_GRIDS, SMALL_DATA_PARAMS,
                                         SMALL_DATA_SIZES, SMALL_DATA_TRIALS)
from ..data_folder import resolve_data
from .arguments import (CIFAR_SUBSET, existing_file, existing_folder, grid_setting, method_settings,
                        methods, official_indices, positive_ints, report_folder, selection_grids, set_help, setting,
                        train_test)


#: the CIFAR-10 -> CIFAR-10.1 experiment's default sizes and methods
GENERALIZATION_SIZES = (500, 1000, 2000)
GENERALIZATION_METHODS = "kernel,scattering,cnn,resnet"


def run_small_data(args) -> int:
    from ..experiments import small_data
    (train_x, train_y), (test_x, test_y), name = train_test(args)
    config = small_data.SmallDataConfig(
        sizes=args.sizes, trials=args.trials[0] if len(args.trials) == 1 else args.trials,
        methods=args.methods, pool_size=args.pool_size, test_size=args.test_size, seed=args.seed,
        params=method_settings(args, SMALL_DATA_PARAMS), grids=selection_grids(args, METHODS))
    try:
        config.check(int(max(train_y.max(), test_y.max())) + 1)
    except ValueError as err:
        args.parser.error(str(err))
    small_data.run(train_x, train_y, test_x, test_y, config, report_folder(args), data=name,
                   progress=not args.quiet)
    print((args.out / "small_data.md").read_text())
    return 0


def run_architectures(args) -> int:
    from ..experiments import architectures
    (train_x, train_y), (test_x, test_y), name = train_test(args)
    config = architectures.ArchitecturesConfig(
        archs=args.archs, n=args.n, network_trials=args.network_trials, test_size=args.test_size,
        seed=args.seed, params=method_settings(args, architectures.default_params()),
        grids=selection_grids(args, METHODS, base=architectures.default_grids()))
    try:
        config.check()
        config.small_data_config(config.archs[0], "kernel").check(
            int(max(train_y.max(), test_y.max())) + 1)
    except ValueError as err:
        args.parser.error(str(err))
    architectures.run(train_x, train_y, test_x, test_y, config, report_folder(args), data=name,
                      progress=not args.quiet)
    print((args.out / "architectures.md").read_text())
    return 0


def run_cifar10(args) -> int:
    from ..datasets import DatasetNotAvailable, load_cifar10, load_cifar10_1
    from ..experiments import full_data, generalization
    out, params = report_folder(args), method_settings(args)
    if args.generalization:
        try:
            recollected = load_cifar10_1(args.cifar10_1)
        except DatasetNotAvailable as err:
            args.parser.error(f"{err} Or pass --cifar10-1 FOLDER.")
    if args.data is None:
        train, test, name = load_cifar10("train"), load_cifar10("test"), "CIFAR-10 (official archive)"
    else:
        train, test, name = train_test(args)
    if args.generalization:
        config = generalization.GeneralizationConfig(
            sizes=args.sizes or GENERALIZATION_SIZES,
            methods=args.methods or methods(GENERALIZATION_METHODS), seed=args.seed, params=params,
            grids=selection_grids(args, METHODS))
        generalization.run(train, test, recollected, config, out,
                           data=f"{name} -> CIFAR-10.1 v6", progress=not args.quiet)
        print((out / "generalization.md").read_text())
    else:
        chosen = args.methods or FULL_DATA_METHODS
        config = full_data.FullDataConfig(sizes=args.sizes or FULL_DATA_SIZES, methods=chosen,
                                          test_size=args.test_size, seed=args.seed, params=params,
                                          grids=selection_grids(args, METHODS))
        try:
            full_data.run(train, test, config, out, data=name, progress=not args.quiet)
        except ValueError as err:
            args.parser.error(str(err))
        print((out / "full_data.md").read_text())
    return 0


def run_imagenet(args) -> int:
    from ..datasets import imagenetv2_folder, load_folder_arrays, load_image_folder
    from ..experiments import generalization
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
        seed=args.seed, fit=generalization.IMAGENET_V2_FIT, params=method_settings(args),
        grids=selection_grids(args, METHODS))
    generalization.run(train, val, v2, config, report_folder(args), progress=not args.quiet,
                       data=f"ImageNet ({args.data}, {args.size}x{args.size}) -> ImageNetV2 ({args.v2})")
    print((args.out / "generalization.md").read_text())
    return 0


def run_shifts(args) -> int:
    from ..experiments import shifts
    (train_x, train_y), (test_x, test_y), name = train_test(args)
    data = args.data or resolve_data(CIFAR_SUBSET)
    test_path = data / "test.npz" if data.is_dir() else args.test
    index = official_indices(test_path)
    if index is None:
        args.parser.error(f"{test_path} has no 'index' array (the official test indices the "
                          "shifted sets are matched by)")
    severities = tuple(args.severities)
    if any(s not in range(1, 6) for s in severities):
        args.parser.error(f"--severities must lie in 1..5; got {','.join(map(str, severities))}")
    config = shifts.ShiftsConfig(
        n=args.n, methods=args.methods, shifts=tuple(args.shifts.split(",")) if args.shifts else None,
        severities=severities, test_size=args.test_size, reference=args.reference,
        replicates=args.replicates, seed=args.seed, params=method_settings(args),
        grids=selection_grids(args, METHODS))
    shifts.run((train_x, train_y), (test_x, test_y, index), args.shifted, config, report_folder(args),
               data=name, reuse=args.reuse, progress=not args.quiet)
    print((args.out / "shifts.md").read_text())
    return 0


def _common_arguments(p, out_default: pathlib.Path, methods_default: str | None,
                      methods_help: str = "", *, with_methods: bool = True) -> None:
    if with_methods:
        p.add_argument("--methods", type=methods,
                       default=None if methods_default is None else methods(methods_default),
                       help=f"comma-separated, among {', '.join(METHODS)} "
                            f"(default: {methods_help or methods_default})")
    p.add_argument("--set", action="append", type=setting, metavar="METHOD.NAME=VALUE",
                   help=set_help())
    p.add_argument("--seed", type=int, default=0, help="seed of all subsets (default 0)")
    p.add_argument("--grid", action="append", type=grid_setting, metavar="METHOD.NAME=[V,...]",
                   help="the values a parameter's selection searches, on the training images only "
                        "(repeatable; [] fixes it to its parameter value). Defaults: "
                        + "; ".join(f"{m}: " + ", ".join(f"{k} {v}" for k, v in g.items())
                                    for m, g in SELECTION_GRIDS.items())
                        + ". A parameter given with --set is fixed (not searched)")
    p.add_argument("--out", type=pathlib.Path, default=out_default,
                   help=f"report folder; a rerun with the same settings resumes there "
                        f"(default {out_default})")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def add_command(subparsers) -> None:
    """Add ``bench`` (small-data | architectures | cifar10 | imagenet | shifts) to an ``add_subparsers()`` object."""
    b = subparsers.add_parser(
        "bench", help="run an experiment: small-data, architectures, cifar10, imagenet or shifts",
        description="Run one of the benchmark experiments; each writes JSON, a Markdown table and "
                    "plots to --out and resumes there when rerun with the same settings.")
    targets = b.add_subparsers(dest="target", required=True,
                               metavar="{small-data,architectures,cifar10,imagenet,shifts}")

    s = targets.add_parser(
        "small-data", help="the kernel paper's small-data protocol (n = 10 ... 1280, several trials)",
        description="Class-balanced training sets of n images drawn from one pool, several trials per "
                    "n, one fixed test set; mean and standard deviation of the test accuracy per method. "
                    "Every method selects its hyperparameters on each trial's training images only "
                    "(--grid). The kernel's pool matrix is computed once per grid point (ZCA bias x "
                    "flips), its test rows once per chosen point (the main cost: about P^2/2 per "
                    "point plus T P per chosen point, x2 with flips, ~900 kernel evaluations/s (the numba backend) for "
                    "Myrtle5 at 32x32 on 2 CPU cores) and cached in --out. Rerunning into the same --out with more sizes, "
                    "trials or methods adds to the results there (e.g. many kernel trials, then a "
                    "few network trials); other changes need a new --out. Default data: the exact "
                    f"CIFAR-10 subset in the data folder, {resolve_data(CIFAR_SUBSET)} "
                    "($TANGENTLESS_DATA/cifar10, or ~/.cache/tangentless/cifar10 where it is unset).")
    s.add_argument("--data", type=pathlib.Path,
                   help="folder with train.npz and test.npz, or a training .npz (then --test)")
    s.add_argument("--test", type=existing_file, help="test .npz when --data is a file")
    s.add_argument("--sizes", type=positive_ints, default=SMALL_DATA_SIZES,
                   help="comma-separated training-set sizes, multiples of the number of classes "
                        f"(default {','.join(map(str, SMALL_DATA_SIZES))})")
    s.add_argument("--trials", type=positive_ints, default=(SMALL_DATA_TRIALS,),
                   help=f"trials per size: one number, or one per size (default {SMALL_DATA_TRIALS})")
    s.add_argument("--pool-size", type=int,
                   help="training images in the pool the trials draw from, class-balanced, or all of "
                        "them with their class counts where it is their number (e.g. 4000 on the "
                        "exact CIFAR-10 subset; default: the largest size)")
    s.add_argument("--test-size", type=int,
                   help="class-balanced subset of the test set (default: all test images)")
    _common_arguments(s, pathlib.Path("results-small-data"), ",".join(METHODS))
    s.set_defaults(run=run_small_data, parser=s)

    a = targets.add_parser(
        "architectures", help="network error against kernel error across Myrtle5 / 7 / 10",
        description="Each Myrtle architecture's kernel and its network (no batch norm, no bias) on "
                    "the same class-balanced n training images and the same test set, each selecting "
                    "its hyperparameters on the training images only (kernel: ZCA bias by "
                    "leave-one-out, no flips; network: lr and epochs on a hold-out); writes the "
                    "errors, their Pearson correlation across architectures and a plot. The kernels "
                    "cost about n^2/2 per ZCA bias plus T n test pairs (Myrtle10 ~2.5x Myrtle5 per "
                    "pair). Resumes in --out.")
    a.add_argument("--data", type=pathlib.Path,
                   help="folder with train.npz and test.npz, or a training .npz (then --test)")
    a.add_argument("--test", type=existing_file, help="test .npz when --data is a file")
    a.add_argument("--archs", type=lambda text: tuple(text.split(",")), default=MYRTLE_NAMES,
                   help=f"comma-separated, among {', '.join(MYRTLE_NAMES)} (default: all)")
    a.add_argument("--n", type=int, default=ARCHITECTURES["n"],
                   help=f"training images, a multiple of the number of classes (default {ARCHITECTURES['n']})")
    a.add_argument("--network-trials", type=int, default=ARCHITECTURES["network_trials"],
                   help=f"trainings of each network (default {ARCHITECTURES['network_trials']})")
    a.add_argument("--test-size", type=int,
                   help="class-balanced subset of the test set (default: all test images)")
    _common_arguments(a, pathlib.Path("results-architectures"), None, with_methods=False)
    a.set_defaults(run=run_architectures, parser=a)

    c = targets.add_parser(
        "cifar10", help="accuracy against compute at several sizes, projected to full CIFAR-10 "
                        "(or CIFAR-10.1 generalization)",
        description="Each method at the class-balanced training-set sizes --sizes, hyperparameters "
                    "selected on its training images only, with its fit, predict and selection "
                    "seconds measured here (and the kernel's pairs), an accuracy-vs-seconds plot, and "
                    "the cost of one fit on full CIFAR-10 (50k / 10k) projected from the "
                    "measurements, its assumptions stated. "
                    "With --generalization: train at --sizes and test on CIFAR-10 and CIFAR-10.1 "
                    "(accuracy drop and effective robustness). Default data: the official CIFAR-10 "
                    "archive in $TANGENTLESS_DATA or ~/.cache/tangentless (downloaded if absent).")
    c.add_argument("--data", type=pathlib.Path,
                   help="folder with train.npz and test.npz, or a training .npz (then --test)")
    c.add_argument("--test", type=existing_file, help="test .npz when --data is a file")
    c.add_argument("--test-size", type=int, help="class-balanced subset of the test set (default: all)")
    c.add_argument("--generalization", action="store_true",
                   help="run the CIFAR-10 -> CIFAR-10.1 experiment instead")
    c.add_argument("--cifar10-1", type=existing_folder,
                   help="folder with cifar10.1_v6_data.npy and cifar10.1_v6_labels.npy "
                        "(default: $TANGENTLESS_DATA or ~/.cache/tangentless)")
    c.add_argument("--sizes", type=positive_ints,
                   help="comma-separated training-set sizes to measure, multiples of the number of "
                        f"classes (default {','.join(map(str, FULL_DATA_SIZES))}; with "
                        f"--generalization {','.join(map(str, GENERALIZATION_SIZES))}). The kernel "
                        "costs about (n^2/2 + T n) x 2 pairs with flips per grid point, ~900 pairs/s "
                        "for Myrtle5 at 32x32 on 2 CPU cores")
    _common_arguments(c, pathlib.Path("results-cifar10"), None,
                      f"{','.join(FULL_DATA_METHODS)}; with --generalization {GENERALIZATION_METHODS}")
    c.set_defaults(run=run_cifar10, parser=c)

    i = targets.add_parser(
        "imagenet", help="ImageNet -> ImageNetV2 generalization at low resolution",
        description="Train the methods on a subset of an ImageNet-style training folder (resized to "
                    "--size), test on a subset of the validation folder and of ImageNetV2, and report "
                    "the accuracy drop and the effective robustness against the published logit fit "
                    "(b1 = 0.923, b0 = -0.498; Taori et al. 2020).")
    i.add_argument("--data", type=existing_folder, required=True,
                   help="ImageNet training folder (class folders, e.g. n01440764/)")
    i.add_argument("--val", type=existing_folder, required=True,
                   help="ImageNet validation folder in the same layout")
    i.add_argument("--v2", type=existing_folder, help="ImageNetV2 MatchedFrequency folder (class folders 0..999)")
    i.add_argument("--class-index", type=existing_file,
                   help="imagenet_class_index.json mapping the training and validation folders' "
                        "names to ImageNet-1k indices (default: sorted folder names, which are the "
                        "standard indices when all 1,000 wnid folders are present)")
    i.add_argument("--size", type=int, default=32, help="image side after resize + center crop (default 32)")
    i.add_argument("--train-limit", type=int, default=10000,
                   help="training images, spread evenly over the folder (default 10000)")
    i.add_argument("--test-limit", type=int, default=2000,
                   help="images from each test folder (default 2000)")
    i.add_argument("--sizes", type=positive_ints,
                   help="training-set sizes, multiples of the number of classes (default: all loaded)")
    _common_arguments(i, pathlib.Path("results-imagenet"), "scattering,kernel")
    i.set_defaults(run=run_imagenet, parser=i)

    h = targets.add_parser(
        "shifts", help="distribution shift: corruptions, deformations, JPEG; effective robustness",
        description="Train the methods (hyperparameters selected on the training images) and a "
                    "family of CNN variants (fixed settings) on n class-balanced training images; "
                    "test each on the clean test images and on every shifted set in --shifted "
                    "(made by `tangentless shifts` from the same test images); per shift, per "
                    "corruption family and over all corruptions: accuracy, the logit-linear fit "
                    "over the family, effective robustness with bootstrap intervals, mCA and "
                    "relative mCE. The kernel's cost is T n pairs per shifted set (x2 with flips): "
                    "choose --test-size and --severities to fit the budget, and --reuse an "
                    "earlier run's family and models rather than training them again. Resumes in "
                    "--out.")
    h.add_argument("--data", type=pathlib.Path,
                   help="folder with train.npz and test.npz (test.npz with 'index'), or a training "
                        ".npz (then --test)")
    h.add_argument("--test", type=existing_file, help="test .npz when --data is a file")
    h.add_argument("--shifted", type=existing_folder, required=True,
                   help="folder of shifted sets written by `tangentless shifts`")
    h.add_argument("--shifts", help="comma-separated shifted sets to use (default: all in --shifted)")
    h.add_argument("--severities", type=positive_ints, default=(1, 2, 3, 4, 5),
                   help="comma-separated severities 1..5 (default all)")
    h.add_argument("--n", type=int, default=500, help="training images (default 500)")
    h.add_argument("--test-size", type=int,
                   help="class-balanced subset of the test images, the same in every shifted set "
                        "(default: all)")
    h.add_argument("--reference", default="resnet",
                   help="the model mCE is relative to (default resnet: ResNet-9 x1/8)")
    h.add_argument("--replicates", type=int, default=1000, help="bootstrap resamples (default 1000)")
    h.add_argument("--reuse", type=existing_file, metavar="SHIFTS_JSON",
                   help="an earlier run's shifts.json on the same test images and shifted files: "
                        "its CNN family and other models are taken (restricted to this run's test "
                        "images and sets) instead of training a family; they may have trained on "
                        "another n")
    _common_arguments(h, pathlib.Path("results-shifts"), "kernel,scattering,istc,cnn,resnet")
    h.set_defaults(run=run_shifts, parser=h)
