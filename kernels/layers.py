"""Layer specs: one object gives both a kernel transformation and a finite-width network layer.

Kernel layout. The cross-kernel block between images x (Bx of them) and y (By of them) at spatial
size (h, w) is ``K: (Bx, h, w, By, h, w)`` with ``K[a, i, j, b, k, l]`` the channel-averaged product
of the features of ``x_a`` at pixel (i, j) and of ``y_b`` at pixel (k, l). Each image also carries its
self tensor ``T: (1, h, w, 1, h, w)`` (the same quantity for the pair (x, x)), computed once per
image. A layer that needs it records an *info* pytree from ``T`` (for the nonlinearities, the
per-pixel variances ``diag(T)`` of shape (1, h, w)); the Gram engine stacks the infos of many
images along axis 0 and hands them to ``kernel``.

Networks. ``init(key, in_channels, width) -> (params, out_channels)`` and ``apply(params, h) -> h'``
act on NHWC feature maps, in the parameterization whose infinite-width covariance, averaged over
channels, is the kernel (weights N(0, 1) with the fan-in scaling applied in ``apply``).
"""
from __future__ import annotations

import abc
import dataclasses
import math
from typing import TYPE_CHECKING, Any, Callable, Iterable, cast, overload

import einops
import jax
import jax.numpy as jnp

from ._nonlin import arccos_kernel_1, gaussian_dual, polynomial_dual
from .gram import gram as _gram
from .network import network as _network
from .precision import narrowest, psd_rtol

if TYPE_CHECKING:
    import os

    import numpy as np
    import zarr
    from numpy.typing import ArrayLike

__all__ = [
    "Layer", "Conv", "Relu", "Gaussian", "Polynomial", "Normalize", "AvgPool", "GlobalAvgPool",
    "Cast", "Serial", "DirectSum", "serial", "project",
]


def linear_kernel(x, y):
    """Pixel kernel sum_c x[a,i,j,c] y[b,k,l,c]: (Bx,H,W,C), (By,H,W,C) -> (Bx,H,W,By,H,W)."""
    return jnp.einsum("aijc,bklc->aijbkl", x, y)


def _diagonal(t):
    """Per-pixel variances of a self tensor: (1, h, w, 1, h, w) -> (1, h, w)."""
    h, w = t.shape[1], t.shape[2]
    return jnp.diagonal(t.reshape(h * w, h * w)).reshape(1, h, w)


def _outer(ax, by):
    """Broadcast (Bx, h, w) and (By, h, w) maps to the (Bx, h, w, By, h, w) layout and multiply."""
    return ax[:, :, :, None, None, None] * by[None, None, None]


def _inverse_root(n):
    """1 / sqrt(n) where n > 0, else 0 (a pixel with zero variance contributes zero)."""
    positive = n > 0
    return jnp.where(positive, jax.lax.rsqrt(jnp.where(positive, n, 1.0)), 0.0)


def _correlation(k, nx, ny):
    """rho = K / sqrt(nx ny), clipped to [-1, 1]; 0 where a variance is 0."""
    return jnp.clip(k * _outer(_inverse_root(nx), _inverse_root(ny)), -1.0, 1.0)


def _pixel_rms(h):
    """Root mean square over channels and the unit direction: (N,H,W,C) -> (N,H,W,1), (N,H,W,C)."""
    norm = jnp.sqrt(jnp.sum(h * h, axis=-1, keepdims=True))
    unit = h / jnp.where(norm > 0, norm, 1.0)
    return norm / math.sqrt(h.shape[-1]), unit


class Layer(abc.ABC):
    """Base class: subclasses define ``kernel`` and ``apply``; everything else has defaults."""

    def output_size(self, size: tuple[int, int]) -> tuple[int, int]:
        """Spatial size after the layer; raises ValueError where the layer cannot act."""
        return size

    @abc.abstractmethod
    def kernel(self, k: jax.Array, info_x: Any, info_y: Any) -> jax.Array:
        """Cross tensor (Bx, h, w, By, h, w) -> (Bx, h', w', By, h', w')."""

    def self_kernel(self, t: jax.Array) -> tuple[jax.Array, Any]:
        """Self tensor (1, h, w, 1, h, w) -> (next self tensor, info for ``kernel``)."""
        return self.kernel(t, None, None), None

    def pixel_kernel(self, x: jax.Array, y: jax.Array, info_x: Any, info_y: Any) -> jax.Array:
        """Cross tensor straight from pixels (Bx, H, W, C), (By, H, W, C)."""
        return self.kernel(linear_kernel(x, y), info_x, info_y)

    def self_pixel_kernel(self, x: jax.Array) -> tuple[jax.Array, Any]:
        """Self tensor and info straight from the pixels of one image (1, H, W, C)."""
        return self.self_kernel(linear_kernel(x, x))

    def init(self, key: jax.Array, in_channels: int, width: int) -> tuple[Any, int]:
        """Network parameters and the number of output channels."""
        return (), in_channels

    @abc.abstractmethod
    def apply(self, params: Any, h: jax.Array) -> jax.Array:
        """Network layer on NHWC features."""

    @property
    def input_dtype(self) -> str:
        """The dtype the pixels enter this kernel in: float32, unless it starts with a Cast."""
        return "float32"

    def cast_dtypes(self) -> tuple[str, ...]:
        """The dtypes of the Casts in this spec, in order (none for a plain layer)."""
        return ()

    @property
    def kernel_dtype(self) -> str:
        """The narrowest dtype any stage of this kernel computes in: that of the pixels
        (:attr:`input_dtype`) or of one of its Casts (float32 for mixed-precision Myrtles). It
        sets the pixel magnitudes ``gram`` accepts (:mod:`tangentless.kernels.precision`)."""
        return narrowest((self.input_dtype, *self.cast_dtypes()))

    @property
    def psd_rtol(self) -> float:
        """How precise this kernel is: the relative size of the negative eigenvalues its rounding
        alone gives a PSD Gram matrix (1e-5 where a stage computes in float32, 1e-8 in float64
        throughout), the solvers' ``psd_rtol``; a Gram store records it."""
        return psd_rtol(self.kernel_dtype)

    @overload
    def gram(self, x: ArrayLike, y: ArrayLike | None = None, *, store: None = None,
             **options: Any) -> np.ndarray: ...

    @overload
    def gram(self, x: ArrayLike, y: ArrayLike | None = None, *, store: str | os.PathLike[str],
             **options: Any) -> zarr.Array: ...

    def gram(self, x: ArrayLike, y: ArrayLike | None = None, *,
             store: str | os.PathLike[str] | None = None, **options: Any) -> np.ndarray | zarr.Array:
        """Gram matrix of this kernel: a numpy array, or the Zarr array of ``store``; see
        :func:`tangentless.kernels.gram`."""
        if store is None:
            return _gram(self, x, y, **options)
        return _gram(self, x, y, store=store, **options)

    def kernel_fn(self, x1: ArrayLike, x2: ArrayLike | None = None) -> jax.Array:
        """K (N1, N2) between image batches x1 (N1, H, W, C) and x2 (N2, H, W, C; default x1) as
        a plain JAX function, like neural-tangents' ``kernel_fn``: it traces under ``jax.jit``,
        ``jax.vmap`` and ``jax.grad`` (w.r.t. the images), and equals :meth:`gram` to float32
        tolerance. For research on small batches: no validation, blocking, store or backend (all
        pairs' tensors are built at once). Stages after a ``Cast("float64")`` compute in float64
        only with ``jax.config.update("jax_enable_x64", True)``. The gradient of a kernel with a
        ReLU is undefined where a correlation is exactly 1 (e.g. K(x, x)'s diagonal).
        """
        x1 = jnp.asarray(x1)
        x2 = x1 if x2 is None else jnp.asarray(x2)

        def infos(x):
            return jax.vmap(lambda xi: self.self_pixel_kernel(xi[None])[1])(x)

        def pair(xi, yj, ix, iy):
            return self.pixel_kernel(xi[None], yj[None], ix, iy).reshape(())

        info1, info2 = infos(x1), infos(x2)
        row = jax.vmap(pair, in_axes=(None, 0, None, 0))
        return jax.vmap(row, in_axes=(0, None, 0, None))(x1, x2, info1, info2)

    def network(self, width: int, num_outputs: int | None = None
                ) -> tuple[Callable[..., dict[str, Any]], Callable[..., jax.Array]]:
        """``(init, apply)`` of the finite-width network; see :func:`tangentless.kernels.network`."""
        return _network(self, width, num_outputs)


@dataclasses.dataclass(frozen=True)
class Conv(Layer):
    """size x size convolution with zero "same" padding, averaged over the window.

    Kernel: K'[i,j,k,l] = mean_{a,b} K[i+a, j+b, k+a, l+b]. On pixels it is the Gram of size x size
    patches divided by size^2 (one matrix product).
    """
    size: int = 3

    def __post_init__(self):
        if not isinstance(self.size, int) or self.size < 1 or self.size % 2 == 0:
            raise ValueError(f"Conv size must be a positive odd integer, got {self.size!r}")

    def kernel(self, k: jax.Array, info_x: Any = None, info_y: Any = None) -> jax.Array:
        r, (h, w) = self.size // 2, k.shape[1:3]
        kp = jax.lax.optimization_barrier(jnp.pad(k, [(0, 0), (r, r), (r, r), (0, 0), (r, r), (r, r)]))
        total: Any = 0.0
        for a in range(self.size):
            for b in range(self.size):
                total = total + kp[:, a:a + h, b:b + w, :, a:a + h, b:b + w]
        return total / self.size ** 2

    def _patches(self, x):
        """(B, H, W, C) -> (B, H, W, size^2 C) zero-padded patches."""
        r, (h, w) = self.size // 2, x.shape[1:3]
        xp = jnp.pad(x, [(0, 0), (r, r), (r, r), (0, 0)])
        return jnp.concatenate(
            [xp[:, a:a + h, b:b + w, :] for a in range(self.size) for b in range(self.size)], axis=-1)

    def pixel_kernel(self, x: jax.Array, y: jax.Array, info_x: Any = None, info_y: Any = None) -> jax.Array:
        px, py = self._patches(x), self._patches(y)
        d = px.shape[-1]
        k = px.reshape(-1, d) @ py.reshape(-1, d).T
        return k.reshape(px.shape[:3] + py.shape[:3]) / self.size ** 2

    def self_pixel_kernel(self, x: jax.Array) -> tuple[jax.Array, Any]:
        return self.pixel_kernel(x, x), None

    def init(self, key: jax.Array, in_channels: int, width: int) -> tuple[Any, int]:
        return jax.random.normal(key, (self.size, self.size, in_channels, width)), width

    def apply(self, params: Any, h: jax.Array) -> jax.Array:
        out = jax.lax.conv_general_dilated(h, params, (1, 1), "SAME",
                                           dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return out / math.sqrt(self.size ** 2 * h.shape[-1])


class _Pointwise(Layer):
    """A nonlinearity acting on each pixel pair through rho = K / sqrt(nx ny): K' = s dual(rho)."""

    @abc.abstractmethod
    def dual(self, rho: jax.Array) -> jax.Array:
        """The kernel's function of the correlation rho."""

    def kernel(self, k: jax.Array, info_x: Any, info_y: Any) -> jax.Array:
        rho = _correlation(k, info_x, info_y)
        return _outer(jnp.sqrt(info_x), jnp.sqrt(info_y)) * self.dual(rho)

    def self_kernel(self, t: jax.Array) -> tuple[jax.Array, Any]:
        n = _diagonal(t)
        return self.kernel(t, n, n), n


@dataclasses.dataclass(frozen=True)
class Relu(_Pointwise):
    """He-scaled ReLU: the degree-1 arc-cosine kernel; the network applies sqrt(2) relu.

    The kernel assumes Gaussian inputs, as after a Conv: in a network, place it after a linear layer.
    """

    def dual(self, rho: jax.Array) -> jax.Array:
        return arccos_kernel_1(rho)

    def apply(self, params: Any, h: jax.Array) -> jax.Array:
        return math.sqrt(2.0) * jax.nn.relu(h)


@dataclasses.dataclass(frozen=True)
class Gaussian(_Pointwise):
    """Exp-normalized moment lift s exp(gamma (rho - 1)).

    Network: per pixel, rms(h) * sqrt(2) cos(u W + b) with u = h / |h|, W ~ N(0, gamma), b ~ U(0, 2 pi)
    (random Fourier features of the RBF kernel on the unit sphere).
    """
    gamma: float = 1.0

    def __post_init__(self):
        if not (isinstance(self.gamma, (int, float)) and math.isfinite(self.gamma) and self.gamma > 0):
            raise ValueError(f"Gaussian gamma must be finite and > 0, got {self.gamma!r}")

    def dual(self, rho: jax.Array) -> jax.Array:
        return gaussian_dual(rho, self.gamma)

    def init(self, key: jax.Array, in_channels: int, width: int) -> tuple[Any, int]:
        kw, kb = jax.random.split(key)
        weights = jax.random.normal(kw, (in_channels, width)) * math.sqrt(self.gamma)
        phases = jax.random.uniform(kb, (width,), maxval=2 * math.pi)
        return (weights, phases), width

    def apply(self, params: Any, h: jax.Array) -> jax.Array:
        weights, phases = params
        rms, unit = _pixel_rms(h)
        return rms * math.sqrt(2.0) * jnp.cos(unit @ weights + phases)


@dataclasses.dataclass(frozen=True)
class Polynomial(_Pointwise):
    """Polynomial moment lift s rho^degree.

    Network: per pixel, rms(h) * prod_q (u . w_q) with u = h / |h| and independent w_q ~ N(0, I).
    """
    degree: int = 2

    def __post_init__(self):
        if not isinstance(self.degree, int) or self.degree < 1:
            raise ValueError(f"Polynomial degree must be an integer >= 1, got {self.degree!r}")

    def dual(self, rho: jax.Array) -> jax.Array:
        return polynomial_dual(rho, self.degree)

    def init(self, key: jax.Array, in_channels: int, width: int) -> tuple[Any, int]:
        return jax.random.normal(key, (self.degree, in_channels, width)), width

    def apply(self, params: Any, h: jax.Array) -> jax.Array:
        rms, unit = _pixel_rms(h)
        return rms * jnp.prod(jnp.einsum("nhwc,qcd->qnhwd", unit, params), axis=0)


@dataclasses.dataclass(frozen=True)
class Normalize(Layer):
    """Per-pixel normalization to unit variance: K' = rho. Network: h sqrt(C) / |h| per pixel."""

    def kernel(self, k: jax.Array, info_x: Any, info_y: Any) -> jax.Array:
        return _correlation(k, info_x, info_y)

    def self_kernel(self, t: jax.Array) -> tuple[jax.Array, Any]:
        n = _diagonal(t)
        return self.kernel(t, n, n), n

    def apply(self, params: Any, h: jax.Array) -> jax.Array:
        return _pixel_rms(h)[1] * math.sqrt(h.shape[-1])


@dataclasses.dataclass(frozen=True)
class AvgPool(Layer):
    """Average pooling by ``window`` with stride ``window`` (mean over the window^4 block)."""
    window: int = 2

    def __post_init__(self):
        if not isinstance(self.window, int) or self.window < 1:
            raise ValueError(f"AvgPool window must be an integer >= 1, got {self.window!r}")

    def output_size(self, size: tuple[int, int]) -> tuple[int, int]:
        h, w = size
        if h % self.window or w % self.window:
            raise ValueError(f"AvgPool({self.window}) needs a spatial size divisible by "
                             f"{self.window}; got {h}x{w} (images too small for the pooling?)")
        return h // self.window, w // self.window

    def kernel(self, k: jax.Array, info_x: Any = None, info_y: Any = None) -> jax.Array:
        p = self.window
        if p <= 2:  # strided slices fuse with the producer; a reshape-mean does not (XLA CPU)
            total: Any = 0.0
            for a in range(p):
                for b in range(p):
                    for c in range(p):
                        for d in range(p):
                            total = total + k[:, a::p, b::p, :, c::p, d::p]
            return total / p ** 4
        return einops.reduce(k, "bx (i a) (j b) by (k c) (l d) -> bx i j by k l", "mean",
                             a=p, b=p, c=p, d=p)

    def apply(self, params: Any, h: jax.Array) -> jax.Array:
        p = self.window
        return einops.reduce(h, "n (i a) (j b) c -> n i j c", "mean", a=p, b=p)


@dataclasses.dataclass(frozen=True)
class GlobalAvgPool(Layer):
    """Average over all pixels; the spatial size becomes 1 x 1."""

    def output_size(self, size: tuple[int, int]) -> tuple[int, int]:
        return 1, 1

    def kernel(self, k: jax.Array, info_x: Any = None, info_y: Any = None) -> jax.Array:
        return k.mean(axis=(1, 2, 4, 5), keepdims=True)

    def apply(self, params: Any, h: jax.Array) -> jax.Array:
        return h.mean(axis=(1, 2), keepdims=True)


@dataclasses.dataclass(frozen=True)
class Cast(Layer):
    """Change the kernel's floating-point precision from here on (e.g. a float64 tail)."""
    dtype: str = "float64"

    def __post_init__(self):
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"Cast dtype must be 'float32' or 'float64', got {self.dtype!r}")

    @property
    def input_dtype(self) -> str:
        return self.dtype

    def cast_dtypes(self) -> tuple[str, ...]:
        return (self.dtype,)

    def kernel(self, k: jax.Array, info_x: Any = None, info_y: Any = None) -> jax.Array:
        return k.astype(self.dtype)

    def apply(self, params: Any, h: jax.Array) -> jax.Array:
        return h


@dataclasses.dataclass(frozen=True)
class Serial(Layer):
    """Layers applied in order."""
    layers: tuple[Layer, ...]

    def __post_init__(self):
        flat = []
        for layer in self.layers:
            if not isinstance(layer, Layer):
                raise TypeError(f"serial() takes Layer objects, got {type(layer).__name__}")
            flat.extend(layer.layers if isinstance(layer, Serial) else [layer])
        object.__setattr__(self, "layers", tuple(flat))

    @property
    def input_dtype(self) -> str:
        return self.layers[0].input_dtype if self.layers else "float32"

    def cast_dtypes(self) -> tuple[str, ...]:
        return tuple(d for layer in self.layers for d in layer.cast_dtypes())

    def output_size(self, size: tuple[int, int]) -> tuple[int, int]:
        for layer in self.layers:
            size = layer.output_size(size)
        return size

    def kernel(self, k: jax.Array, info_x: Any, info_y: Any) -> jax.Array:
        for layer, ix, iy in zip(self.layers, info_x, info_y):
            k = layer.kernel(k, ix, iy)
        return k

    def self_kernel(self, t: jax.Array) -> tuple[jax.Array, Any]:
        infos = []
        for layer in self.layers:
            t, info = layer.self_kernel(t)
            infos.append(info)
        return t, tuple(infos)

    def _split_input(self, x):
        """Leading casts act on the pixels, so the first real layer can still fuse with them."""
        start = 0
        while start < len(self.layers) and isinstance(self.layers[start], Cast):
            x = x.astype(self.layers[start].dtype)
            start += 1
        return x, start

    def pixel_kernel(self, x: jax.Array, y: jax.Array, info_x: Any, info_y: Any) -> jax.Array:
        x, start = self._split_input(x)
        y = y.astype(x.dtype)
        if start == len(self.layers):
            return linear_kernel(x, y)
        k = self.layers[start].pixel_kernel(x, y, info_x[start], info_y[start])
        for layer, ix, iy in zip(self.layers[start + 1:], info_x[start + 1:], info_y[start + 1:]):
            k = layer.kernel(k, ix, iy)
        return k

    def self_pixel_kernel(self, x: jax.Array) -> tuple[jax.Array, Any]:
        x, start = self._split_input(x)
        if start == len(self.layers):
            return linear_kernel(x, x), (None,) * start
        t, info = self.layers[start].self_pixel_kernel(x)
        infos = [None] * start + [info]
        for layer in self.layers[start + 1:]:
            t, info = layer.self_kernel(t)
            infos.append(info)
        return t, tuple(infos)

    def init(self, key: jax.Array, in_channels: int, width: int) -> tuple[Any, int]:
        params = []
        for layer, k in zip(self.layers, jax.random.split(key, max(len(self.layers), 1))):
            p, in_channels = layer.init(k, in_channels, width)
            params.append(p)
        return tuple(params), in_channels

    def apply(self, params: Any, h: jax.Array) -> jax.Array:
        for layer, p in zip(self.layers, params):
            h = layer.apply(p, h)
        return h


@dataclasses.dataclass(frozen=True, init=False)
class DirectSum(Layer):
    """Concatenated branches: K = sum_b weight_b K_b (all branches see the same input).

    Network: branch outputs (equal widths) concatenated, branch b scaled by sqrt(weight_b * n_branches).
    """
    branches: tuple[Layer, ...]
    weights: tuple[float, ...]

    def __init__(self, *branches: Layer, weights: Iterable[float] | None = None) -> None:
        if not branches:
            raise ValueError("DirectSum needs at least one branch")
        weights = (1.0,) * len(branches) if weights is None else tuple(float(v) for v in weights)
        if len(weights) != len(branches):
            raise ValueError(f"DirectSum got {len(branches)} branches but {len(weights)} weights")
        if any(not math.isfinite(v) or v < 0 for v in weights):
            raise ValueError(f"DirectSum weights must be finite and >= 0, got {weights}")
        object.__setattr__(self, "branches", tuple(branches))
        object.__setattr__(self, "weights", weights)

    def cast_dtypes(self) -> tuple[str, ...]:
        return tuple(d for branch in self.branches for d in branch.cast_dtypes())

    def output_size(self, size: tuple[int, int]) -> tuple[int, int]:
        sizes = {b.output_size(size) for b in self.branches}
        if len(sizes) != 1:
            raise ValueError(f"DirectSum branches give different spatial sizes {sorted(sizes)}")
        return sizes.pop()

    def kernel(self, k: jax.Array, info_x: Any, info_y: Any) -> jax.Array:
        return cast(jax.Array, sum(w * b.kernel(k, ix, iy)
                                   for w, b, ix, iy in zip(self.weights, self.branches, info_x, info_y)))

    def _combine_self(self, results):
        t = sum(w * tb for w, (tb, _) in zip(self.weights, results))
        return t, tuple(info for _, info in results)

    def self_kernel(self, t: jax.Array) -> tuple[jax.Array, Any]:
        return self._combine_self([b.self_kernel(t) for b in self.branches])

    def pixel_kernel(self, x: jax.Array, y: jax.Array, info_x: Any, info_y: Any) -> jax.Array:
        return cast(jax.Array, sum(w * b.pixel_kernel(x, y, ix, iy)
                                   for w, b, ix, iy in zip(self.weights, self.branches, info_x, info_y)))

    def self_pixel_kernel(self, x: jax.Array) -> tuple[jax.Array, Any]:
        return self._combine_self([b.self_pixel_kernel(x) for b in self.branches])

    def init(self, key: jax.Array, in_channels: int, width: int) -> tuple[Any, int]:
        results = [b.init(k, in_channels, width)
                   for b, k in zip(self.branches, jax.random.split(key, len(self.branches)))]
        channels = {c for _, c in results}
        if len(channels) != 1:
            raise ValueError(f"DirectSum network branches give different widths {sorted(channels)}")
        return tuple(p for p, _ in results), len(results) * channels.pop()

    def apply(self, params: Any, h: jax.Array) -> jax.Array:
        scale = len(self.branches)
        return jnp.concatenate([math.sqrt(w * scale) * b.apply(p, h)
                                for w, b, p in zip(self.weights, self.branches, params)], axis=-1)


def serial(*layers: Layer) -> Serial:
    """Compose layers in order (nested serials are flattened)."""
    return Serial(tuple(layers))


def project(nonlinearity: Layer | None = None) -> Serial:
    """The paper's normalized head: the nonlinearity (ReLU by default) of the normalized kernel.

    Its network is a dense layer (``Conv(1)``, the identity on kernels), a per-pixel normalization and
    the nonlinearity: the dense layer makes the nonlinearity's inputs Gaussian at infinite width.
    """
    return serial(Conv(1), Normalize(), Relu() if nonlinearity is None else nonlinearity)
