// CUDA kernels of the compositional-kernel Gram engine. Each kernel is a thin wrapper around its
// body_<name> in tiles.cuh (blockIdx, threadIdx, blockDim and the dynamic shared memory passed in);
// harness.cu runs the same bodies on the CPU. Grids and shared-memory sizes: README.md.
//
// Cost model per image pair, 32 x 32 x 3 inputs (the (32, 32, 32, 32) tensor has 2^20 entries, each
// on one of the 63 x 63 offset planes). FLOP per entry: patch-Gram conv 2 * 9 * 3 = 54 as a matrix
// product (the fused stage computes it as the pixel dot, 6, plus a 3 x 3 box, 10), hidden 3 x 3
// conv 10 (9 adds, 1 multiply), ReLU ~25 plus an acos, 5 square roots and 2 divisions (in this
// simple form: the variances' roots could be precomputed per pixel). Myrtle5's 32x32 stage
// (conv relu conv relu pool) ~1.3e8 FLOP, Myrtle10's (three conv relu) ~1.7e8, 95-98% of the whole
// kernel (kernels.md); the 16x16 stage is 1/16 of that, the float64 8x8 stage and head 1/256.
// Bytes: unfused, every pass reads and/or writes the 4 MiB float32 tensor: Myrtle5's 32x32 stage
// is 8 such passes (32 MiB per pair, ~7 us at 4.8 TB/s, ~1.5e5 pairs/s at best) and Myrtle10's 12.
// Fused (tl_fused_stage from pixels): in, the two images (24 KiB, shared by many pairs, from L2);
// out, the pooled (16, 16, 16, 16) tensor (256 KiB) as ~(2p - 1)^2 / p^4 * 2^20 = 590k float
// atomic adds that resolve in L2 (the pooled tensors of ~100 pairs fit in the H200's 50 MB L2).
// Expected bounds. tl_fused_stage: FP32 arithmetic (floor ~2 us per pair at the H200's ~67
// TFLOP/s), or the L2 atomic rate, or the per-block overhead (a 32x32 plane averages 264 entries,
// about one per thread): to be measured. From `in` (16x16 stage) it gathers each plane with a
// stride of h * w + 1 floats; neighbouring planes run together, so L2 absorbs it.
// tl_conv, tl_pointwise, tl_pool, tl_global_pool, tl_cast_f64: device-memory bandwidth (one read and
// one write of the tensor; tl_conv's 3 x 3 re-reads hit L1/L2). tl_pixel_conv: 27 FMAs per entry
// from shared memory, then the 4 MiB write: bandwidth.
#include "tiles.cuh"

extern __shared__ __align__(16) unsigned char tl_smem[];

template <typename T>
__device__ T* tl_shared() { return reinterpret_cast<T*>(tl_smem); }

#define TL_BLOCK blockIdx.x, blockIdx.y, threadIdx.x, blockDim.x

extern "C" __global__ void tl_pixel_conv(const float* x, const float* y, float* out, int bx,
                                         int by, int h, int w, int c, int size) {
  body_pixel_conv<float>(TL_BLOCK, x, y, out, bx, by, h, w, c, size, tl_shared<float>());
}

extern "C" __global__ void tl_conv(const float* in, float* out, int pairs, int h, int w,
                                   int size) {
  body_conv<float>(TL_BLOCK, in, out, pairs, h, w, size, tl_shared<float>());
}

extern "C" __global__ void tl_conv_f64(const double* in, double* out, int pairs, int h, int w,
                                       int size) {
  body_conv<double>(TL_BLOCK, in, out, pairs, h, w, size, tl_shared<double>());
}

extern "C" __global__ void tl_pointwise(float* k, const float* nx, const float* ny, int bx, int by,
                                        int h, int w, int op, float param) {
  body_pointwise<float>(TL_BLOCK, k, nx, ny, bx, by, h, w, op, param, tl_shared<float>());
}

extern "C" __global__ void tl_pointwise_f64(double* k, const double* nx, const double* ny, int bx,
                                            int by, int h, int w, int op, double param) {
  body_pointwise<double>(TL_BLOCK, k, nx, ny, bx, by, h, w, op, param, tl_shared<double>());
}

extern "C" __global__ void tl_pool(const float* in, float* out, int pairs, int h, int w, int p) {
  body_pool<float>(TL_BLOCK, in, out, pairs, h, w, p, tl_shared<float>());
}

extern "C" __global__ void tl_pool_f64(const double* in, double* out, int pairs, int h, int w,
                                       int p) {
  body_pool<double>(TL_BLOCK, in, out, pairs, h, w, p, tl_shared<double>());
}

extern "C" __global__ void tl_global_pool(const float* in, float* out, int pairs, int h, int w) {
  body_global_pool<float>(TL_BLOCK, in, out, pairs, h, w, tl_shared<float>());
}

extern "C" __global__ void tl_global_pool_f64(const double* in, double* out, int pairs, int h,
                                              int w) {
  body_global_pool<double>(TL_BLOCK, in, out, pairs, h, w, tl_shared<double>());
}

extern "C" __global__ void tl_cast_f64(const float* in, double* out, long long n) {
  body_cast_f64(TL_BLOCK, in, out, n, tl_smem);
}

extern "C" __global__ void tl_fused_stage(const float* x, const float* y, const float* in,
                                          float* out, const float* norms_x, const float* norms_y,
                                          const int* ops, const float* op_params, int n_ops, int bx,
                                          int by, int h, int w, int c, int pool) {
  body_fused_stage<float>(TL_BLOCK, x, y, in, out, norms_x, norms_y, ops, op_params, n_ops, bx, by,
                          h, w, c, pool, tl_shared<float>());
}
