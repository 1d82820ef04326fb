"""scikit-learn kernel ridge estimators on precomputed kernel matrices: a classifier and a regressor."""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, cast

import numpy as np
from numpy.typing import ArrayLike
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from tangentless.kernels._shared.defaults import KERNEL_ALPHAS
from tangentless.kernels._shared.persist import (Persistent, stored_array, stored_choice,
                                                 stored_number)

from ._backend import BACKENDS, resolve_backend
from ._checks import check_alphas, check_kernel, check_targets
from ._psd import check_psd_rtol
from .direct import solve_cholesky
from .eigen import EigenPath, eigen_path, psd_tolerance
from .iterative import bcd, pcg
from .nystrom import nystrom_fit, uniform_centers

SOLVERS = ("auto", "cholesky", "eigen", "bcd", "cg", "nystrom")
SELECTIONS = ("loo", "holdout")


def _one_hot(labels: np.ndarray, n_classes: int, center: bool) -> tuple[np.ndarray, np.ndarray]:
    """(n,) class indices -> one-hot targets (n, c), minus their column means if ``center``,
    and that offset (c,)."""
    targets = np.eye(n_classes)[labels]
    offset = targets.mean(axis=0) if center else np.zeros(n_classes)
    return targets - offset, offset


def _best(accuracy: np.ndarray, mse: np.ndarray) -> int:
    """Index of the highest accuracy; ties go to the lowest mean squared error."""
    return int(np.argmin(np.where(accuracy == accuracy.max(), mse, np.inf)))


def alphas_to_json(alphas) -> float | list[float]:
    """Ridge alphas (a number, a sequence or an array) as JSON: a float or a list of floats."""
    values = np.asarray(alphas, dtype=np.float64)
    return float(values) if values.ndim == 0 else values.tolist()


def alphas_from_json(alphas) -> float | tuple[float, ...]:
    """The inverse of :func:`alphas_to_json`: a float or a tuple of floats."""
    return tuple(alphas) if isinstance(alphas, list) else alphas


class AlphaGridParams:
    """Persistence of an estimator whose ``alphas`` parameter is a number, sequence or array:
    saved as JSON numbers (:func:`alphas_to_json`), read back as a float or a tuple."""
    # the estimator's, declared for type checkers (annotations only)
    get_params: Callable[..., dict]
    alphas: Any

    def _params_to_json(self) -> dict:
        return {**self.get_params(deep=False), "alphas": alphas_to_json(self.alphas)}

    @classmethod
    def _params_from_json(cls, params: dict) -> dict:
        return {**params, "alphas": alphas_from_json(params["alphas"])}


class KernelRidgeClassifier(AlphaGridParams, Persistent, ClassifierMixin, BaseEstimator):
    """One-vs-all kernel ridge regression on one-hot labels, with alpha chosen on training data.

    ``fit(K_train, y)`` takes the (n, n) training kernel; ``predict(K_test)`` and
    ``decision_function(K_test)`` take the (n_test, n) kernel between test and training points.

    Alpha selection, when ``alphas`` has several values: with ``selection="loo"`` and n <=
    ``max_loo_size``, by exact leave-one-out accuracy from one eigendecomposition (``eigen_path``;
    ties go to the lower LOO squared error; the eigen solver gets this LOO even for one alpha);
    otherwise on a stratified held-out fraction ``holdout_fraction`` of the training points,
    after which the model is refitted on all of them. Test data are never used.

    The final coefficients come from ``solver``: "eigen" (the path itself), "cholesky", or "bcd",
    "cg", "nystrom" (``tangentless.solvers.iterative`` / ``.nystrom``); "auto" is "eigen" for
    n <= ``max_loo_size``, else "cholesky". ``solver_params`` go to an explicit cholesky, bcd, cg or
    nystrom solver (e.g. ``{"jitter": True}``, ``{"epochs": 20}``, ``{"solver": "falkon"}``).
    "nystrom" fits on ``n_centers`` training points drawn uniformly (``uniform_centers``, seeded
    from ``random_state``, which also seeds the holdout split). ``center=True`` subtracts the
    class frequencies from the targets and adds them back to the scores (the LOO holds them fixed
    rather than recomputing them without each point). ``backend``: "scipy" (host), "jax"
    (float64 on JAX's default device, a GPU where present) or None (``default_backend()``: JAX
    where it sees a GPU), passed to every solver. ``psd_rtol``: the relative PSD tolerance every
    solver gets (an eigenvalue >= -psd_rtol x the largest counts as 0; see
    ``tangentless.solvers._psd``); None: ``psd_tolerance`` of K_train's dtype; pass the precision
    the kernel was computed in (e.g. 1e-5 for float32 stages stored as float64).

    Attributes: classes_; coef_ (n, c), or (n_centers, c) on centers_ (indices; None otherwise);
    offset_ (c,); alpha_; solver_ (the one used); backend_ (the one used); psd_rtol_
    (the psd_rtol used);
    selection_ ("loo", "holdout", or None for a single alpha fitted without one); cv_scores_
    (accuracy for every alpha, LOO or holdout; or None); loo_score_ (LOO accuracy at alpha_, or
    None); path_ (the ``EigenPath`` of a LOO selection, or None); n_features_in_ (= n).
    ``save(path)`` / ``KernelRidgeClassifier.load(path)``: all of them as arrays + JSON, no pickle.
    """

    def __init__(self, alphas: ArrayLike = KERNEL_ALPHAS, solver: str = "auto", center: bool = False,
                 selection: str = "loo", max_loo_size: int = 20000, holdout_fraction: float = 0.2,
                 n_centers: int = 1000, solver_params: dict[str, Any] | None = None,
                 random_state: int | np.random.RandomState | None = 0, backend: str | None = None,
                 psd_rtol: float | None = None) -> None:
        self.alphas = alphas
        self.solver = solver
        self.center = center
        self.selection = selection
        self.max_loo_size = max_loo_size
        self.holdout_fraction = holdout_fraction
        self.n_centers = n_centers
        self.solver_params = solver_params
        self.random_state = random_state
        self.backend = backend
        self.psd_rtol = psd_rtol

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.pairwise = True
        return tags

    def _check_params(self, n: int) -> tuple[np.ndarray, str]:
        """Validated alphas and the solver that will be used for n training points."""
        if self.solver not in SOLVERS:
            raise ValueError(f"solver must be one of {SOLVERS}; got {self.solver!r}")
        if self.selection not in SELECTIONS:
            raise ValueError(f"selection must be one of {SELECTIONS}; got {self.selection!r}")
        if not 0 < self.holdout_fraction < 1:
            raise ValueError(f"holdout_fraction must be in (0, 1); got {self.holdout_fraction}")
        if self.solver_params and self.solver in ("auto", "eigen"):
            raise ValueError(f"solver_params apply to an explicit cholesky, bcd, cg or nystrom "
                             f"solver; got solver={self.solver!r}")
        for name in ("backend", "psd_rtol"):
            if name in (self.solver_params or {}):
                raise ValueError(f"pass {name} to KernelRidgeClassifier({name}=...), not in "
                                 "solver_params")
        if self.solver == "auto":  # held-out selection: one Cholesky per alpha beats an eigh
            loo = self.selection == "loo" and n <= self.max_loo_size
            return check_alphas(self.alphas), "eigen" if loo else "cholesky"
        return check_alphas(self.alphas), self.solver

    def _solve(self, solver: str, k: np.ndarray, targets: np.ndarray, alpha: float):
        """Coefficients for one alpha, and the center indices they sit on (None: all points)."""
        params = dict(self.solver_params or {}, backend=self.backend_, psd_rtol=self.psd_rtol_)
        if solver == "eigen":
            return eigen_path(k, targets, alpha, psd_rtol=self.psd_rtol_,
                              backend=self.backend_).coef[0], None
        if solver == "cholesky":
            return solve_cholesky(k, targets, alpha, **params), None
        if solver == "bcd":
            return bcd(k, targets, alpha, **params).coef, None
        if solver == "cg":
            return pcg(k, targets, alpha, **params).coef, None
        n = k.shape[0]
        seed = check_random_state(self.random_state).randint(2 ** 31)
        centers = uniform_centers(n, min(self.n_centers, n), seed=seed)
        coef = nystrom_fit(k[:, centers], k[np.ix_(centers, centers)], targets, alpha, **params)
        return coef, centers

    def _holdout_scores(self, solver, k, labels, alphas) -> tuple[np.ndarray, np.ndarray]:
        """Accuracy and squared error (a,) on a stratified held-out part of the training points."""
        n, n_classes = k.shape[0], self.classes_.size
        n_held = int(np.ceil(self.holdout_fraction * n))
        stratify = (np.bincount(labels).min() >= 2 and n_classes <= n_held <= n - n_classes)
        fit_idx, held_idx = train_test_split(
            np.arange(n), test_size=n_held, random_state=self.random_state,
            stratify=labels if stratify else None)
        targets, offset = _one_hot(labels[fit_idx], n_classes, self.center)
        k_fit, k_held = k[np.ix_(fit_idx, fit_idx)], k[np.ix_(held_idx, fit_idx)]
        if solver == "eigen":
            path = eigen_path(k_fit, targets, alphas, psd_rtol=self.psd_rtol_,
                              backend=self.backend_)
            fits = [(coef, None) for coef in path.coef]
        else:
            fits = [self._solve(solver, k_fit, targets, alpha) for alpha in alphas]
        truth = np.eye(n_classes)[labels[held_idx]]
        scores = [(k_held if centers is None else k_held[:, centers]) @ coef + offset
                  for coef, centers in fits]
        accuracy = np.array([(s.argmax(axis=1) == labels[held_idx]).mean() for s in scores])
        return accuracy, np.array([np.mean((s - truth) ** 2) for s in scores])

    def fit(self, X: ArrayLike, y: ArrayLike) -> KernelRidgeClassifier:
        """Fit on the (n, n) training kernel X = K_train and labels y (n,)."""
        k, y = validate_data(self, X, y, dtype=(np.float64, np.float32))
        if k.ndim == 2 and k.shape[0] != k.shape[1]:
            raise ValueError(f"K_train must be square (n, n); got shape {k.shape}. Splitters that take "
                             "rows only (CalibratedClassifierCV) make such kernels: calibrate on images "
                             "(CompositionalKernel before the ridge in a Pipeline), or fit a "
                             "LogisticRegression on a fitted ridge's held-out decision values")
        check_classification_targets(y)
        self.psd_rtol_ = (psd_tolerance(k.dtype) if self.psd_rtol is None
                         else check_psd_rtol(self.psd_rtol))
        k = check_kernel(k, "K_train")
        self.classes_, labels = np.unique(y, return_inverse=True)
        if self.classes_.size < 2:
            raise ValueError(f"y has one class ({self.classes_[0]!r}); a classifier needs at "
                             "least 2 classes")
        n = k.shape[0]
        alphas, self.solver_ = self._check_params(n)
        self.backend_ = resolve_backend(self.backend)
        targets, self.offset_ = _one_hot(labels, self.classes_.size, self.center)
        self.path_ = self.cv_scores_ = self.loo_score_ = self.selection_ = None
        self.centers_ = None
        loo = self.selection == "loo" and n <= self.max_loo_size
        if loo and (alphas.size > 1 or self.solver_ == "eigen"):
            self.selection_ = "loo"
            self.path_ = eigen_path(k, targets, alphas, labels=labels, offset=self.offset_,
                                    psd_rtol=self.psd_rtol_, backend=self.backend_)
            # with labels, the path holds the LOO accuracy
            accuracy = cast(np.ndarray, self.path_.loo_accuracy)
            best = _best(accuracy, self.path_.loo_mse)
            self.alpha_, self.cv_scores_ = float(alphas[best]), accuracy
            self.loo_score_ = float(accuracy[best])
            if self.solver_ == "eigen":
                self.coef_ = self.path_.coef[best]
                return self
        elif alphas.size > 1:
            self.selection_ = "holdout"
            self.cv_scores_, mse = self._holdout_scores(self.solver_, k, labels, alphas)
            self.alpha_ = float(alphas[_best(self.cv_scores_, mse)])
        else:
            self.alpha_ = float(alphas[0])
        self.coef_, self.centers_ = self._solve(self.solver_, k, targets, self.alpha_)
        return self

    def _fitted_state(self) -> tuple[dict, dict]:
        meta = {"psd_rtol": self.psd_rtol_, "solver": self.solver_, "backend": self.backend_,
                "selection": self.selection_, "alpha": self.alpha_, "loo_score": self.loo_score_,
                "n_features_in": self.n_features_in_, "has_path": self.path_ is not None}
        optional = {"cv_scores": self.cv_scores_, "centers": self.centers_}
        if self.path_ is not None:
            optional.update({f"path.{f.name}": getattr(self.path_, f.name)
                             for f in dataclasses.fields(self.path_)})
        return meta, {"classes": self.classes_, "coef": self.coef_, "offset": self.offset_,
                      **{name: a for name, a in optional.items() if a is not None}}

    def _restore_fitted_state(self, meta: dict, arrays: dict) -> None:
        self.psd_rtol_ = stored_number(meta, "psd_rtol", minimum=0, below=1)
        self.solver_ = stored_choice(meta, "solver", SOLVERS[1:])
        self.backend_ = stored_choice(meta, "backend", BACKENDS)
        self.selection_ = stored_choice(meta, "selection", (*SELECTIONS, None))
        self.alpha_ = stored_number(meta, "alpha", minimum=0)
        self.loo_score_ = stored_number(meta, "loo_score", minimum=0, optional=True)
        self.n_features_in_ = n = stored_number(meta, "n_features_in", integer=True, minimum=1)
        self.classes_ = stored_array(arrays, "classes", 1, "biufU")
        c = self.classes_.size
        if c < 2 or np.unique(self.classes_).size != c:
            raise ValueError(f"classes must be at least 2 distinct labels; got {self.classes_.tolist()}")
        self.centers_ = (stored_array(arrays, "centers", 1, "iu") if "centers" in arrays else None)
        rows = n if self.centers_ is None else self.centers_.size
        if self.centers_ is not None and (self.centers_.min() < 0 or self.centers_.max() >= n):
            raise ValueError(f"centers must be indices of the {n} training points")
        self.coef_ = stored_array(arrays, "coef", 2, shape=(rows, c))
        self.offset_ = stored_array(arrays, "offset", 1, shape=(c,))
        self.cv_scores_ = stored_array(arrays, "cv_scores", 1) if "cv_scores" in arrays else None
        self.path_ = None
        if stored_choice(meta, "has_path", (True, False)):
            fields: dict[str, Any] = {
                f.name: stored_array(arrays, key, arrays[key].ndim, finite=False) if key in arrays else None
                for f in dataclasses.fields(EigenPath) for key in [f"path.{f.name}"]}
            self.path_ = EigenPath(**fields)

    def _scores(self, X) -> np.ndarray:
        """Per-class scores (n_test, c) for the (n_test, n_train) kernel X = K_test."""
        check_is_fitted(self, "coef_")
        k = check_kernel(validate_data(self, X, reset=False, dtype=np.float64), "K_test",
                         square=False)
        return (k if self.centers_ is None else k[:, self.centers_]) @ self.coef_ + self.offset_

    def decision_function(self, X: ArrayLike) -> np.ndarray:
        """Class scores (n_test, c); for two classes, score(classes_[1]) - score(classes_[0])."""
        scores = self._scores(X)
        return scores[:, 1] - scores[:, 0] if self.classes_.size == 2 else scores

    def predict(self, X: ArrayLike) -> np.ndarray:
        """Predicted labels (n_test,) for the (n_test, n_train) kernel X = K_test."""
        scores = self._scores(X)
        return self.classes_[scores.argmax(axis=1)]


REGRESSION_SOLVERS = ("auto", "eigen", "cholesky")


class KernelRidgeRegressor(AlphaGridParams, Persistent, RegressorMixin, BaseEstimator):
    """Kernel ridge regression on a precomputed kernel, with alpha chosen by exact leave-one-out:
    scikit-learn's ``KernelRidge(kernel="precomputed")`` with the alpha search built in.

    ``fit(K_train, y)``: the (n, n) training kernel and targets y (n,) or (n, t); ``predict(K_test)``
    the (n_test, n) kernel between test and training points -> (n_test,) or (n_test, t). On images,
    put :class:`~tangentless.solvers.compositional.CompositionalKernel` in front of it in a
    Pipeline. As KernelRidge, no intercept: center y first if its mean is far from 0.

    Alpha: with several ``alphas``, the one of least exact leave-one-out squared error (mean over
    points and outputs), from one eigendecomposition (``eigen_path``); test data are never used.
    ``solver``: "eigen" (the path's coefficients), "cholesky" (one factorization at the chosen
    alpha), "auto" ("eigen" when several alphas are searched, else "cholesky"). ``psd_rtol``,
    ``backend``: as :class:`KernelRidgeClassifier`.

    Attributes: coef_ (n, t) (or (n, 1) for 1-D y, returned 1-D), alpha_, solver_, backend_,
    psd_rtol_, cv_scores_ (LOO mean squared error per alpha, or None for one alpha),
    loo_score_ (that of alpha_, or None), n_features_in_ (= n), n_outputs_ (t, or None for 1-D y).
    ``save(path)`` / ``KernelRidgeRegressor.load(path)``: arrays + JSON, no pickle.
    """

    def __init__(self, alphas: ArrayLike = KERNEL_ALPHAS, solver: str = "auto", backend: str | None = None,
                 psd_rtol: float | None = None) -> None:
        self.alphas = alphas
        self.solver = solver
        self.backend = backend
        self.psd_rtol = psd_rtol

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.pairwise = True
        tags.target_tags.multi_output = True
        return tags

    def fit(self, X: ArrayLike, y: ArrayLike) -> KernelRidgeRegressor:
        """Fit on the (n, n) training kernel X = K_train and targets y (n,) or (n, t)."""
        k, y = validate_data(self, X, y, dtype=(np.float64, np.float32), multi_output=True,
                             y_numeric=True)
        if self.solver not in REGRESSION_SOLVERS:
            raise ValueError(f"solver must be one of {REGRESSION_SOLVERS}; got {self.solver!r}")
        self.psd_rtol_ = (psd_tolerance(k.dtype) if self.psd_rtol is None
                         else check_psd_rtol(self.psd_rtol))
        k = check_kernel(k, "K_train")
        targets = check_targets(y, k.shape[0], "y")
        self.n_outputs_ = None if np.ndim(y) == 1 else targets.shape[1]
        alphas = check_alphas(self.alphas)
        self.backend_ = resolve_backend(self.backend)
        self.solver_ = self.solver if self.solver != "auto" else ("eigen" if alphas.size > 1 else "cholesky")
        self.cv_scores_ = self.loo_score_ = None
        if alphas.size > 1 or self.solver_ == "eigen":
            path = eigen_path(k, targets, alphas, psd_rtol=self.psd_rtol_, backend=self.backend_)
            best = int(np.argmin(path.loo_mse))
            self.alpha_ = float(alphas[best])
            self.cv_scores_, self.loo_score_ = path.loo_mse, float(path.loo_mse[best])
            if self.solver_ == "eigen":
                self.coef_ = path.coef[best]
                return self
        else:
            self.alpha_ = float(alphas[0])
        self.coef_ = solve_cholesky(k, targets, self.alpha_, backend=self.backend_,
                                    psd_rtol=self.psd_rtol_)
        return self

    def predict(self, X: ArrayLike) -> np.ndarray:
        """Predictions (n_test,) or (n_test, t) for the (n_test, n_train) kernel X = K_test."""
        check_is_fitted(self, "coef_")
        k = check_kernel(validate_data(self, X, reset=False, dtype=np.float64), "K_test",
                         square=False)
        out = k @ self.coef_
        return out[:, 0] if self.n_outputs_ is None else out

    def _fitted_state(self) -> tuple[dict, dict]:
        meta = {"psd_rtol": self.psd_rtol_, "solver": self.solver_, "backend": self.backend_,
                "alpha": self.alpha_, "loo_score": self.loo_score_,
                "n_features_in": self.n_features_in_, "n_outputs": self.n_outputs_}
        arrays = {"coef": self.coef_}
        if self.cv_scores_ is not None:
            arrays["cv_scores"] = self.cv_scores_
        return meta, arrays

    def _restore_fitted_state(self, meta: dict, arrays: dict) -> None:
        self.psd_rtol_ = stored_number(meta, "psd_rtol", minimum=0, below=1)
        self.solver_ = stored_choice(meta, "solver", REGRESSION_SOLVERS[1:])
        self.backend_ = stored_choice(meta, "backend", BACKENDS)
        self.alpha_ = stored_number(meta, "alpha", minimum=0)
        self.loo_score_ = stored_number(meta, "loo_score", minimum=0, optional=True)
        self.n_features_in_ = n = stored_number(meta, "n_features_in", integer=True, minimum=1)
        self.n_outputs_ = stored_number(meta, "n_outputs", integer=True, minimum=1, optional=True)
        self.coef_ = stored_array(arrays, "coef", 2, shape=(n, self.n_outputs_ or 1))
        self.cv_scores_ = stored_array(arrays, "cv_scores", 1) if "cv_scores" in arrays else None


class NystromRidgeClassifier(AlphaGridParams, Persistent, ClassifierMixin, BaseEstimator):
    """One-vs-all Nystrom kernel ridge classification on K(X, centers): never the n x n kernel.

    ``fit(K_nm, y)`` takes the (n, M) kernel between the n training points and M of them, the
    centers, whose rows in K_nm ``centers`` names (so K_mm = K_nm[centers]); ``predict(K_test)``
    the (n_test, M) kernel between test points and the centers. Coefficients from
    :func:`~tangentless.solvers.nystrom.nystrom_fit` (``solver``: "direct" or "falkon"), alpha
    on the scale of the full problem (with every point a center it is the exact kernel ridge).
    Alpha selection, with several ``alphas``: accuracy (ties: squared error) on a stratified
    held-out fraction ``holdout_fraction`` of the training rows (seeded by ``random_state``),
    then refitted on all rows; the held-out rows stay among the centers' basis functions but
    their labels are not fitted. Attributes: classes_, coef_ (M, c), alpha_, cv_scores_ (or
    None), n_features_in_ (= M), psd_rtol_, backend_. ``save(path)`` / ``load(path)`` as the
    other estimators.
    """

    def __init__(self, centers: ArrayLike | None = None, alphas: ArrayLike = KERNEL_ALPHAS, solver: str = "direct",
                 holdout_fraction: float = 0.2, random_state: int | np.random.RandomState | None = 0,
                 backend: str | None = None, psd_rtol: float | None = None) -> None:
        self.centers = centers
        self.alphas = alphas
        self.solver = solver
        self.holdout_fraction = holdout_fraction
        self.random_state = random_state
        self.backend = backend
        self.psd_rtol = psd_rtol

    def _params_to_json(self) -> dict:
        params = super()._params_to_json()
        return {**params, "centers": None if self.centers is None else np.asarray(self.centers).tolist()}

    def _coef(self, k_nm, k_mm, targets, alpha):
        return nystrom_fit(k_nm, k_mm, targets, alpha, solver=self.solver, psd_rtol=self.psd_rtol_,
                           backend=self.backend_)

    def fit(self, X: ArrayLike, y: ArrayLike) -> NystromRidgeClassifier:
        """Fit on X = K_nm (n, M), the kernel between the training points and the centers."""
        k, y = validate_data(self, X, y, dtype=(np.float64, np.float32))
        check_classification_targets(y)
        self.psd_rtol_ = (psd_tolerance(k.dtype) if self.psd_rtol is None
                         else check_psd_rtol(self.psd_rtol))
        k = check_kernel(k, "K_nm", square=False)
        n, m = k.shape
        if self.centers is None:
            raise ValueError("centers is required: the M row indices of K_nm that are the centers")
        centers = np.asarray(self.centers)
        if (centers.shape != (m,) or not np.issubdtype(centers.dtype, np.integer)
                or centers.min() < 0 or centers.max() >= n or np.unique(centers).size != m):
            raise ValueError(f"centers must be {m} distinct row indices of K_nm (n = {n}); got "
                             f"{centers.shape} {centers.dtype}")
        if not 0 < self.holdout_fraction < 1:
            raise ValueError(f"holdout_fraction must be in (0, 1); got {self.holdout_fraction}")
        self.classes_, labels = np.unique(y, return_inverse=True)
        if self.classes_.size < 2:
            raise ValueError(f"y has one class ({self.classes_[0]!r}); a classifier needs at "
                             "least 2 classes")
        alphas = check_alphas(self.alphas)
        self.backend_ = resolve_backend(self.backend)
        k_mm = k[centers]
        targets, _ = _one_hot(labels, self.classes_.size, False)
        self.cv_scores_ = None
        if alphas.size > 1:
            n_held = int(np.ceil(self.holdout_fraction * n))
            stratify = (np.bincount(labels).min() >= 2 and self.classes_.size <= n_held <= n - self.classes_.size)
            fit_rows, held = train_test_split(np.arange(n), test_size=n_held, random_state=self.random_state,
                                              stratify=labels if stratify else None)
            scores = [k[held] @ self._coef(k[fit_rows], k_mm, targets[fit_rows], a) for a in alphas]
            self.cv_scores_ = np.array([(s.argmax(axis=1) == labels[held]).mean() for s in scores])
            mse = np.array([np.mean((s - targets[held]) ** 2) for s in scores])
            self.alpha_ = float(alphas[_best(self.cv_scores_, mse)])
        else:
            self.alpha_ = float(alphas[0])
        self.coef_ = self._coef(k, k_mm, targets, self.alpha_)
        return self

    def _scores(self, X) -> np.ndarray:
        check_is_fitted(self, "coef_")
        k = check_kernel(validate_data(self, X, reset=False, dtype=np.float64), "K_test",
                         square=False)
        return k @ self.coef_

    def decision_function(self, X: ArrayLike) -> np.ndarray:
        """Class scores (n_test, c) (two classes: score(classes_[1]) - score(classes_[0]))."""
        scores = self._scores(X)
        return scores[:, 1] - scores[:, 0] if self.classes_.size == 2 else scores

    def predict(self, X: ArrayLike) -> np.ndarray:
        """Predicted labels (n_test,) for X = K(test points, centers) (n_test, M)."""
        scores = self._scores(X)     # first: NotFittedError before classes_ is read
        return self.classes_[scores.argmax(axis=1)]

    def _fitted_state(self) -> tuple[dict, dict]:
        meta = {"psd_rtol": self.psd_rtol_, "backend": self.backend_, "alpha": self.alpha_,
                "n_features_in": self.n_features_in_}
        arrays = {"classes": self.classes_, "coef": self.coef_}
        if self.cv_scores_ is not None:
            arrays["cv_scores"] = self.cv_scores_
        return meta, arrays

    def _restore_fitted_state(self, meta: dict, arrays: dict) -> None:
        self.psd_rtol_ = stored_number(meta, "psd_rtol", minimum=0, below=1)
        self.backend_ = stored_choice(meta, "backend", BACKENDS)
        self.alpha_ = stored_number(meta, "alpha", minimum=0)
        self.n_features_in_ = m = stored_number(meta, "n_features_in", integer=True, minimum=1)
        self.classes_ = stored_array(arrays, "classes", 1, "biufU")
        if self.classes_.size < 2 or np.unique(self.classes_).size != self.classes_.size:
            raise ValueError(f"classes must be at least 2 distinct labels; got {self.classes_.tolist()}")
        self.coef_ = stored_array(arrays, "coef", 2, shape=(m, self.classes_.size))
        self.cv_scores_ = stored_array(arrays, "cv_scores", 1) if "cv_scores" in arrays else None
