"""Where the kernel's ZCA is fitted, and what leave-one-out sees of it.

Myrtle5 kernel ridge (no flips, ZCA bias ``--bias``, alpha by exact leave-one-out) on ``--n``
class-balanced training images of the exact CIFAR-10 subset, tested on ``--test`` class-balanced
test images, with the whitening fitted (a) on the n training images alone and (b) on all the
training images in train.npz (labels unused). With fewer images than pixel values (3,072), (a)
spans only their subspace and multiplies the test images' other components by up to
1/sqrt(bias); leave-one-out cannot see it, since every left-out image helped fit the whitening.
Writes ``--out`` (default benchmarks/results/whitening.json): per variant the leave-one-out and
test accuracy and the seconds, with the machine.

Usage: python -m tangentless.benchmarks.whitening_check [--n 200] [--test 100] [--bias 1e-5]
       [--data FOLDER] [--out FILE]
"""
from __future__ import annotations

import argparse
import pathlib
import sys
import time

import numpy as np

from ..kernels import ZCAWhitening, myrtle
from ..solvers import KernelRidgeClassifier
from .data_folder import resolve_data
from .datasets import balanced_subset, load_npz_images
from .report import write_json


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=200, help="training images (default 200)")
    parser.add_argument("--test", type=int, default=100, help="test images (default 100)")
    parser.add_argument("--bias", type=float, default=1e-5, help="ZCA bias (default 1e-5)")
    parser.add_argument("--data", type=pathlib.Path, help="folder with train.npz, test.npz (default: the exact subset)")
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("benchmarks/results/whitening.json"))
    args = parser.parse_args(argv)
    folder = args.data or resolve_data("cifar10")
    (x, y), (xt, yt) = load_npz_images(folder / "train.npz"), load_npz_images(folder / "test.npz")
    x, xt = x.astype(np.float32), xt.astype(np.float32)
    train, test = balanced_subset(y, args.n, seed=0), balanced_subset(yt, args.test, seed=0)
    spec = myrtle(5)
    variants = []
    for name, pool in (("the n training images", x[train]), (f"all {len(x)} training images", x)):
        tic = time.perf_counter()
        zca = ZCAWhitening(bias=args.bias).fit(pool)
        a, b = zca.transform(x[train]), zca.transform(xt[test])
        ridge = KernelRidgeClassifier().fit(spec.gram(a, progress=False), y[train])
        accuracy = ridge.score(spec.gram(b, a, progress=False), yt[test])
        variants.append({"zca_fitted_on": name, "loo_accuracy": ridge.loo_score_,
                         "test_accuracy": float(accuracy), "alpha": ridge.alpha_,
                         "seconds": round(time.perf_counter() - tic, 1)})
        print(f"ZCA on {name}: leave-one-out {ridge.loo_score_:.3f}, test {accuracy:.3f}")
    write_json(args.out, {"benchmark": "whitening", "data": f"{folder.name}/train.npz, test.npz",
                          "n": args.n, "test_images": args.test, "bias": args.bias,
                          "kernel": "myrtle5, no flips, kernel ridge (alpha by exact LOO)",
                          "variants": variants})
    return 0


if __name__ == "__main__":
    sys.exit(main())
