"""The CUDA backend without a GPU: the plan compiler, backend selection and fallbacks, and the
executor running csrc's kernel bodies on the CPU (host harness built with nvcc) against the JAX
engine."""
import os
import pathlib
import shutil
import subprocess
import sys
import types
import warnings

import numpy as np
import pytest

from tangentless.kernels import (AvgPool, Cast, Conv, CudaBackend, CudaFallbackWarning, DirectSum,
                                 Gaussian, GlobalAvgPool, JaxBackend, Layer, Normalize, Polynomial,
                                 Relu, gram, myrtle, project, serial)
from tangentless.kernels import cuda
from tangentless.kernels.architectures import MYRTLE_STAGES
from tangentless.kernels.backend import resolve_backend

HARNESS_SOURCE = pathlib.Path(__file__).resolve().parents[1] / "csrc" / "harness.cu"


def summary(compiled):
    """[(fused, dtype, h, kinds)] of a plan's stages."""
    return [(st.fused, st.steps[0].dtype, st.steps[0].h, tuple(s.kind for s in st.steps))
            for st in compiled.stages]


def expected_fused_stage(h, repeats, from_pixels, pool):
    kinds = ("pixel_conv" if from_pixels else "conv",) + ("pointwise",) + \
        ("conv", "pointwise") * (repeats - 1) + (pool,)
    return (True, "float32", h, kinds)


def expected_unfused_stage(h, repeats, pool):
    return [(False, "float64", h, (kind,)) for kind in ("conv", "pointwise") * repeats + (pool,)]


# ------------------------------------------------------------------------------------ planning

@pytest.mark.parametrize("depth", [5, 7, 10])
@pytest.mark.parametrize("nonlinearity", ["relu", "gaussian"])
@pytest.mark.parametrize("precision", ["mixed", "float32", "float64"])
@pytest.mark.parametrize("head", ["project", "linear"])
def test_myrtle_plans(depth, nonlinearity, precision, head):
    spec = myrtle(depth, nonlinearity, head, precision=precision, gamma=0.5)
    compiled = cuda.plan(spec, (32, 32, 3))
    r1, r2, r3 = MYRTLE_STAGES[depth]
    head_f32 = [(True, "float32", 1, ("pointwise", "pointwise"))] if head == "project" else []
    head_f64 = [(False, "float64", 1, ("pointwise",))] * 2 if head == "project" else []
    if precision == "float32":
        expected = [expected_fused_stage(32, r1, True, "pool"),
                    expected_fused_stage(16, r2, False, "pool"),
                    expected_fused_stage(8, r3, False, "global_pool")] + head_f32
    elif precision == "mixed":
        expected = ([expected_fused_stage(32, r1, True, "pool"),
                     expected_fused_stage(16, r2, False, "pool"),
                     (False, "float32", 8, ("widen",))] + expected_unfused_stage(8, r3, "global_pool")
                    + head_f64)
    else:
        # the pixel conv is the first stage's first conv
        expected = ([(False, "float64", 32, ("pixel_conv",)), (False, "float64", 32, ("pointwise",))]
                    + expected_unfused_stage(32, r1, "pool")[2:] + expected_unfused_stage(16, r2, "pool")
                    + expected_unfused_stage(8, r3, "global_pool") + head_f64)
    assert summary(compiled) == expected
    pointwise = [s for s in compiled.steps if s.kind == "pointwise"]
    layers = spec.layers
    assert [s.layer for s in pointwise] == [i for i, layer in enumerate(layers)
                                            if isinstance(layer, (Relu, Gaussian, Normalize))]
    code, param = (0, 0.0) if nonlinearity == "relu" else (1, 0.5)
    assert {(s.op, s.param) for s in pointwise} == ({(code, param), (3, 0.0)} if head == "project"
                                                    else {(code, param)})
    unfused = cuda.plan(spec, (32, 32, 3), fused=False)
    assert all(not st.fused and len(st.steps) == 1 for st in unfused.stages)
    assert unfused.steps == compiled.steps


def test_cost_model_matches_the_reference_counts():
    """kernels.md: about 1.3e8 (Myrtle5) and 1.8e8 (Myrtle10) FLOP per 32x32 pair."""
    assert cuda.plan(myrtle(5), (32, 32, 3)).flop_per_pair() == pytest.approx(1.3e8, rel=0.05)
    assert cuda.plan(myrtle(10), (32, 32, 3)).flop_per_pair() == pytest.approx(1.8e8, rel=0.05)


class Identity(Layer):
    def kernel(self, k, info_x=None, info_y=None):
        return k

    def apply(self, params, h):
        return h


@pytest.mark.parametrize("spec, shape, reason", [
    (serial(Conv(3), DirectSum(Relu(), Gaussian()), GlobalAvgPool()), (8, 8, 3),
     "DirectSum at layer 1 has no CUDA kernel"),
    (serial(Conv(3), Identity(), GlobalAvgPool()), (8, 8, 3), "Identity at layer 1 has no CUDA kernel"),
    (serial(Cast("float64"), Conv(3), Cast("float32"), GlobalAvgPool()), (8, 8, 3),
     "only widen float32 to float64"),
    (serial(Conv(3), Relu(), AvgPool(4), GlobalAvgPool()), (6, 6, 3),
     "AvgPool(4) at layer 2 does not divide"),
    (serial(Conv(3), Relu(), AvgPool(2)), (8, 8, 3), "ends with 4x4 maps"),
])
def test_unsupported_specs_give_reasons(spec, shape, reason):
    compiled = cuda.plan(spec, shape)
    assert isinstance(compiled, cuda.Fallback) and reason in compiled.reason


def test_fusion_boundaries():
    """No pixel-first conv: the linear kernel (a size-1 pixel conv) starts the stage; a Conv(1)
    vanishes; non-square global pools and planes too large for shared memory run unfused."""
    spec = serial(Normalize(), Conv(1), Conv(5), Polynomial(3), GlobalAvgPool())
    assert summary(cuda.plan(spec, (8, 4, 2))) == [
        (True, "float32", 8, ("pixel_conv", "pointwise", "conv", "pointwise")),
        (False, "float32", 8, ("global_pool",))]
    assert cuda.plan(spec, (8, 4, 2)).steps[0].size == 1
    assert summary(cuda.plan(spec, (8, 8, 2)))[0][3][-1] == "global_pool"
    big = cuda.plan(serial(Conv(3), Relu(), AvgPool(2), Conv(3), GlobalAvgPool()), (80, 80, 3))
    assert [st.fused for st in big.stages] == [False, False, False, True]


# ---------------------------------------------------------------------------- backend choice

class RefusingLauncher:
    """A launcher that must never be used (specs that fall back never reach it)."""
    xp = np

    def launch(self, *args):
        raise AssertionError("the fallback path must not launch kernels")

    def memory_budget(self):
        return 1 << 20


@pytest.fixture(scope="module")
def small_images():
    rng = np.random.default_rng(7)
    return tuple(rng.normal(size=(n, 8, 8, 3)).astype(np.float32) for n in (5, 3))


def test_fallback_warns_and_runs_jax(small_images, monkeypatch):
    x, y = small_images
    spec = serial(Conv(3), DirectSum(Relu(), Gaussian()), AvgPool(2), Conv(3), Relu(), GlobalAvgPool())
    reference = gram(spec, x, y, block_size=4, progress=False, backend="jax")
    with pytest.warns(CudaFallbackWarning, match="DirectSum at layer 1"):
        out = gram(spec, x, y, block_size=4, progress=False,
                   backend=CudaBackend(launcher=RefusingLauncher()))
    np.testing.assert_array_equal(out, reference)
    monkeypatch.setattr(cuda, "CupyLauncher", lambda device=None: RefusingLauncher())
    with pytest.warns(CudaFallbackWarning, match="DirectSum"):
        spec.gram(x, y, block_size=4, progress=False, backend="cuda")


def test_backend_names():
    spec, shape = myrtle(5), (8, 8, 3)
    assert isinstance(resolve_backend("jax", spec, shape), JaxBackend)
    with pytest.raises(ValueError, match="backend must be"):
        resolve_backend("tpu", spec, shape)


@pytest.mark.skipif(cuda.available(), reason="a GPU is visible here")
def test_auto_picks_a_cpu_backend_without_a_gpu():
    from tangentless.kernels.fused_cpu import FusedCpuBackend
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert isinstance(resolve_backend(None, myrtle(5), (8, 8, 3)), FusedCpuBackend)


def test_cuda_without_cupy_is_a_clear_error(small_images):
    try:
        import cupy  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("CuPy is installed")
    with pytest.raises(ImportError, match=r"pip install 'tangentless\[gpu\]'"):
        gram(myrtle(5), small_images[0], progress=False, backend="cuda")


def test_cupy_without_a_gpu_is_a_clear_error(monkeypatch):
    def no_device():
        raise RuntimeError("cudaErrorNoDevice")

    fake = types.ModuleType("cupy")
    fake.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=no_device))
    monkeypatch.setitem(sys.modules, "cupy", fake)
    assert not cuda.available.__wrapped__()
    with pytest.raises(RuntimeError, match="CuPy is installed but sees no CUDA GPU"):
        CudaBackend()


# ------------------------------------------------------------------ executor on the host harness

@pytest.fixture(scope="session")
def harness(tmp_path_factory):
    """HarnessLauncher on csrc/harness.cu built with nvcc (skipped without nvcc, except on CI)."""
    nvcc = shutil.which("nvcc")
    missing = "nvcc not found" if nvcc is None else None
    if not HARNESS_SOURCE.exists():
        missing = f"{HARNESS_SOURCE} not found"
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"{missing}: the host harness tests must run on CI")
        pytest.skip(missing)
    library = tmp_path_factory.mktemp("harness") / "libtl_harness.so"
    subprocess.run([nvcc, "-shared", "-Xcompiler", "-fPIC", "-o", str(library), str(HARNESS_SOURCE)],
                   check=True, capture_output=True, text=True)
    return cuda.HarnessLauncher(library)


def relative_error(out, reference):
    return np.linalg.norm(out - reference) / np.linalg.norm(reference)


def both_ways(launcher, spec, x, y=None, **options):
    """({fused: CUDA backend result} through ``launcher``, the JAX engine's result)."""
    return {fused: gram(spec, x, y, progress=False, backend=CudaBackend(fused=fused, launcher=launcher),
                        **options)
            for fused in (True, False)}, gram(spec, x, y, progress=False, backend="jax", **options)


def myrtle_like(depth, precision="mixed", head="project"):
    """Myrtle on 8x8 images: stages at 8, 4, 2 pixels, global pool, head ("project" or "linear")."""
    stages = []
    for stage, repeats in enumerate(MYRTLE_STAGES[depth]):
        if stage == 2 and precision == "mixed":
            stages.append(Cast("float64"))
        stages += [Conv(3), Relu()] * repeats + [AvgPool(2) if stage < 2 else GlobalAvgPool()]
    return serial(*([Cast("float64")] if precision == "float64" else []), *stages,
                  *([project()] if head == "project" else []))


@pytest.mark.slow
@pytest.mark.parametrize("depth, precision, head, tolerance", [
    (5, "mixed", "project", 1e-5), (5, "mixed", "linear", 1e-5), (10, "float32", "linear", 1e-5),
    (10, "float32", "project", 1e-5), (5, "float64", "project", 1e-12)])
def test_harness_matches_jax(harness, small_images, depth, precision, head, tolerance):
    """Fused and unfused, rectangular, flip-symmetrized and symmetric (the projected head gives
    values near 1, the linear head unnormalized ones)."""
    x, y = small_images
    spec = myrtle_like(depth, precision, head)
    for options in ({}, {"flip": True}):
        results, reference = both_ways(harness, spec, x, y, block_size=4, **options)
        for fused, out in results.items():
            assert relative_error(out, reference) < tolerance, (fused, options)
    results, reference = both_ways(harness, spec, x, block_size=4)
    for out in results.values():
        assert relative_error(out, reference) < tolerance
        np.testing.assert_array_equal(out, out.T)


@pytest.mark.slow
def test_harness_matches_jax_on_other_layers(harness, small_images):
    """Gaussian and polynomial lifts, a pixel-first Normalize, Conv(5), a 4x4 pool, a float32 head
    and an unfusable non-square global pool; rows chunked to respect the grid limit."""
    x, y = (t[:, :, :4] for t in small_images)
    spec = serial(Normalize(), Conv(5), Polynomial(3), Conv(3), Gaussian(0.5), AvgPool(2), Conv(3),
                  Relu(), GlobalAvgPool(), project(Gaussian(2.0)))
    results, reference = both_ways(harness, spec, x, y, block_size=4)
    for out in results.values():
        assert relative_error(out, reference) < 1e-5
    pooled = serial(Conv(3), Relu(), AvgPool(4), Conv(3), Relu(), GlobalAvgPool())
    results, reference = both_ways(harness, pooled, small_images[0], small_images[1], block_size=4)
    for out in results.values():
        assert relative_error(out, reference) < 1e-5


def test_row_chunks_and_default_block(harness, small_images, monkeypatch):
    """Blocks larger than the grid limit run in row chunks; without block_size the backend's
    preferred block (memory budget) is used."""
    x, y = small_images
    spec = myrtle_like(5)
    reference = gram(spec, x, y, block_size=4, progress=False, backend="jax")
    monkeypatch.setattr(cuda, "MAX_GRID_Y", 4)  # 3 images of y: one row of x per chunk
    backend = CudaBackend(launcher=harness)
    assert backend.preferred_block_size(spec, x.shape[1:]) == 128
    assert relative_error(gram(spec, x, y, progress=False, backend=backend), reference) < 1e-5
