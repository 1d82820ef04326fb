"""Scattering baselines on CIFAR-10 and ImageNet, on this machine; JSON to ``--out`` (default
benchmarks/results/scattering_bench.json, relative to the current directory). Data come from the
data folder: ``--data``, else $TANGENTLESS_DATA, else ~/.cache/tangentless
(:func:`tangentless.benchmarks.datasets.resolve_data`).

1. ``cifar-exact``: the exact CIFAR-10 subset (4,000 train / 1,000 test), ``cifar10/`` there.
   Scattering (J=2, L=8, order 2: 243 channels at 8x8) computed once, then side by side:
   scattering + linear, scattering + ISTC + linear, scattering + ISTC + MLP (SGD, ``--epochs``),
   and scattering + kernel ridge (``tangentless.solvers``, alpha by exact leave-one-out).
2. ``cifar-jpeg``: the full CIFAR-10 JPEG copy (50,000 / 10,000; JPEG quality 75, so accuracies
   run below the original images'): the CPU-feasible configuration (scattering + linear) for
   ``--jpeg-epochs`` epochs: accuracy, images/s of each stage, and the projected GPU cost of the
   paper's full configuration from its multiply-add count.
3. ``imagenet``: images/s through the whole pipeline (JPEG decode + resize 256 / crop 224,
   J=4 scattering, the paper's model forward and backward with the linear head) on the 100
   JPEGs of ``imagenet/jpeg_subset100/``, and the projected cost of one epoch (1,281,167 images) at
   that rate.

Usage: python -m tangentless.benchmarks.scattering_bench [--parts cifar-exact cifar-jpeg imagenet]
       [--epochs 30] [--jpeg-epochs 10] [--data FOLDER] [--out benchmarks/results/scattering_bench.json]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ..kernels._shared.defaults import SCATTERING_ALPHAS
from ..scattering import (ISTCConfig, ImageFolder, ModelConfig, iterate_batches, model, num_channels,
                          scatter, scattering_fn, train)
from ..scattering.ridge import feature_standardization, rbf_kernel, scattering_rows
from ..scattering.train import TrainConfig
from ..solvers import KernelRidgeClassifier
from .datasets import load_packed_jpeg_npz, resolve_data
from .machine import describe_machine, peak_rss_gib
from .report import write_json

DEFAULT_OUT = pathlib.Path("benchmarks/results/scattering_bench.json")
IMAGENET_TRAIN_IMAGES = 1_281_167
# Published reference points (approximate, from the scattering papers), for the report only.
REFERENCE = {"cifar10_scattering_J2_linear_full_data": 0.705,
             "cifar10_scattering_order1_linear_full_data": 0.64}


def _timed(fn):
    tic = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - tic


def _cifar_exact(data: pathlib.Path | None):
    """uint8 NHWC train/test images and labels of the exact subset in the data folder."""
    path = resolve_data("cifar10", data)
    if not (path / "train.npz").exists():
        sys.exit(f"the exact CIFAR-10 subset is missing at {path}")
    with np.load(path / "train.npz") as tr, np.load(path / "test.npz") as te:
        return tr["images"], tr["labels"], te["images"], te["labels"]


def _model_configs(n_classes: int) -> dict:
    """The CPU configurations compared on CIFAR (sizes: the reference's cheap CPU setting)."""
    istc = ISTCConfig(dictionary_size=512, n_iter=8)
    return {
        "scattering + linear": ModelConfig(n_classes=n_classes, projection=None, sparse=False),
        "scattering + ISTC + linear": ModelConfig(n_classes=n_classes, projection=128, istc=istc),
        "scattering + ISTC + MLP": ModelConfig(n_classes=n_classes, projection=128, istc=istc,
                                               head="mlp", hidden=512),
    }


def _train_and_test(config, train_config, features, labels, test_features, test_labels) -> dict:
    result, seconds = _timed(lambda: train.fit(config, train_config, labels, features=features,
                                               progress=True))
    scores = train.evaluate(result.params, result.state, config, test_labels,
                            features=test_features)
    last = result.history[-1]
    return {"model": dataclasses.asdict(config), "train": dataclasses.asdict(train_config),
            "test_top1": scores["top1"], "test_top5": scores["top5"],
            "train_top1_last_epoch": last["train_top1"], "fit_seconds": round(seconds, 1),
            "train_images_per_s_last_epoch": round(last["images_per_s"], 1),
            "history": result.history}


def _kernel_ridge(features, labels, test_features, test_labels) -> dict:
    """Standardized flattened scattering (unit-norm rows), linear and RBF kernels, alpha by exact
    LOO (the rows of :class:`~tangentless.scattering.ScatteringRidgeClassifier`)."""
    stats = feature_standardization(features)
    a, b = scattering_rows(features, stats), scattering_rows(test_features, stats)
    out = {}
    for name, kernel in (("linear", lambda x, y: x @ y.T),
                         ("rbf (gamma=1 on unit-norm rows)", rbf_kernel)):
        def fit_predict():
            clf = KernelRidgeClassifier(alphas=SCATTERING_ALPHAS).fit(kernel(a, a), labels)
            return clf, clf.score(kernel(b, a), test_labels)
        (clf, accuracy), seconds = _timed(fit_predict)
        out[name] = {"test_top1": accuracy, "alpha": clf.alpha_, "loo_top1": clf.loo_score_,
                     "seconds": round(seconds, 1)}
    return out


def cifar_exact(epochs: int, data: pathlib.Path | None = None) -> dict:
    train_x, train_y, test_x, test_y = _cifar_exact(data)
    (features, test_features), seconds = _timed(lambda: (scatter(train_x, J=2), scatter(test_x, J=2)))
    out = {"data": "exact CIFAR-10 subset: first 4,000 train / 1,000 test images (official order)",
           "scattering": {"J": 2, "L": 8, "max_order": 2, "shape": list(features.shape[1:]),
                          "seconds": round(seconds, 1),
                          "images_per_s": round((len(train_x) + len(test_x)) / seconds, 1)},
           "models": {}}
    step = max(1, int(round(epochs * 2 / 3)))
    train_config = TrainConfig(epochs=epochs, batch_size=128, lr=0.01, step_epochs=step)
    for name, config in _model_configs(10).items():
        print(f"[cifar-exact] {name}", flush=True)
        out["models"][name] = _train_and_test(config, train_config, features, train_y,
                                              test_features, test_y)
        print(f"  test top-1 {out['models'][name]['test_top1']:.3f}", flush=True)
    out["models"]["scattering + kernel ridge"] = _kernel_ridge(features, train_y, test_features,
                                                              test_y)
    return out


def paper_multiply_adds(h: int, w: int, in_channels: int, projection: int = 256,
                        atoms: int = 2048, n_iter: int = 12, kernel_size: int = 1,
                        pool: int = 5, classes: int = 1000) -> dict:
    """Multiply-adds per image of the model after the scattering (forward), by stage."""
    pixels = h * w
    out = {"projection": pixels * in_channels * projection * kernel_size ** 2,
           # W^T x once, then per iteration D z (k x m) and W^T (D z) (m x k)
           "istc": pixels * atoms * projection * (1 + 2 * n_iter),
           "linear_head": (h - pool + 1) * (w - pool + 1) * atoms * classes}
    out["total"] = sum(out.values())
    return out


def cifar_jpeg(epochs: int, data: pathlib.Path | None = None) -> dict:
    path = resolve_data("cifar10_jpeg", data)
    (train_x, train_y), decode_s = _timed(lambda: load_packed_jpeg_npz(path / "train.npz"))
    test_x, test_y = load_packed_jpeg_npz(path / "test.npz")
    features, scatter_s = _timed(lambda: scatter(train_x, J=2))
    test_features = scatter(test_x, J=2)
    step = max(1, int(round(epochs * 2 / 3)))
    train_config = TrainConfig(epochs=epochs, batch_size=128, lr=0.01, step_epochs=step)
    config = ModelConfig(n_classes=10, projection=None, sparse=False)
    print("[cifar-jpeg] scattering + linear", flush=True)
    result = _train_and_test(config, train_config, features, train_y, test_features, test_y)
    result.pop("history")
    return {
        "data": "full CIFAR-10, JPEG-recompressed copy (quality 75, 4:2:0): 50,000 / 10,000",
        "decode_seconds": round(decode_s, 1),
        "scattering": {"J": 2, "seconds_train_set": round(scatter_s, 1),
                       "images_per_s": round(len(train_x) / scatter_s, 1)},
        "scattering + linear": result,
    }


def imagenet(batch: int, data: pathlib.Path | None = None) -> dict:
    """Throughput of decode -> J=4 scattering -> the paper's model (linear head), fwd + bwd."""
    src = resolve_data("imagenet/jpeg_subset100", data)
    if not src.exists():
        sys.exit(f"the ImageNet sample is missing at {src}")
    with tempfile.TemporaryDirectory() as root:
        for f in sorted(src.iterdir()):  # an ImageFolder tree of symlinks: <wnid>/<file>
            (pathlib.Path(root) / f.name.split("_")[0]).mkdir(exist_ok=True)
            (pathlib.Path(root) / f.name.split("_")[0] / f.name).symlink_to(f)
        folder = ImageFolder(root, class_index=resolve_data("imagenet/imagenet_class_index.json", data))

        def decode_all():
            return [(x, y) for x, y in iterate_batches(folder, batch, train=True, seed=0)]
        batches, decode_s = _timed(decode_all)

    k = 3 * num_channels(4, 8, 2, phase=True)
    scat = scattering_fn((224, 224, 3), J=4, phase=True)
    feats = scat(jnp.asarray(batches[0][0][:batch], jnp.float32) / 255)  # compile
    jax.block_until_ready(feats)
    tic = time.perf_counter()
    for x, _ in batches:
        xx = jnp.asarray(x, jnp.float32) / 255
        if len(xx) < batch:
            xx = jnp.concatenate([xx, jnp.repeat(xx[-1:], batch - len(xx), 0)])
        feats = jax.block_until_ready(scat(xx))
    scatter_s = time.perf_counter() - tic

    config = model.ModelConfig(n_classes=1000, projection=256, head="linear",
                               istc=model.sparse_coding.ISTCConfig(dictionary_size=2048, n_iter=12))
    params, state = model.init(jax.random.key(0), config, feats.shape[1:])

    @jax.jit
    def loss_grad(params, state, x, y):
        def loss(p):
            logits, new_state, _ = model.apply(p, state, x, config, train=True)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), new_state
        return jax.grad(loss, has_aux=True)(params)

    y = jnp.zeros(batch, jnp.int32)
    jax.block_until_ready(loss_grad(params, state, feats, y))  # compile
    repeats = 3
    tic = time.perf_counter()
    for _ in range(repeats):
        jax.block_until_ready(loss_grad(params, state, feats, y))
    model_s = (time.perf_counter() - tic) / repeats / batch
    per_image = {"decode_transform_s": decode_s / len(folder),
                 "scattering_s": scatter_s / len(folder), "model_fwd_bwd_s": model_s}
    total = sum(per_image.values())
    macs = paper_multiply_adds(14, 14, k, classes=1000)
    return {
        "data": f"{len(folder)} ImageNet JPEGs (one per class, {src})",
        "pipeline": "decode + random-resized-crop 224 + flip (threads) -> phase scattering J=4 L=8 "
                    f"({k} channels at 14x14) -> projection 256, ISTC 2048 atoms x 12 iterations, "
                    "batch norm, 5x5 pool, linear head: forward + backward",
        "batch": batch, "per_image_seconds": {k_: round(v, 4) for k_, v in per_image.items()},
        "images_per_s": round(1 / total, 2),
        "projected_epoch_hours_this_machine": round(IMAGENET_TRAIN_IMAGES * total / 3600, 1),
        "model_multiply_adds_per_image": macs,
    }


def gpu_projection(macs_per_image: int, images: int, epochs: int = 160) -> dict:
    """Projected H200 hours for the paper's ``epochs``-epoch training on ``images`` images of the
    model after the scattering, assuming training costs 3x the forward multiply-adds and the GPU
    sustains a stated fraction of its dense float32 rate (an assumption, not a measurement)."""
    h200_fp32_flops, fraction = 67e12, 0.3
    seconds_per_image = 3 * 2 * macs_per_image / (h200_fp32_flops * fraction)
    return {"assumption": "H200 dense FP32 67 TFLOP/s at 30% utilisation; training = 3x forward "
                          "multiply-adds; scattering cost excluded (computed once and cached, or "
                          "on the fly with augmentation)",
            "images": images, "epochs": epochs, "seconds_per_image": seconds_per_image,
            "h200_hours": round(seconds_per_image * images * epochs / 3600, 2)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", nargs="+", default=["cifar-exact", "cifar-jpeg", "imagenet"],
                        choices=["cifar-exact", "cifar-jpeg", "imagenet"])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--jpeg-epochs", type=int, default=10)
    parser.add_argument("--imagenet-batch", type=int, default=16)
    parser.add_argument("--data", type=pathlib.Path,
                        help="data folder holding cifar10/, cifar10_jpeg/ and imagenet/ (default: "
                             "$TANGENTLESS_DATA, else ~/.cache/tangentless)")
    parser.add_argument("--out", type=pathlib.Path, default=DEFAULT_OUT,
                        help=f"the JSON report, relative to the current directory (default {DEFAULT_OUT})")
    args = parser.parse_args(argv)
    report = {"machine": describe_machine(), "command": " ".join(sys.argv), "reference": REFERENCE}
    if args.out.exists():  # parts run separately accumulate in one file
        report = {**json.loads(args.out.read_text()), **report}
    if "cifar-exact" in args.parts:
        report["cifar_exact"] = cifar_exact(args.epochs, args.data)
    if "cifar-jpeg" in args.parts:
        report["cifar_jpeg"] = cifar_jpeg(args.jpeg_epochs, args.data)
        # the paper's model on CIFAR's J=2 maps: 8x8 pixels, 3 x 81 channels, 10 classes, pool 3
        macs = paper_multiply_adds(8, 8, 243, pool=3, classes=10)
        report["cifar_jpeg"]["paper_model_on_cifar"] = {
            "multiply_adds_per_image": macs, **gpu_projection(macs["total"], 50_000)}
    if "imagenet" in args.parts:
        report["imagenet"] = imagenet(args.imagenet_batch, args.data)
        macs = report["imagenet"]["model_multiply_adds_per_image"]["total"]
        report["imagenet"]["gpu_projection"] = gpu_projection(macs, IMAGENET_TRAIN_IMAGES)
    report["peak_rss_gib"] = peak_rss_gib()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, report)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
