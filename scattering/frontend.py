"""The scattering front end: kymatio's 2-D JAX scattering on NHWC image batches, jit-compiled,
with the optional phase first order of :mod:`.phase` and an on-disk feature cache.

The one module of the library that imports kymatio, and only its 2-D modules. With kymatio 0.3.0
and scipy >= 1.17, ``from kymatio.jax import Scattering2D`` (likewise ``kymatio.numpy``,
``kymatio.torch``, ...) fails with "cannot import name 'sph_harm'": those modules also import the
3-D harmonic frontend, whose filter bank imports ``scipy.special.sph_harm``, removed in scipy 1.17.
``import kymatio`` itself works (its top level imports only small entry modules; checked with
scipy 1.17.1), as does importing ``kymatio.scattering2d.frontend.jax_frontend`` directly, which
pulls in the 2-D core, backend and filter bank and no 3-D code. No shim is needed; scipy is left
alone.

Layout: images (B, H, W, C) -> features (B, H / 2^J, W / 2^J, C * K), channel ``c * K + k`` where
k is kymatio's coefficient index within colour c: order 0, then order 1 by (j, theta), then
order 2 by (j1, theta1, j2, theta2) with j2 > j1. With ``phase=True`` the order-1 block has 4 J L
channels, ordered by (j, theta, phase) with the phases ReLU(+Re), ReLU(-Re), ReLU(+Im), ReLU(-Im)
of x * psi_{j,theta} (see :func:`.phase.phase_scattering`).
"""
from __future__ import annotations

import functools
import importlib.metadata
import os
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from kymatio.scattering2d.frontend.jax_frontend import ScatteringJax2D
from numpy.typing import ArrayLike
from tqdm.auto import tqdm

from ..kernels._shared.images import to_unit_range, validate_images
from . import cache
from .phase import Filters, phase_scattering

__all__ = ["num_channels", "scattering_fn", "scatter", "check_config", "check_spatial",
           "default_batch_size", "kymatio_filters", "kymatio_to_nhwc"]


def check_config(J, L: int = 8, max_order: int = 2) -> None:
    """ValueError unless J >= 1, L >= 1 are integers and max_order is 1 or 2."""
    for name, value in (("J", J), ("L", L)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1; got {value!r}")
    if max_order not in (1, 2):
        raise ValueError(f"max_order must be 1 or 2; got {max_order!r}")


def check_spatial(height: int, width: int, J: int, name: str = "images") -> None:
    """ValueError unless H and W are at least 2^J and multiples of 2^J (output H/2^J x W/2^J)."""
    scale = 2 ** J
    if min(height, width) < scale:
        raise ValueError(f"{name} of size {height}x{width} are too small for J={J}: "
                         f"height and width must be at least 2^J = {scale}")
    if height % scale or width % scale:
        raise ValueError(f"{name} of size {height}x{width}: height and width must be multiples of "
                         f"2^J = {scale} for J={J}")


def num_channels(J: int, L: int = 8, max_order: int = 2, phase: bool = False) -> int:
    """Scattering channels K per colour channel: 1 + J L (4 J L with phase) + L^2 J (J - 1) / 2
    (the last term only at max_order = 2)."""
    check_config(J, L, max_order)
    first = (4 if phase else 1) * J * L
    second = L * L * J * (J - 1) // 2 if max_order == 2 else 0
    return 1 + first + second


@functools.lru_cache(maxsize=None)
def _kymatio(height: int, width: int, J: int, L: int, max_order: int) -> ScatteringJax2D:
    """kymatio's JAX scattering object (builds the filter bank: ~6 s at 224x224, J = 4)."""
    return ScatteringJax2D(J, (height, width), L=L, max_order=max_order)


def kymatio_filters(height: int, width: int, J: int, L: int = 8) -> Filters:
    """kymatio's filter bank for (H, W) images, grouped by scale for :mod:`.phase`."""
    check_config(J, L)
    check_spatial(height, width, J)
    S = _kymatio(height, width, J, L, 2)
    top, bottom, left, right = S.pad.pad_size
    psi = tuple(tuple(jnp.asarray(np.stack([p["levels"][r] for p in S.psi[j * L:(j + 1) * L]]))
                      for r in range(len(S.psi[j * L]["levels"])))
                for j in range(J))
    return Filters(phi=tuple(jnp.asarray(level) for level in S.phi["levels"]), psi=psi,
                   pad=((top, bottom), (left, right)))


def _transform(height: int, width: int, J: int, L: int, max_order: int, phase: bool):
    """(B, H, W) float32 -> (B, K, H / 2^J, W / 2^J)."""
    if phase:
        return functools.partial(phase_scattering, filters=kymatio_filters(height, width, J, L),
                                 max_order=max_order)
    return _kymatio(height, width, J, L, max_order).scattering


def _parse_shape(shape) -> tuple[int, int, int | None]:
    """(H, W) or (H, W, C) -> (H, W, C or None)."""
    dims = tuple(int(d) for d in shape)
    if len(dims) not in (2, 3):
        raise ValueError(f"shape must be (H, W) or (H, W, C); got {shape!r}")
    return dims[0], dims[1], (dims[2] if len(dims) == 3 else None)


def scattering_fn(shape: Sequence[int], J: int, L: int = 8, max_order: int = 2, phase: bool = False
                  ) -> Callable[[np.ndarray | jax.Array], jax.Array]:
    """A jit-compiled function: float images (B, H, W, C) NHWC -> features (B, H/2^J, W/2^J, C*K)
    float32, channel ``c * K + k`` (k in kymatio's order, see the module docstring).

    ``shape`` is (H, W), or (H, W, C) to also fix the number of colour channels. Integer images
    are refused (scale them first, as :func:`scatter` does); other float dtypes are cast to float32.
    Compiles once per batch shape; the function is shared between calls with equal arguments.
    """
    check_config(J, L, max_order)
    height, width, channels = _parse_shape(shape)
    check_spatial(height, width, J, name="images")
    return _scattering_fn(height, width, channels, J, L, max_order, bool(phase))


@functools.lru_cache(maxsize=None)
def _scattering_fn(height, width, channels, J, L, max_order, phase):
    transform = _transform(height, width, J, L, max_order, phase)
    expected = (height, width) + ((channels,) if channels is not None else ())

    @jax.jit
    def fn(images):
        if images.ndim != 4 or images.shape[1:1 + len(expected)] != expected:
            raise ValueError(f"images must have shape (B, {', '.join(map(str, expected))}"
                             f"{'' if channels is not None else ', C'}); got {images.shape}")
        if not jnp.issubdtype(images.dtype, jnp.floating):
            raise ValueError(f"images must be floating point; got {images.dtype} "
                             "(scale uint8 images to [0, 1] first, or use scatter())")
        b, h, w, c = images.shape
        x = jnp.moveaxis(images.astype(jnp.float32), 3, 1).reshape(b * c, h, w)
        s = transform(x)                                         # (B*C, K, h', w')
        return kymatio_to_nhwc(s.reshape(b, c, *s.shape[1:]))

    return fn


def kymatio_to_nhwc(s):
    """kymatio's layout (B, C, K, h, w) -> (B, h, w, C*K), channel c * K + k."""
    b, c, k, h, w = s.shape
    return s.transpose(0, 3, 4, 1, 2).reshape(b, h, w, c * k)


def default_batch_size(height: int, width: int) -> int:
    """Images per batch: 256 at 32x32, fewer for larger images (5 at 224x224)."""
    return int(min(256, max(1, 2 ** 18 // (height * width))))


def _scatter_batches(x: np.ndarray, fn, batch_size: int, progress: bool) -> np.ndarray:
    """Run ``fn`` over x (N, H, W, C) float32 in batches; the last batch is padded with copies of
    the last image so that every call has one shape (one compilation)."""
    n = len(x)
    out = None
    with tqdm(total=n, unit="img", desc="scattering", disable=not progress) as bar:
        for start in range(0, n, batch_size):
            batch = x[start:start + batch_size]
            rows = len(batch)
            if rows < batch_size and n > batch_size:
                batch = np.concatenate([batch, np.repeat(batch[-1:], batch_size - rows, axis=0)])
            result = np.asarray(fn(batch))[:rows]
            if out is None:
                out = np.empty((n,) + result.shape[1:], np.float32)
            out[start:start + rows] = result
            bar.update(rows)
    if out is None:
        raise ValueError("no images to scatter: x holds 0 images")
    return out


def _versions() -> dict:
    return {"tangentless": importlib.metadata.version("tangentless"),
            "kymatio": importlib.metadata.version("kymatio")}


def scatter(images: ArrayLike, J: int, L: int = 8, max_order: int = 2, phase: bool = False,
            batch_size: int | None = None, progress: bool = True,
            cache_dir: str | os.PathLike[str] | None = None) -> np.ndarray:
    """Scattering features of a whole image set: (N, H, W, C) -> (N, H/2^J, W/2^J, C*K) float32.

    uint8 images are scaled to [0, 1] (divided by 255); other real dtypes are used as they are
    (cast to float32). Runs in batches of ``batch_size`` (default :func:`default_batch_size`)
    with a progress bar. The input is checked first (and held as one float32 copy). With
    ``cache_dir``, features are cached on disk keyed by the configuration and a checksum of the
    input bytes (see :mod:`.cache`).
    """
    check_config(J, L, max_order)
    x = to_unit_range(validate_images(images, "images", dtype=None))
    raw = np.asarray(images)
    _, height, width, channels = x.shape
    check_spatial(height, width, J)
    if batch_size is None:
        batch_size = default_batch_size(height, width)
    elif (isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer))
          or batch_size < 1):
        raise ValueError(f"batch_size must be a positive integer; got {batch_size!r}")
    fn = _scattering_fn(height, width, channels, J, L, max_order, bool(phase))

    def compute():
        return _scatter_batches(x, fn, int(batch_size), progress)

    if cache_dir is None:
        return compute()
    config = {"J": int(J), "L": int(L), "max_order": int(max_order), "phase": bool(phase),
              "shape": list(raw.shape), "dtype": str(raw.dtype), **_versions()}
    return cache.cached(cache_dir, config, raw, compute)
