"""Elementwise dual activations (functions of a correlation rho in [-1, 1]).

Float32 inputs use a polynomial arccos (XLA's float32 arccos is several times slower);
float64 inputs use ``jnp.arccos``.
"""
import jax.numpy as jnp

# Abramowitz & Stegun 4.4.46: arccos(a) = sqrt(1 - a) * p(a) on [0, 1], |error| <= 2e-8.
_ACOS_COEFFS = (1.5707963050, -0.2145988016, 0.0889789874, -0.0501743046,
                0.0308918810, -0.0170881256, 0.0066700901, -0.0012624911)


def arccos(x):
    """arccos of an array; polynomial (abs error <= 2e-8 + rounding) for float32."""
    if x.dtype == jnp.float64:
        return jnp.arccos(x)
    a = jnp.abs(x)
    poly = _ACOS_COEFFS[-1]
    for c in _ACOS_COEFFS[-2::-1]:
        poly = poly * a + c
    r = jnp.sqrt(1.0 - a) * poly
    return jnp.where(x >= 0, r, jnp.pi - r)


def arccos_kernel_1(rho):
    """He-scaled degree-1 arc-cosine dual: sqrt(1-rho^2)/pi + rho (1 - arccos(rho)/pi); 1 at rho=1."""
    return jnp.sqrt(jnp.maximum(1.0 - rho * rho, 0.0)) / jnp.pi + rho * (1.0 - arccos(rho) / jnp.pi)


def gaussian_dual(rho, gamma):
    """exp(gamma (rho - 1)): the RBF kernel of unit vectors with squared distance 2 (1 - rho)."""
    return jnp.exp(gamma * (rho - 1.0))


def polynomial_dual(rho, degree):
    """rho ** degree."""
    return rho ** degree
