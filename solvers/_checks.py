"""Input checks shared by the solvers: clear errors naming the problem."""
from __future__ import annotations

import numpy as np

from .blocks import as_block_source


def check_kernel(k, name: str = "K", *, square: bool = True) -> np.ndarray:
    """A finite 2-D kernel matrix as a float64 array (square unless ``square=False``). A Zarr array
    (a Gram store) is read chunk by chunk (:func:`~.blocks.as_block_source`), so a corrupt chunk is
    one clear error and unfinished blocks say to resume the gram run."""
    if hasattr(k, "oindex") and hasattr(k, "chunks"):
        k = as_block_source(k, square=square, name=name).block(slice(None), slice(None))
    arr = np.asarray(k)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D kernel matrix; got shape {arr.shape}")
    if square and arr.shape[0] != arr.shape[1]:
        raise ValueError(f"{name} must be square (n, n); got shape {arr.shape}")
    if min(arr.shape) < 1:
        raise ValueError(f"{name} is empty: shape {arr.shape}")
    if np.iscomplexobj(arr) or not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"{name} must hold real numbers; got dtype {arr.dtype}")
    arr = arr.astype(np.float64, copy=False)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains {int((~np.isfinite(arr)).sum())} NaN or inf entries")
    return arr


def check_targets(y, n: int, name: str = "Y") -> np.ndarray:
    """Regression targets (n,) or (n, c) as a float64 (n, c) array; n must match the kernel."""
    arr = np.asarray(y)
    if arr.ndim not in (1, 2):
        raise ValueError(f"{name} must be (n,) or (n, outputs); got shape {arr.shape}")
    if arr.shape[0] != n:
        raise ValueError(f"{name} has {arr.shape[0]} rows but the kernel has {n}")
    if np.iscomplexobj(arr) or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise ValueError(f"{name} must hold real numbers; got dtype {arr.dtype}")
    arr = arr.astype(np.float64).reshape(n, -1)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or inf values")
    return arr


def check_alphas(alphas) -> np.ndarray:
    """Ridge parameters: a non-empty 1-D array of finite values >= 0."""
    arr = np.atleast_1d(np.asarray(alphas, dtype=np.float64))
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"alphas must be a number or a non-empty 1-D sequence; got {alphas!r}")
    if not np.isfinite(arr).all() or (arr < 0).any():
        raise ValueError(f"alphas must be finite and >= 0; got {arr.tolist()}")
    return arr


def check_symmetric(k: np.ndarray, name: str = "K", *, rtol: float = 1e-6,
                    tile: int = 256) -> None:
    """Raise unless the square ``k`` is symmetric to ``rtol`` x its largest entry.

    Compares (tile, tile) blocks with their mirror images, so temporaries stay small.
    """
    scale = max(float(k.max()), -float(k.min()))
    n = k.shape[0]
    for i in range(0, n, tile):
        for j in range(i, n, tile):
            gap = float(np.abs(k[i:i + tile, j:j + tile] - k[j:j + tile, i:i + tile].T).max())
            if gap > rtol * scale:
                raise ValueError(f"{name} is not symmetric: |K - K^T| reaches {gap:.3e} "
                                 f"(largest entry {scale:.3e}); solvers read only one triangle")


def check_alpha(alpha) -> float:
    """One ridge parameter: a finite number >= 0."""
    arr = check_alphas(alpha)
    if arr.size != 1:
        raise ValueError(f"alpha must be a single number; got {arr.tolist()}")
    return float(arr[0])
