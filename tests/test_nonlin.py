"""The float32 arc-cosine dual against the exact float64 formula."""
import jax
import jax.numpy as jnp
import numpy as np

from tangentless.kernels import _nonlin


def exact_arc_cosine(rho):
    return np.sqrt(1 - rho ** 2) / np.pi + rho * (1 - np.arccos(rho) / np.pi)


def test_float32_polynomial_form_matches_the_formula():
    rho = np.concatenate([np.linspace(-1, 1, 200001), [-1.0, -0.0, 0.0, 1.0]])
    approx = np.asarray(_nonlin.arccos_kernel_1(jnp.asarray(rho, jnp.float32)), np.float64)
    exact = exact_arc_cosine(rho.astype(np.float32).astype(np.float64))
    assert np.abs(approx - exact).max() < 3e-7  # a few float32 ulps of values in [0, 1]
    assert approx[-1] == 1.0 and approx[-4] == 0.0
    np.testing.assert_allclose(approx[-3:-1], 1 / np.pi, rtol=1e-7)


def test_fitted_remainder_polynomial_is_accurate_in_float64():
    a = np.linspace(0, 1, 100001)
    q = np.polynomial.Polynomial(_nonlin.ARC_COSINE_REMAINDER)(a)
    with np.errstate(divide="ignore", invalid="ignore"):
        direct = (np.sqrt(1 + a) - a * np.arccos(a) / np.sqrt(1 - a)) / np.pi
    assert np.abs(q - direct)[:-1].max() < 1e-9
    np.testing.assert_allclose(q[-1], (np.sqrt(2) - np.sqrt(2)) / np.pi, atol=1e-9)


def test_float64_path_is_exact():
    rho = np.linspace(-1, 1, 1001)
    with jax.enable_x64(True):
        out = np.asarray(_nonlin.arccos_kernel_1(jnp.asarray(rho)))
    np.testing.assert_allclose(out, exact_arc_cosine(rho), rtol=1e-14, atol=1e-15)
