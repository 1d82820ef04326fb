"""Brute-force reference for the compositional convolutional kernels.

The reference below is written only from the layer formulas of "Neural Kernels Without Tangents"
(averaged conventions, see shared/reference/kernels.md, "Layer formulas"): numpy float64 with
explicit loops over the 4-D pixel-pair tensor K[i, j, k, l] (pixel (i, j) of x, pixel (k, l) of y)
and over the window offsets; numpy is used only along the innermost (k, l) axes.  It imports
nothing from tangentless; the library is only called through its public spec/gram API.

Each spec is described once as a small tuple language and turned into both a library spec
(``to_library``) and a reference evaluation (``ref_apply``):

    ("conv", s) ("relu",) ("gauss", gamma) ("poly", d) ("norm",) ("pool", p) ("gap",)
    ("cast", dtype) ("sum", (branch, branch, ...), weights_or_None)  # branch = list of layers
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import tangentless.kernels as tk

# --------------------------------------------------------------------------------------------
# Reference (float64, explicit loops, no tangentless)
# --------------------------------------------------------------------------------------------


def ref_pixel_linear(x, y):
    """L[i, j, k, l] = sum_c x[i, j, c] y[k, l, c]."""
    H, W, C = x.shape
    L = np.zeros((H, W, H, W))
    for i in range(H):
        for j in range(W):
            for k in range(H):
                for l in range(W):
                    acc = 0.0
                    for c in range(C):
                        acc += float(x[i, j, c]) * float(y[k, l, c])
                    L[i, j, k, l] = acc
    return L


def ref_conv(K, s):
    """K'[i,j,k,l] = (1/s^2) sum_{a,b} K[i+a, j+b, k+a, l+b], a, b in -p..s-1-p, zero padding p=s//2."""
    H, W = K.shape[0], K.shape[1]
    p = s // 2
    Kp = np.zeros((H + 2 * p, W + 2 * p, H + 2 * p, W + 2 * p))
    Kp[p:p + H, p:p + W, p:p + H, p:p + W] = K
    out = np.zeros_like(K)
    for i in range(H):
        for j in range(W):
            for a in range(-p, s - p):
                for b in range(-p, s - p):
                    # rows k + a, columns l + b of the padded tensor, for all k, l at once
                    out[i, j] += Kp[i + p + a, j + p + b, p + a:p + a + H, p + b:p + b + W]
    return out / (s * s)


def ref_pool(K, P):
    """Mean over the P^4 block, stride P in all four axes."""
    H, W = K.shape[0], K.shape[1]
    h, w = H // P, W // P
    out = np.zeros((h, w, h, w))
    for I in range(h):
        for J in range(w):
            for KK in range(h):
                for LL in range(w):
                    acc = 0.0
                    for a in range(P):
                        for b in range(P):
                            for c in range(P):
                                for d in range(P):
                                    acc += K[I * P + a, J * P + b, KK * P + c, LL * P + d]
                    out[I, J, KK, LL] = acc / P**4
    return out


def ref_global_pool(K):
    H, W = K.shape[0], K.shape[1]
    acc = 0.0
    for i in range(H):
        for j in range(W):
            acc += K[i, j].sum()  # sum over k, l
    return np.full((1, 1, 1, 1), acc / (H * W) ** 2)


def self_norms(Kself):
    """N[i, j] = Kself[i, j, i, j]."""
    H, W = Kself.shape[0], Kself.shape[1]
    N = np.zeros((H, W))
    for i in range(H):
        for j in range(W):
            N[i, j] = Kself[i, j, i, j]
    return N


def ref_pointwise(K, Nx, Ny, fn):
    """out[i,j,k,l] = fn(K, s, rho) with s = sqrt(Nx[i,j] Ny[k,l]), rho = clip(K/s, -1, 1) (0 if s = 0)."""
    H, W = K.shape[0], K.shape[1]
    out = np.zeros_like(K)
    for i in range(H):
        for j in range(W):
            s = np.sqrt(np.maximum(Nx[i, j] * Ny, 0.0))  # over (k, l)
            with np.errstate(divide="ignore", invalid="ignore"):
                rho = np.where(s > 0, K[i, j] / np.where(s > 0, s, 1.0), 0.0)
            rho = np.clip(rho, -1.0, 1.0)
            out[i, j] = fn(s, rho)
    return out


def f_relu(s, rho):
    return s * (np.sqrt(1.0 - rho**2) / math.pi + rho * (1.0 - np.arccos(rho) / math.pi))


def f_gauss(gamma):
    return lambda s, rho: s * np.exp(gamma * (rho - 1.0))


def f_poly(d):
    return lambda s, rho: s * rho**d


def f_norm(s, rho):
    return rho


def ref_apply(layers, Kxy, Kxx, Kyy):
    """Apply a layer list to the cross tensor and the two self tensors (all float64)."""
    for layer in layers:
        kind = layer[0]
        if kind == "conv":
            Kxy, Kxx, Kyy = (ref_conv(T, layer[1]) for T in (Kxy, Kxx, Kyy))
        elif kind == "pool":
            Kxy, Kxx, Kyy = (ref_pool(T, layer[1]) for T in (Kxy, Kxx, Kyy))
        elif kind == "gap":
            Kxy, Kxx, Kyy = (ref_global_pool(T) for T in (Kxy, Kxx, Kyy))
        elif kind == "cast":
            pass  # the reference is float64 throughout
        elif kind in ("relu", "gauss", "poly", "norm"):
            fn = {
                "relu": lambda: f_relu,
                "gauss": lambda: f_gauss(layer[1]),
                "poly": lambda: f_poly(layer[1]),
                "norm": lambda: f_norm,
            }[kind]()
            Nx, Ny = self_norms(Kxx), self_norms(Kyy)
            Kxy, Kxx, Kyy = (
                ref_pointwise(Kxy, Nx, Ny, fn),
                ref_pointwise(Kxx, Nx, Nx, fn),
                ref_pointwise(Kyy, Ny, Ny, fn),
            )
        elif kind == "sum":
            branches, weights = layer[1], layer[2]
            if weights is None:
                weights = (1.0,) * len(branches)
            outs = [ref_apply(br, Kxy, Kxx, Kyy) for br in branches]
            Kxy = sum(w * o[0] for w, o in zip(weights, outs))
            Kxx = sum(w * o[1] for w, o in zip(weights, outs))
            Kyy = sum(w * o[2] for w, o in zip(weights, outs))
        else:
            raise ValueError(layer)
    return Kxy, Kxx, Kyy


def ref_gram(layers, X, Y):
    G = np.zeros((len(X), len(Y)))
    for a in range(len(X)):
        for b in range(len(Y)):
            x, y = X[a], Y[b]
            Kxy, _, _ = ref_apply(
                layers, ref_pixel_linear(x, y), ref_pixel_linear(x, x), ref_pixel_linear(y, y)
            )
            assert Kxy.shape == (1, 1, 1, 1)
            G[a, b] = Kxy[0, 0, 0, 0]
    return G


def ref_myrtle(depth, nonlin="relu", head="project", gamma=1.0):
    """Myrtle architecture as described in kernels.md / the myrtle docstring."""
    repeats = {5: (2, 1, 1), 7: (2, 2, 2), 10: (3, 3, 3)}[depth]
    nl = ("relu",) if nonlin == "relu" else ("gauss", gamma)
    layers = []
    for stage, r in enumerate(repeats):
        if stage > 0:
            layers.append(("pool", 2))
        for _ in range(r):
            layers += [("conv", 3), nl]
    layers.append(("gap",))
    if head == "project":
        layers += [("norm",), nl]  # the nonlinearity on the normalized kernel (no s prefactor)
    return layers


# --------------------------------------------------------------------------------------------
# Library specs from the same description
# --------------------------------------------------------------------------------------------


def to_library(layers):
    out = []
    for layer in layers:
        kind = layer[0]
        if kind == "conv":
            out.append(tk.Conv(layer[1]))
        elif kind == "relu":
            out.append(tk.Relu())
        elif kind == "gauss":
            out.append(tk.Gaussian(gamma=layer[1]))
        elif kind == "poly":
            out.append(tk.Polynomial(degree=layer[1]))
        elif kind == "norm":
            out.append(tk.Normalize())
        elif kind == "pool":
            out.append(tk.AvgPool(layer[1]))
        elif kind == "gap":
            out.append(tk.GlobalAvgPool())
        elif kind == "cast":
            out.append(tk.Cast(layer[1]))
        elif kind == "sum":
            branches = [to_library(br) for br in layer[1]]
            if layer[2] is None:
                out.append(tk.DirectSum(*branches))
            else:
                out.append(tk.DirectSum(*branches, weights=layer[2]))
        else:
            raise ValueError(layer)
    return tk.serial(*out)


def images(seed, n, hw, c, *, float32_exact=True):
    """Seeded NHWC float64 images.

    By default the values are exactly representable in float32, so that the float64 checks test the
    layer arithmetic independently of how the library stores its input images (see
    ``test_float64_spec_keeps_float64_inputs`` for that question on its own).
    """
    x = np.random.default_rng(seed).standard_normal((n, hw, hw, c))
    return x.astype(np.float32).astype(np.float64) if float32_exact else x


def assert_close(lib, ref, rtol):
    lib = np.asarray(lib)
    assert lib.shape == ref.shape
    assert lib.dtype == np.float64
    assert np.all(np.isfinite(lib))
    np.testing.assert_allclose(lib, ref, rtol=rtol, atol=rtol * np.abs(ref).max())


F32 = 1e-5  # float32 paths, relative to the kernel's scale (observed errors <= 1.2e-6)
F64 = 1e-10  # float64 paths


def backends(layers, hw, c):
    """The Gram backends that run ``layers`` on (hw, hw, c) images: "jax" always, "numba" (the
    fused CPU kernel) where its program covers the spec; the default backend is one of them."""
    from tangentless.kernels.fused_cpu import fused_program
    fused = not isinstance(fused_program(to_library(layers), (hw, hw, c)), str)
    return ["jax", "numba"] if fused else ["jax"]


_REFERENCES: dict = {}


def cached_ref_gram(key, layers, x, y):
    """ref_gram, computed once per ``key`` (the backends share it)."""
    if key not in _REFERENCES:
        _REFERENCES[key] = ref_gram(layers, x, y)
    return _REFERENCES[key]

# --------------------------------------------------------------------------------------------
# 0. sanity of the reference itself (independent identities)
# --------------------------------------------------------------------------------------------


def test_reference_first_conv_is_patch_gram():
    """First conv = Gram of zero-padded s x s patches / s^2."""
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((2, 5, 5, 2))
    for s in (3, 5):
        p = s // 2
        xp = np.pad(x, ((p, p), (p, p), (0, 0)))
        yp = np.pad(y, ((p, p), (p, p), (0, 0)))
        px = np.stack([xp[i:i + s, j:j + s].ravel() for i in range(5) for j in range(5)])
        py = np.stack([yp[i:i + s, j:j + s].ravel() for i in range(5) for j in range(5)])
        expect = (px @ py.T / s**2).reshape(5, 5, 5, 5)
        np.testing.assert_allclose(ref_conv(ref_pixel_linear(x, y), s), expect, rtol=1e-12, atol=1e-12)


def test_reference_relu_matches_monte_carlo():
    """The arc-cosine formula equals 2 E[relu(u) relu(v)] for (u, v) Gaussian with that covariance."""
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((2, 3))
    cov = np.array([[a @ a, a @ b], [a @ b, b @ b]])
    z = rng.multivariate_normal(np.zeros(2), cov, size=400_000)
    mc = 2 * np.mean(np.maximum(z[:, 0], 0) * np.maximum(z[:, 1], 0))
    exact = ref_pointwise(
        np.full((1, 1, 1, 1), a @ b), np.full((1, 1), a @ a), np.full((1, 1), b @ b), f_relu
    )[0, 0, 0, 0]
    assert abs(mc - exact) < 0.02 * np.sqrt(cov[0, 0] * cov[1, 1])


# --------------------------------------------------------------------------------------------
# 1. single layers in minimal specs
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("p", [2, 3, 4])
def test_avgpool_kernel_and_network_on_non_square_maps(p):
    """AvgPool(p).kernel on a (Bx, h, w, By, h, w) block = ref_pool of each pair, and
    AvgPool(p).apply = the mean of each p x p window, with h != w and Bx != By so that a swapped axis
    shows (p = 2: strided slices, p > 2: the window reduction)."""
    rng = np.random.default_rng(p)
    h, w = 2 * p, 3 * p
    k = rng.standard_normal((2, h, w, 3, h, w)).astype(np.float32)
    expect = np.stack([np.stack([ref_pool(k[a, :, :, b], p) for b in range(3)], 2) for a in range(2)])
    got = np.asarray(tk.AvgPool(p).kernel(k))
    np.testing.assert_allclose(got, expect, rtol=1e-5, atol=1e-6)
    maps = rng.standard_normal((2, h, w, 5)).astype(np.float32)
    expect = np.zeros((2, h // p, w // p, 5))
    for i in range(h // p):
        for j in range(w // p):
            expect[:, i, j] = maps[:, i * p:(i + 1) * p, j * p:(j + 1) * p].mean(axis=(1, 2))
    np.testing.assert_allclose(np.asarray(tk.AvgPool(p).apply(None, maps)), expect, rtol=1e-5,
                               atol=1e-6)

SMALL_SPECS = {
    "conv_relu": [("conv", 3), ("relu",), ("gap",)],
    "conv_conv": [("conv", 3), ("conv", 3), ("gap",)],
    "conv5": [("conv", 5), ("gap",)],
    "conv5_relu_conv3": [("conv", 5), ("relu",), ("conv", 3), ("gap",)],
    "conv1_relu": [("conv", 1), ("relu",), ("gap",)],
    "conv_pool_conv_relu": [("conv", 3), ("relu",), ("pool", 2), ("conv", 3), ("relu",), ("gap",)],
    "pool_on_pixels": [("pool", 2), ("relu",), ("gap",)],
    "conv_pool3": [("conv", 3), ("relu",), ("pool", 3), ("relu",), ("gap",)],
    "gauss_0.5": [("conv", 3), ("gauss", 0.5), ("conv", 3), ("gauss", 0.5), ("gap",)],
    "gauss_1": [("conv", 3), ("gauss", 1.0), ("gap",)],
    "poly_2": [("conv", 3), ("poly", 2), ("conv", 3), ("gap",)],
    "poly_4": [("conv", 3), ("poly", 4), ("gap",)],
    "normalize": [("conv", 3), ("norm",), ("conv", 3), ("gap",)],
    "normalize_relu_conv": [("conv", 3), ("norm",), ("relu",), ("conv", 3), ("relu",), ("gap",)],
    "project_head": [("conv", 3), ("relu",), ("gap",), ("norm",), ("relu",)],
    "project_gauss_head": [("conv", 3), ("relu",), ("gap",), ("norm",), ("gauss", 1.0)],
    "relu_on_pixels": [("relu",), ("gap",)],
    "relu_on_pixels_then_conv": [("relu",), ("conv", 3), ("relu",), ("gap",)],
    "gauss_on_pixels": [("gauss", 0.7), ("conv", 3), ("gap",)],
    "direct_sum": [
        ("conv", 3),
        ("sum", ([("relu",)], [("conv", 3), ("gauss", 0.5)]), (0.3, 1.7)),
        ("conv", 3),
        ("relu",),
        ("gap",),
    ],
    "direct_sum_default_weights_residual": [
        ("conv", 3),
        ("relu",),
        ("sum", ([], [("conv", 3), ("relu",)]), None),
        ("gap",),
    ],
    "direct_sum_pooling_branches": [
        ("conv", 3),
        ("sum", ([("pool", 2)], [("conv", 3), ("relu",), ("pool", 2)], [("poly", 2), ("pool", 2)]),
         (0.5, 1.0, 2.0)),
        ("relu",),
        ("gap",),
    ],
}


@pytest.mark.slow
@pytest.mark.parametrize("name,backend", [(name, backend) for name in sorted(SMALL_SPECS)
                                          for backend in backends(SMALL_SPECS[name], 6, 3)])
def test_small_spec_float32(name, backend):
    layers = SMALL_SPECS[name]
    hw = 6
    x = images(10, 2, hw, 3)
    y = images(11, 3, hw, 3)
    lib = to_library(layers).gram(x, y, progress=False, backend=backend)
    assert_close(lib, cached_ref_gram(("f32", name), layers, x, y), F32)


CAST_SPECS = {
    "cast_conv_relu": [("cast", "float64"), ("conv", 3), ("relu",), ("gap",)],
    "cast_relu_pixels": [("cast", "float64"), ("relu",), ("conv", 3), ("relu",), ("gap",)],
    "cast_gauss_poly_norm": [
        ("cast", "float64"), ("conv", 3), ("gauss", 0.5), ("conv", 3), ("poly", 4),
        ("pool", 2), ("norm",), ("conv", 3), ("relu",), ("gap",), ("norm",), ("relu",),
    ],
    "cast_direct_sum": [
        ("cast", "float64"),
        ("conv", 5),
        ("sum", ([("relu",)], [("gauss", 2.0)]), (2.0, 0.25)),
        ("conv", 3),
        ("gap",),
    ],
}


@pytest.mark.slow
@pytest.mark.parametrize("name,backend", [(name, backend) for name in sorted(CAST_SPECS)
                                          for backend in backends(CAST_SPECS[name], 6, 2)])
def test_small_spec_float64(name, backend):
    layers = CAST_SPECS[name]
    x = images(20, 2, 6, 2)
    y = images(21, 3, 6, 2)
    lib = to_library(layers).gram(x, y, progress=False, backend=backend)
    assert_close(lib, cached_ref_gram(("f64", name), layers, x, y), F64)


def test_cast_midway_float32_then_float64():
    layers = [("conv", 3), ("relu",), ("cast", "float64"), ("conv", 3), ("relu",), ("gap",)]
    x = images(30, 2, 4, 3)
    y = images(31, 2, 4, 3)
    lib = to_library(layers).gram(x, y, progress=False)
    assert_close(lib, ref_gram(layers, x, y), F32)


@pytest.mark.parametrize("backend", ["jax", "numba"])
def test_single_pixel_images(backend):
    """1x1 images: every conv reduces to its centre tap / s^2."""
    layers = [("cast", "float64"), ("conv", 3), ("relu",), ("conv", 3), ("gap",)]
    x = images(32, 3, 1, 4)
    y = images(33, 2, 1, 4)
    lib = to_library(layers).gram(x, y, progress=False, backend=backend)
    assert_close(lib, ref_gram(layers, x, y), F64)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["jax", "numba"])
def test_zero_variance_pixels(backend):
    """Pixels with zero self-variance get rho = 0, so their contribution vanishes."""
    x = images(40, 2, 6, 2)
    y = images(41, 2, 6, 2)
    x[0, :3, :3] = 0.0  # after a 3x3 conv, pixel (1, 1) of x[0] is exactly zero
    y[1, 2:, 3:] = 0.0  # and pixels (3..4, 4) of y[1]
    x[1, 5, 5] = 0.0  # a single zero pixel (zero only on the raw pixels)
    for layers in (
        [("cast", "float64"), ("relu",), ("gap",)],
        [("cast", "float64"), ("gauss", 1.0), ("gap",)],
        [("cast", "float64"), ("conv", 3), ("relu",), ("conv", 3), ("relu",), ("gap",)],
        [("cast", "float64"), ("norm",), ("relu",), ("gap",)],
        [("cast", "float64"), ("conv", 3), ("norm",), ("conv", 3), ("relu",), ("gap",)],
    ):
        lib = to_library(layers).gram(x, y, progress=False, backend=backend)
        assert_close(lib, ref_gram(layers, x, y), F64)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["jax", "numba"])
def test_symmetric_and_flip_paths(backend):
    layers = [("cast", "float64"), ("conv", 3), ("relu",), ("pool", 2), ("conv", 3), ("relu",), ("gap",)]
    x = images(50, 3, 4, 2)
    y = images(51, 2, 4, 2)
    spec = to_library(layers)
    ref_xx = cached_ref_gram("flip xx", layers, x, x)
    assert_close(spec.gram(x, progress=False, backend=backend), ref_xx, F64)
    ref_xy = cached_ref_gram("flip xy", layers, x, y)
    ref_mirror = cached_ref_gram("flip x Fy", layers, x, y[:, :, ::-1])
    assert_close(spec.gram(x, y, flip=True, progress=False, backend=backend), ref_xy + ref_mirror, F64)
    assert_close(spec.gram(x, y, flip="mirror", progress=False, backend=backend), ref_mirror, F64)
    assert_close(spec.gram(x, y, block_size=1, progress=False, backend=backend), ref_xy, F64)


@pytest.mark.slow
def test_float64_spec_keeps_float64_inputs():
    """A float64 spec (Cast at the start, or myrtle(precision="float64")) on float64 images that are
    not representable in float32: the pixel linear kernel should use the float64 values."""
    x = images(60, 2, 4, 3, float32_exact=False)
    y = images(61, 3, 4, 3, float32_exact=False)
    layers = [("cast", "float64"), ("conv", 3), ("relu",), ("gap",)]
    assert_close(to_library(layers).gram(x, y, progress=False), ref_gram(layers, x, y), F64)
    x = images(62, 2, 8, 3, float32_exact=False)
    y = images(63, 2, 8, 3, float32_exact=False)
    lib = tk.myrtle(5, "relu", "linear", precision="float64").gram(x, y, progress=False)
    assert_close(lib, ref_gram(ref_myrtle(5, "relu", "linear"), x, y), F64)


# --------------------------------------------------------------------------------------------
# 2. Myrtle stacks on 8x8 images (stages at 8, 4, 2, then the global pool)
# --------------------------------------------------------------------------------------------

MYRTLE_CASES = [
    (5, "relu", "project", 1.0, "float64"),
    (5, "gaussian", "project", 1.0, "mixed"),
    (7, "relu", "project", 1.0, "mixed"),
    (7, "gaussian", "linear", 1.0, "float64"),
    (7, "relu", "linear", 1.0, "float32"),
    (10, "relu", "linear", 1.0, "float64"),
    (10, "relu", "project", 1.0, "mixed"),
    (10, "gaussian", "project", 1.0, "float64"),
    (10, "gaussian", "linear", 0.5, "mixed"),
]


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["jax", "numba"])
@pytest.mark.parametrize("depth,nonlin,head,gamma,precision", MYRTLE_CASES)
def test_myrtle(depth, nonlin, head, gamma, precision, backend):
    x = images(100 + depth, 2, 8, 3)
    y = images(200 + depth, 2, 8, 3)
    spec = tk.myrtle(depth, nonlin, head, gamma=gamma, precision=precision)
    lib = spec.gram(x, y, progress=False, backend=backend)
    ref = cached_ref_gram(("myrtle", depth, nonlin, head, gamma),
                          ref_myrtle(depth, nonlin, head, gamma), x, y)
    assert_close(lib, ref, F64 if precision == "float64" else F32)
