"""The fused CPU backend ("numba") against the JAX backend at float32 tolerance (the brute-force
reference checks both in tests/test_bruteforce.py), and how the engine chooses it."""
import warnings

import numpy as np
import pytest

import tangentless.kernels as tk
from tangentless.kernels.backend import CudaFallbackWarning, resolve_backend
from tangentless.kernels.fused_cpu import FusedCpuBackend, fused_program
from tangentless.kernels.jax_backend import JaxBackend

F32 = 2e-6  # relative to the largest entry; both backends compute the stages in float32


def _images(seed, n, h, w, c):
    return (np.random.default_rng(seed).standard_normal((n, h, w, c)) * 0.3).astype(np.float32)


def _agree(spec, x, y=None, **options):
    jax_k = spec.gram(x, y, backend="jax", progress=False, **options)
    fused = spec.gram(x, y, backend="numba", progress=False, **options)
    assert fused.dtype == np.float64 and np.isfinite(fused).all()
    np.testing.assert_allclose(fused, jax_k, rtol=F32, atol=F32 * np.abs(jax_k).max())
    return fused


@pytest.mark.slow
@pytest.mark.parametrize("depth", [5, 10])
def test_myrtle_on_cifar_sized_images(depth, cifar10_subset):
    """Real 32x32 images (ZCA-whitened exact CIFAR-10), non-square block (3 x 2)."""
    train = cifar10_subset[0][:64]
    images = tk.ZCAWhitening(bias=1e-5).fit(train).transform(train[:5])
    _agree(tk.myrtle(depth), images[:3], images[3:])


@pytest.mark.parametrize("depth,nonlinearity,head,precision", [
    (5, "relu", "project", "mixed"), (7, "gaussian", "linear", "float32"),
    (10, "relu", "linear", "float64"), (7, "relu", "project", "float32")])
def test_myrtle_variants_on_16x16(depth, nonlinearity, head, precision):
    x, y = _images(1, 3, 16, 16, 3), _images(2, 4, 16, 16, 3)
    _agree(tk.myrtle(depth, nonlinearity, head, precision=precision), x, y)


def test_non_square_images_other_pools_and_channels():
    """12x20 maps (rows != columns), pools 2 and 3, a 5x5 conv, polynomial and normalize layers,
    one and five channels: the slab indexing swaps no axis."""
    spec = tk.serial(tk.Conv(5), tk.Relu(), tk.AvgPool(2), tk.Conv(3), tk.Polynomial(3),
                     tk.AvgPool(3), tk.Normalize(), tk.Conv(3), tk.Gaussian(0.7), tk.GlobalAvgPool())
    for channels in (1, 5):
        _agree(spec, _images(3, 2, 12, 18, channels), _images(4, 3, 12, 18, channels))


def test_mnist_sized_myrtle_with_pool7():
    _agree(tk.myrtle(5), _images(5, 2, 28, 28, 1), _images(6, 2, 28, 28, 1))


def test_symmetric_gram_flips_and_blank_images():
    """K(x, x) over several blocks, flip-symmetrized and mirror kernels; a blank image (zero
    variances: its row is zero)."""
    x = _images(7, 5, 8, 8, 3)
    x[2] = 0.0
    spec = tk.myrtle(5)
    k = _agree(spec, x, block_size=2)
    assert np.array_equal(k, k.T)
    _agree(spec, x, x[:3], flip=True, block_size=2)
    _agree(spec, x, x[:3], flip="mirror")


def test_programs_and_reasons():
    program = fused_program(tk.myrtle(5), (32, 32, 3))
    # stages at 32, 16, 8 (float64: the mixed Myrtle's tail), then the 1x1 head
    assert program.stages[:, :2].tolist() == [[32, 32], [16, 16], [8, 8], [1, 1]]
    assert program.stages[:, 4].tolist() == [0, 0, 1, 1]
    assert "DirectSum" in fused_program(tk.serial(tk.Conv(3), tk.DirectSum(tk.Relu(), tk.Conv(3)),
                                                  tk.GlobalAvgPool()), (8, 8, 3))
    assert "Cast inside a stage" in fused_program(
        tk.serial(tk.Conv(3), tk.Cast("float64"), tk.Relu(), tk.GlobalAvgPool()), (8, 8, 3))


def test_default_backend_choice():
    """Default: the fused kernel where it runs the spec, silently JAX where it cannot; asked for
    by name on a spec it cannot run: JAX with a warning naming the reason."""
    shape = (8, 8, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert isinstance(resolve_backend(None, tk.myrtle(5), shape), FusedCpuBackend)
        residual = tk.serial(tk.Conv(3), tk.DirectSum(tk.Relu(), tk.Conv(3)), tk.GlobalAvgPool())
        assert isinstance(resolve_backend(None, residual, shape), JaxBackend)
    with pytest.warns(CudaFallbackWarning, match="DirectSum"):
        assert isinstance(resolve_backend("numba", residual, shape), JaxBackend)


def test_called_directly_on_a_spec_it_cannot_compute_it_says_why():
    residual = tk.serial(tk.Conv(3), tk.DirectSum(tk.Relu(), tk.Conv(3)), tk.GlobalAvgPool())
    x = np.random.default_rng(0).standard_normal((2, 8, 8, 3)).astype(np.float32)
    with pytest.raises(ValueError, match="numba backend cannot compute this spec: .*DirectSum"):
        FusedCpuBackend().self_info(residual, x)
