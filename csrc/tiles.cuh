// Arithmetic, indexing and kernel bodies of the compositional-kernel Gram engine.
//
// Everything here is __host__ __device__: gram.cu wraps each body_<name> in a __global__ kernel,
// harness.cu runs the same body on the CPU (blocks in order, one thread or a few). Bodies use
// only block-stride loops `for (e = tid; e < n; e += nthreads)` separated by TL_BARRIER(), so
// tid = 0, nthreads = 1 computes what a block of any size computes (up to the order of sums).
//
// Layouts (row-major, "pair" = a * by + b for image a of x and image b of y):
//   images        (b, h, w, c)
//   kernel tensor (pairs, h, w, h, w): K[pair][i][j][k][l] = <x_a at (i, j), y_b at (k, l)>
//   variances     (b, h, w): the per-pixel self variances ("infos") of the pointwise layers
// Offset planes: the entries with a fixed offset d = (di, dj) = (k - i, l - j) form one plane,
// the rectangle of x pixels (i, j) with (i + di, j + dj) inside the image; a conv between two
// pools couples only entries of the same plane (a box filter along the diagonals).
//
// No standard headers under NVRTC (CuPy's default compiler): its math builtins are the same names.
#pragma once

#if !defined(__CUDACC_RTC__)
#include <math.h>
#endif

#define TL_HD __host__ __device__ inline

// __syncthreads() on the device; on the host a no-op, or TL_HOST_BARRIER() where the includer
// defines it (the harness, when it runs a block with several threads).
#ifdef __CUDA_ARCH__
#define TL_BARRIER() __syncthreads()
#elif defined(TL_HOST_BARRIER)
#define TL_BARRIER() TL_HOST_BARRIER()
#else
#define TL_BARRIER() ((void)0)
#endif

// Operation codes of tl_pointwise and of tl_fused_stage's op list (a conv of size s is 100 + s).
#define TL_OP_RELU 0
#define TL_OP_GAUSSIAN 1
#define TL_OP_POLYNOMIAL 2
#define TL_OP_NORMALIZE 3
#define TL_OP_CONV 100

// Elements converted per block by tl_cast_f64 (grid = ceil(n / TL_CAST_CHUNK)).
#define TL_CAST_CHUNK 4096

// ---------------------------------------------------------------------------------------------
// Scalars
// ---------------------------------------------------------------------------------------------

TL_HD float tl_sqrt(float v) { return sqrtf(v); }
TL_HD double tl_sqrt(double v) { return sqrt(v); }
TL_HD float tl_acos(float v) { return acosf(v); }
TL_HD double tl_acos(double v) { return acos(v); }
TL_HD float tl_exp(float v) { return expf(v); }
TL_HD double tl_exp(double v) { return exp(v); }

TL_HD int tl_min(int a, int b) { return a < b ? a : b; }
TL_HD int tl_max(int a, int b) { return a > b ? a : b; }
TL_HD int tl_abs(int a) { return a < 0 ? -a : a; }

// clip to [lo, hi]; NaN passes through (as jnp.clip)
template <typename T>
TL_HD T tl_clip(T v, T lo, T hi) { return v < lo ? lo : (v > hi ? hi : v); }

// atomicAdd on the device, += on the host
template <typename T>
TL_HD void tl_atomic_add(T* address, T value) {
#ifdef __CUDA_ARCH__
  atomicAdd(address, value);
#else
  *address += value;
#endif
}

// ---------------------------------------------------------------------------------------------
// Duals (functions of a correlation rho) and the pointwise layers
// ---------------------------------------------------------------------------------------------

// He-scaled degree-1 arc-cosine kernel: sqrt(1 - rho^2) / pi + rho (1 - arccos(rho) / pi).
template <typename T>
TL_HD T tl_relu_dual(T rho) {
  const T inv_pi = T(0.318309886183790671537767526745028724);
  rho = tl_clip(rho, T(-1), T(1));
  T root = tl_sqrt((T(1) - rho) * (T(1) + rho));
  return root * inv_pi + rho * (T(1) - tl_acos(rho) * inv_pi);
}

// Gaussian (exp-normalized) lift: exp(gamma (rho - 1)).
template <typename T>
TL_HD T tl_gaussian_dual(T rho, T gamma) { return tl_exp(gamma * (rho - T(1))); }

// Polynomial lift: rho^degree.
template <typename T>
TL_HD T tl_polynomial_dual(T rho, int degree) {
  T out = T(1);
  for (int q = 0; q < degree; ++q) out *= rho;
  return out;
}

// 1 / sqrt(n) where n > 0, else 0 (a pixel with zero variance contributes zero).
template <typename T>
TL_HD T tl_inverse_root(T n) { return n > T(0) ? T(1) / tl_sqrt(n) : T(0); }

// rho = clip(k / sqrt(nx ny), -1, 1), 0 where a variance is 0 (layers._correlation).
template <typename T>
TL_HD T tl_correlation(T k, T nx, T ny) {
  return tl_clip(k * (tl_inverse_root(nx) * tl_inverse_root(ny)), T(-1), T(1));
}

// One pointwise layer on one entry with variances nx, ny: sqrt(nx) sqrt(ny) dual(rho) for
// Relu / Gaussian(gamma = param) / Polynomial(degree = param), rho itself for Normalize.
template <typename T>
TL_HD T tl_pointwise_op(int op, T param, T k, T nx, T ny) {
  T rho = tl_correlation(k, nx, ny);
  T s = tl_sqrt(nx) * tl_sqrt(ny);
  switch (op) {
    case TL_OP_RELU: return s * tl_relu_dual(rho);
    case TL_OP_GAUSSIAN: return s * tl_gaussian_dual(rho, param);
    case TL_OP_POLYNOMIAL: return s * tl_polynomial_dual(rho, int(param + T(0.5)));
    default: return rho;  // TL_OP_NORMALIZE (the launcher passes only the four codes)
  }
}

// ---------------------------------------------------------------------------------------------
// Indexing and plane geometry
// ---------------------------------------------------------------------------------------------

// Offset of K[i][j][k][l] inside one pair's (h, w, h, w) tensor.
TL_HD long long tl_index4(int h, int w, int i, int j, int k, int l) {
  return ((static_cast<long long>(i) * w + j) * h + k) * w + l;
}

// Offset inside one pair's pooled tensor (h/p, w/p, h/p, w/p) of the output that entry
// (i, j, k, l) of the (h, w, h, w) tensor falls into under AvgPool(p).
TL_HD long long tl_pooled_index(int h, int w, int p, int i, int j, int k, int l) {
  return tl_index4(h / p, w / p, i / p, j / p, k / p, l / p);
}

TL_HD int tl_plane_count(int h, int w) { return (2 * h - 1) * (2 * w - 1); }

// Offset plane number `index` in [0, (2h-1)(2w-1)): offset (di, dj) in [-(h-1), h-1] x
// [-(w-1), w-1], and its valid rectangle of x pixels i in [i0, i0 + rows), j in [j0, j0 + cols)
// (exactly those with (i + di, j + dj) inside the image). Stored compactly: element (i, j) at
// (i - i0) * cols + (j - j0).
struct TlPlane {
  int di, dj, i0, j0, rows, cols;
};

TL_HD TlPlane tl_plane(int index, int h, int w) {
  TlPlane p;
  p.di = index / (2 * w - 1) - (h - 1);
  p.dj = index % (2 * w - 1) - (w - 1);
  p.i0 = tl_max(0, -p.di);
  p.j0 = tl_max(0, -p.dj);
  p.rows = h - tl_abs(p.di);
  p.cols = w - tl_abs(p.dj);
  return p;
}

// Conv(size).kernel at one entry of a compact plane: mean over the size x size window of the
// plane around (ii, jj), zero outside the rectangle (= zero padding of all four tensor axes).
template <typename T>
TL_HD T tl_plane_box(const T* plane, int rows, int cols, int ii, int jj, int size) {
  const int r = size / 2;
  T sum = T(0);
  for (int u = tl_max(-r, -ii); u <= tl_min(r, rows - 1 - ii); ++u)
    for (int v = tl_max(-r, -jj); v <= tl_min(r, cols - 1 - jj); ++v)
      sum += plane[(ii + u) * cols + (jj + v)];
  return sum * (T(1) / T(size * size));
}

// Conv(size).kernel at K[i][j][k][l] of one pair's full tensor:
// mean over u, v in [-r, r] of K[i+u][j+v][k+u][l+v], zero outside.
template <typename T>
TL_HD T tl_conv_at(const T* kernel, int h, int w, int i, int j, int k, int l, int size) {
  const int r = size / 2;
  T sum = T(0);
  for (int u = tl_max(-r, -tl_min(i, k)); u <= tl_min(r, h - 1 - tl_max(i, k)); ++u)
    for (int v = tl_max(-r, -tl_min(j, l)); v <= tl_min(r, w - 1 - tl_max(j, l)); ++v)
      sum += kernel[tl_index4(h, w, i + u, j + v, k + u, l + v)];
  return sum * (T(1) / T(size * size));
}

// Linear (pixel) kernel sum_c x[i][j][c] y[k][l][c] of two (h, w, c) images.
template <typename T>
TL_HD T tl_pixel_dot(const T* x, const T* y, int w, int c, int i, int j, int k, int l) {
  const T* px = x + (static_cast<long long>(i) * w + j) * c;
  const T* py = y + (static_cast<long long>(k) * w + l) * c;
  T sum = T(0);
  for (int ch = 0; ch < c; ++ch) sum += px[ch] * py[ch];
  return sum;
}

// Pixel (row, col, ch) of an (h, w, c) image, 0 outside (zero padding).
template <typename T>
TL_HD T tl_padded_pixel(const T* image, int h, int w, int c, int row, int col, int ch) {
  if (row < 0 || row >= h || col < 0 || col >= w) return T(0);
  return image[(static_cast<long long>(row) * w + col) * c + ch];
}

// Patch-Gram element of Conv(size).pixel_kernel from staged rows: xrows, yrows hold `size`
// zero-padded image rows each, (size, w + 2r, c); the patches are centred at columns j and l
// of the middle row. Returns sum over the patch and channels / size^2.
template <typename T>
TL_HD T tl_patch_gram(const T* xrows, const T* yrows, int padded_w, int c, int j, int l,
                      int size) {
  T sum = T(0);
  for (int u = 0; u < size; ++u) {
    const T* px = xrows + (static_cast<long long>(u) * padded_w + j) * c;
    const T* py = yrows + (static_cast<long long>(u) * padded_w + l) * c;
    for (int t = 0; t < size * c; ++t) sum += px[t] * py[t];
  }
  return sum * (T(1) / T(size * size));
}

// Along one axis, the x pixels of a plane with offset d that pool (window p) into output row
// `out` and into output column out + floor(d / p) + side (side 0 or 1): with r = d mod p, pixel
// out * p + t lands in side (t + r >= p). Clipped to the valid range [first, first + count);
// empty when *start >= *stop.
TL_HD void tl_pool_slot(int d, int p, int out, int side, int first, int count, int* start,
                        int* stop) {
  const int r = ((d % p) + p) % p;
  *start = tl_max(out * p + (side ? p - r : 0), first);
  *stop = tl_min(out * p + (side ? p : p - r), first + count);
}

// Compensated (Kahan) sum of data[start], data[start + step], ... below n.
template <typename T>
TL_HD T tl_strided_sum(const T* data, long long n, long long start, long long step) {
  T sum = T(0), carry = T(0);
  for (long long e = start; e < n; e += step) {
    T y = data[e] - carry;
    T t = sum + y;
    carry = (t - sum) - y;
    sum = t;
  }
  return sum;
}

// Sum of scratch[0 .. m) into scratch[0] by a tree of block-stride passes (all threads call
// it; m must be the same in every thread). Ends with a barrier.
template <typename T>
TL_HD void tl_block_reduce(T* scratch, int m, int tid, int nthreads) {
  for (int width = m; width > 1;) {
    const int half = (width + 1) / 2;
    for (int s = tid; s < width - half; s += nthreads) scratch[s] += scratch[s + half];
    TL_BARRIER();
    width = half;
  }
}

// ---------------------------------------------------------------------------------------------
// Kernel bodies: body_<name>(block_x, block_y, tid, nthreads, <kernel arguments>, shared).
// The grids and shared-memory sizes are in README.md.
// ---------------------------------------------------------------------------------------------

// Conv(size).pixel_kernel: out (pairs, h, w, h, w) = patch Gram / size^2 of x (bx, h, w, c) and
// y (by, h, w, c). Block (i * h + k, pair) stages the `size` padded rows around row i of x_a and
// around row k of y_b in shared memory and writes the w x w entries out[pair][i][:][k][:].
template <typename T>
TL_HD void body_pixel_conv(int block_x, int block_y, int tid, int nthreads, const T* x,
                           const T* y, T* out, int /*bx*/, int by, int h, int w, int c, int size,
                           T* shared) {
  const int pair = block_y, a = pair / by, b = pair % by;
  const int i = block_x / h, k = block_x % h, r = size / 2;
  const int padded_w = w + 2 * r, staged = size * padded_w * c;
  const T* xa = x + static_cast<long long>(a) * h * w * c;
  const T* yb = y + static_cast<long long>(b) * h * w * c;
  T* xrows = shared;
  T* yrows = shared + staged;
  for (int e = tid; e < staged; e += nthreads) {
    const int u = e / (padded_w * c), col = (e / c) % padded_w - r, ch = e % c;
    xrows[e] = tl_padded_pixel(xa, h, w, c, i - r + u, col, ch);
    yrows[e] = tl_padded_pixel(yb, h, w, c, k - r + u, col, ch);
  }
  TL_BARRIER();
  T* dst = out + static_cast<long long>(pair) * h * w * h * w;
  for (int e = tid; e < w * w; e += nthreads) {
    const int j = e / w, l = e % w;
    dst[tl_index4(h, w, i, j, k, l)] = tl_patch_gram(xrows, yrows, padded_w, c, j, l, size);
  }
}

// Conv(size).kernel: out (pairs, h, w, h, w) from in (same shape). Block (i * w + j, pair)
// writes out[pair][i][j][:][:].
template <typename T>
TL_HD void body_conv(int block_x, int block_y, int tid, int nthreads, const T* in, T* out,
                     int /*pairs*/, int h, int w, int size, T* /*shared*/) {
  const long long base = static_cast<long long>(block_y) * h * w * h * w;
  const int i = block_x / w, j = block_x % w;
  for (int e = tid; e < h * w; e += nthreads)
    out[base + static_cast<long long>(block_x) * h * w + e] =
        tl_conv_at(in + base, h, w, i, j, e / w, e % w, size);
}

// A pointwise layer (op, param) in place on k (pairs, h, w, h, w) with variances nx (bx, h, w),
// ny (by, h, w). Block (i * w + j, pair) does k[pair][i][j][:][:].
template <typename T>
TL_HD void body_pointwise(int block_x, int block_y, int tid, int nthreads, T* k, const T* nx,
                          const T* ny, int /*bx*/, int by, int h, int w, int op, T param,
                          T* /*shared*/) {
  const int pair = block_y, a = pair / by, b = pair % by, hw = h * w;
  const T vx = nx[static_cast<long long>(a) * hw + block_x];
  const T* vy = ny + static_cast<long long>(b) * hw;
  T* row = k + (static_cast<long long>(pair) * hw + block_x) * hw;
  for (int e = tid; e < hw; e += nthreads) row[e] = tl_pointwise_op(op, param, row[e], vx, vy[e]);
}

// AvgPool(p): out (pairs, h/p, w/p, h/p, w/p) = mean over p^4 windows of in (pairs, h, w, h, w).
// Block (I * (w/p) + J, pair) writes out[pair][I][J][:][:].
template <typename T>
TL_HD void body_pool(int block_x, int block_y, int tid, int nthreads, const T* in, T* out,
                     int /*pairs*/, int h, int w, int p, T* /*shared*/) {
  const int ho = h / p, wo = w / p, I = block_x / wo, J = block_x % wo;
  const T* src = in + static_cast<long long>(block_y) * h * w * h * w;
  const T scale = T(1) / T(p * p * p * p);
  for (int e = tid; e < ho * wo; e += nthreads) {
    const int K = e / wo, L = e % wo;
    T sum = T(0);
    for (int s = 0; s < p; ++s)
      for (int t = 0; t < p; ++t)
        for (int u = 0; u < p; ++u)
          for (int v = 0; v < p; ++v)
            sum += src[tl_index4(h, w, I * p + s, J * p + t, K * p + u, L * p + v)];
    out[(static_cast<long long>(block_y) * ho * wo + block_x) * ho * wo + e] = sum * scale;
  }
}

// GlobalAvgPool: out (pairs,) = mean of in[pair] (h, w, h, w). Block (pair, 0); shared holds
// one T per thread.
template <typename T>
TL_HD void body_global_pool(int block_x, int /*block_y*/, int tid, int nthreads, const T* in,
                            T* out, int /*pairs*/, int h, int w, T* shared) {
  const long long n = static_cast<long long>(h) * w * h * w;
  const T* src = in + block_x * n;
  const int m = static_cast<int>(n < nthreads ? n : nthreads);
  for (int s = tid; s < m; s += nthreads) shared[s] = tl_strided_sum(src, n, s, m);
  TL_BARRIER();
  tl_block_reduce(shared, m, tid, nthreads);
  if (tid == 0) out[block_x] = shared[0] * (T(1) / T(n));
}

// Cast float32 -> float64 of n elements; block x converts [x * TL_CAST_CHUNK, + TL_CAST_CHUNK).
TL_HD void body_cast_f64(int block_x, int /*block_y*/, int tid, int nthreads, const float* in,
                         double* out, long long n, void* /*shared*/) {
  const long long start = static_cast<long long>(block_x) * TL_CAST_CHUNK;
  const long long stop = start + TL_CAST_CHUNK < n ? start + TL_CAST_CHUNK : n;
  for (long long e = start + tid; e < stop; e += nthreads) out[e] = static_cast<double>(in[e]);
}

// The fused stage: block (plane, pair) keeps offset plane `plane` of one pair in shared memory
// (two ping-pong buffers of h * w values), applies the op list and writes only the result.
//   start: x != nullptr: the pixel (linear) kernel sum_c x_a y_b, so a leading conv op
//          100 + s is Conv(s).pixel_kernel; x == nullptr: the plane of in (pairs, h, w, h, w).
//   ops:   100 + s = Conv(s).kernel (box filter inside the plane); 0..3 = tl_pointwise_op with
//          param op_params[i] and the variances of the q-th pointwise op of the list at
//          norms_x + q * bx * h * w (bx, h, w) and norms_y + q * by * h * w (by, h, w).
//   out:   pool == 1: the plane into out (pairs, h, w, h, w);
//          pool == h == w: global mean, one atomic add per block into out (pairs,);
//          else AvgPool(pool): atomic adds into out (pairs, h/p, w/p, h/p, w/p).
//          The atomic outputs must be zeroed by the caller.
// Pooled outputs. Along one axis, plane offset d sends x pixel i to output row I = i / p and
// output column (i + d) / p, which is I + floor(d / p) or one more (tl_pool_slot), so the plane
// reaches at most 2 x 2 outputs per output pixel (I, J): the block sums each of these 4 * (h/p)
// * (w/p) slots (at most p^2 plane entries) and adds slot sum / p^4 to the output. An output
// entry receives one add from each of the (2p - 1)^2 planes with offsets near p times its own
// offset: about (2p - 1)^2 / p^4 adds per tensor entry (9/16 for p = 2).
template <typename T>
TL_HD void body_fused_stage(int block_x, int block_y, int tid, int nthreads, const T* x,
                            const T* y, const T* in, T* out, const T* norms_x, const T* norms_y,
                            const int* ops, const T* op_params, int n_ops, int bx, int by, int h,
                            int w, int c, int pool, T* shared) {
  const TlPlane pl = tl_plane(block_x, h, w);
  const int pair = block_y, a = pair / by, b = pair % by, hw = h * w, n = pl.rows * pl.cols;
  T* cur = shared;
  T* other = shared + hw;

  if (x != nullptr) {
    const T* xa = x + static_cast<long long>(a) * hw * c;
    const T* yb = y + static_cast<long long>(b) * hw * c;
    for (int e = tid; e < n; e += nthreads) {
      const int i = pl.i0 + e / pl.cols, j = pl.j0 + e % pl.cols;
      cur[e] = tl_pixel_dot(xa, yb, w, c, i, j, i + pl.di, j + pl.dj);
    }
  } else {
    const T* src = in + static_cast<long long>(pair) * hw * hw;
    for (int e = tid; e < n; e += nthreads) {
      const int i = pl.i0 + e / pl.cols, j = pl.j0 + e % pl.cols;
      cur[e] = src[tl_index4(h, w, i, j, i + pl.di, j + pl.dj)];
    }
  }
  TL_BARRIER();

  int pointwise = 0;
  for (int q = 0; q < n_ops; ++q) {
    const int op = ops[q];
    if (op >= TL_OP_CONV) {
      for (int e = tid; e < n; e += nthreads)
        other[e] = tl_plane_box(cur, pl.rows, pl.cols, e / pl.cols, e % pl.cols, op - TL_OP_CONV);
      T* t = cur;
      cur = other;
      other = t;
    } else {
      const T* vx = norms_x + (static_cast<long long>(pointwise) * bx + a) * hw;
      const T* vy = norms_y + (static_cast<long long>(pointwise) * by + b) * hw;
      ++pointwise;
      for (int e = tid; e < n; e += nthreads) {
        const int i = pl.i0 + e / pl.cols, j = pl.j0 + e % pl.cols;
        cur[e] = tl_pointwise_op(op, op_params[q], cur[e], vx[i * w + j],
                                 vy[(i + pl.di) * w + j + pl.dj]);
      }
    }
    TL_BARRIER();
  }

  if (pool == 1) {
    T* dst = out + static_cast<long long>(pair) * hw * hw;
    for (int e = tid; e < n; e += nthreads) {
      const int i = pl.i0 + e / pl.cols, j = pl.j0 + e % pl.cols;
      dst[tl_index4(h, w, i, j, i + pl.di, j + pl.dj)] = cur[e];
    }
  } else if (pool == h && pool == w) {
    const int m = tl_min(n, nthreads);
    for (int s = tid; s < m; s += nthreads) other[s] = tl_strided_sum(cur, n, s, m);
    TL_BARRIER();
    tl_block_reduce(other, m, tid, nthreads);
    if (tid == 0) tl_atomic_add(out + pair, other[0] * (T(1) / T(hw * hw)));
  } else {
    const int ho = h / pool, wo = w / pool;
    const T scale = T(1) / T(pool * pool * pool * pool);
    T* dst = out + static_cast<long long>(pair) * ho * wo * ho * wo;
    for (int s = tid; s < 4 * ho * wo; s += nthreads) {  // s = ((I * 2 + si) * wo + J) * 2 + sj
      int i_start, i_stop, j_start, j_stop;
      tl_pool_slot(pl.di, pool, s / (4 * wo), (s / (2 * wo)) % 2, pl.i0, pl.rows, &i_start,
                   &i_stop);
      tl_pool_slot(pl.dj, pool, (s / 2) % wo, s % 2, pl.j0, pl.cols, &j_start, &j_stop);
      if (i_start >= i_stop || j_start >= j_stop) continue;
      T sum = T(0);
      for (int i = i_start; i < i_stop; ++i)
        for (int j = j_start; j < j_stop; ++j) sum += cur[(i - pl.i0) * pl.cols + j - pl.j0];
      tl_atomic_add(dst + tl_pooled_index(h, w, pool, i_start, j_start, i_start + pl.di,
                                          j_start + pl.dj),
                    sum * scale);
    }
  }
}
