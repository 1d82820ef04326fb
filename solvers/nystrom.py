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
from typing import Any, Callable

import numpy as np
from numpy.typing import ArrayLike

from ._backend import use_backend
from ._cg import batched_cg
from ._checks import check_alpha, check_kernel, check_targets
from ._psd import not_psd_error, resolve_psd_rtol, within_tolerance
from .blocks import SourceLike, as_block_source, row_blocks

__all__ = ["nystrom_fit", "uniform_centers"]


def uniform_centers(n: int, m: int, *, seed: int | None = 0) -> np.ndarray:
    """m distinct indices drawn uniformly from range(n) (seeded; None: fresh entropy), sorted: (m,)
    int64."""
    if not 1 <= int(m) <= int(n):
        raise ValueError(f"number of centers must be in [1, n={n}]; got {m}")
    return np.sort(np.random.default_rng(seed).choice(int(n), size=int(m), replace=False))


def _whitener(ops, k_mm: np.ndarray, psd_rtol: float):
    """Lower-triangular L with L L^T = K_mm + eps tr(K_mm) I (FALKON's jitter, relative), on the
    backend of ``ops``; if that is not positive definite but K_mm is PSD within ``psd_rtol``, the
    jitter is psd_rtol x K_mm's largest eigenvalue more (``NotPositiveDefiniteError`` beyond the
    tolerance). Whitened coordinates of a (M, k) array x are L^-1 x."""
    k = ops.array(k_mm)
    k = (k + k.T) / 2
    eye = ops.xp.eye(k.shape[0])
    jitter = np.finfo(np.float64).eps * max(float(ops.xp.trace(k)), np.finfo(np.float64).tiny)
    lower = ops.cholesky(k + jitter * eye)
    if lower is None:
        values = ops.eigvalsh(k + 0.0)
        lo, hi = float(values[0]), float(values[-1])
        if within_tolerance(lo, hi, psd_rtol):
            lower = ops.cholesky(k + (jitter + psd_rtol * hi) * eye)
        if lower is None:
            raise not_psd_error("K_mm", lo, hi, psd_rtol, property="positive semi-definite")
    return lower


def _direct(ops, rows: Callable[[slice], Any], blocks: list[slice], lower, y, alpha: float):
    """Cholesky of G = L^-1 K_nm^T K_nm L^-T + alpha I, accumulated over row blocks (M^2 memory).

    Each row block is whitened (L^-1 K_b^T, (M, b)) before squaring, so cond(G) <= 1 +
    ||K_nm L^-T||^2 / alpha rather than that of K_nm^T K_nm + alpha K_mm (singular when K_mm is).
    """
    m = lower.shape[0]
    gram, rhs = alpha * ops.xp.eye(m), ops.xp.zeros((m, y.shape[1]))
    for b in blocks:
        w = ops.solve_triangular(lower, rows(b).T, lower=True)
        gram += w @ w.T
        rhs += w @ y[b]
    factor = ops.cholesky(gram)
    if factor is None:
        raise ValueError("Nystrom normal equations are singular: use alpha > 0")
    return ops.solve_triangular(lower, ops.cho_solve(factor, rhs), lower=True, trans=True)


def _falkon(ops, rows: Callable[[slice], Any], blocks: list[slice], lower, y, alpha: float,
            tol: float, max_iter: int, progress: bool):
    """Preconditioned CG on (L^-1 K_nm^T K_nm L^-T + alpha I) v = L^-1 K_nm^T Y, coef = L^-T v.

    Preconditioner (FALKON): K_nm^T K_nm ~ (n/M) K_mm^2 for uniform centers, so the matrix is
    ~ (n/M) L^T L + alpha I = A A^T. Each iteration reads K_nm once in row blocks; the matvec
    and preconditioner run on the backend, the CG bookkeeping (O(M c)) on the host.
    """
    xp = ops.xp
    n, m = y.shape[0], lower.shape[0]
    rhs = xp.zeros((m, y.shape[1]))
    for b in blocks:
        rhs += rows(b).T @ y[b]
    rhs = ops.solve_triangular(lower, rhs, lower=True)
    a = ops.cholesky((n / m) * lower.T @ lower + alpha * xp.eye(m))

    def matvec(v):
        u = ops.solve_triangular(lower, v, lower=True, trans=True)
        w = xp.zeros_like(u)
        for b in blocks:
            k_b = rows(b)
            w += k_b.T @ (k_b @ u)
        return ops.solve_triangular(lower, w, lower=True) + alpha * v

    v, _, norms, converged = batched_cg(ops.on_host(matvec), ops.to_numpy(rhs),
                                        ops.on_host(lambda r: ops.cho_solve(a, r)), tol,
                                        max_iter, "falkon", progress)
    if not converged.all():
        warnings.warn(f"falkon: {int((~converged).sum())} of {converged.size} columns did not "
                      f"reach tol={tol:g} in {max_iter} iterations (worst {norms[-1].max():.2e})",
                      RuntimeWarning, stacklevel=3)
    return ops.solve_triangular(lower, ops.array(v), lower=True, trans=True)


def nystrom_fit(K_nm: SourceLike, K_mm: ArrayLike, Y: ArrayLike, alpha: float, *, solver: str = "direct",
                block_size: int = 1000, tol: float = 1e-10, max_iter: int = 100, progress: bool = False,
                psd_rtol: float | None = None, backend: str | None = None) -> np.ndarray:
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
    psd_rtol: the PSD tolerance of K_mm (``tangentless.solvers._psd``; default: K_mm's storage
        precision or the value its Gram store records): a K_mm PSD within it gets
        psd_rtol x its largest eigenvalue of jitter (silently), one beyond it raises
        ``NotPositiveDefiniteError``.
    backend: "scipy" (host), "jax" (float64 on JAX's default device, a GPU where present: the
        row-block products and the M x M factorizations run there; an in-memory K_nm crosses
        once, other sources one block at a time) or None (``default_backend()``).
    """
    psd_rtol = resolve_psd_rtol(psd_rtol, K_mm)
    k_mm = check_kernel(K_mm, "K_mm")
    shape = (np.shape(Y)[0], k_mm.shape[0]) if callable(K_nm) else None
    source = as_block_source(K_nm, shape=shape, square=False, name="K_nm")
    n, m = source.shape
    if k_mm.shape != (m, m):
        raise ValueError(f"K_mm has shape {k_mm.shape} but K_nm has {m} columns (centers)")
    y = check_targets(Y, n)
    alpha = check_alpha(alpha)
    if solver not in ("direct", "falkon"):
        raise ValueError(f"solver must be 'direct' or 'falkon'; got {solver!r}")
    with use_backend(backend) as ops:
        lower = _whitener(ops, k_mm, psd_rtol)
        rows, blocks, y = ops.row_reader(source), row_blocks(n, block_size), ops.array(y)
        if solver == "direct":
            coef = _direct(ops, rows, blocks, lower, y, alpha)
        else:
            coef = _falkon(ops, rows, blocks, lower, y, alpha, tol, int(max_iter), progress)
        return ops.to_numpy(coef)
