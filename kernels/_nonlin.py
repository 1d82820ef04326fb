"""Elementwise dual activations (functions of a correlation rho in [-1, 1]).

Float32 inputs use polynomial forms with one square root (XLA's float32 arccos is slow on CPU and
extra square roots split fusions); float64 inputs use the exact formulas.
"""
import jax
import jax.numpy as jnp
import numpy as np


def _arc_cosine_remainder(a: np.ndarray) -> np.ndarray:
    """Q(a) = (sqrt(1 + a) - a arccos(a) / sqrt(1 - a)) / pi on [0, 1] (float64, stable at a = 1)."""
    u = np.sqrt((1.0 - a) / 2.0)
    arccos_over_root = np.sqrt(2.0) * np.where(u > 0, np.arcsin(u) / np.where(u > 0, u, 1.0), 1.0)
    return (np.sqrt(1.0 + a) - a * arccos_over_root) / np.pi


def _fit_power_series(f, degree: int) -> tuple[float, ...]:
    """Coefficients (lowest first) of a Chebyshev least-squares fit of f on [0, 1]."""
    nodes = 0.5 + 0.5 * np.cos(np.linspace(0.0, np.pi, 4001))
    fit = np.polynomial.Chebyshev.fit(nodes, f(nodes), degree, domain=[0.0, 1.0])
    return tuple(float(c) for c in fit.convert(kind=np.polynomial.Polynomial).coef)


# max |error| 2e-10 on [0, 1] (tests check it against the float64 formula)
ARC_COSINE_REMAINDER = _fit_power_series(_arc_cosine_remainder, 8)


def _horner(coefficients, a):
    out = coefficients[-1]
    for c in coefficients[-2::-1]:
        out = out * a + c
    return out


@jax.custom_jvp
def arccos_kernel_1(rho):
    """He-scaled degree-1 arc-cosine dual: sqrt(1 - rho^2)/pi + rho (1 - arccos(rho)/pi); 1 at rho=1.

    float32: the identity kappa(rho) = max(rho, 0) + sqrt(1 - |rho|) Q(|rho|), Q a smooth polynomial.
    Its derivative is 1 - arccos(rho)/pi, finite on [-1, 1] (given as the JVP: the formulas'
    square roots alone would give NaN at rho = 1, the diagonal of every self kernel).
    """
    if rho.dtype == jnp.float64:
        return jnp.sqrt(jnp.maximum(1.0 - rho * rho, 0.0)) / jnp.pi + rho * (1.0 - jnp.arccos(rho) / jnp.pi)
    a = jnp.abs(rho)
    return jnp.maximum(rho, 0.0) + jnp.sqrt(1.0 - a) * _horner(ARC_COSINE_REMAINDER, a)


@arccos_kernel_1.defjvp
def _arccos_kernel_1_jvp(primals, tangents):
    (rho,), (tangent,) = primals, tangents
    slope = 1.0 - jnp.arccos(jnp.clip(rho, -1.0, 1.0)) / jnp.pi
    return arccos_kernel_1(rho), (slope * tangent).astype(rho.dtype)


def gaussian_dual(rho, gamma):
    """exp(gamma (rho - 1)): the RBF kernel of unit vectors with squared distance 2 (1 - rho)."""
    return jnp.exp(gamma * (rho - 1.0))


def polynomial_dual(rho, degree):
    """rho ** degree."""
    return rho ** degree
