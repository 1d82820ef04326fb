"""Scattering with a "phase" first order, in JAX.

First order: instead of kymatio's |x * psi_{j,theta}| * phi_J, the four half-wave rectified parts
ReLU(+Re), ReLU(-Re), ReLU(+Im), ReLU(-Im) of each wavelet coefficient x * psi_{j,theta}, each
low-passed by phi_J and subsampled by 2^J (Zarka et al., ICLR 2020). Order 0 (x * phi_J) and order 2
(||x * psi1| * psi2| * phi_J) are kymatio's modulus scattering.

The steps follow kymatio 0.3's ``scattering2d`` core exactly: reflect padding to the size of
``compute_padding``, products in the 2-D DFT domain with its filter bank, subsampling by
periodization in the Fourier domain (the DFT of ``x[::k, ::k]``), the wavelet coefficient of scale j
computed at resolution 2^-j, low-pass filters taken at the resolution of their input, and one pixel
of border removed after the final subsampling. Filters by scale are stacked over the L angles, so
each scale is one batched FFT instead of kymatio's loop over filters; the orders 0 and 2 equal
kymatio's (the tests compare them).
Pure functions of arrays: the filter bank comes from :mod:`.frontend`, the one module that imports
kymatio.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

__all__ = ["Filters", "subsample_fourier", "wavelet_transform", "phase_relu", "lowpass_fourier",
           "lowpass", "lowpass_phases", "phase_scattering"]


class Filters(NamedTuple):
    """kymatio's filter bank in the Fourier domain, grouped by scale.

    phi[r]: (M / 2^r, N / 2^r) low-pass phi_J at resolution r = 0 .. J-1.
    psi[j][r]: (L, M / 2^r, N / 2^r) the L wavelets of scale j at resolution r (r <= min(j, J-2)).
    pad: ((top, bottom), (left, right)) reflect padding from the image (H, W) to (M, N).
    """
    phi: tuple
    psi: tuple
    pad: tuple

    @property
    def J(self) -> int:
        return len(self.phi)


def subsample_fourier(x_hat: jax.Array, k: int) -> jax.Array:
    """(..., M, N) DFT -> (..., M/k, N/k): the DFT of the signal subsampled by k (periodization)."""
    *batch, m, n = x_hat.shape
    return x_hat.reshape(*batch, k, m // k, k, n // k).mean(axis=(-4, -2))


def wavelet_transform(x_hat: jax.Array, psi: jax.Array, k: int) -> jax.Array:
    """DFT x_hat (..., M, N), wavelets psi (L, M, N) -> complex (..., L, M/k, N/k): x * psi_l
    subsampled by k."""
    return jnp.fft.ifft2(subsample_fourier(x_hat[..., None, :, :] * psi, k))


def phase_relu(w: jax.Array) -> jax.Array:
    """Complex (..., m, n) -> real (..., 4, m, n): ReLU of +Re, -Re, +Im, -Im, in this order."""
    return jax.nn.relu(jnp.stack([w.real, -w.real, w.imag, -w.imag], axis=-3))


def lowpass_fourier(u_hat: jax.Array, phi: jax.Array, k: int) -> jax.Array:
    """DFT u_hat (..., m, n) of a real u -> (..., m/k - 2, n/k - 2): u * phi subsampled by k, border
    pixel removed."""
    return jnp.fft.ifft2(subsample_fourier(u_hat * phi, k)).real[..., 1:-1, 1:-1]


def lowpass(u: jax.Array, phi: jax.Array, k: int) -> jax.Array:
    """Real (..., m, n) -> (..., m/k - 2, n/k - 2): :func:`lowpass_fourier` of its DFT."""
    return lowpass_fourier(jnp.fft.fft2(u), phi, k)


def lowpass_phases(r: jax.Array, phi: jax.Array, k: int) -> jax.Array:
    """Phases r (..., 4, m, n) from :func:`phase_relu` -> (..., 4, m/k - 2, n/k - 2) low-passed like
    :func:`lowpass`, with two complex FFTs (of +Re + i +Im and -Re + i -Im) instead of four real
    ones (~25% faster overall at J = 2). Equal to four :func:`lowpass` calls up to float rounding,
    since phi is real in space: kymatio's phi levels are even in frequency to float32 rounding."""
    z = jax.lax.complex(r[..., :2, :, :], r[..., 2:, :, :])
    s = jnp.fft.ifft2(subsample_fourier(jnp.fft.fft2(z) * phi, k))[..., 1:-1, 1:-1]
    return jnp.concatenate([s.real, s.imag], axis=-3)


def phase_scattering(x: jax.Array, filters: Filters, max_order: int = 2) -> jax.Array:
    """Images x (B, H, W) float -> coefficients (B, K, H / 2^J, W / 2^J).

    Channel order: x * phi_J; then for j1 = 0..J-1, theta1 = 0..L-1 the four phases
    (+Re, -Re, +Im, -Im); then, for max_order = 2, kymatio's order-2 paths ordered by
    (j1, theta1, j2, theta2) with j2 > j1. K = 1 + 4 J L + L^2 J (J - 1) / 2 (the last term only
    at max_order = 2).
    """
    J = filters.J
    batch = x.shape[0]
    x_hat = jnp.fft.fft2(jnp.pad(x, ((0, 0),) + tuple(filters.pad), mode="reflect"))
    first, second = [lowpass_fourier(x_hat, filters.phi[0], 2 ** J)[:, None]], []
    for j1 in range(J):
        w = wavelet_transform(x_hat, filters.psi[j1][0], 2 ** j1)              # (B, L, m, n)
        s1 = lowpass_phases(phase_relu(w), filters.phi[j1], 2 ** (J - j1))     # (B, L, 4, h, w)
        first.append(s1.reshape(batch, -1, *s1.shape[-2:]))
        if max_order < 2 or j1 == J - 1:
            continue
        u_hat = jnp.fft.fft2(jnp.abs(w))
        s2 = jnp.concatenate([lowpass(jnp.abs(wavelet_transform(u_hat, filters.psi[j2][j1],
                                                                 2 ** (j2 - j1))),
                                      filters.phi[j2], 2 ** (J - j2))     # (B, L1, L2, h, w)
                              for j2 in range(j1 + 1, J)], axis=2)
        second.append(s2.reshape(batch, -1, *s2.shape[-2:]))
    return jnp.concatenate(first + second, axis=1)
