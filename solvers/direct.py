"""Direct kernel ridge solves: (K + alpha I) coef = Y by a float64 Cholesky factorization."""
from __future__ import annotations

import warnings
from typing import Callable

import numpy as np

from ._backend import use_backend
from ._checks import check_alpha, check_kernel, check_symmetric, check_targets


class NotPositiveDefiniteError(ValueError):
    """A kernel system matrix that is not (numerically) positive definite."""


class JitterWarning(RuntimeWarning):
    """Jitter was added to the diagonal to make a Cholesky factorization succeed."""


def indefiniteness_report(what: str, lo: float, hi: float) -> str:
    """A message saying how far a matrix with extreme eigenvalues ``lo``, ``hi`` is from PSD."""
    ratio = f" = {lo / hi:.2e} x the largest ({hi:.3e})" if hi > 0 else f", largest {hi:.3e}"
    return f"{what} is not positive definite: its smallest eigenvalue is {lo:.3e}{ratio}"


def _shift_into(work: np.ndarray, k: np.ndarray, shift: float) -> np.ndarray:
    """Write k + shift I into the Fortran-ordered (n, n) ``work`` and return it.

    For symmetric k, copying k into work.T is a plain memory copy and gives work = k.
    """
    np.copyto(work.T, k)
    work.flat[:: k.shape[0] + 1] += shift
    return work


def _shifted_kernel(ops, k: np.ndarray) -> Callable[[float], object]:
    """shift -> k + shift I on the backend of ``ops``, for factoring (which may overwrite it).

    Host: written into one reused Fortran-ordered (n, n) float64 workspace, factored in place.
    JAX: k is copied to the device once; each shift is one new (n, n) device array.
    """
    if ops.name == "scipy":
        work = np.empty(k.shape, order="F")
        return lambda shift: _shift_into(work, k, shift)
    k_device = ops.array(k)
    diagonal = ops.xp.arange(k.shape[0])
    return lambda shift: k_device.at[diagonal, diagonal].add(shift)


def _jittered_factor(ops, shifted, mean_diagonal: float, alpha: float, max_jitter: float):
    """Factor of k + (alpha + jitter) I for the first jitter in 1e-10, 1e-8, ... max_jitter times
    the mean diagonal of k that works, with a ``JitterWarning`` naming it; None if none does."""
    scale = abs(mean_diagonal)
    if scale == 0:
        return None
    for level in np.unique(np.minimum(10.0 ** np.arange(-10, 1, 2), max_jitter)):
        factor = ops.cholesky(shifted(alpha + level * scale))
        if factor is not None:
            warnings.warn(f"K + alpha I (alpha={alpha:.3g}) is not positive definite; added "
                          f"jitter {level * scale:.3e} (= {level:.0e} x the mean diagonal "
                          f"{scale:.3e}) to the diagonal", JitterWarning, stacklevel=3)
            return factor
    return None


def solve_cholesky(K, Y, alpha, *, jitter: bool = False, max_jitter: float = 1e-2,
                   backend: str | None = None) -> np.ndarray:
    """Solve (K + alpha I) coef = Y; K (n, n) symmetric, Y (n,) or (n, c) -> coef (n, c) float64.

    If the matrix is not positive definite, raises ``NotPositiveDefiniteError`` stating its
    smallest eigenvalue relative to its largest. With ``jitter=True`` it instead retries with
    jitter 1e-10, 1e-8, ... up to ``max_jitter`` times the mean diagonal of K added to the
    diagonal, and warns (``JitterWarning``) with the jitter that was used.

    backend: "scipy" (LAPACK on the host: one (n, n) float64 workspace besides K, which the
    factorization overwrites), "jax" (float64 on JAX's default device, a GPU where present: K
    plus two (n, n) float64 arrays there) or None (``default_backend()``).
    """
    k = check_kernel(K)
    check_symmetric(k)
    y = check_targets(Y, k.shape[0])
    alpha = check_alpha(alpha)
    if not (np.isfinite(max_jitter) and max_jitter > 0):
        raise ValueError(f"max_jitter must be finite and > 0; got {max_jitter}")
    with use_backend(backend) as ops:
        shifted = _shifted_kernel(ops, k)
        factor = ops.cholesky(shifted(alpha))
        if factor is None and jitter:
            factor = _jittered_factor(ops, shifted, float(np.mean(np.diag(k))), alpha, max_jitter)
        if factor is None:
            tried = (f"; jitter up to {max_jitter:g} x the mean diagonal did not help" if jitter
                     else "; use a larger alpha, or jitter=True")
            values = ops.eigvalsh(shifted(alpha))
            raise NotPositiveDefiniteError(indefiniteness_report(
                f"K + alpha I (alpha={alpha:.3g})", float(values[0]), float(values[-1])) + tried)
        return ops.to_numpy(ops.cho_solve(factor, ops.array(y)))
