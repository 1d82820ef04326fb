"""Experiment 1, the small-data regime, following the kernel paper's protocol: class-balanced
training sets of n images (10, 20, 40, ..., 1280), several trials per n, one fixed test set;
compositional kernel vs its own CNN vs ResNet vs scattering; mean and standard deviation.

Design (the kernel is the cost):
- Pool: one class-balanced pool of ``pool_size`` training images (default: the largest n) is
  drawn once; trial t at size n trains on ``balanced_subset(pool_labels, n, seed=s_t)`` of the
  pool (the subsets of one trial are nested in n). Where n equals the pool size, every trial
  trains on the whole pool: the kernel and scattering trials then coincide, and only the networks'
  random initialization and augmentation differ between them.
- Kernel: the matrix K[pool + test, pool] is computed once (in resumable Zarr stores in the
  output folder, ``gram-<checksum of the images and kernel parameters>/``) and each trial takes
  its rows and columns. ZCA is fitted on the pool, a superset of every trial's training set, not
  on each trial's n images as in the paper: refitting per trial would change the whitened pixels
  and so the whole kernel matrix, i.e. one matrix per trial. The pool holds no test image.
  ZCA bias 1e-2 instead of the paper's 1e-5 (``SMALL_DATA_PARAMS`` in
  ``kernels._shared.defaults``): the paper fitted on 50,000 images,
  more than the 3,072 pixel dimensions; a pool of P < 3,072 images spans only P - 1 of them, and
  bias 1e-5 multiplies the test images' components outside that span by up to 1/sqrt(1e-5) ~ 316.
  Measured on the exact CIFAR subset (Myrtle5, no flips, n = 100, 150 test images, so +-4 points
  of noise): ZCA fitted on the 100 images 22.0% with bias 1e-5, 28.0% with 1e-2; fitted on all
  4,000 training images with 1e-5, 28.7%; no ZCA, 30.0%.
- Scattering: features of the pool and test images once, standardized with the pool's
  statistics (same reasoning as for ZCA), RBF kernel matrix once, rows per trial.
- CNN and ResNet: trained per trial on the trial's images (seeded by the trial).
- Alpha: exact leave-one-out on each trial's n training images (test data never used).
Results are appended to ``small_data.json`` after every (method, n, trial); a restarted run with
the same configuration skips what is done. ``small_data.md`` and ``small_data.png`` are written
at the end (and by :func:`write_outputs` from any partial JSON).
"""
from __future__ import annotations

import dataclasses
import pathlib
import time

import numpy as np
from tqdm.auto import tqdm

from ...kernels import ZCAWhitening
from ...kernels._shared.defaults import SMALL_DATA_PARAMS, SMALL_DATA_SIZES, SMALL_DATA_TRIALS
from ...kernels._shared.digest import sha256
from ...scattering import scatter
from ...scattering.ridge import feature_standardization, rbf_kernel, scattering_rows
from ...solvers import KernelRidgeClassifier
from ..datasets import balanced_subset
from ..report import accuracy_table, markdown_table, plot_accuracy_vs_n, summarize
from .gram_cache import pool_test_gram, pool_test_pairs
from .methods import METHODS, all_params, describe, kernel_spec, make_estimator
from .store import ResultStore, write_results

NAME = "small_data"


@dataclasses.dataclass
class SmallDataConfig:
    """sizes: training-set sizes n (multiples of the number of classes); trials: one count for
    every n or one per n; methods: a subset of ``METHODS``; pool_size: images in the training pool
    (default max(sizes)); test_size: a class-balanced subset of the test set (None: all of it);
    seed: pool, test subset and trial subsets; params: per-method parameters (defaults:
    ``SMALL_DATA_PARAMS`` over ``EXPERIMENT_PARAMS``, both in ``kernels._shared.defaults``)."""
    sizes: tuple[int, ...] = SMALL_DATA_SIZES
    trials: int | tuple[int, ...] = SMALL_DATA_TRIALS
    methods: tuple[str, ...] = METHODS
    pool_size: int | None = None
    test_size: int | None = None
    seed: int = 0
    params: dict = dataclasses.field(default_factory=lambda: all_params(SMALL_DATA_PARAMS))

    def trials_for(self, n: int) -> int:
        if isinstance(self.trials, int):
            return self.trials
        return self.trials[list(self.sizes).index(n)]

    def check(self, num_classes: int) -> None:
        """ValueError naming the first inconsistent setting."""
        if not self.sizes or any(n < num_classes or n % num_classes for n in self.sizes):
            raise ValueError(f"sizes must be multiples of the number of classes ({num_classes}); "
                             f"got {list(self.sizes)}")
        counts = [self.trials] if isinstance(self.trials, int) else list(self.trials)
        if not isinstance(self.trials, int) and len(counts) != len(self.sizes):
            raise ValueError(f"give one trial count for all sizes or one per size; got "
                             f"{len(counts)} counts for {len(self.sizes)} sizes")
        if any(t < 1 for t in counts):
            raise ValueError(f"trial counts must be >= 1; got {counts}")
        unknown = set(self.methods) - set(METHODS)
        if unknown or not self.methods:
            raise ValueError(f"methods must be among {', '.join(METHODS)}; got {list(self.methods)}")
        if self.pool_size is not None and self.pool_size < max(self.sizes):
            raise ValueError(f"pool_size {self.pool_size} is smaller than the largest n "
                             f"{max(self.sizes)}")


def trial_seed(seed: int, trial: int) -> int:
    """The seed of trial ``trial``: the same for every n, so one trial's subsets are nested."""
    return int(np.random.SeedSequence([seed, trial]).generate_state(1)[0])


def _kernel_matrix(pool, test, params, out: pathlib.Path, progress: bool):
    """K[pool + test, pool] of the ZCA-whitened images (ZCA fitted on the pool) and its cost."""
    pool = pool.astype(np.float32)
    zca = ZCAWhitening(bias=params["zca_bias"]).fit(pool)
    pool_w, test_w = zca.transform(pool), zca.transform(test.astype(np.float32))
    key = sha256(params, pool_w, test_w)
    return pool_test_gram(kernel_spec(params), pool_w, test_w, flip=params["flip"],
                          folder=out / f"gram-{key}", progress=progress,
                          preprocessing={"zca_bias": params["zca_bias"], "zca_fitted_on": "pool"})


def _scattering_matrix(pool, test, params, progress: bool) -> tuple[np.ndarray, dict]:
    """RBF kernel (P + T, P) of standardized scattering rows (statistics of the pool)."""
    tic = time.perf_counter()
    features = scatter(np.concatenate([pool, test]), J=params["J"], progress=progress)
    rows = scattering_rows(features, feature_standardization(features[:len(pool)]))
    k = rbf_kernel(rows, rows[:len(pool)])
    return k, {"seconds": round(time.perf_counter() - tic, 3)}


def _ridge_trial(k: np.ndarray, pool_size: int, subset: np.ndarray, labels: np.ndarray,
                 test_labels: np.ndarray, alphas) -> dict:
    """Kernel ridge on rows/columns ``subset`` of the pool block; accuracy on the test rows."""
    ridge = KernelRidgeClassifier(alphas=tuple(alphas))
    ridge.fit(k[np.ix_(subset, subset)], labels[subset])
    accuracy = float(np.mean(ridge.predict(k[pool_size:, subset]) == test_labels))
    return {"accuracy": accuracy, "alpha": ridge.alpha_, "loo_accuracy": ridge.loo_score_}


def run(train_images: np.ndarray, train_labels: np.ndarray, test_images: np.ndarray,
        test_labels: np.ndarray, config: SmallDataConfig, out: str | pathlib.Path, *,
        data: str = "", progress: bool = True) -> dict:
    """Run (or resume) the experiment; write ``out/small_data.{json,md,png}``; return the payload.

    Images NHWC (uint8 or float), labels (N,) integers 0..C-1; ``data`` names the data set in
    the report.
    """
    out = pathlib.Path(out)
    train_labels, test_labels = np.asarray(train_labels), np.asarray(test_labels)
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    config.check(num_classes)
    pool_size = config.pool_size or max(config.sizes)
    pool_index = balanced_subset(train_labels, pool_size, seed=config.seed)
    test_index = (np.arange(len(test_labels)) if config.test_size is None
                  else balanced_subset(test_labels, config.test_size, seed=config.seed))
    pool, pool_labels = train_images[pool_index], train_labels[pool_index]
    test, test_y = test_images[test_index], test_labels[test_index]
    params = {m: config.params[m] for m in METHODS}
    resolved = {"pool_size": pool_size, "test_size": len(test_index), "seed": config.seed,
                "params": params}
    header = {
        "experiment": NAME, "data": data, "config": {**dataclasses.asdict(config), **resolved},
        "methods": {m: describe(m, params[m]) for m in METHODS},
        "pool_index": pool_index.tolist(), "test_index": test_index.tolist(),
        "notes": [
            f"class-balanced pool of {pool_size} training images; trials draw nested class-balanced "
            "subsets from it; where n equals the pool size all trials use the whole pool",
            "kernel: ZCA fitted on the pool (a superset of each trial's training set), one kernel "
            "matrix over pool + test; alpha by exact leave-one-out on each trial's training set",
            "scattering: standardization statistics of the pool, one RBF matrix over pool + test",
            "kernel seconds per trial exclude the shared kernel matrix; "
            "gram_seconds_estimate is the cost of computing this trial's own kernel alone",
        ],
    }
    store = ResultStore(out / f"{NAME}.json", ("method", "n", "trial"), header,
                        sha256(resolved, train_images, train_labels, test_images, test_labels))
    store.session["request"] = {
        "sizes": list(config.sizes), "methods": list(config.methods),
        "trials": [config.trials_for(n) for n in config.sizes]}
    jobs = [(m, n, t) for n in config.sizes for t in range(config.trials_for(n))
            for m in config.methods if not store.done(method=m, n=n, trial=t)]
    matrices: dict[str, np.ndarray] = {}
    for method, n, trial in tqdm(jobs, desc="small-data trials", disable=not progress):
        seed = trial_seed(config.seed, trial)
        subset = balanced_subset(pool_labels, n, seed=seed)
        tic = time.perf_counter()
        if method in ("kernel", "scattering"):
            if method not in matrices:
                matrices[method], info = (
                    _kernel_matrix(pool, test, params[method], out, progress)
                    if method == "kernel" else _scattering_matrix(pool, test, params[method], progress))
                store.update(**{f"{method}_matrix": info})
                tic = time.perf_counter()
            result = _ridge_trial(matrices[method], pool_size, subset, pool_labels, test_y,
                                  params[method]["alphas"])
            rate = store.payload["kernel_matrix"].get("pairs_per_second") if method == "kernel" else None
            if rate:
                result["gram_seconds_estimate"] = round(
                    pool_test_pairs(n, len(test_y), params[method]["flip"]) / rate, 2)
        else:
            model = make_estimator(method, params[method], n, random_state=seed)
            model.fit(pool[subset], pool_labels[subset])
            result = {"accuracy": float(np.mean(model.predict(test) == test_y))}
        store.add({"method": method, "n": n, "trial": trial, "seed": seed,
                   "seconds": round(time.perf_counter() - tic, 3), **result})
    return write_outputs(store, out)


def write_outputs(source: ResultStore | dict, out: str | pathlib.Path) -> dict:
    """Summary, Markdown table and plot of a small-data store or payload (complete or partial)."""
    out = pathlib.Path(out)
    payload = write_results(source, out / f"{NAME}.json",
                            lambda p: {"summary": summarize(p["records"])})
    summary = payload["summary"]
    config = payload["config"]
    methods = markdown_table(["method", "configuration"],
                             [[m, payload["methods"][m]] for m in dict.fromkeys(
                                 r["method"] for r in summary)])
    matrix = payload.get("kernel_matrix")
    cost = "" if not matrix else (
        f"\nShared kernel matrix (pool {config['pool_size']} + test {config['test_size']}): "
        f"{matrix['pairs']:,} distinct pairs; {matrix['evaluations']:,} kernel evaluations "
        f"computed in {matrix['seconds']:.0f} s ({matrix['pairs_per_second']} per second).\n")
    text = (f"# Small-data regime: {payload.get('data', '')}\n\n"
            f"Class-balanced training sets drawn from a pool of {config['pool_size']} images, "
            f"fixed test set of {config['test_size']} images; test accuracy in percent, mean ± "
            "sample standard deviation over trials (number of trials in parentheses), and "
            "seconds per trial.\n\n" + accuracy_table(summary) + "\n" + methods + cost +
            "\n" + "\n".join(f"- {note}" for note in payload["notes"]) + "\n"
            f"\nMachine: {payload['machine']['cpu']}, {payload['machine']['cpu_count']} cores.\n")
    (out / f"{NAME}.md").write_text(text)
    plot_accuracy_vs_n(summary, out / f"{NAME}.png",
                       title=f"Small-data regime: {payload.get('data', '')}")
    return payload
