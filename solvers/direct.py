"""Direct kernel ridge solves: (K + alpha I) coef = Y by a float64 Cholesky factorization."""
from __future__ import annotations

import warnings
from typing import Callable

import numpy as np
from numpy.typing import ArrayLike

from ._backend import use_backend
from ._checks import check_alpha, check_kernel, check_symmetric, check_targets
from ._psd import (NotPositiveDefiniteError, indefiniteness_report, psd_advice, resolve_psd_rtol,
                   within_tolerance)

__all__ = ["JitterWarning", "NotPositiveDefiniteError", "solve_cholesky"]


class JitterWarning(RuntimeWarning):
    """Jitter was added to the diagonal to make a Cholesky factorization succeed."""


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


def _not_positive_definite(alpha: float, lo: float, hi: float, psd_rtol: float, jitter: bool,
                           max_jitter: float) -> NotPositiveDefiniteError:
    """The error for K + alpha I whose K has extreme eigenvalues ``lo``, ``hi``."""
    report = indefiniteness_report(f"K + alpha I (alpha={alpha:.3g})", lo + alpha, hi + alpha)
    if within_tolerance(lo, hi, psd_rtol):
        advice = f"K is PSD within psd_rtol={psd_rtol:g} but singular: use alpha > 0"
        advice += "" if jitter else ", or jitter=True"
    else:
        ratio = f"{lo / hi:.2e} x its largest" if hi > 0 else f"{lo:.3e}"
        advice = f"K's smallest eigenvalue is {ratio}, " + psd_advice(psd_rtol, jitter=not jitter)
    tried = f"jitter up to {max_jitter:g} x the mean diagonal did not help; " if jitter else ""
    return NotPositiveDefiniteError(f"{report}; {tried}{advice}")


def solve_cholesky(K: ArrayLike, Y: ArrayLike, alpha: float, *, jitter: bool = False, max_jitter: float = 1e-2,
                   psd_rtol: float | None = None, backend: str | None = None) -> np.ndarray:
    """Solve (K + alpha I) coef = Y; K (n, n) symmetric, Y (n,) or (n, c) -> coef (n, c) float64.

    If K + alpha I is not positive definite but K is PSD up to rounding (its smallest eigenvalue
    >= -psd_rtol x its largest; see ``tangentless.solvers._psd``) and alpha > 0, it solves
    (K + (alpha + psd_rtol x largest) I) coef = Y instead, silently: that jitter is below the
    kernel's own rounding. ``psd_rtol`` defaults to K's storage precision (1e-8 for float64, 1e-5
    for float32, or what a Gram store records); pass 1e-5 for a kernel computed in float32 and
    stored as float64. Otherwise raises ``NotPositiveDefiniteError`` stating the smallest
    eigenvalue relative to the largest and what to do. With ``jitter=True`` it instead retries
    with jitter 1e-10, 1e-8, ... up to ``max_jitter`` times the mean diagonal of K added to the
    diagonal, and warns (``JitterWarning``) with the jitter that was used.

    backend: "scipy" (LAPACK on the host: one (n, n) float64 workspace besides K, which the
    factorization overwrites), "jax" (float64 on JAX's default device, a GPU where present: K
    plus two (n, n) float64 arrays there) or None (``default_backend()``).
    """
    psd_rtol = resolve_psd_rtol(psd_rtol, K)
    k = check_kernel(K)
    check_symmetric(k)
    y = check_targets(Y, k.shape[0])
    alpha = check_alpha(alpha)
    if not (np.isfinite(max_jitter) and max_jitter > 0):
        raise ValueError(f"max_jitter must be finite and > 0; got {max_jitter}")
    with use_backend(backend) as ops:
        shifted = _shifted_kernel(ops, k)
        factor = ops.cholesky(shifted(alpha))
        if factor is None:
            values = ops.eigvalsh(shifted(0.0))
            lo, hi = float(values[0]), float(values[-1])
            if alpha > 0 and within_tolerance(lo, hi, psd_rtol):
                factor = ops.cholesky(shifted(alpha + psd_rtol * hi))
        if factor is None and jitter:
            factor = _jittered_factor(ops, shifted, float(np.mean(np.diag(k))), alpha, max_jitter)
        if factor is None:
            raise _not_positive_definite(alpha, lo, hi, psd_rtol, jitter, max_jitter)
        return ops.to_numpy(ops.cho_solve(factor, ops.array(y)))
