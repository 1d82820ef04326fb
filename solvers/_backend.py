"""Where the solvers' n^2 work runs: "scipy" (numpy / LAPACK on the host) or "jax" (float64 on
JAX's default device, a GPU where JAX sees one).

``with use_backend(name) as ops:`` validates the name (None means :func:`default_backend`) and
yields the array operations of that backend; for "jax" it enables float64 for the duration.
Solvers write their linear algebra once against ``ops`` and take host numpy arrays in and out.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator

import numpy as np
import scipy.linalg

from .blocks import BlockSource

BACKENDS = ("scipy", "jax")


def default_backend() -> str:
    """"jax" where JAX sees a GPU, else "scipy"."""
    import jax

    return "jax" if jax.default_backend() == "gpu" else "scipy"


def resolve_backend(backend: str | None) -> str:
    """``backend`` checked against BACKENDS; None gives :func:`default_backend`."""
    if backend is None:
        return default_backend()
    if backend not in BACKENDS:
        raise ValueError(f"backend must be 'scipy', 'jax' or None (JAX where it sees a GPU, else "
                         f"scipy); got {backend!r}")
    return backend


class HostOps:
    """numpy / scipy on the host. Arrays are numpy float64; ``add_rows`` updates in place."""

    name = "scipy"
    xp = np

    @staticmethod
    def array(x) -> np.ndarray:
        """A float64 copy of the host array ``x``."""
        return np.array(x, dtype=np.float64)

    @staticmethod
    def to_numpy(x) -> np.ndarray:
        """``x`` as a float64 numpy array on the host."""
        return np.asarray(x, dtype=np.float64)

    @staticmethod
    def cholesky(a):
        """Lower-triangular Cholesky factor L of the symmetric ``a`` (its lower triangle is read;
        ``a`` may be overwritten: factored in place if Fortran-ordered); None if ``a`` is not
        numerically positive definite."""
        try:
            return scipy.linalg.cholesky(a, lower=True, overwrite_a=True, check_finite=False)
        except np.linalg.LinAlgError:
            return None

    @staticmethod
    def eigvalsh(a) -> np.ndarray:
        """Eigenvalues (ascending) of the symmetric ``a``, which may be overwritten."""
        return scipy.linalg.eigvalsh(a, overwrite_a=True, check_finite=False)

    @staticmethod
    def cho_solve(lower, b):
        """(L L^T)^-1 b for a lower factor L from :meth:`cholesky`."""
        return scipy.linalg.cho_solve((lower, True), b, check_finite=False)

    @staticmethod
    def solve_triangular(a, b, *, lower: bool, trans: bool = False):
        """a^-1 b, or a^-T b with ``trans``, for triangular ``a``."""
        return scipy.linalg.solve_triangular(a, b, lower=lower, trans="T" if trans else "N",
                                             check_finite=False)

    @staticmethod
    def add_rows(x, rows: slice, v):
        """x with x[rows] += v (in place here)."""
        x[rows] += v
        return x

    @staticmethod
    def on_host(fn: Callable) -> Callable[[np.ndarray], np.ndarray]:
        """``fn`` on backend arrays as a function of host float64 arrays (here: ``fn`` itself)."""
        return fn

    @staticmethod
    def row_reader(source: BlockSource) -> Callable[[slice], np.ndarray]:
        """rows -> K[rows, :] as a (b, m) float64 array, read from the source each call."""
        return source.rows


class JaxOps:
    """jax.numpy in float64 on JAX's default device (use inside :func:`use_backend`, which
    enables float64). Arrays are immutable jax Arrays; ``add_rows`` returns a new one."""

    name = "jax"

    def __init__(self):
        import jax
        import jax.numpy as jnp
        import jax.scipy.linalg

        self.xp, self._jax = jnp, jax

    def array(self, x):
        """``x`` on the device as float64; float32 crosses as float32 and is cast there."""
        return self.xp.asarray(x).astype(self.xp.float64)

    @staticmethod
    def to_numpy(x) -> np.ndarray:
        """``x`` as a float64 numpy array on the host."""
        return np.asarray(x, dtype=np.float64)

    def cholesky(self, a):
        """Lower-triangular Cholesky factor L of the symmetric ``a`` (its lower triangle is
        read); None if ``a`` is not numerically positive definite (JAX returns NaNs then; the
        check is one host sync)."""
        lower = self._jax.lax.linalg.cholesky(a, symmetrize_input=False)
        return lower if bool(self.xp.isfinite(lower).all()) else None

    def eigvalsh(self, a):
        """Eigenvalues (ascending) of the symmetric ``a``."""
        return self.xp.linalg.eigvalsh(a)

    def cho_solve(self, lower, b):
        """(L L^T)^-1 b for a lower factor L from :meth:`cholesky`."""
        return self._jax.scipy.linalg.cho_solve((lower, True), b)

    def solve_triangular(self, a, b, *, lower: bool, trans: bool = False):
        """a^-1 b, or a^-T b with ``trans``, for triangular ``a``."""
        return self._jax.scipy.linalg.solve_triangular(a, b, lower=lower, trans=int(trans))

    @staticmethod
    def add_rows(x, rows: slice, v):
        """A copy of x with x[rows] += v."""
        return x.at[rows].add(v)

    def on_host(self, fn: Callable) -> Callable[[np.ndarray], np.ndarray]:
        """``fn`` on device arrays as a function of host float64 arrays: its argument goes to the
        device and its result comes back. Float64 is enabled for each call, so the function also
        works after :func:`use_backend` has exited."""
        def on_device(x: np.ndarray) -> np.ndarray:
            with self._jax.enable_x64(True):
                return self.to_numpy(fn(self.array(x)))
        return on_device

    def row_reader(self, source: BlockSource) -> Callable[[slice], Any]:
        """rows -> K[rows, :] as a (b, m) float64 device array.

        A source held in host memory (a numpy array, not a memmap) is checked and copied to the
        device once, as stored (float32 stays float32), and sliced there. Any other source is read
        one block per call, transferred as stored, and cast on the device, so host and device
        memory stay bounded by the block size.
        """
        f64 = self.xp.float64
        if source.in_memory:
            whole = self.xp.asarray(source.rows(slice(0, source.shape[0]), keep_float32=True))
            return lambda rows: whole[rows].astype(f64)
        return lambda rows: self.xp.asarray(source.rows(rows, keep_float32=True)).astype(f64)


@contextmanager
def use_backend(backend: str | None) -> Iterator[HostOps | JaxOps]:
    """The array operations of ``backend`` ("scipy", "jax" or None = :func:`default_backend`);
    ValueError for any other name. For "jax", float64 is enabled inside the block."""
    name = resolve_backend(backend)
    if name == "scipy":
        yield HostOps()
        return
    import jax

    with jax.enable_x64(True):
        yield JaxOps()
