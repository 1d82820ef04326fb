"""Experiment 1, the small-data regime, following the kernel paper's protocol: class-balanced
training sets of n images (10, 20, 40, ..., 1280), several trials per n, one fixed test set;
compositional kernel vs its own CNN vs ResNet vs scattering (+ ridge, and the ISTC model); mean
and standard deviation. Every method selects its hyperparameters on each trial's training images
only (:mod:`.selection`; grids: ``SmallDataConfig.grids``, default ``SELECTION_GRIDS``).

Design (the kernel is the cost):
- Pool: one class-balanced pool of ``pool_size`` training images (default: the largest n) is
  drawn once; trial t at size n trains on ``balanced_subset(pool_labels, n, seed=s_t)`` of the
  pool (the subsets of one trial are nested in n). Where n equals the pool size, every trial
  trains on the whole pool: the kernel and scattering trials then coincide, and only the networks'
  random initialization and augmentation differ between them. A pool size equal to the number of
  training images given is all of them, with their class counts as they are (:func:`draw`; the
  exact CIFAR-10 subset's 4,000 images hold 366-422 per class, so its largest class-balanced
  pool is 3,660): n = 4,000 trains on every exact training image.
- Kernel: for each point (ZCA bias, flip) of its grid, the pool block K[pool, pool] is computed
  once (resumable Zarr stores in the output folder, ``gram-<checksum of the whitened images and
  kernel parameters>/pool.zarr``) and shared by every trial, which selects the point and alpha
  by exact leave-one-out on its rows and columns; the test rows K[test, pool]
  (``.../test.zarr``) are computed only for points some trial chose. The flip-symmetrized kernel
  is the plain one plus its mirror half K(x, flip y) (``pool_mirror.zarr``, ``test_mirror.zarr``
  beside them), so flips off and on at one ZCA bias share the plain matrix. Cost in pairs, P
  pool and T test images: P (P + 1) / 2 per ZCA bias, twice where its flip-on point is in the
  grid, for selection, plus T P for the plain test rows of a chosen bias and T P more for its
  mirror half where a flip-on point was chosen; e.g. the default grid (3 biases x flips on/off)
  at P = 1280, T = 1000: 3 x 2 x 819,840 = 4.9M pool pairs (9 x 819,840 = 7.4M without the
  shared plain matrices) plus 1.3M-2.6M test pairs per chosen bias. ZCA (per bias) is fitted on
  every training image the experiment is given (the exact CIFAR-10 subset: 4,000), labels
  unused, as the paper fits it on its whole training set; never on a test image. Not on the pool
  or the trial's n images: with fewer images than the 3,072 pixel dimensions the whitening spans
  only their own subspace and a small bias multiplies the test images' components outside it by
  up to 1/sqrt(bias) (~316 at 1e-5), while leave-one-out cannot see it, because every left-out
  image helped fit the whitening. Measured (exact subset, Myrtle5, no flips, n = 160, ZCA
  fitted on those 160 images): leave-one-out chose bias 1e-5 and the kernel scored 21.6% on the
  test images, below its own network (29%); with n = 100, bias 1e-2 gave 28.0% against 22.0%
  at 1e-5.
- Scattering + ridge: per J of its grid, features of the pool and test images once, standardized
  with the pool's statistics, RBF kernel matrix once; J and alpha by exact LOO per trial.
- CNN, ResNet, ISTC: per trial, :func:`.selection.select_and_fit` on the trial's images
  (stratified hold-out), seeded by the trial.
Each record (method, n, trial) carries its accuracy, ``selection`` (grid, grid size, method: LOO
or hold-out fraction, chosen values, training-side scores, seconds), ``fit_seconds``,
``predict_seconds`` (measured; for the ridge methods on the shared matrices) and
``cost_seconds`` = fit + predict (+ for the kernel, ``gram_seconds_estimate``: its own ``pairs``,
P(n) = n (n + 1) / 2 + T n (x2 with flips), at the measured pairs per second; for scattering +
ridge, ``feature_seconds_estimate``: the shared matrix's seconds x (n + T) / (P + T)).
Results are appended to ``small_data.json`` after every (method, n, trial); a restarted run with
the same configuration skips what is done. The file's checksum covers the data, pool, test set,
seed and hold-out fraction; each method's parameters and grid are recorded per method
(``config_<method>``): a run of a method with other settings is refused where that method has
results, and runs of other methods or with more sizes or trials add to the file. ``small_data.md``, ``small_data.png`` (accuracy vs n)
and ``small_data_cost.png`` (accuracy vs cost) are written at the end (and by
:func:`write_outputs` from any partial JSON).
"""
from __future__ import annotations

import dataclasses
import json
import pathlib
import time

import numpy as np
from tqdm.auto import tqdm

from ...kernels import ZCAWhitening
from ...kernels._shared.defaults import (SELECTION_HOLDOUT_FRACTION, SMALL_DATA_PARAMS,
                                         SMALL_DATA_SIZES, SMALL_DATA_TRIALS)
from ...kernels._shared.digest import sha256
from ...scattering import scatter
from ...scattering.ridge import feature_standardization, rbf_kernel, scattering_rows
from ..datasets import balanced_subset
from ..report import (accuracy_table, data_label, machines_line, markdown_table, plot_accuracy_vs_cost,
                      plot_accuracy_vs_n, selection_table, summarize)
from .gram_cache import gram_block, pool_test_pairs, selection_pairs, stores_cost
from .methods import METHODS, all_params, describe, kernel_spec
from .selection import check_grid, default_grids, ridge_selection, select_and_fit
from .store import ResultStore, write_results

NAME = "small_data"
#: the methods fitted by ridge on shared matrices: deterministic, so at n = the pool size their
#: trials coincide
RIDGE_METHODS = ("kernel", "scattering")


@dataclasses.dataclass
class SmallDataConfig:
    """sizes: training-set sizes n (multiples of the number of classes); trials: one count for
    every n or one per n; methods: a subset of ``METHODS``; pool_size: images in the training pool
    (default max(sizes)); test_size: a class-balanced subset of the test set (None: all of it);
    seed: pool, test subset and trial subsets; params: per-method parameters (defaults:
    ``SMALL_DATA_PARAMS`` over ``EXPERIMENT_PARAMS``, both in ``kernels._shared.defaults``);
    grids: per-method selection grids over those parameters (default ``SELECTION_GRIDS``; ``{}``
    for a method: its params as given, the ridge methods' alphas still by LOO);
    holdout_fraction: of each class, for the methods selected on a hold-out split."""
    sizes: tuple[int, ...] = SMALL_DATA_SIZES
    trials: int | tuple[int, ...] = SMALL_DATA_TRIALS
    methods: tuple[str, ...] = METHODS
    pool_size: int | None = None
    test_size: int | None = None
    seed: int = 0
    params: dict = dataclasses.field(default_factory=lambda: all_params(SMALL_DATA_PARAMS))
    grids: dict = dataclasses.field(default_factory=lambda: default_grids(METHODS))
    holdout_fraction: float = SELECTION_HOLDOUT_FRACTION

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
        if not 0 < self.holdout_fraction < 1:
            raise ValueError(f"holdout_fraction must be between 0 and 1; got {self.holdout_fraction}")
        for method in self.methods:
            check_grid(method, self.grids.get(method, {}), self.params[method])


def trial_seed(seed: int, trial: int) -> int:
    """The seed of trial ``trial``: the same for every n, so one trial's subsets are nested."""
    return int(np.random.SeedSequence([seed, trial]).generate_state(1)[0])


def draw(labels: np.ndarray, n: int, *, seed: int) -> np.ndarray:
    """Sorted indices int64 (n,): every position where n is the number of labels (the class
    counts as they are), else ``balanced_subset(labels, n, seed=seed)``."""
    if n == len(labels):
        return np.arange(n, dtype=np.int64)
    return balanced_subset(labels, n, seed=seed)


def pool_phrase(pool_size: int, class_counts: list[int] | None) -> str:
    """How the pool was drawn; class_counts None (files written before they were recorded): a
    class-balanced pool."""
    if not class_counts or min(class_counts) == max(class_counts):
        return f"class-balanced pool of {pool_size} training images"
    return (f"pool of all {pool_size} training images given, not class-balanced "
            f"({min(class_counts)}-{max(class_counts)} per class)")


def _point_key(point: dict) -> tuple:
    return tuple(sorted(point.items()))


def _kernel_matrix(pool, test, whitening_images, params, out: pathlib.Path, progress: bool, *,
                   test_rows: bool) -> tuple[np.ndarray, dict]:
    """K[pool, pool] (P, P), or with ``test_rows`` K[test, pool] (T, P), of the ZCA-whitened
    images (ZCA fitted on ``whitening_images``, all the training images the experiment was given,
    bias ``params["zca_bias"]``), from resumable stores in
    ``out/gram-<checksum of the plain kernel's parameters and images>/``: ``pool.zarr`` /
    ``test.zarr`` hold the plain kernel and, with ``params["flip"]``, ``pool_mirror.zarr`` /
    ``test_mirror.zarr`` its mirror half K(x, flip y) (``gram(..., flip="mirror")``); the
    flip-symmetrized kernel is their sum, so a grid over flips off and on computes the plain
    kernel of a ZCA bias once. Returns the block and its cost (``pairs``: the block's distinct
    pairs, x2 with flips, plus :func:`.gram_cache.stores_cost` of its stores)."""
    pool = pool.astype(np.float32)
    zca = ZCAWhitening(bias=params["zca_bias"]).fit(whitening_images.astype(np.float32))
    pool_w, test_w = zca.transform(pool), zca.transform(test.astype(np.float32))
    folder = out / f"gram-{sha256({**params, 'flip': False}, pool_w, test_w)}"
    folder.mkdir(parents=True, exist_ok=True)
    name = "test" if test_rows else "pool"
    x, y = (test_w, pool_w) if test_rows else (pool_w, None)
    halves = [(folder / f"{name}.zarr", False)] + (
        [(folder / f"{name}_mirror.zarr", "mirror")] if params["flip"] else [])
    k = sum(gram_block(kernel_spec(params), x, y, flip=flip, store=store, progress=progress,
                       preprocessing={"zca_bias": params["zca_bias"],
                                      "zca_fitted_on": f"{len(whitening_images)} training images"})
            for store, flip in halves)
    pairs = (len(test) * len(pool) if test_rows else len(pool) * (len(pool) + 1) // 2) * (
        2 if params["flip"] else 1)
    stores = [store for store, _ in halves]
    return k, {"pairs": pairs, **stores_cost(stores),
               "stores": [str(store.relative_to(out)) for store in stores]}


def _scattering_matrix(pool, test, params, progress: bool) -> tuple[np.ndarray, dict]:
    """RBF kernel (P + T, P) of standardized scattering rows (statistics of the pool)."""
    tic = time.perf_counter()
    features = scatter(np.concatenate([pool, test]), J=params["J"], progress=progress)
    rows = scattering_rows(features, feature_standardization(features[:len(pool)]))
    k = rbf_kernel(rows, rows[:len(pool)])
    return k, {"seconds": round(time.perf_counter() - tic, 3)}


class _SharedMatrices:
    """The ridge methods' matrices per grid point, computed on first use and kept for all trials
    (``info`` per method: the cost of each, for the results file)."""

    def __init__(self, pool, test, whitening_images, params: dict, out: pathlib.Path, progress: bool):
        self.pool, self.test, self.params, self.out, self.progress = pool, test, params, out, progress
        self.whitening_images = whitening_images
        self.blocks: dict[tuple, np.ndarray] = {}
        self.info: dict[str, dict] = {"kernel": {}, "scattering": {}}

    def _get(self, method: str, point: dict, part: str) -> np.ndarray:
        key = (method, part, _point_key(point))
        if key not in self.blocks:
            params = {**self.params[method], **point}
            if method == "kernel":
                block, info = _kernel_matrix(self.pool, self.test, self.whitening_images, params,
                                             self.out, self.progress,
                                             test_rows=part == "test")
            else:
                block, info = _scattering_matrix(self.pool, self.test, params, self.progress)
            self.blocks[key] = block
            self.info[method][f"{part} {_label(point)}"] = info
        return self.blocks[key]

    def train(self, method: str, point: dict, subset: np.ndarray) -> np.ndarray:
        """(n, n) kernel of the pool images ``subset`` at ``point``."""
        block = self._get(method, point, "pool" if method == "kernel" else "all")
        return block[np.ix_(subset, subset)]

    def test_rows(self, method: str, point: dict, subset: np.ndarray) -> np.ndarray:
        """(T, n) kernel of the test images against the pool images ``subset`` at ``point``."""
        if method == "kernel":
            return self._get(method, point, "test")[:, subset]
        return self._get(method, point, "all")[len(self.pool):, subset]


def _label(point: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in point.items()) or "params"


def _ridge_trial(matrices: _SharedMatrices, method: str, params: dict, grid: dict,
                 subset: np.ndarray, labels: np.ndarray, test_labels: np.ndarray) -> dict:
    """Select (grid x alphas, exact LOO) and fit on the training block ``subset`` of the pool;
    accuracy on the test rows of the chosen point."""
    ridge, selection, fit_seconds = ridge_selection(
        grid, params["alphas"], lambda point: matrices.train(method, point, subset), labels[subset])
    point = {k: selection["chosen"][k] for k in grid}
    rows = matrices.test_rows(method, point, subset)
    tic = time.perf_counter()
    predictions = ridge.predict(rows)
    return {"accuracy": float(np.mean(predictions == test_labels)), "alpha": ridge.alpha_,
            "loo_accuracy": ridge.loo_score_, "selection": selection,
            "fit_seconds": round(fit_seconds, 4),
            "predict_seconds": round(time.perf_counter() - tic, 4)}


def _kernel_costs(result: dict, params: dict, n: int, test: int, rate: float | None) -> dict:
    """The kernel trial's own pairs (train + test at the chosen flip), the pairs of its selection's
    training kernels over the grid, and their seconds at the measured ``rate``."""
    pairs = pool_test_pairs(n, test, result["selection"]["chosen"].get("flip", params["flip"]))
    searched = selection_pairs(result["selection"], n, params["flip"])
    costs = {"pairs": pairs, "selection_pairs": searched}
    if rate:
        costs["gram_seconds_estimate"] = round(pairs / rate, 3)
        costs["selection_gram_seconds_estimate"] = round(searched / rate, 3)
    return costs


def _rate(info: dict, out: pathlib.Path) -> float | None:
    """Kernel evaluations per second over the finished runs of this session's distinct stores
    (a flip point's ``info`` lists the plain store it shares with its bias's no-flip point)."""
    stores = {store for i in info.values() for store in i["stores"]}
    cost = stores_cost([out / store for store in sorted(stores)])
    return cost["evaluations"] / cost["seconds"] if cost["seconds"] else None


def run(train_images: np.ndarray, train_labels: np.ndarray, test_images: np.ndarray,
        test_labels: np.ndarray, config: SmallDataConfig, out: str | pathlib.Path, *,
        data: str = "", progress: bool = True) -> dict:
    """Run (or resume) the experiment; write ``out/small_data.{json,md,png}`` and
    ``small_data_cost.png``; return the payload.

    Images NHWC (uint8 or float), labels (N,) integers 0..C-1; ``data`` names the data set in
    the report. Test images and labels are used for the test rows and the accuracy only.
    """
    out = pathlib.Path(out)
    train_labels, test_labels = np.asarray(train_labels), np.asarray(test_labels)
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    config.check(num_classes)
    pool_size = config.pool_size or max(config.sizes)
    pool_index = draw(train_labels, pool_size, seed=config.seed)
    test_index = (np.arange(len(test_labels)) if config.test_size is None
                  else balanced_subset(test_labels, config.test_size, seed=config.seed))
    pool, pool_labels = train_images[pool_index], train_labels[pool_index]
    test, test_y = test_images[test_index], test_labels[test_index]
    params = {m: config.params[m] for m in METHODS}
    grids = {m: config.grids.get(m, {}) for m in config.methods}
    resolved = {"pool_size": pool_size, "test_size": len(test_index), "seed": config.seed,
                "params": params}
    class_counts = np.bincount(pool_labels, minlength=num_classes).tolist()
    header = {
        "experiment": NAME, "data": data, "config": {**dataclasses.asdict(config), **resolved},
        "num_classes": num_classes, "methods": {m: describe(m, params[m], grids.get(m)) for m in METHODS},
        "pool_index": pool_index.tolist(), "test_index": test_index.tolist(),
        "pool_class_counts": class_counts,
        "notes": [
            f"{pool_phrase(pool_size, class_counts)}; trials draw nested class-balanced "
            "subsets from it; where n equals the pool size all trials use the whole pool",
            "selection on each trial's training images only: kernel and scattering + ridge by exact "
            "leave-one-out over their grid x alphas, the networks and ISTC on a stratified hold-out "
            f"of {config.holdout_fraction:g} of each class (then refitted on all n); no selection "
            "where no class has two images",
            "kernel: ZCA (per bias) fitted on all the training images given (labels unused), "
            "pool matrices per grid point shared by all "
            "trials, test rows only for the chosen points",
            "scattering: standardization statistics of the pool, one RBF matrix over pool + test "
            "per J",
            "cost_seconds = fit + predict seconds (measured), plus for the kernel the estimated "
            "seconds of its own kernel matrix (pairs at the measured rate) and for scattering + "
            "ridge its share of the feature matrix; selection seconds are reported apart",
        ],
    }
    # the file's checksum: data, pool, test set, seed and hold-out; each method's own parameters
    # and grid are recorded beside it (``config_<method>``), so one method's recipe can change
    # without invalidating the others' results
    shared = {k: v for k, v in resolved.items() if k != "params"}
    store = ResultStore(out / f"{NAME}.json", ("method", "n", "trial"), header,
                        sha256({**shared, "holdout": config.holdout_fraction,
                                "method_configs": "recorded per method"},
                               train_images, train_labels, test_images, test_labels))
    store.update(**{config_key(m): _check_method_config(store, m, params[m], grids[m])
                    for m in config.methods})
    store.session["request"] = {
        "sizes": list(config.sizes), "methods": list(config.methods),
        "trials": [config.trials_for(n) for n in config.sizes], "grids": grids}
    store.commit()   # the request is on file from the start (a long kernel run shows as running)
    jobs = [(m, n, t) for n in config.sizes for t in range(config.trials_for(n))
            for m in config.methods if not store.done(method=m, n=n, trial=t)]
    matrices = _SharedMatrices(pool, test, train_images, params, out, progress)
    for method, n, trial in tqdm(jobs, desc="small-data trials", disable=not progress):
        seed = trial_seed(config.seed, trial)
        subset = draw(pool_labels, n, seed=seed)
        if method in RIDGE_METHODS:
            result = _ridge_trial(matrices, method, params[method], grids[method], subset,
                                  pool_labels, test_y)
            store.update(**{f"{method}_matrices": matrices.info[method]})
            extra = 0.0
            if method == "kernel":
                result.update(_kernel_costs(result, params[method], n, len(test_y),
                                            _rate(matrices.info["kernel"], out)))
                extra = result.get("gram_seconds_estimate", 0.0)
            else:
                info = matrices.info["scattering"]
                seconds = sum(i["seconds"] for i in info.values()) / max(len(info), 1)
                extra = result["feature_seconds_estimate"] = round(
                    seconds * (n + len(test_y)) / (pool_size + len(test_y)), 3)
        else:
            model, _, selection, fit_seconds = select_and_fit(
                method, params[method], grids[method], pool[subset], pool_labels[subset],
                seed=seed, fraction=config.holdout_fraction)
            tic = time.perf_counter()
            predictions = model.predict(test)
            result = {"accuracy": float(np.mean(predictions == test_y)), "selection": selection,
                      "fit_seconds": round(fit_seconds, 3),
                      "predict_seconds": round(time.perf_counter() - tic, 3)}
            extra = 0.0
        cost = result["fit_seconds"] + result["predict_seconds"] + extra
        store.add({"method": method, "n": n, "trial": trial, "seed": seed,
                   "seconds": round(cost, 3), "cost_seconds": round(cost, 3),
                   "selection_seconds": result["selection"]["seconds"], **result})
    return write_outputs(store, out)


def config_key(method: str) -> str:
    """The results file's field holding ``method``'s parameters and grid."""
    return f"config_{method}"


def _check_method_config(store: ResultStore, method: str, params: dict, grid: dict) -> dict:
    """``{"params", "grid"}`` of ``method`` for the results file; ValueError (one line) where the
    file holds results of ``method`` made with other parameters or another grid."""
    wanted = json.loads(json.dumps({"params": params, "grid": grid}))
    stored = store.payload.get(config_key(method))
    if stored is not None and stored != wanted and any(
            r["method"] == method for r in store.records):
        differ = sorted(k for part in ("params", "grid")
                        for k in stored[part].keys() | wanted[part].keys()
                        if stored[part].get(k) != wanted[part].get(k))
        raise ValueError(f"{store.path} holds {method} results made with other settings "
                         f"({', '.join(differ)} differ); choose another output folder, or run "
                         f"{method} with the stored settings")
    return wanted


def method_descriptions(payload: dict) -> dict[str, str]:
    """{method: :func:`describe` line} of each method with results, from its recorded settings."""
    return {m: describe(m, **payload[config_key(m)]) if config_key(m) in payload
            else payload["methods"][m] for m in dict.fromkeys(r["method"] for r in payload["records"])}


def write_outputs(source: ResultStore | dict, out: str | pathlib.Path) -> dict:
    """Summary, Markdown tables and plots of a small-data store or payload (complete or partial)."""
    out = pathlib.Path(out)
    payload = write_results(source, out / f"{NAME}.json",
                            lambda p: {"summary": summarize(p["records"])})
    summary = payload["summary"]
    config = payload["config"]
    methods = markdown_table(["method", "configuration (the selected values replace these: "
                              "see the selection table)"],
                             [[m, line] for m, line in method_descriptions(payload).items()])
    matrices = payload.get("kernel_matrices") or {}
    cost = "" if not matrices else (
        f"\nShared kernel matrices (pool {config['pool_size']} + test {config['test_size']}), "
        "per grid point (a point with flips includes the plain half it shares with its bias's "
        "point without): " + "; ".join(
            f"{name}: {info['pairs']:,} pairs, {info['evaluations']:,} evaluations in "
            f"{info['seconds']:.0f} s" for name, info in matrices.items()) + ".\n")
    title = f"Small-data regime: {data_label(payload)}"
    pool = pool_phrase(config["pool_size"], payload.get("pool_class_counts"))
    text = (f"# {title}\n\n"
            f"Training sets: class-balanced subsets of a {pool}; at n = the pool size, the whole "
            f"pool. A fixed test set of {config['test_size']} images; test accuracy in percent, mean ± "
            "sample standard deviation over trials (number of trials in parentheses), and "
            "cost seconds per trial (fit + predict, see the notes).\n\n" + accuracy_table(summary)
            + "\n## Hyperparameter selection (training data only)\n\n"
            + selection_table(payload["records"]) + "\n" + methods + cost +
            "\n" + "\n".join(f"- {note}" for note in payload["notes"]) + "\n"
            f"\n{machines_line(payload)}\n")
    (out / f"{NAME}.md").write_text(text)
    budget = f"{title}; pool {config['pool_size']}, test {config['test_size']}"
    chance = 1 / payload.get("num_classes", 10)
    plot_accuracy_vs_n(summary, out / f"{NAME}.png", chance=chance, title=budget)
    plot_accuracy_vs_cost(summary, out / f"{NAME}_cost.png", chance=chance, title=budget)
    return payload

