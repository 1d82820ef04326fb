"""The CUDA sources in csrc/: every .cu compiles for sm_80 and sm_90 with warnings as errors, and
the kernel bodies, run on the CPU by the host harness (csrc/harness.cu), equal the JAX layers.

The harness runs each block with one thread, or with several host threads meeting at every barrier
(THREADS): that checks the block-stride loops, the tree reductions and the barriers, though not
every interleaving a GPU may produce.
nvcc missing: the tests skip, except under CI (env var CI set), where they fail.
"""
import ctypes
import os
import pathlib
import shutil
import subprocess

import jax
import numpy as np
import pytest

from tangentless.kernels.layers import (AvgPool, Conv, Gaussian, GlobalAvgPool, Normalize,
                                        Polynomial, Relu, serial)

CSRC = pathlib.Path(__file__).resolve().parents[1] / "csrc"
WARNINGS_AS_ERRORS = ["-Werror", "all-warnings", "-Xcompiler", "-Wall,-Werror"]
OP_CODES = {Relu: 0, Gaussian: 1, Polynomial: 2, Normalize: 3}
CONV, BLOCK, CAST_CHUNK = 100, 256, 4096  # op code base of a conv; threads (ignored); tiles.cuh
THREADS = 7  # host threads per block in the threaded runs: odd, more than a corner plane's entries
F32_TOL, F64_TOL = 2e-6, 1e-13


def _nvcc() -> str:
    path = shutil.which("nvcc")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("nvcc not found: CI must compile the CUDA sources")
        pytest.skip("nvcc not found (install the CUDA toolkit to compile csrc/)")
    return path


def _run(command):
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, f"{' '.join(map(str, command))}\n{result.stdout}{result.stderr}"


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_every_source_compiles_without_warnings(arch, tmp_path):
    sources = sorted(CSRC.glob("*.cu"))
    assert {s.name for s in sources} >= {"gram.cu", "harness.cu"}
    _run([_nvcc(), f"-arch={arch}", "-c", *WARNINGS_AS_ERRORS, *sources, "-odir", tmp_path])


# ------------------------------------------------------------------------------------------------
# The harness and a small launcher (grids and shared-memory sizes as in csrc/README.md)
# ------------------------------------------------------------------------------------------------

P, I, LL = ctypes.c_void_p, ctypes.c_int, ctypes.c_longlong
SIGNATURES = {
    "pixel_conv": [P, P, P, I, I, I, I, I, I],
    "conv": [P, P, I, I, I, I],
    "conv_f64": [P, P, I, I, I, I],
    "pointwise": [P, P, P, I, I, I, I, I, ctypes.c_float],
    "pointwise_f64": [P, P, P, I, I, I, I, I, ctypes.c_double],
    "pool": [P, P, I, I, I, I],
    "pool_f64": [P, P, I, I, I, I],
    "global_pool": [P, P, I, I, I],
    "global_pool_f64": [P, P, I, I, I],
    "cast_f64": [P, P, LL],
    "fused_stage": [P] * 8 + [I] * 7,
}


@pytest.fixture(scope="session")
def harness(tmp_path_factory):
    library = tmp_path_factory.mktemp("harness") / "libtl_harness.so"
    _run([_nvcc(), "-shared", "-Xcompiler", "-fPIC", *WARNINGS_AS_ERRORS, "-o", library,
          CSRC / "harness.cu"])
    lib = ctypes.CDLL(str(library))
    for name, args in SIGNATURES.items():
        function = getattr(lib, f"tl_host_{name}")
        function.argtypes = [I, I, I, ctypes.c_size_t] + args
        function.restype = None
    lib.tl_host_set_threads.argtypes = [I]
    return Launcher(lib)


def _ptr(a):
    if a is None:
        return None
    assert a.flags.c_contiguous, "the kernels take row-major arrays"
    return a.ctypes.data


def _suffix(dtype):
    return "_f64" if dtype == np.float64 else ""


class Launcher:
    """Calls tl_host_<name> with the grid and dynamic shared memory a GPU launch would use."""

    def __init__(self, lib):
        self.lib = lib

    def threaded(self, method, *args, **kwargs):
        """method(*args, **kwargs) with THREADS host threads per block."""
        self.lib.tl_host_set_threads(THREADS)
        try:
            return method(*args, **kwargs)
        finally:
            self.lib.tl_host_set_threads(1)

    def _call(self, name, grid, shared, *args):
        getattr(self.lib, f"tl_host_{name}")(*grid, BLOCK, shared,
                                              *(_ptr(a) if isinstance(a, np.ndarray) or a is None
                                                else a for a in args))

    def pixel_conv(self, x, y, size):
        (bx, h, w, c), by = x.shape, len(y)
        out = np.full((bx * by, h, w, h, w), np.nan, np.float32)
        shared = 2 * size * (w + size - 1) * c * 4
        self._call("pixel_conv", (h * h, bx * by), shared, x, y, out, bx, by, h, w, c, size)
        return out

    def conv(self, k, size):
        pairs, h, w = k.shape[:3]
        out = np.full_like(k, np.nan)
        self._call("conv" + _suffix(k.dtype), (h * w, pairs), 0, k, out, pairs, h, w, size)
        return out

    def pointwise(self, k, nx, ny, op, param=0.0):
        """Returns a copy of k with the pointwise layer applied (the kernel works in place)."""
        (bx, h, w), by = nx.shape, len(ny)
        k = k.copy()
        self._call("pointwise" + _suffix(k.dtype), (h * w, bx * by), 0, k, nx, ny, bx, by, h, w,
                   op, param)
        return k

    def pool(self, k, p):
        pairs, h, w = k.shape[:3]
        out = np.full((pairs, h // p, w // p, h // p, w // p), np.nan, k.dtype)
        self._call("pool" + _suffix(k.dtype), ((h // p) * (w // p), pairs), 0, k, out, pairs,
                   h, w, p)
        return out

    def global_pool(self, k):
        pairs, h, w = k.shape[:3]
        out = np.full(pairs, np.nan, k.dtype)
        self._call("global_pool" + _suffix(k.dtype), (pairs, 1), BLOCK * k.itemsize, k, out,
                   pairs, h, w)
        return out

    def cast_f64(self, a):
        out = np.full(a.shape, np.nan, np.float64)
        self._call("cast_f64", (-(-a.size // CAST_CHUNK), 1), 0, a, out, a.size)
        return out

    def fused_stage(self, ops, params, norms_x, norms_y, pool, shape, x=None, y=None, k=None):
        """ops: op codes; norms_*: (pointwise ops, b, h, w); shape: (bx, by, h, w)."""
        bx, by, h, w = shape
        c = 0 if x is None else x.shape[-1]
        if pool == 1:
            out = np.full((bx * by, h, w, h, w), np.nan, np.float32)
        elif pool == h == w:
            out = np.zeros(bx * by, np.float32)
        else:
            out = np.zeros((bx * by, h // pool, w // pool, h // pool, w // pool), np.float32)
        ops, params = np.asarray(ops, np.int32), np.asarray(params, np.float32)
        self._call("fused_stage", ((2 * h - 1) * (2 * w - 1), bx * by), 2 * h * w * 4, x, y, k,
                   out, norms_x, norms_y, ops, params, len(ops), bx, by, h, w, c, pool)
        return out


# ------------------------------------------------------------------------------------------------
# References
# ------------------------------------------------------------------------------------------------

def _pairs(k):
    """(Bx, h, w, By, h, w) -> (Bx * By, h, w, h, w), pair = a * By + b."""
    bx, h, w, by = k.shape[:4]
    return np.asarray(k).transpose(0, 3, 1, 2, 4, 5).reshape(bx * by, h, w, *k.shape[4:])


def _unpairs(k, bx):
    pairs, h, w = k.shape[:3]
    return k.reshape(bx, pairs // bx, h, w, h, w).transpose(0, 2, 3, 1, 4, 5)


def _assert_close(out, ref, tol):
    out, ref = np.asarray(out), np.asarray(ref)
    assert out.shape == ref.shape and out.dtype == ref.dtype
    assert np.isfinite(out).all(), f"{np.sum(~np.isfinite(out))} entries not written"
    error = np.linalg.norm((out - ref).ravel()) / np.linalg.norm(ref.ravel())
    assert error < tol, f"relative error {error:.3g} >= {tol:g}"


def _tol(dtype):
    return F64_TOL if dtype == np.float64 else F32_TOL


def _images(rng, n, h, w, c=3, dtype=np.float32):
    """Random images with a few all-zero pixels (zero variance: the s = 0 branch)."""
    x = rng.standard_normal((n, h, w, c))
    x[rng.random((n, h, w)) < 0.1] = 0.0
    return x.astype(dtype)


def _random_kernel(rng, bx, by, h, w, dtype):
    return rng.standard_normal((bx * by, h, w, h, w)).astype(dtype)


def _x64(dtype):
    return jax.enable_x64(dtype == np.float64)


def _infos(spec, images):
    """Per-layer infos of a Serial spec, stacked over images (None for layers without one)."""
    per_image = [spec.self_pixel_kernel(images[a:a + 1])[1] for a in range(len(images))]
    return tuple(None if per_image[0][q] is None
                 else np.concatenate([np.asarray(p[q]) for p in per_image])
                 for q in range(len(spec.layers)))


def _op_list(layers):
    """Op codes and params of the conv / pointwise layers of a stage."""
    codes = [CONV + layer.size if isinstance(layer, Conv) else OP_CODES[type(layer)]
             for layer in layers]
    params = [layer.gamma if isinstance(layer, Gaussian) else
              layer.degree if isinstance(layer, Polynomial) else 0.0 for layer in layers]
    return codes, params


def _stage_norms(layers, infos):
    """(pointwise ops, b, h, w) float32 variances of the pointwise layers of a stage."""
    norms = [v for layer, v in zip(layers, infos) if not isinstance(layer, Conv)]
    return np.ascontiguousarray(np.stack(norms), dtype=np.float32)


def _unfused(launcher, layers, norms_x, norms_y, pool, x=None, y=None, k=None):
    """The stage through the separate kernels: the sequence tl_fused_stage fuses."""
    q = 0
    for n, layer in enumerate(layers):
        if isinstance(layer, Conv):
            k = launcher.pixel_conv(x, y, layer.size) if n == 0 and x is not None else \
                launcher.conv(k, layer.size)
        else:
            codes, params = _op_list([layer])
            k = launcher.pointwise(k, norms_x[q], norms_y[q], codes[0], params[0])
            q += 1
    h, w = k.shape[1:3]
    if pool == 1:
        return k
    return launcher.global_pool(k) if pool == h == w else launcher.pool(k, pool)


# ------------------------------------------------------------------------------------------------
# Separate kernels
# ------------------------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("h, w, size", [(6, 6, 3), (4, 6, 5), (5, 3, 1)])
def test_pixel_conv(harness, h, w, size):
    rng = np.random.default_rng(1)
    x, y = _images(rng, 2, h, w), _images(rng, 3, h, w)
    ref = _pairs(Conv(size).pixel_kernel(x, y))
    _assert_close(harness.pixel_conv(x, y, size), ref, F32_TOL)
    _assert_close(harness.threaded(harness.pixel_conv, x, y, size), ref, F32_TOL)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("h, w, size", [(6, 6, 3), (4, 6, 3), (5, 3, 5)])
def test_conv(harness, dtype, h, w, size):
    k = _random_kernel(np.random.default_rng(2), 2, 3, h, w, dtype)
    with _x64(dtype):
        ref = Conv(size).kernel(_unpairs(k, 2))
        _assert_close(harness.conv(k, size), _pairs(ref), _tol(dtype))


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layer", [Relu(), Gaussian(0.7), Polynomial(3), Normalize()],
                         ids=["relu", "gaussian", "polynomial", "normalize"])
def test_pointwise(harness, dtype, layer):
    rng = np.random.default_rng(3)
    x, y = _images(rng, 2, 4, 6, dtype=dtype), _images(rng, 3, 4, 6, dtype=dtype)
    nx, ny = (np.sum(v * v, axis=-1) for v in (x, y))
    # the pixel kernel (|rho| <= 1) scaled by 0.5 .. 1.5, so that some correlations are clipped
    k = _pairs(np.einsum("aijc,bklc->aijbkl", x, y)) * rng.uniform(0.5, 1.5, (6, 4, 6, 4, 6))
    k = k.astype(dtype)
    scale = _pairs(np.sqrt(np.einsum("aij,bkl->aijbkl", nx, ny)))
    assert np.any(np.abs(k) > scale), "no clipped correlation drawn"
    codes, params = _op_list([layer])
    with _x64(dtype):
        ref = layer.kernel(_unpairs(k, 2), nx, ny)
        _assert_close(harness.pointwise(k, nx, ny, codes[0], params[0]), _pairs(ref),
                      _tol(dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("h, w, p", [(6, 6, 2), (6, 6, 3), (4, 6, 2)])
def test_pool(harness, dtype, h, w, p):
    k = _random_kernel(np.random.default_rng(4), 2, 3, h, w, dtype)
    with _x64(dtype):
        ref = AvgPool(p).kernel(_unpairs(k, 2))
        _assert_close(harness.pool(k, p), _pairs(ref), _tol(dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_global_pool_and_cast(harness, dtype):
    rng = np.random.default_rng(5)
    k = (_random_kernel(rng, 2, 3, 4, 6, dtype) + 0.5).astype(dtype)
    with _x64(dtype):
        ref = GlobalAvgPool().kernel(_unpairs(k, 2)).reshape(-1)
        _assert_close(harness.global_pool(k), ref, _tol(dtype))
        _assert_close(harness.threaded(harness.global_pool, k), ref, _tol(dtype))
    a = rng.standard_normal(2 * CAST_CHUNK + 5).astype(np.float32)
    np.testing.assert_array_equal(harness.cast_f64(a), a.astype(np.float64))


# ------------------------------------------------------------------------------------------------
# The fused stage
# ------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_fused_stages_of_a_myrtle_like_kernel(harness):
    """Three stages at 12, 6 and 3 pixels: from pixels (pool 2), from the tensor (pool 2), from the
    tensor with the global pool; each equals the unfused kernels and the JAX prefix of the spec."""
    rng = np.random.default_rng(6)
    x, y = _images(rng, 2, 12, 12), _images(rng, 3, 12, 12)
    spec = serial(Conv(3), Relu(), Conv(3), Relu(), AvgPool(2), Conv(3), Relu(), AvgPool(2),
                  Conv(3), Relu(), GlobalAvgPool())
    infos_x, infos_y = _infos(spec, x), _infos(spec, y)
    stages = [(0, 4, 2, 12), (5, 7, 2, 6), (8, 10, 3, 3)]  # (first layer, pool layer, p, size)
    k = None
    for first, stop, pool, size in stages:
        layers = spec.layers[first:stop]
        codes, params = _op_list(layers)
        nx = _stage_norms(layers, infos_x[first:stop])
        ny = _stage_norms(layers, infos_y[first:stop])
        inputs = dict(x=x, y=y) if k is None else dict(k=k)
        fused = harness.fused_stage(codes, params, nx, ny, pool, (2, 3, size, size), **inputs)
        unfused = _unfused(harness, layers, nx, ny, pool, **inputs)
        prefix = serial(*spec.layers[:stop + 1])
        ref = prefix.pixel_kernel(x, y, infos_x[:stop + 1], infos_y[:stop + 1])
        ref = np.asarray(ref).reshape(-1) if pool == size else _pairs(ref)
        threaded = harness.threaded(harness.fused_stage, codes, params, nx, ny, pool,
                                    (2, 3, size, size), **inputs)
        _assert_close(fused, unfused, F32_TOL)
        _assert_close(threaded, unfused, F32_TOL)
        _assert_close(fused, ref, 4 * F32_TOL)
        k = fused


@pytest.mark.slow
@pytest.mark.parametrize("pool", [1, 2])
@pytest.mark.parametrize("start", ["pixels", "tensor"])
def test_fused_stage_with_every_op_on_rectangular_images(harness, pool, start):
    """4 x 6 images (odd plane rectangles, a 5 x 5 conv wider than some planes), all four
    pointwise ops, the pixel conv or the tensor as the start, with and without the pool."""
    rng = np.random.default_rng(7)
    x, y = _images(rng, 2, 4, 6), _images(rng, 3, 4, 6)
    head = [Conv(3)] if start == "pixels" else [Conv(3), Relu()]
    body = [Gaussian(0.7), Conv(5), Polynomial(3), Conv(3), Normalize(), Conv(1), Relu()]
    spec = serial(*head, *body, AvgPool(pool))
    infos_x, infos_y = _infos(spec, x), _infos(spec, y)
    ref = spec.pixel_kernel(x, y, infos_x, infos_y)
    if start == "pixels":
        layers, inputs, first = spec.layers[:-1], dict(x=x, y=y), 0
    else:
        prefix = serial(*head)
        k = _pairs(prefix.pixel_kernel(x, y, infos_x[:2], infos_y[:2]))
        layers, inputs, first = spec.layers[2:-1], dict(k=np.ascontiguousarray(k)), 2
    codes, params = _op_list(layers)
    nx = _stage_norms(layers, infos_x[first:-1])
    ny = _stage_norms(layers, infos_y[first:-1])
    fused = harness.fused_stage(codes, params, nx, ny, pool, (2, 3, 4, 6), **inputs)
    threaded = harness.threaded(harness.fused_stage, codes, params, nx, ny, pool, (2, 3, 4, 6),
                                **inputs)
    unfused = _unfused(harness, layers, nx, ny, pool, **inputs)
    _assert_close(fused, unfused, F32_TOL)
    _assert_close(threaded, unfused, F32_TOL)
    _assert_close(fused, _pairs(ref), 4 * F32_TOL)
