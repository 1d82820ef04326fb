"""A cross-validated grid search over the compositional kernel with and without a Gram cache.

GridSearchCV over ``Pipeline(CompositionalKernel(myrtle5, flip), KernelRidgeClassifier)``, 2
candidates (ridge alphas) x 3 stratified folds plus the refit, on ``--n`` class-balanced images of
the exact CIFAR-10 subset, ZCA-whitened once outside the search (an unsupervised step, as the kernel
paper whitens with the whole training set). Without a cache every candidate and fold computes its
own K(train fold) and K(test fold, train fold); with one (:class:`~tangentless.kernels.GramCache`)
they slice the matrices of the images already seen. Both searches run in this process, the
uncached first after one warm-up gram (JAX's compilation is in neither); the JSON records seconds,
the kernel values each asked of the engine, the ratio, and whether their scores, choice and
predictions agree. Writes ``--out`` (default benchmarks/results/gram_cache.json).

Usage: python -m tangentless.benchmarks.gram_cache_bench [--n 60] [--data FOLDER] [--out FILE]
"""
from __future__ import annotations

import argparse
import pathlib
import sys
import time

import numpy as np
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import make_pipeline

from ..kernels import GramCache, ZCAWhitening, myrtle
from ..solvers import CompositionalKernel, KernelRidgeClassifier
from .data_folder import resolve_data
from .datasets import balanced_subset, load_npz_images
from .report import write_json

CANDIDATES = {"kernelridgeclassifier__alphas": [1e-3, 1e-1]}
FOLDS = 3


def search(images: np.ndarray, labels: np.ndarray, cache: GramCache | None) -> tuple[GridSearchCV, float]:
    """The grid search (see the module docstring) and its wall seconds."""
    pipe = make_pipeline(CompositionalKernel("myrtle5", zca=False, flip=True, cache=cache),
                         KernelRidgeClassifier())
    grid = GridSearchCV(pipe, CANDIDATES, cv=StratifiedKFold(FOLDS, shuffle=True, random_state=0))
    tic = time.perf_counter()
    grid.fit(images, labels)
    return grid, time.perf_counter() - tic


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=60, help="images searched over (default 60)")
    parser.add_argument("--data", type=pathlib.Path, help="folder with train.npz (default: the exact subset)")
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("benchmarks/results/gram_cache.json"))
    args = parser.parse_args(argv)
    folder = args.data or resolve_data("cifar10")
    images, labels = load_npz_images(folder / "train.npz")
    keep = balanced_subset(labels, args.n, seed=0)
    images, labels = images[keep].astype(np.float32), labels[keep]
    whitened = ZCAWhitening(bias=1e-5).fit(images).transform(images)
    myrtle(5).gram(whitened[:2], progress=False)            # compile outside both timings
    counts = []
    layer = type(myrtle(5))
    engine = layer.gram

    def counted(spec, x, y=None, **options):
        counts[-1] += len(x) * (len(x) + 1) // 2 if y is None else len(x) * len(y)
        return engine(spec, x, y, **options)

    layer.gram = counted        # counts what each search asks of the engine
    try:
        runs = {}
        for name, cache in (("uncached", None), ("cached", GramCache())):
            counts.append(0)
            grid, seconds = search(whitened, labels, cache)
            runs[name] = {"seconds": round(seconds, 2), "kernel_values": counts[-1] * 2,
                          "mean_test_score": grid.cv_results_["mean_test_score"].tolist(),
                          "best_params": grid.best_params_, "grid": grid}
    finally:
        del layer.gram
    plain, cached = runs["uncached"].pop("grid"), runs["cached"].pop("grid")
    payload = {
        "benchmark": "gram_cache", "n": args.n, "folds": FOLDS, "candidates": CANDIDATES,
        "kernel": "myrtle5, flip-symmetrized (kernel values count both halves)",
        "data": f"{folder.name}/train.npz, {args.n} class-balanced images (seed 0), ZCA bias 1e-5 fitted on them once",
        **runs,
        "speedup": round(runs["uncached"]["seconds"] / runs["cached"]["seconds"], 2),
        "kernel_value_ratio": round(runs["uncached"]["kernel_values"] / runs["cached"]["kernel_values"], 2),
        "same_scores": bool(np.allclose(runs["uncached"]["mean_test_score"], runs["cached"]["mean_test_score"])),
        "same_choice": runs["uncached"]["best_params"] == runs["cached"]["best_params"],
        "same_predictions": bool(np.array_equal(plain.predict(whitened), cached.predict(whitened))),
    }
    write_json(args.out, payload)
    print(f"uncached {runs['uncached']['seconds']} s, cached {runs['cached']['seconds']} s: "
          f"{payload['speedup']}x ({payload['kernel_value_ratio']}x fewer kernel values); "
          f"same scores {payload['same_scores']}, choice {payload['same_choice']}, "
          f"predictions {payload['same_predictions']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
