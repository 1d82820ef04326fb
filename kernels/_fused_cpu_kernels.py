"""The numba kernels of the "numba" backend (:mod:`.fused_cpu`, which documents the method).

Layout. A stage of spatial size (h, w) walks the row offsets d1 = k1 - i1 in [-(h - 1), h - 1].
For one d1 the tensor entries K[i1, i2, i1 + d1, k2] form a *slab*: one (i2, k2) matrix per x
row i1 whose y row i1 + d1 is inside the map. A conv couples only entries of one slab: in the
matrix it is a box along the diagonal, i.e. at flat offsets b (w + 2 pad + 1) of a matrix stored
with a zero border of ``pad``; across the slab's rows it is a box over neighbouring rows. So a
stage runs slab by slab in two slab buffers (h + 2 pad, (w + 2 pad)^2) of its dtype (157 KiB in
float32 at 32x32: in L2), every inner loop contiguous. A pool adds each matrix's pooled blocks
into the next stage's tensor, kept whole: P[I1, I2, K1, K2], float64, flat (256 KiB at 16x16 in
float32 would be 512 KiB in float64; the pooled sums are exact to float64).

Inner loops index numba array *views* from 0 (LLVM vectorizes those; index arithmetic on the
parent array, with numba's negative-index handling, measured 15x slower).
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from ._fused_ops import CONV, GAUSSIAN, NORMALIZE, RELU  # POLYNOMIAL: every other pointwise code
from ._nonlin import ARC_COSINE_REMAINDER
# fastmath without nnan / ninf: a NaN must still reach the engine's finiteness check
_FAST = {"nsz", "arcp", "contract", "afn", "reassoc"}
_Q = np.asarray(ARC_COSINE_REMAINDER, dtype=np.float64)


@njit(cache=True, fastmath=_FAST)
def _box(a, t, rows, pad, r, width, scale):
    """In place on the slab ``a`` (its first ``rows`` rows past ``pad``): scale times the sum over
    the (2r + 1)^2 diagonal box, zeros outside the map; ``t`` holds the diagonal sums."""
    wp = width + 2 * pad
    step = wp + 1
    lo, hi = pad * wp + pad, (pad + width - 1) * wp + pad + width
    n = hi - lo
    for row in range(pad, rows + pad):
        src, dst = a[row], t[row]
        out = dst[lo:hi]
        if r == 1:
            left, mid, right = src[lo - step:hi - step], src[lo:hi], src[lo + step:hi + step]
            for f in range(n):
                out[f] = left[f] + mid[f] + right[f]
        else:
            mid = src[lo:hi]
            for f in range(n):
                out[f] = mid[f]
            for b in range(1, r + 1):
                left, right = src[lo - b * step:hi - b * step], src[lo + b * step:hi + b * step]
                for f in range(n):
                    out[f] += left[f] + right[f]
        for g in range(2 * pad):  # the border columns the flat sum wrote (strided, one per column)
            gap = dst[pad * wp + pad + width + g:hi:wp]
            for f in range(gap.shape[0]):
                gap[f] = 0
    for row in range(pad):  # rows outside the slab
        for edge in (t[row], t[rows + pad + row]):
            for f in range(edge.shape[0]):
                edge[f] = 0
    for row in range(pad, rows + pad):
        out = a[row][lo:hi]
        if r == 1:
            up, mid, down = t[row - 1][lo:hi], t[row][lo:hi], t[row + 1][lo:hi]
            for f in range(n):
                out[f] = (up[f] + mid[f] + down[f]) * scale
        else:
            mid = t[row][lo:hi]
            for f in range(n):
                out[f] = mid[f]
            for b in range(1, r + 1):
                up, down = t[row - b][lo:hi], t[row + b][lo:hi]
                for f in range(n):
                    out[f] += up[f] + down[f]
            for f in range(n):
                out[f] *= scale


@njit(cache=True, fastmath=_FAST)
def _pointwise(a, code, parameter, cst, rx, ix, ry, iy, off, width, lo1, d1, rows, pad, exact):
    """In place on the slab: a = sqrt(nx ny) dual(rho) (Normalize: rho), rho = clip(a / sqrt(nx
    ny), -1, 1), with the maps at offset ``off`` (rx = sqrt n, ix = 1/sqrt n) of x (row i1) and
    of y (row i1 + d1)."""
    one, zero, inv_pi = cst[0], cst[1], cst[2]
    q0, q1, q2, q3, q4, q5, q6, q7, q8 = (cst[3], cst[4], cst[5], cst[6], cst[7], cst[8], cst[9],
                                          cst[10], cst[11])
    gamma = cst[12]
    degree = int(parameter)
    wp = width + 2 * pad
    for row in range(rows):
        i1 = lo1 + row
        ox, oy = off + i1 * width, off + (i1 + d1) * width
        ryv, iyv = ry[oy:oy + width], iy[oy:oy + width]
        for i2 in range(width):
            sx, jx = rx[ox + i2], ix[ox + i2]
            v = a[row + pad][(i2 + pad) * wp + pad:(i2 + pad) * wp + pad + width]
            if code == NORMALIZE:
                for k2 in range(width):
                    v[k2] = min(max(v[k2] * jx * iyv[k2], -one), one)
            elif code == RELU and not exact:
                for k2 in range(width):
                    rho = min(max(v[k2] * jx * iyv[k2], -one), one)
                    m = abs(rho)
                    poly = (((((((q8 * m + q7) * m + q6) * m + q5) * m + q4) * m + q3) * m + q2) * m
                            + q1) * m + q0
                    v[k2] = sx * ryv[k2] * (max(rho, zero) + np.sqrt(one - m) * poly)
            elif code == RELU:
                for k2 in range(width):
                    rho = min(max(v[k2] * jx * iyv[k2], -one), one)
                    v[k2] = sx * ryv[k2] * (np.sqrt(max(one - rho * rho, zero)) * inv_pi
                                            + rho * (one - np.arccos(rho) * inv_pi))
            elif code == GAUSSIAN:
                for k2 in range(width):
                    rho = min(max(v[k2] * jx * iyv[k2], -one), one)
                    v[k2] = sx * ryv[k2] * np.exp(gamma * (rho - one))
            else:
                for k2 in range(width):
                    rho = min(max(v[k2] * jx * iyv[k2], -one), one)
                    value = one
                    for _ in range(degree):
                        value = value * rho
                    v[k2] = sx * ryv[k2] * value


@njit(cache=True, fastmath=_FAST)
def _pool(a, out, line, lo1, d1, rows, pad, width, h2, w2, ph, pw):
    """Add the slab's average pool into the next stage's tensor out (h2, w2, h2, w2), flat;
    ``line`` ((width + 2 pad)^2,) of the stage dtype holds the sums over each block's rows."""
    wp = width + 2 * pad
    scale = 1.0 / (ph * ph * pw * pw)
    span = (w2 - 1) * pw * wp + width  # from the first interior entry to the last block row start + width
    base = pad * wp + pad
    for row in range(rows):
        i1 = lo1 + row
        big, k_big = i1 // ph, (i1 + d1) // ph
        matrix = a[row + pad]
        sums = line[:span]
        first = matrix[base:base + span]
        for f in range(span):  # sums[f] = sum over the pw matrix rows from f (one flat loop)
            sums[f] = first[f]
        for sub in range(1, pw):
            next_rows = matrix[base + sub * wp:base + sub * wp + span]
            for f in range(span):
                sums[f] += next_rows[f]
        for b2 in range(w2):
            start = ((big * w2 + b2) * h2 + k_big) * w2
            target = out[start:start + w2]
            block = sums[b2 * pw * wp:b2 * pw * wp + width]
            if pw == 2:
                for k2 in range(w2):
                    target[k2] += (block[2 * k2] + block[2 * k2 + 1]) * scale
            else:
                for k2 in range(w2):
                    s = 0.0
                    for b in range(pw):
                        s += block[k2 * pw + b]
                    target[k2] += s * scale


@njit(cache=True, fastmath=_FAST)
def _stage(x, y, acc, first, h, w, ph, pw, op_lo, op_hi, pad, ops, slots, rx, ix, ry, iy, a, t,
           out, exact):
    """One stage of one pair. Input: pixels x, y (C, h, w) where ``first``, else the previous
    stage's tensor ``acc`` (h, w, h, w), flat. Slab buffers a, t (h + 2 pad, (w + 2 pad)^2) of the
    stage dtype, zero; ``exact``: that dtype is float64 (exact arc-cosine). Adds the pooled tensor
    into ``out`` and returns 0; the last stage (pool 0, a 1x1 map) returns its one entry."""
    cst = np.zeros(16, a.dtype)
    cst[0], cst[1], cst[2] = 1.0, 0.0, 1.0 / np.pi
    for k in range(9):
        cst[3 + k] = _Q[k]
    wp = w + 2 * pad
    h2, w2 = (h // ph, w // pw) if ph else (1, 1)
    channels = x.shape[0]
    line = np.empty(wp * wp, a.dtype)
    result = 0.0
    for k1 in range(2 * h - 1):
        d1 = k1 - (h - 1)
        lo1, hi1 = max(0, -d1), min(h, h - d1)
        rows = hi1 - lo1
        for row in range(rows):
            i1 = lo1 + row
            for i2 in range(w):
                v = a[row + pad][(i2 + pad) * wp + pad:(i2 + pad) * wp + pad + w]
                if first and channels == 3:  # RGB in one pass
                    x0, x1, x2 = x[0, i1, i2], x[1, i1, i2], x[2, i1, i2]
                    y0, y1, y2 = y[0, i1 + d1], y[1, i1 + d1], y[2, i1 + d1]
                    for k2 in range(w):
                        v[k2] = x0 * y0[k2] + x1 * y1[k2] + x2 * y2[k2]
                elif first:
                    xv, yv = x[0, i1, i2], y[0, i1 + d1]
                    for k2 in range(w):
                        v[k2] = xv * yv[k2]
                    for c in range(1, channels):
                        xv, yv = x[c, i1, i2], y[c, i1 + d1]
                        for k2 in range(w):
                            v[k2] += xv * yv[k2]
                else:
                    start = ((i1 * w + i2) * h + i1 + d1) * w
                    src = acc[start:start + w]
                    for k2 in range(w):
                        v[k2] = src[k2]
        for o in range(op_lo, op_hi):
            code = int(ops[o, 0])
            if code == CONV:
                r = int(ops[o, 1])
                cst[13] = 1.0 / (2 * r + 1) ** 2
                _box(a, t, rows, pad, r, w, cst[13])
            else:
                cst[12] = ops[o, 1]
                _pointwise(a, code, ops[o, 1], cst, rx, ix, ry, iy, slots[int(ops[o, 2])], w, lo1,
                           d1, rows, pad, exact)
        if ph:
            _pool(a, out, line, lo1, d1, rows, pad, w, h2, w2, ph, pw)
        else:
            result = a[pad, pad * wp + pad]
    return result


@njit(cache=True, parallel=True)
def fused_block(x, y, rx32, ix32, ry32, iy32, rx64, ix64, ry64, iy64, stages, ops, slots, out):
    """out[a, b] = K(x_a, y_b) for images x (Bx, C, H, W), y (By, C, H, W) (channels first), the
    per-image maps (B, L) in float32 and float64, and the program (stages, ops, slot offsets of
    :class:`~.fused_cpu.FusedProgram`); one pair per thread."""
    n_y = y.shape[0]
    for p in prange(x.shape[0] * n_y):
        ia, ib = p // n_y, p % n_y
        out[ia, ib] = _pair(x[ia], y[ib], rx32[ia], ix32[ia], ry32[ib], iy32[ib], rx64[ia],
                            ix64[ia], ry64[ib], iy64[ib], stages, ops, slots)


@njit(cache=True)
def _pair(x, y, rx32, ix32, ry32, iy32, rx64, ix64, ry64, iy64, stages, ops, slots):
    """K(x, y) of one pair: the stages in order, each on the tensor the previous one pooled."""
    acc = np.zeros(1)
    value = 0.0
    for s in range(stages.shape[0]):
        h, w, ph, pw = stages[s, 0], stages[s, 1], stages[s, 2], stages[s, 3]
        wide, op_lo, op_hi, pad = stages[s, 4], stages[s, 5], stages[s, 6], stages[s, 7]
        out = np.zeros((h // ph) ** 2 * (w // pw) ** 2 if ph else 1)
        shape = (h + 2 * pad, (w + 2 * pad) ** 2)
        if wide:
            value = _stage(x, y, acc, s == 0, h, w, ph, pw, op_lo, op_hi, pad, ops, slots,
                           rx64, ix64, ry64, iy64, np.zeros(shape), np.zeros(shape), out, True)
        else:
            value = _stage(x, y, acc, s == 0, h, w, ph, pw, op_lo, op_hi, pad, ops, slots,
                           rx32, ix32, ry32, iy32, np.zeros(shape, np.float32),
                           np.zeros(shape, np.float32), out, False)
        acc = out
    return value
