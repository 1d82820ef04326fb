"""Conjugate gradient on many right-hand sides at once, shared by :func:`~.iterative.pcg` and
FALKON (:func:`~.nystrom.nystrom_fit`).

The bookkeeping runs on the host in numpy float64: it costs O(n c) per iteration, negligible next
to the matvec, which may run on a device (the callers move p there and the product back).
"""
from __future__ import annotations

from typing import Callable

import numpy as np
from tqdm.auto import tqdm


class NegativeCurvature(ValueError):
    """CG met p^T A p <= 0: A is not positive definite. ``rayleigh``: the smallest
    p^T A p / p^T p among the directions of that iteration (an upper bound on A's smallest
    eigenvalue)."""

    def __init__(self, message: str, rayleigh: float):
        super().__init__(message)
        self.rayleigh = rayleigh


def _column_scales(y: np.ndarray) -> np.ndarray:
    """Column norms of Y (n, c), with 1 for zero columns (their residual is then absolute)."""
    norms = np.linalg.norm(y, axis=0)
    return np.where(norms > 0, norms, 1.0)


def batched_cg(matvec: Callable[[np.ndarray], np.ndarray], y: np.ndarray,
               precondition: Callable[[np.ndarray], np.ndarray] | None, tol: float,
               max_iter: int, desc: str, progress: bool = False
               ) -> tuple[np.ndarray, int, np.ndarray, np.ndarray]:
    """Preconditioned CG on A x_j = y_j for every column j of y (n, c), A symmetric PD.

    matvec: (n, k) -> A @ (n, k), called once per iteration on the columns still running.
    precondition: (n, k) -> P^-1 @ (n, k), or None. Column j stops when its recursively updated
    residual ||r_j|| / ||y_j|| <= tol. ``desc`` names the solver in errors and the progress bar.
    Returns x (n, c), iterations, residual norms (iterations + 1, c) (frozen once a column
    converged), converged (c,) bool. NegativeCurvature (a ValueError) if p^T A p <= 0 (A is not
    positive definite).
    """
    scale = _column_scales(y)
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
                rayleigh = curvature / np.einsum("ij,ij->j", p[:, cols], p[:, cols])
                raise NegativeCurvature(f"{desc}: K + alpha I is not positive definite "
                                        "(p^T A p <= 0); K is not PSD or alpha is 0",
                                        float(rayleigh.min()))
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
