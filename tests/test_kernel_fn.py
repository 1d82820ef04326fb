"""``spec.kernel_fn``: a traceable kernel function (jit, vmap, grad w.r.t. the images) equal to
``spec.gram``; gradients checked against central finite differences."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tangentless.kernels as tk


def _images(seed, n, size=8, channels=3):
    return np.random.default_rng(seed).standard_normal((n, size, size, channels)).astype(np.float32)


@pytest.mark.parametrize("spec", [tk.myrtle(5, precision="float32"),
                                  tk.serial(tk.Conv(3), tk.DirectSum(tk.Relu(), tk.Gaussian(0.5)),
                                            tk.AvgPool(2), tk.Conv(3), tk.Relu(), tk.GlobalAvgPool())],
                         ids=["myrtle5", "direct_sum"])
def test_jit_equals_gram(spec):
    x, y = _images(0, 3), _images(1, 2)
    expect = spec.gram(x, y, progress=False)
    got = jax.jit(spec.kernel_fn)(x, y)
    assert got.shape == (3, 2)
    np.testing.assert_allclose(np.asarray(got), expect, rtol=2e-5, atol=2e-6)
    np.testing.assert_allclose(np.asarray(jax.jit(lambda a: spec.kernel_fn(a))(x)),
                               spec.gram(x, progress=False), rtol=2e-5, atol=2e-6)


def test_vmap_over_batches_of_batches():
    spec = tk.myrtle(5, precision="float32")
    xs, y = _images(2, 6).reshape(3, 2, 8, 8, 3), _images(3, 2)
    got = jax.vmap(spec.kernel_fn, in_axes=(0, None))(xs, y)
    for b in range(3):
        np.testing.assert_allclose(np.asarray(got[b]), spec.gram(xs[b], y, progress=False),
                                   rtol=2e-5, atol=2e-6)


def test_grad_matches_finite_differences():
    """d/dx sum_j K(x, y_j) in float64 (x64 on), at random directions, against central
    differences; cross pairs only (correlations below 1)."""
    spec = tk.myrtle(5, precision="float64")
    with jax.enable_x64(True):
        x = jnp.asarray(_images(4, 1), dtype=jnp.float64)
        y = jnp.asarray(_images(5, 2), dtype=jnp.float64)
        total = lambda a: spec.kernel_fn(a, y).sum()  # noqa: E731
        grad = jax.grad(total)(x)
        assert np.isfinite(np.asarray(grad)).all()
        rng = np.random.default_rng(6)
        for _ in range(3):
            direction = jnp.asarray(rng.standard_normal(x.shape))
            h = 1e-5
            numeric = (total(x + h * direction) - total(x - h * direction)) / (2 * h)
            analytic = jnp.vdot(grad, direction)
            np.testing.assert_allclose(float(analytic), float(numeric), rtol=1e-6, atol=1e-9)
