"""Hyperparameter selection on the training data only, with equal care for every method: each
method searches a stated grid (defaults: ``SELECTION_GRIDS`` in ``kernels._shared.defaults``,
the cartesian product of its lists) and reports it, its size, how points were scored, the chosen
values and what the search cost in seconds. No function here takes test data.

- ``kernel`` and ``scattering`` (kernel ridge): every grid point (kernel: ZCA bias x flips;
  scattering: J) and every ridge alpha is scored by exact leave-one-out accuracy on the training
  set (one eigendecomposition per grid point gives all alphas); grid size = points x alphas. The
  best fitted model is kept (no refit). The kernel's points share one
  :class:`~tangentless.kernels.GramCache` during the search, so flips on and off at one ZCA bias
  compute the plain half of the kernel once.
- ``cnn``, ``resnet`` (peak lr x epochs at the fixed width) and ``istc`` (lr): a stratified
  hold-out split of the training images (``SELECTION_HOLDOUT_FRACTION`` of each class, at least
  one image, only from classes with two or more), each point trained on the rest and scored by
  accuracy on the held-out images; the best point is refitted on all training images. Where no
  class has two images (n = number of classes) there is nothing to hold out: the method's
  configured values are used and the record says ``"method": "none"``; where their training
  diverges (its training loss shows it: no held-out data needed), the grid's next lower learning
  rate is used instead, and so on down (the record lists the failed values under ``"diverged"``).
  A grid point whose training diverges (:class:`~tangentless.kernels._shared.training.
  TrainingDivergedError`: its learning rate is too high for these images) scores None and is
  listed under ``"diverged"``; where the refit of the best point diverges on all images, the
  next best is refitted (``"refit_diverged"`` lists the points that failed). Only where every
  point diverges does the error propagate.
Ties go to the first point in grid order.
"""
from __future__ import annotations

import itertools
import time

import numpy as np
from tqdm.auto import tqdm

from ...kernels import GramCache, ZCAWhitening
from ...kernels._shared.defaults import SELECTION_GRIDS, SELECTION_HOLDOUT_FRACTION
from ...kernels._shared.training import TrainingDivergedError
from ...solvers import KernelRidgeClassifier
from .methods import make_estimator

#: the methods whose solver gives exact leave-one-out (kernel ridge); the rest use a hold-out split
LOO_METHODS = frozenset({"kernel", "scattering"})


def grid_points(grid: dict) -> list[dict]:
    """The cartesian product of ``grid`` ({name: [values]}) as a list of {name: value}, in order
    (the last name varies fastest); ``[{}]`` for an empty grid."""
    names = list(grid)
    return [dict(zip(names, values)) for values in itertools.product(*(grid[n] for n in names))]


def check_grid(method: str, grid: dict, params: dict) -> None:
    """ValueError (one line) unless every name of ``grid`` is a parameter of ``method`` with a
    non-empty list of values."""
    for name, values in grid.items():
        if name not in params:
            raise ValueError(f"selection grid of {method}: {name!r} is not one of its parameters "
                             f"({', '.join(sorted(params))})")
        if not isinstance(values, (list, tuple)) or not values:
            raise ValueError(f"selection grid of {method}.{name}: expected a non-empty list, "
                             f"got {values!r}")


def default_grids(methods) -> dict:
    """{method: SELECTION_GRIDS[method]} (a copy) for each of ``methods``."""
    return {m: {k: list(v) for k, v in SELECTION_GRIDS.get(m, {}).items()} for m in methods}


def holdout_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Stratified (fit, held-out) sorted index arrays of ``labels`` (n,): from each class with
    c >= 2 images, max(1, round(fraction c)) (at most c - 1) held out at random; None where no
    class has two images."""
    rng = np.random.default_rng(seed)
    held = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        if len(members) >= 2:
            count = min(len(members) - 1, max(1, round(fraction * len(members))))
            held.extend(rng.permutation(members)[:count].tolist())
    if not held:
        return None
    held = np.sort(np.asarray(held, dtype=np.int64))
    return np.setdiff1d(np.arange(len(labels)), held), held


def best_index(scores: list[float | None]) -> int:
    """The index of the highest score (the first one of ties; None, a diverged point, ranks last)."""
    return ranking(scores)[0]


def ranking(scores: list[float | None]) -> list[int]:
    """Indices of ``scores`` from the highest down (stable: ties in grid order), None last."""
    values = np.asarray([-np.inf if s is None else s for s in scores], dtype=np.float64)
    return [int(i) for i in np.argsort(-values, kind="stable")]


def _record(how: dict, grid: dict, size: int, points: list[dict], scores: list, chosen: dict,
            seconds: float) -> dict:
    return {**how, "grid": grid, "grid_size": size,
            "scores": [{**p, "score": s} for p, s in zip(points, scores)], "chosen": chosen,
            "seconds": round(seconds, 3)}


def ridge_selection(grid: dict, alphas, train_kernel,
                    labels: np.ndarray) -> tuple[KernelRidgeClassifier, dict, float]:
    """Exact-LOO selection over ``grid`` x ``alphas`` from training kernels only:
    ``train_kernel(point)`` -> (n, n) kernel of the training images at that grid point. Returns
    the ridge fitted at the chosen point (its alpha by LOO), the selection record (chosen: the
    point and ``alpha``; scores: LOO accuracy per point at its best alpha; seconds: the ridge fits,
    not the kernels) and the chosen ridge's fit seconds."""
    points, fitted, seconds = grid_points(grid), [], []
    for point in points:
        k = train_kernel(point)
        tic = time.perf_counter()
        fitted.append(KernelRidgeClassifier(alphas=tuple(alphas)).fit(k, labels))
        seconds.append(time.perf_counter() - tic)
    scores = [r.loo_score_ for r in fitted]
    best = best_index(scores)
    chosen = {**points[best], "alpha": fitted[best].alpha_}
    return fitted[best], _record({"method": "loo"}, {**grid, "alpha": list(alphas)},
                                 len(points) * len(alphas), points, scores, chosen,
                                 sum(seconds)), seconds[best]


def select_and_fit(method: str, params: dict, grid: dict, images: np.ndarray, labels: np.ndarray, *,
                   seed: int = 0, fraction: float = SELECTION_HOLDOUT_FRACTION,
                   progress: bool = False, whitening_images: np.ndarray | None = None
                   ) -> tuple[object, dict, dict, float]:
    """Select ``method``'s hyperparameters over ``grid`` on (images, labels), the training set,
    and fit it there: (fitted estimator, chosen params, selection record, fit seconds of the
    returned estimator). Kernel ridge methods: each point's estimator fitted on all images, scored
    by its exact LOO accuracy (alphas included), the best kept (the record's ``seconds``: all
    fits, the kept one's included); the others: :func:`holdout_split`, the best refitted on all
    images (``seconds``: the search, without the refit). ``whitening_images``: the kernel's ZCA
    (per bias) is fitted on these (all the training images at hand, labels unused; they must
    include ``images``) rather than on ``images`` alone, which leave-one-out cannot judge when
    there are fewer of them than pixel values (see ``CompositionalKernelClassifier``)."""
    check_grid(method, grid, params)
    points, n = grid_points(grid), len(labels)
    tic = time.perf_counter()
    if method in LOO_METHODS:
        fitted, fit_seconds = [], []
        cache = {"cache": GramCache()} if method == "kernel" else {}
        whitenings: dict = {}
        for point in tqdm(points, desc=f"{method} selection", leave=False, disable=not progress):
            start = time.perf_counter()
            settings = {**params, **point}
            if method == "kernel" and whitening_images is not None:
                bias = settings["zca_bias"]
                if bias not in whitenings:
                    whitenings[bias] = ZCAWhitening(bias=bias).fit(whitening_images.astype(np.float32))
                cache["zca"] = whitenings[bias]
            fitted.append(make_estimator(method, settings, n, random_state=seed,
                                         progress=progress, **cache).fit(images, labels))
            fit_seconds.append(time.perf_counter() - start)
        scores = [m.ridge_.loo_score_ for m in fitted]
        best = best_index(scores)
        if cache:   # predictions go to the engine; the search's values are freed
            fitted[best].set_params(cache=None)
        chosen = {**points[best], "alpha": fitted[best].alpha_}
        return fitted[best], {**params, **points[best]}, _record(
            {"method": "loo"}, {**grid, "alpha": list(params["alphas"])},
            len(points) * len(params["alphas"]), points, scores, chosen,
            time.perf_counter() - tic), fit_seconds[best]
    split = holdout_split(labels, fraction, seed) if len(points) > 1 else None
    if split is None:
        reason = "a single grid point" if len(points) <= 1 else "no class has two training images"
        how: dict = {"method": "none", "reason": reason}
        failed = []
        for candidate in _unselected_candidates(params, grid):
            try:
                model, seconds = _timed_fit(method, candidate, images, labels, seed, progress)
            except TrainingDivergedError:
                failed.append({k: candidate[k] for k in grid})
                continue
            if failed:
                how["diverged"] = failed
            return model, candidate, _record(how, grid, len(points), [], [],
                                             {k: candidate[k] for k in grid}, 0.0), seconds
        raise TrainingDivergedError(f"{method}: training diverged at its configured values and at "
                                    f"every lower learning rate of its grid {grid} ({failed}); "
                                    "lower the learning rates")
    fit, held = split
    scores = []
    for point in tqdm(points, desc=f"{method} selection", leave=False, disable=not progress):
        model = make_estimator(method, {**params, **point}, len(fit), random_state=seed)
        try:
            model.fit(images[fit], labels[fit])
        except TrainingDivergedError:
            scores.append(None)
            continue
        scores.append(float(np.mean(model.predict(images[held]) == labels[held])))
    order = [i for i in ranking(scores) if scores[i] is not None]
    if not order:
        raise TrainingDivergedError(f"{method}: training diverged at every point of its selection "
                                    f"grid {grid}; lower the learning rates")
    seconds = time.perf_counter() - tic
    how = {"method": "holdout", "holdout_fraction": fraction, "holdout_images": len(held),
           "diverged": [points[i] for i, s in enumerate(scores) if s is None]}
    failed = []
    for best in order:
        chosen_params = {**params, **points[best]}
        try:
            model, fit_seconds = _timed_fit(method, chosen_params, images, labels, seed, progress)
        except TrainingDivergedError:
            failed.append(points[best])
            if best == order[-1]:
                raise
            continue
        if failed:
            how["refit_diverged"] = failed
        return model, chosen_params, _record(how, grid, len(points), points, scores, points[best],
                                             seconds), fit_seconds


def _unselected_candidates(params: dict, grid: dict) -> list[dict]:
    """Where nothing can be held out: the configured ``params``, then (for a training that
    diverges, which its own training loss shows) the grid's lower learning rates, largest first."""
    lower = sorted((lr for lr in grid.get("lr", []) if "lr" in params and lr < params["lr"]),
                   reverse=True)
    return [dict(params)] + [{**params, "lr": lr} for lr in lower]


def _timed_fit(method, params, images, labels, seed, progress) -> tuple[object, float]:
    model = make_estimator(method, params, len(labels), random_state=seed, progress=progress)
    tic = time.perf_counter()
    model.fit(images, labels)
    return model, time.perf_counter() - tic
