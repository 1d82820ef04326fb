"""Nystrom kernel ridge regression: M centers instead of n training points.

Problem, for K_nm = K(X, centers) (n, M), K_mm = K(centers, centers) (M, M), Y (n, c):

    min_c ||K_nm c - Y||_F^2 + alpha tr(c^T K_mm c)   =>   (K_nm^T K_nm + alpha K_mm) c = K_nm^T Y

Scaling convention: ``alpha`` is on the same scale as the full problem (K + alpha I) coef = Y. With
all points as centers (K_nm = K_mm = K, K invertible) the solution is exactly (K + alpha I)^-1 Y.
FALKON (Rudi, Carratino, Rosasco 2017) writes the loss as (1/n)||.||^2 + lambda c^T K_mm c, so
their lambda = alpha / n. Predictions on new points are K(X_new, centers) @ coef.
"""
from __future__ import annotations

import warnings

import numpy as np
import scipy.linalg

from ._checks import check_alpha, check_kernel, check_targets
from .blocks import BlockSource, as_block_source, row_blocks
from .iterative import _batched_cg

__all__ = ["nystrom_fit", "uniform_centers"]


def uniform_centers(n: int, m: int, *, seed: int = 0) -> np.ndarray:
    """m distinct indices drawn uniformly from range(n) (seeded), sorted: (m,) int64."""
    if not 1 <= int(m) <= int(n):
        raise ValueError(f"number of centers must be in [1, n={n}]; got {m}")
    return np.sort(np.random.default_rng(seed).choice(int(n), size=int(m), replace=False))


def _whitener(k_mm: np.ndarray) -> np.ndarray:
    """Upper-triangular T with T^T T = K_mm + eps tr(K_mm) I (FALKON's jitter, relative)."""
    m = k_mm.shape[0]
    jitter = np.finfo(np.float64).eps * max(np.trace(k_mm), np.finfo(np.float64).tiny)
    try:
        return scipy.linalg.cholesky((k_mm + k_mm.T) / 2 + jitter * np.eye(m), lower=False)
    except np.linalg.LinAlgError:
        raise ValueError("K_mm is not positive semi-definite (Cholesky failed)") from None


def _whitened_rows(t: np.ndarray, k_b: np.ndarray) -> np.ndarray:
    """T^-T K_b^T: (M, b), the row block K_b (b, M) in whitened coordinates."""
    return scipy.linalg.solve_triangular(t, k_b.T, trans="T", lower=False)


def _direct(source: BlockSource, t: np.ndarray, y: np.ndarray, alpha: float,
            block_size: int) -> np.ndarray:
    """Cholesky of G = T^-T K_nm^T K_nm T^-1 + alpha I, accumulated over row blocks (M^2 memory).

    Each row block is whitened before squaring, so cond(G) <= 1 + ||K_nm T^-1||^2 / alpha rather
    than that of K_nm^T K_nm + alpha K_mm (singular when K_mm is).
    """
    m = t.shape[0]
    gram, rhs = alpha * np.eye(m), np.zeros((m, y.shape[1]))
    for b in row_blocks(source.shape[0], block_size):
        w = _whitened_rows(t, source.rows(b))
        gram += w @ w.T
        rhs += w @ y[b]
    try:
        v = scipy.linalg.cho_solve(scipy.linalg.cho_factor(gram, lower=True), rhs)
    except np.linalg.LinAlgError:
        raise ValueError("Nystrom normal equations are singular: use alpha > 0") from None
    return scipy.linalg.solve_triangular(t, v, lower=False)


def _falkon(source: BlockSource, t: np.ndarray, y: np.ndarray, alpha: float, block_size: int,
            tol: float, max_iter: int, progress: bool) -> np.ndarray:
    """Preconditioned CG on (T^-T K_nm^T K_nm T^-1 + alpha I) v = T^-T K_nm^T Y, coef = T^-1 v.

    Preconditioner (FALKON): K_nm^T K_nm ~ (n/M) K_mm^2 for uniform centers, so the matrix is
    ~ (n/M) T T^T + alpha I = A^T A. Each iteration reads K_nm once in row blocks.
    """
    n, m = source.shape
    blocks = row_blocks(n, block_size)
    rhs = np.zeros((m, y.shape[1]))
    for b in blocks:
        rhs += source.rows(b).T @ y[b]
    rhs = scipy.linalg.solve_triangular(t, rhs, trans="T", lower=False)
    a = scipy.linalg.cholesky((n / m) * t @ t.T + alpha * np.eye(m), lower=False)

    def matvec(v: np.ndarray) -> np.ndarray:
        u = scipy.linalg.solve_triangular(t, v, lower=False)
        w = np.zeros_like(u)
        for b in blocks:
            k_b = source.rows(b)
            w += k_b.T @ (k_b @ u)
        return scipy.linalg.solve_triangular(t, w, trans="T", lower=False) + alpha * v

    def precondition(r: np.ndarray) -> np.ndarray:
        return scipy.linalg.solve_triangular(
            a, scipy.linalg.solve_triangular(a, r, trans="T", lower=False), lower=False)

    v, _, norms, converged = _batched_cg(matvec, rhs, precondition, tol, max_iter, "falkon",
                                         progress)
    if not converged.all():
        warnings.warn(f"falkon: {int((~converged).sum())} of {converged.size} columns did not "
                      f"reach tol={tol:g} in {max_iter} iterations (worst {norms[-1].max():.2e})",
                      RuntimeWarning, stacklevel=3)
    return scipy.linalg.solve_triangular(t, v, lower=False)


def nystrom_fit(K_nm, K_mm, Y, alpha, *, solver: str = "direct", block_size: int = 1000,
                tol: float = 1e-10, max_iter: int = 100, progress: bool = False) -> np.ndarray:
    """Nystrom kernel ridge coefficients (M, c); see the module docstring for the problem.

    K_nm: (n, M) kernel between training points and centers, anything :func:`as_block_source`
        takes (e.g. a callable ``lambda r, c: spec.gram(x[r], centers[c], progress=False)``,
        whose shape is taken from Y and K_mm); it is read in row blocks of ``block_size``, never
        held whole.
    K_mm: (M, M) kernel between the centers, in memory.
    Y: (n,) or (n, c) targets. alpha >= 0 (same scale as in K + alpha I).
    solver: "direct" (one pass over K_nm, O(n M^2 + M^3) time, M^2 memory) or "falkon"
        (preconditioned CG, one pass per iteration, stops at relative residual ``tol`` of the
        whitened normal equations or after ``max_iter`` iterations, warning then).
    """
    k_mm = check_kernel(K_mm, "K_mm")
    shape = (np.shape(Y)[0], k_mm.shape[0]) if callable(K_nm) else None
    source = as_block_source(K_nm, shape=shape, square=False, name="K_nm")
    n, m = source.shape
    if k_mm.shape != (m, m):
        raise ValueError(f"K_mm has shape {k_mm.shape} but K_nm has {m} columns (centers)")
    y = check_targets(Y, n)
    alpha = check_alpha(alpha)
    t = _whitener(k_mm)
    if solver == "direct":
        return _direct(source, t, y, alpha, block_size)
    if solver == "falkon":
        return _falkon(source, t, y, alpha, block_size, tol, int(max_iter), progress)
    raise ValueError(f"solver must be 'direct' or 'falkon'; got {solver!r}")
