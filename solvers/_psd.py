"""The one PSD tolerance of the solvers: when a kernel counts as positive semi-definite up to its
own rounding, and what a solver does then.

Rule: a symmetric matrix M (the kernel K, or the part of it a solver factors: a diagonal block
K_BB, a Nystrom sketch Omega^T K Omega, the centers' K_mm) is PSD up to rounding when its smallest
eigenvalue is >= -psd_rtol x its largest eigenvalue. Where a factorization needs M + alpha I to be
positive definite and it is not, but M is PSD within that tolerance, the solver silently adds
psd_rtol x (M's largest eigenvalue) to the diagonal (below the kernel's own rounding, as the eigen
path's clipping is); beyond the tolerance it raises :class:`NotPositiveDefiniteError` saying how
negative, relative to what, and what to do.

``psd_rtol`` defaults to the precision the kernel is stored in (:func:`psd_tolerance` of its
dtype), or to the value a Gram store records in ``attrs["tangentless"]["psd_rtol"]``; a caller
whose kernel was computed in lower precision than it is stored in passes that precision's value.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from tangentless.kernels.precision import psd_rtol


class NotPositiveDefiniteError(ValueError):
    """A kernel system matrix that is not (numerically) positive definite."""


def psd_tolerance(dtype) -> float:
    """Relative size of the negative eigenvalues that rounding alone gives a PSD kernel stored
    as ``dtype``: the Gram engine's rule (:func:`tangentless.kernels.precision.psd_rtol`), 1e-8
    for float64 (and integers), 1e-5 for float32 or float16."""
    dtype = np.dtype(dtype)
    return psd_rtol(dtype.name if np.issubdtype(dtype, np.floating) else "float64")


def check_psd_rtol(psd_rtol) -> float:
    """``psd_rtol`` as a float in [0, 1); ValueError otherwise."""
    value = float(psd_rtol)
    if not (np.isfinite(value) and 0 <= value < 1):
        raise ValueError(f"psd_rtol must be a number in [0, 1); got {psd_rtol!r}")
    return value


def stored_psd_rtol(obj) -> float | None:
    """The tolerance a Gram store records in ``obj.attrs["tangentless"]["psd_rtol"]``, or None."""
    attrs: Any = getattr(obj, "attrs", None)
    try:
        value = attrs["tangentless"]["psd_rtol"]
    except (TypeError, KeyError, IndexError):
        return None
    return None if value is None else check_psd_rtol(value)


def default_psd_rtol(obj) -> float:
    """``psd_rtol`` for the kernel ``obj`` when the caller gives none: the value its Gram store
    records, else :func:`psd_tolerance` of its dtype (float64 when it has none)."""
    stored = stored_psd_rtol(obj)
    return stored if stored is not None else psd_tolerance(getattr(obj, "dtype", np.float64))


def resolve_psd_rtol(psd_rtol, obj) -> float:
    """The caller's ``psd_rtol`` (checked), or :func:`default_psd_rtol` of ``obj`` for None."""
    return default_psd_rtol(obj) if psd_rtol is None else check_psd_rtol(psd_rtol)


def within_tolerance(lo: float, hi: float, psd_rtol: float) -> bool:
    """Whether extreme eigenvalues ``lo`` <= ``hi`` are those of a PSD matrix up to rounding."""
    return lo >= 0 or (hi > 0 and lo >= -psd_rtol * hi)


def smallest_eigenvalue(lo: float, hi: float) -> str:
    """"{lo} = {lo / hi} x the largest ({hi})": the smallest eigenvalue relative to the largest."""
    ratio = f" = {lo / hi:.2e} x the largest ({hi:.3e})" if hi > 0 else f", largest {hi:.3e}"
    return f"{lo:.3e}{ratio}"


def indefiniteness_report(what: str, lo: float, hi: float, *,
                          property: str = "positive definite") -> str:
    """A message saying how far a matrix with extreme eigenvalues ``lo``, ``hi`` is from PSD."""
    return f"{what} is not {property}: its smallest eigenvalue is {smallest_eigenvalue(lo, hi)}"


def psd_advice(psd_rtol: float, *, jitter: bool = False) -> str:
    """What to do about a kernel found indefinite beyond ``psd_rtol``."""
    remedy = "increase alpha / use jitter=True" if jitter else "increase alpha"
    return (f"beyond the PSD tolerance psd_rtol={psd_rtol:g}: if this kernel was computed in "
            f"float32 (e.g. precision='mixed'), pass psd_rtol={psd_tolerance(np.float32):g} "
            f"(or more), or {remedy}")


def singular_or_advice(alpha: float, lo: float, hi: float, psd_rtol: float, subject: str = "K") -> str:
    """What to do about a matrix ``subject`` (extreme eigenvalues ``lo``, ``hi``) whose
    ``subject + alpha I`` could not be factored: at alpha = 0 within the tolerance it is singular
    (use alpha > 0), otherwise :func:`psd_advice`."""
    if alpha == 0 and within_tolerance(lo, hi, psd_rtol):
        return f"{subject} is PSD within psd_rtol={psd_rtol:g} but singular: use alpha > 0"
    return psd_advice(psd_rtol)


def not_psd_error(what: str, lo: float, hi: float, psd_rtol: float, *, jitter: bool = False,
                  property: str = "positive definite") -> NotPositiveDefiniteError:
    """The error for a matrix ``what`` with extreme eigenvalues ``lo``, ``hi`` beyond
    ``psd_rtol`` (``jitter``: the solver offers jitter=True)."""
    return NotPositiveDefiniteError(indefiniteness_report(what, lo, hi, property=property) + "; "
                                    + psd_advice(psd_rtol, jitter=jitter))
