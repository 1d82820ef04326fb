"""Iterative kernel ridge solvers on block sources: (K + alpha I) coef = Y without holding K.

- :func:`bcd`: block coordinate descent (Tu, Roelofs, Venkataraman, Recht 2016), one b x n row
  block in memory at a time, exact b x b solves.
- :func:`pcg`: conjugate gradient on all right-hand sides at once, each column stopping on its
  own, with the randomized Nystrom preconditioner of Frangella, Tropp and Udell (2021).

Every function takes ``backend``: "scipy" (numpy / LAPACK on the host), "jax" (float64 on JAX's
default device, a GPU where present) or None (``default_backend()``: JAX where it sees a GPU).
On "jax" the row-block products and block Cholesky solves run on the device; blocks of a memmap,
Zarr or callable source cross one at a time as stored (float32 stays float32 until the device
casts it), an in-memory numpy kernel crosses once. Inputs and results are host numpy arrays.

PSD tolerance (``psd_rtol``, see ``tangentless.solvers._psd``; default: the source's, i.e. a Gram
store's recorded value or its storage precision): where K + alpha I turns out indefinite but the
matrix factored (bcd: a diagonal block K_BB; the Nystrom sketch) or K along CG's direction is PSD
within it, the solver adds psd_rtol x that matrix's largest eigenvalue to the diagonal and goes
on, silently; beyond it, ``NotPositiveDefiniteError`` with what to do.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
from numpy.typing import ArrayLike
from tqdm.auto import tqdm

from ._backend import use_backend
from ._cg import NegativeCurvature, batched_cg
from ._checks import check_alpha, check_targets
from ._psd import (NotPositiveDefiniteError, check_psd_rtol, not_psd_error, singular_or_advice,
                   smallest_eigenvalue, within_tolerance)
from .blocks import BlockSource, SourceLike, as_block_source, row_blocks

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


def _block_matmul(ops, rows: Callable[[slice], Any], blocks: list[slice], x):
    """K @ x (n, k) on the backend of ``ops``, from row blocks ``rows(b)`` (b, m) and x (m, k)."""
    return ops.xp.concatenate([rows(b) @ x for b in blocks])


def kernel_matmul(source: BlockSource, x: np.ndarray, block_size: int = 1000, *,
                  backend: str | None = None) -> np.ndarray:
    """K @ x for a (n, m) source and x (m, k), reading K in row blocks: (n, k) float64 on the
    host, computed on ``backend`` (see the module docstring)."""
    with use_backend(backend) as ops:
        blocks = row_blocks(source.shape[0], block_size)
        return ops.to_numpy(_block_matmul(ops, ops.row_reader(source), blocks, ops.array(x)))


def _block_factor(ops, k_bb, alpha: float, shift: float, b: slice, psd_rtol: float):
    """Lower Cholesky factor of K_BB + (alpha + shift) I, and the shift used: ``shift``, or
    psd_rtol x K_BB's largest eigenvalue if K_BB + (alpha + shift) I is indefinite but K_BB is PSD
    within ``psd_rtol`` (and alpha > 0). ValueError naming the block if it is not symmetric,
    ``NotPositiveDefiniteError`` if it is not PSD within the tolerance."""
    xp = ops.xp
    where = f"K[{b.start}:{b.stop}, {b.start}:{b.stop}]"
    scale = float(xp.abs(k_bb).max())
    if float(xp.abs(k_bb - k_bb.T).max()) > 1e-6 * scale:
        raise ValueError(f"{where} is not symmetric (to 1e-6 of its largest entry); bcd needs a "
                         "symmetric kernel")
    eye = xp.eye(k_bb.shape[0])
    factor = ops.cholesky(k_bb + (alpha + shift) * eye)
    if factor is not None:
        return factor, shift
    values = ops.eigvalsh(k_bb + 0.0)
    lo, hi = float(values[0]), float(values[-1])
    if alpha > 0 and within_tolerance(lo, hi, psd_rtol):
        shift = max(shift, psd_rtol * hi)
        factor = ops.cholesky(k_bb + (alpha + shift) * eye)
        if factor is not None:
            return factor, shift
    report = (f"{where} + alpha I is not positive definite (alpha={alpha:g}): the smallest "
              f"eigenvalue of {where} is {smallest_eigenvalue(lo, hi)}")
    raise NotPositiveDefiniteError(f"{report}; {singular_or_advice(alpha, lo, hi, psd_rtol, 'it')}")


def bcd(source: SourceLike, Y: ArrayLike, alpha: float, *, block_size: int = 1000, epochs: int = 10,
        tol: float = 1e-6, coef0: ArrayLike | None = None, seed: int = 0, order: str = "random",
        progress: bool = False, callback: Callable[[int, np.ndarray, float], bool | None] | None = None,
        psd_rtol: float | None = None, backend: str | None = None) -> BCDResult:
    """Solve (K + alpha I) coef = Y by block coordinate descent (exact block Gauss-Seidel).

    source: symmetric PSD (n, n) kernel, anything :func:`as_block_source` takes. Y: (n,) or (n, c).
    Rows are split into contiguous blocks of ``block_size`` (contiguous, so memmap and Zarr reads
    stay sequential); an epoch visits every block once, in a fresh seeded random order
    (``order="random"``) or in order (``"cyclic"``). For block B it reads K[B, :] once, solves
    (K_BB + alpha I) delta = R_B by Cholesky (factors kept across epochs), sets coef_B += delta
    and R -= K[B, :]^T delta (R_B -= alpha delta), using K's symmetry (checked on each K_BB).
    Memory: one (b, n) block, the diagonal-block factors (n b in all) and coef, R (n, c); on
    ``backend="jax"`` these live on the device (plus K itself if it is an in-memory array).
    Convergence is linear at a rate set by cond(K + alpha I): tens of epochs at condition ~1e2,
    hundreds at ~1e3 (RBF digits); prefer :func:`pcg` for ill-conditioned kernels.

    The reported residual is ||R||_F / ||Y||_F with R = Y - (K + alpha I) coef maintained by these
    updates, so it is the true residual up to accumulated rounding and costs no extra pass over K.
    A warm start ``coef0`` costs one pass to form its residual; if that already meets ``tol`` the
    solver returns with epochs_run = 0. ``callback(epoch, coef, residual)`` runs after each
    epoch with coef (n, c) on the host; returning True stops. Warns if ``tol`` is not reached in
    ``epochs`` epochs.

    ``psd_rtol``: see the module docstring. If a diagonal block needs the tolerance's jitter
    (psd_rtol x its largest eigenvalue), bcd solves (K + (alpha + jitter) I) coef = Y from then on
    (the residual is updated for it and the blocks factored so far are factored again).
    """
    source = as_block_source(source)
    n = source.shape[0]
    y = check_targets(Y, n)
    alpha = check_alpha(alpha)
    psd_rtol = None if psd_rtol is None else check_psd_rtol(psd_rtol)
    if int(epochs) < 0:
        raise ValueError(f"epochs must be >= 0; got {epochs}")
    if order not in ("random", "cyclic"):
        raise ValueError(f"order must be 'random' or 'cyclic'; got {order!r}")
    if coef0 is not None:
        coef0 = check_targets(coef0, n, "coef0")
        if coef0.shape != y.shape:
            raise ValueError(f"coef0 has shape {coef0.shape}; Y needs {y.shape}")
    blocks = row_blocks(n, block_size)
    scale = float(np.linalg.norm(y)) or 1.0
    rng = np.random.default_rng(seed)
    with use_backend(backend) as ops:
        xp, rows = ops.xp, ops.row_reader(source)
        resid = ops.array(y)
        if coef0 is None:
            coef = xp.zeros_like(resid)
        else:
            coef = ops.array(coef0)
            resid = resid - _block_matmul(ops, rows, blocks, coef) - alpha * coef

        def relative_residual() -> float:
            return float(xp.linalg.norm(resid)) / scale

        norms = [relative_residual()]
        factors: dict[int, Any] = {}  # Cholesky of each diagonal block, b^2 each: n b in all, one row block's worth
        shift = 0.0  # jitter within the PSD tolerance, once a block needed it
        total = int(epochs) * len(blocks)
        with tqdm(total=total, unit="block", desc="bcd", disable=not progress) as bar:
            for epoch in range(1, int(epochs) + 1):
                if norms[-1] <= tol:
                    break
                for i in (rng.permutation(len(blocks)) if order == "random"
                          else range(len(blocks))):
                    b = blocks[i]
                    k_b = rows(b)
                    if i not in factors:
                        rtol = source.psd_rtol if psd_rtol is None else psd_rtol
                        factor, new_shift = _block_factor(ops, k_b[:, b], alpha, shift, b, rtol)
                        if new_shift != shift:  # the system is now K + (alpha + new_shift) I
                            resid = resid - (new_shift - shift) * coef
                            shift, factors = new_shift, {}
                        factors[i] = factor
                    delta = ops.cho_solve(factors[i], resid[b])
                    coef = ops.add_rows(coef, b, delta)
                    resid -= k_b.T @ delta
                    resid = ops.add_rows(resid, b, -(alpha + shift) * delta)
                    bar.update()
                    if progress:
                        bar.set_postfix(residual=f"{relative_residual():.2e}", refresh=False)
                norms.append(relative_residual())
                if callback is not None and callback(epoch, ops.to_numpy(coef), norms[-1]):
                    break
        coef = ops.to_numpy(coef)
    converged = bool(norms[-1] <= tol)
    if not converged:
        warnings.warn(f"bcd: relative residual {norms[-1]:.2e} > tol={tol:g} after "
                      f"{len(norms) - 1} epochs", RuntimeWarning, stacklevel=2)
    return BCDResult(coef, np.array(norms), len(norms) - 1, converged)


def _nystrom_sketch(ops, rows: Callable[[slice], Any], blocks: list[slice], n: int,
                    rank: int, seed: int, psd_rtol: float) -> tuple[Any, Any]:
    """K ~ U diag(lam) U^T, U (n, r) and lam (r,) descending on the backend of ``ops``, from one
    pass over K (Frangella, Tropp, Udell 2021, Algorithm 2.1). If the core Omega^T K Omega is
    not PSD within ``psd_rtol`` x its largest eigenvalue, ``NotPositiveDefiniteError``; if it is,
    that much is added to the stabilizing shift nu."""
    xp = ops.xp
    rank = int(min(rank, n))
    omega, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((n, rank)))
    omega = ops.array(omega)  # drawn on the host: the same sketch on every backend
    sketch = _block_matmul(ops, rows, blocks, omega)
    nu = np.sqrt(n) * np.spacing(float(xp.linalg.norm(sketch, 2)))
    sketch = sketch + nu * omega
    core = omega.T @ sketch
    core = (core + core.T) / 2
    lower = ops.cholesky(core + 0.0)
    if lower is None:
        values = ops.eigvalsh(core + 0.0)
        lo, hi = float(values[0]) - nu, float(values[-1]) - nu
        if not within_tolerance(lo, hi, psd_rtol):
            raise not_psd_error("Nystrom sketch Omega^T K Omega", lo, hi, psd_rtol)
        extra = psd_rtol * hi - min(lo, 0.0)  # the core then has eigenvalues >= psd_rtol x hi
        sketch, core, nu = sketch + extra * omega, core + extra * xp.eye(rank), nu + extra
        lower = ops.cholesky(core)
        if lower is None:
            raise NotPositiveDefiniteError("Nystrom sketch Omega^T K Omega is not positive "
                                           "definite even after PSD jitter: K is not PSD")
    b = ops.solve_triangular(lower, sketch.T, lower=True).T  # Y_nu C^-1 with C = L^T
    u, sigma, _ = xp.linalg.svd(b, full_matrices=False)
    return u, xp.maximum(sigma ** 2 - nu, 0.0)


def _nystrom_inverse(ops, u, lam, mu: float) -> Callable:
    """P^-1 for K + mu I from K ~ U diag(lam) U^T (Frangella, Tropp, Udell 2021, Algorithm 5.1),
    as a function of backend arrays (n, k)."""
    rank = lam.shape[0]
    if float(lam[-1]) + mu <= 0:
        raise ValueError(f"Nystrom preconditioner with alpha=0 needs rank <= rank(K); the sketch "
                         f"of rank {rank} has a zero eigenvalue: use alpha > 0 or a smaller rank")
    gain = (lam[-1] + mu) / (lam + mu) - 1.0
    return lambda r: r + u @ (gain[:, None] * (u.T @ r))


def nystrom_preconditioner(source, rank: int, mu: float, *, seed: int = 0,
                           block_size: int = 1000, psd_rtol: float | None = None,
                           backend: str | None = None) -> Callable[[np.ndarray], np.ndarray]:
    """P^-1 for K + mu I from a randomized rank-``rank`` Nystrom approximation K ~ U Lambda U^T.

    Frangella, Tropp, Udell (2021), Algorithms 2.1 and 5.1: one pass Y = K Omega over row blocks
    with an orthonormal Gaussian Omega (n, r), a shift nu for stability, then
    P^-1 = (lambda_r + mu) U (Lambda + mu I)^-1 U^T + (I - U U^T). Returns a function on host
    arrays (n, k) -> (n, k); on ``backend="jax"`` U (n, r) stays on the device and it runs there.
    ``psd_rtol``: see the module docstring (applied to the sketch Omega^T K Omega).
    """
    source = as_block_source(source)
    psd_rtol = source.psd_rtol if psd_rtol is None else check_psd_rtol(psd_rtol)
    with use_backend(backend) as ops:
        n = source.shape[0]
        u, lam = _nystrom_sketch(ops, ops.row_reader(source), row_blocks(n, block_size), n, rank,
                                 seed, psd_rtol)
        return ops.on_host(_nystrom_inverse(ops, u, lam, mu))


def _largest_eigenvalue(ops, rows: Callable[[slice], Any], blocks: list[slice], n: int,
                        seed: int, passes: int = 10) -> float:
    """A lower bound on K's largest eigenvalue: the Rayleigh quotient after ``passes`` power
    iterations from a seeded random vector (one pass over K each)."""
    x = ops.array(np.random.default_rng(seed).standard_normal((n, 1)))
    quotient = 0.0
    for _ in range(passes):
        x = x / ops.xp.linalg.norm(x)
        kx = _block_matmul(ops, rows, blocks, x)
        quotient = max(quotient, float((x.T @ kx)[0, 0]))
        x = kx
    return quotient


def _negative_curvature_error(alpha: float, lo: float, largest: float, psd_rtol: float
                              ) -> NotPositiveDefiniteError:
    """pcg's error for a CG direction p along which p^T K p / p^T p = ``lo``."""
    ratio = (f" = {lo / largest:.2e} x the largest eigenvalue of K (~{largest:.3e})"
             if largest > 0 else f"; K's largest eigenvalue is ~{largest:.3e}")
    where = (f"pcg: K + alpha I (alpha={alpha:g}) is not positive definite: along a CG "
             f"direction p, p^T K p / p^T p = {lo:.3e}{ratio}")
    return NotPositiveDefiniteError(f"{where}; {singular_or_advice(alpha, lo, largest, psd_rtol)}")


def pcg(source: SourceLike, Y: ArrayLike, alpha: float, *, rank: int = 200, tol: float = 1e-8,
        max_iter: int = 500, seed: int = 0, preconditioner: str | None = "nystrom", block_size: int = 1000,
        progress: bool = False, psd_rtol: float | None = None,
        backend: str | None = None) -> CGResult:
    """Solve (K + alpha I) coef = Y by preconditioned conjugate gradient, all columns at once.

    source: symmetric PSD (n, n) kernel, anything :func:`as_block_source` takes. Y: (n,) or (n, c).
    Each iteration is one pass over K in row blocks of ``block_size`` for the columns still
    running; column j stops when ||r_j|| / ||Y_j|| <= tol (r_j is CG's recursively updated
    residual, equal to Y_j - (K + alpha I) coef_j up to rounding). ``preconditioner="nystrom"``
    spends one extra pass on a rank-``rank`` randomized Nystrom sketch (seeded), which clusters
    the spectrum: iterations then depend on the effective dimension, not on cond(K + alpha I).
    Warns for columns that miss ``tol`` within ``max_iter`` iterations.
    On ``backend="jax"`` the passes over K and the preconditioner run on the device; the CG
    bookkeeping (O(n c) per iteration) stays on the host in float64.

    ``psd_rtol``: see the module docstring. If CG meets a direction p with p^T (K + alpha I) p
    <= 0 while p^T K p / p^T p >= -psd_rtol x K's largest eigenvalue (the sketch's, or 10 power
    iterations' estimate without a preconditioner) and alpha > 0, CG restarts on
    K + (alpha + psd_rtol x largest) I; otherwise ``NotPositiveDefiniteError``.
    """
    source = as_block_source(source)
    n = source.shape[0]
    y = check_targets(Y, n)
    alpha = check_alpha(alpha)
    psd_rtol = None if psd_rtol is None else check_psd_rtol(psd_rtol)
    if preconditioner not in ("nystrom", None):
        raise ValueError(f"preconditioner must be 'nystrom' or None; got {preconditioner!r}")
    if int(rank) < 1:
        raise ValueError(f"rank must be >= 1; got {rank}")
    with use_backend(backend) as ops:
        rows, blocks = ops.row_reader(source), row_blocks(n, block_size)
        sketch = (_nystrom_sketch(ops, rows, blocks, n, rank, seed,
                                  source.psd_rtol if psd_rtol is None else psd_rtol)
                  if preconditioner == "nystrom" else None)
        shift = 0.0
        while True:
            ridge = alpha + shift
            precondition = (None if sketch is None
                            else ops.on_host(_nystrom_inverse(ops, *sketch, ridge)))
            matvec = ops.on_host(lambda p: _block_matmul(ops, rows, blocks, p) + ridge * p)
            try:
                coef, iterations, norms, converged = batched_cg(matvec, y, precondition, tol,
                                                                int(max_iter), "pcg", progress)
                break
            except NegativeCurvature as err:
                rtol = source.psd_rtol if psd_rtol is None else psd_rtol
                largest = (float(sketch[1][0]) if sketch is not None
                           else _largest_eigenvalue(ops, rows, blocks, n, seed))
                lo = err.rayleigh - ridge  # p^T K p / p^T p: >= K's smallest eigenvalue
                if shift > 0 or alpha == 0 or not within_tolerance(lo, largest, rtol):
                    raise _negative_curvature_error(alpha, lo, largest, rtol) from None
                shift = rtol * largest
    if not converged.all():
        warnings.warn(f"pcg: {int((~converged).sum())} of {converged.size} columns did not reach "
                      f"tol={tol:g} in {max_iter} iterations (worst {norms[-1].max():.2e})",
                      RuntimeWarning, stacklevel=2)
    return CGResult(coef, iterations, norms, converged)
