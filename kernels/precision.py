"""The floating-point precision a kernel spec computes in, and what follows from it (numpy only):
the pixel magnitudes that precision carries through the kernel, and the relative rounding of the
kernel it gives (the solvers' PSD tolerance, ``psd_rtol``).

A spec's *kernel dtype* is the narrowest dtype any of its stages computes in: the dtype the pixels
enter in (``input_dtype``) and every ``Cast`` of the spec (``Layer.kernel_dtype``; a spec object
without that attribute computes in its ``input_dtype``). Mixed-precision Myrtle kernels
(float32 stages, then float64) compute in float32.

Pixel range. Every intermediate value of a kernel of images x, y of P = H W C pixels is at most
an inner product of their pixels, <= P max|x| max|y| (Cauchy-Schwarz: a patch is a subset of an
image's pixels, and convolutions, pools and the pointwise duals only average or keep that
scale); the smallest value it must resolve is its global pool of an image of largest magnitude
m, >= m^2 / (H W)^2 (one pixel of m, averaged over (H W)^2 pixel pairs), carried to the dtype's
relative precision eps above its smallest normal number (below it, products are flushed to zero).
So a non-blank image of largest magnitude m is refused unless

    finfo.tiny / finfo.eps * (H W)^2 * RANGE_MARGIN  <=  m^2  <=  finfo.max / (P * RANGE_MARGIN),

RANGE_MARGIN covering the weights of direct sums and the duals' constants (float32 at 32x32x3:
about [1e-11, 1e16]; float64: about [3e-142, 8e150]). A blank (all-zero) image is legal: the
kernel defines it (zero variance gives a zero kernel row).
"""
from __future__ import annotations

import numpy as np

__all__ = ["PSD_RTOL", "RANGE_MARGIN", "narrowest", "kernel_dtype", "psd_rtol", "pixel_range",
           "check_pixel_range"]

#: the relative size of the negative eigenvalues that rounding alone gives a PSD kernel computed
#: (or stored) in each dtype: the solvers' ``psd_rtol`` (their defaults by storage dtype,
#: ``tangentless.solvers._psd.psd_tolerance``, read it from here)
PSD_RTOL = {"float32": 1e-5, "float64": 1e-8}
#: safety factor between the kernel's extreme intermediate values and its dtype's range
RANGE_MARGIN = 2.0 ** 10

_HOW_TO_FIX = ('rescale the images (e.g. standardize or ZCA-whiten them), or compute in float64 '
               '(myrtle(..., precision="float64"), or a spec starting with Cast("float64"))')


def narrowest(dtypes) -> str:
    """The least precise of the floating dtype names ``dtypes`` (the one of largest eps)."""
    return max(dtypes, key=lambda d: np.finfo(d).eps)


def kernel_dtype(spec) -> str:
    """The narrowest dtype any stage of ``spec`` computes in: ``spec.kernel_dtype``, or its
    ``input_dtype`` for a spec object without it."""
    return getattr(spec, "kernel_dtype", spec.input_dtype)


def psd_rtol(*dtypes: str) -> float:
    """The PSD tolerance of a kernel computed or stored in ``dtypes``: that of the narrowest
    (:data:`PSD_RTOL`; a dtype narrower than float64 counts as float32, as in the solvers)."""
    return PSD_RTOL["float64" if np.dtype(narrowest(dtypes)).itemsize >= 8 else "float32"]


def pixel_range(dtype: str, image_shape: tuple[int, int, int]) -> tuple[float, float]:
    """(smallest, largest) largest pixel magnitude of a non-blank image of shape (H, W, C) that a
    kernel computing in ``dtype`` carries (the module docstring derives the bounds)."""
    info, (h, w, c) = np.finfo(dtype), image_shape
    low = np.sqrt(float(info.tiny) / float(info.eps) * float(h * w) ** 2 * RANGE_MARGIN)
    high = np.sqrt(float(info.max) / (float(h * w * c) * RANGE_MARGIN))
    return float(low), float(high)


def check_pixel_range(x: np.ndarray, name: str, dtype: str) -> None:
    """ValueError (one line: the offending magnitude and images, the dtype, the allowed range and
    what to do) unless every non-blank image of x (N, H, W, C) has its largest pixel magnitude
    within :func:`pixel_range` of ``dtype``."""
    flat = x.reshape(len(x), -1)
    peaks = np.maximum(flat.max(axis=1), -flat.min(axis=1)).astype(np.float64)  # no |x| copy
    low, high = pixel_range(dtype, x.shape[1:])
    too_large, too_small = peaks > high, (peaks > 0) & (peaks < low)
    for bad, word, extreme in ((too_large, "largest", np.max), (too_small, "smallest", np.min)):
        if bad.any():
            images = np.nonzero(bad)[0]
            listed = f"{images[:5].tolist()}{'...' if len(images) > 5 else ''}"
            raise ValueError(
                f"{name} has pixel magnitudes a {dtype} kernel cannot carry: the {word} peak |pixel| "
                f"of an image is {extreme(peaks[bad]):.3g} (images {listed}), but that of a non-blank "
                f"{'x'.join(map(str, x.shape[1:]))} image must lie in [{low:.3g}, {high:.3g}] in "
                f"{dtype}: {_HOW_TO_FIX}")
