"""Iterative kernel ridge solvers on block sources: (K + alpha I) coef = Y without holding K.

- :func:`bcd`: block coordinate descent (Tu, Roelofs, Venkataraman, Recht 2016), one b x n row
  block in memory at a time, exact b x b solves.
- :func:`pcg`: conjugate gradient on all right-hand sides at once, each column stopping on its
  own, with the randomized Nystrom preconditioner of Frangella, Tropp and Udell (2021).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np
import scipy.linalg
from tqdm.auto import tqdm

from ._checks import check_alpha, check_targets
from .blocks import BlockSource, as_block_source, row_blocks

__all__ = ["BCDResult", "CGResult", "bcd", "pcg", "kernel_matmul", "nystrom_preconditioner"]


@dataclass(frozen=True)
class BCDResult:
    """coef: (n, c). residual_norms: (epochs_run + 1,) relative residuals, [0] before the first
    epoch. converged: whether residual_norms[-1] <= tol."""
    coef: np.ndarray
    residual_norms: np.ndarray
    epochs_run: int
    converged: bool


@dataclass(frozen=True)
class CGResult:
    """coef: (n, c). iterations: passes over K (the slowest column's count). residual_norms:
    (iterations + 1, c) relative residual of each column, frozen once that column converged.
    converged: (c,) bool."""
    coef: np.ndarray
    iterations: int
    residual_norms: np.ndarray
    converged: np.ndarray


def _scale(y: np.ndarray) -> np.ndarray:
    """Column norms of Y, with 1 for zero columns (their residual is then absolute)."""
    norms = np.linalg.norm(y, axis=0)
    return np.where(norms > 0, norms, 1.0)


def kernel_matmul(source: BlockSource, x: np.ndarray, block_size: int = 1000) -> np.ndarray:
    """K @ x for a (n, m) source and x (m, k), reading K in row blocks: (n, k) float64."""
    out = np.empty((source.shape[0], x.shape[1]))
    for b in row_blocks(source.shape[0], block_size):
        out[b] = source.rows(b) @ x
    return out


def _block_factor(k_bb: np.ndarray, alpha: float, b: slice):
    """Cholesky factor of K_BB + alpha I; ValueError naming the block if not symmetric or PD."""
    scale = np.abs(k_bb).max()
    if np.abs(k_bb - k_bb.T).max() > 1e-6 * scale:
        raise ValueError(f"K[{b.start}:{b.stop}, {b.start}:{b.stop}] is not symmetric (to 1e-6 of "
                         "its largest entry); bcd needs a symmetric kernel")
    try:
        return scipy.linalg.cho_factor(k_bb + alpha * np.eye(len(k_bb)), lower=True)
    except np.linalg.LinAlgError:
        raise ValueError(f"K[{b.start}:{b.stop}, {b.start}:{b.stop}] + alpha I is not positive "
                         f"definite (alpha={alpha:g}): K is not PSD or alpha is too small"
                         ) from None


def bcd(source, Y, alpha, *, block_size: int = 1000, epochs: int = 10, tol: float = 1e-6,
        coef0=None, seed: int = 0, order: str = "random", progress: bool = False,
        callback: Callable[[int, np.ndarray, float], bool | None] | None = None) -> BCDResult:
    """Solve (K + alpha I) coef = Y by block coordinate descent (exact block Gauss-Seidel).

    source: symmetric PSD (n, n) kernel, anything :func:`as_block_source` takes. Y: (n,) or (n, c).
    Rows are split into contiguous blocks of ``block_size`` (contiguous, so memmap and Zarr reads
    stay sequential); an epoch visits every block once, in a fresh seeded random order
    (``order="random"``) or in order (``"cyclic"``). For block B it reads K[B, :] once, solves
    (K_BB + alpha I) delta = R_B by Cholesky (factors kept across epochs), sets coef_B += delta
    and R -= K[B, :]^T delta (R_B -= alpha delta), using K's symmetry (checked on each K_BB).
    Memory: one (b, n) block, the diagonal-block factors (n b in all) and coef, R (n, c).
    Convergence is linear at a rate set by cond(K + alpha I): tens of epochs at condition ~1e2,
    hundreds at ~1e3 (RBF digits); prefer :func:`pcg` for ill-conditioned kernels.

    The reported residual is ||R||_F / ||Y||_F with R = Y - (K + alpha I) coef maintained by these
    updates, so it is the true residual up to accumulated rounding and costs no extra pass over K.
    A warm start ``coef0`` costs one pass to form its residual; if that already meets ``tol`` the
    solver returns with epochs_run = 0. ``callback(epoch, coef, residual)`` runs after each
    epoch; returning True stops. Warns if ``tol`` is not reached in ``epochs`` epochs.
    """
    source = as_block_source(source)
    n = source.shape[0]
    y = check_targets(Y, n)
    alpha = check_alpha(alpha)
    if int(epochs) < 0:
        raise ValueError(f"epochs must be >= 0; got {epochs}")
    if order not in ("random", "cyclic"):
        raise ValueError(f"order must be 'random' or 'cyclic'; got {order!r}")
    blocks = row_blocks(n, block_size)
    scale = np.linalg.norm(y) or 1.0
    if coef0 is None:
        coef, resid = np.zeros_like(y), y.copy()
    else:
        coef = check_targets(coef0, n, "coef0").copy()
        if coef.shape != y.shape:
            raise ValueError(f"coef0 has shape {coef.shape}; Y needs {y.shape}")
        resid = y - kernel_matmul(source, coef, block_size) - alpha * coef
    norms = [np.linalg.norm(resid) / scale]
    rng = np.random.default_rng(seed)
    factors = {}  # Cholesky of each diagonal block, b^2 each: n b in all, one row block's worth
    total = int(epochs) * len(blocks)
    with tqdm(total=total, unit="block", desc="bcd", disable=not progress) as bar:
        for epoch in range(1, int(epochs) + 1):
            if norms[-1] <= tol:
                break
            for i in (rng.permutation(len(blocks)) if order == "random" else range(len(blocks))):
                b = blocks[i]
                k_b = source.rows(b)
                if i not in factors:
                    factors[i] = _block_factor(k_b[:, b], alpha, b)
                delta = scipy.linalg.cho_solve(factors[i], resid[b])
                coef[b] += delta
                resid -= k_b.T @ delta
                resid[b] -= alpha * delta
                bar.update()
                if progress:
                    bar.set_postfix(residual=f"{np.linalg.norm(resid) / scale:.2e}", refresh=False)
            norms.append(np.linalg.norm(resid) / scale)
            if callback is not None and callback(epoch, coef, norms[-1]):
                break
    converged = bool(norms[-1] <= tol)
    if not converged:
        warnings.warn(f"bcd: relative residual {norms[-1]:.2e} > tol={tol:g} after "
                      f"{len(norms) - 1} epochs", RuntimeWarning, stacklevel=2)
    return BCDResult(coef, np.array(norms), len(norms) - 1, converged)


def nystrom_preconditioner(source: BlockSource, rank: int, mu: float, *, seed: int = 0,
                           block_size: int = 1000) -> Callable[[np.ndarray], np.ndarray]:
    """P^-1 for K + mu I from a randomized rank-``rank`` Nystrom approximation K ~ U Lambda U^T.

    Frangella, Tropp, Udell (2021), Algorithms 2.1 and 5.1: one pass Y = K Omega over row blocks
    with an orthonormal Gaussian Omega (n, r), a shift nu for stability, then
    P^-1 = (lambda_r + mu) U (Lambda + mu I)^-1 U^T + (I - U U^T). Returns a function on (n, k).
    """
    n = source.shape[0]
    rank = int(min(rank, n))
    omega, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((n, rank)))
    sketch = kernel_matmul(source, omega, block_size)
    nu = np.sqrt(n) * np.spacing(np.linalg.norm(sketch, 2))
    sketch += nu * omega
    core = omega.T @ sketch
    try:
        chol = scipy.linalg.cholesky((core + core.T) / 2, lower=False)
    except np.linalg.LinAlgError:
        raise ValueError("Nystrom sketch Omega^T K Omega is not positive definite: "
                         "K is not PSD") from None
    b = scipy.linalg.solve_triangular(chol, sketch.T, trans="T", lower=False).T  # Y_nu C^-1
    u, sigma, _ = scipy.linalg.svd(b, full_matrices=False)
    lam = np.maximum(sigma ** 2 - nu, 0.0)
    if lam[-1] + mu <= 0:
        raise ValueError(f"Nystrom preconditioner with alpha=0 needs rank <= rank(K); the sketch "
                         f"of rank {rank} has a zero eigenvalue: use alpha > 0 or a smaller rank")
    gain = (lam[-1] + mu) / (lam + mu) - 1.0

    def apply(r: np.ndarray) -> np.ndarray:
        return r + u @ (gain[:, None] * (u.T @ r))
    return apply


def _batched_cg(matvec: Callable[[np.ndarray], np.ndarray], y: np.ndarray,
                precondition: Callable[[np.ndarray], np.ndarray] | None, tol: float,
                max_iter: int, desc: str, progress: bool = False):
    """Preconditioned CG on A x_j = y_j for every column j, one matvec per iteration for the
    columns still running. Returns (x, iterations, residual_norms (iters + 1, c), converged)."""
    scale = _scale(y)
    x = np.zeros_like(y)
    r = y.copy()
    z = r.copy() if precondition is None else precondition(r)
    p = z.copy()
    rz = np.einsum("ij,ij->j", r, z)
    norms = [np.linalg.norm(r, axis=0) / scale]
    active = norms[0] > tol
    iterations = 0
    with tqdm(total=int(max_iter), unit="pass", desc=desc, disable=not progress) as bar:
        while active.any() and iterations < max_iter:
            cols = np.flatnonzero(active)
            q = matvec(p[:, cols])
            curvature = np.einsum("ij,ij->j", p[:, cols], q)
            if not (curvature > 0).all():
                raise ValueError(f"{desc}: K + alpha I is not positive definite "
                                 "(p^T A p <= 0); K is not PSD or alpha is 0")
            step = rz[cols] / curvature
            x[:, cols] += step * p[:, cols]
            r[:, cols] -= step * q
            iterations += 1
            current = norms[-1].copy()
            current[cols] = np.linalg.norm(r[:, cols], axis=0) / scale[cols]
            norms.append(current)
            active = current > tol
            cols = np.flatnonzero(active)
            z_cols = r[:, cols] if precondition is None else precondition(r[:, cols])
            rz_new = np.einsum("ij,ij->j", r[:, cols], z_cols)
            p[:, cols] = z_cols + (rz_new / rz[cols]) * p[:, cols]
            rz[cols] = rz_new
            bar.update()
            bar.set_postfix(residual=f"{current.max():.2e}", active=cols.size, refresh=False)
    return x, iterations, np.array(norms), ~active


def pcg(source, Y, alpha, *, rank: int = 200, tol: float = 1e-8, max_iter: int = 500,
        seed: int = 0, preconditioner: str | None = "nystrom", block_size: int = 1000,
        progress: bool = False) -> CGResult:
    """Solve (K + alpha I) coef = Y by preconditioned conjugate gradient, all columns at once.

    source: symmetric PSD (n, n) kernel, anything :func:`as_block_source` takes. Y: (n,) or (n, c).
    Each iteration is one pass over K in row blocks of ``block_size`` for the columns still
    running; column j stops when ||r_j|| / ||Y_j|| <= tol (r_j is CG's recursively updated
    residual, equal to Y_j - (K + alpha I) coef_j up to rounding). ``preconditioner="nystrom"``
    spends one extra pass on a rank-``rank`` randomized Nystrom sketch (seeded), which clusters
    the spectrum: iterations then depend on the effective dimension, not on cond(K + alpha I).
    Warns for columns that miss ``tol`` within ``max_iter`` iterations.
    """
    source = as_block_source(source)
    n = source.shape[0]
    y = check_targets(Y, n)
    alpha = check_alpha(alpha)
    if preconditioner not in ("nystrom", None):
        raise ValueError(f"preconditioner must be 'nystrom' or None; got {preconditioner!r}")
    if int(rank) < 1:
        raise ValueError(f"rank must be >= 1; got {rank}")
    precondition = (nystrom_preconditioner(source, rank, alpha, seed=seed, block_size=block_size)
                    if preconditioner == "nystrom" else None)
    coef, iterations, norms, converged = _batched_cg(
        lambda p: kernel_matmul(source, p, block_size) + alpha * p, y, precondition, tol,
        int(max_iter), "pcg", progress)
    if not converged.all():
        warnings.warn(f"pcg: {int((~converged).sum())} of {converged.size} columns did not reach "
                      f"tol={tol:g} in {max_iter} iterations (worst {norms[-1].max():.2e})",
                      RuntimeWarning, stacklevel=2)
    return CGResult(coef, iterations, norms, converged)
