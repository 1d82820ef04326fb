// Host harness: runs the kernel bodies of tiles.cuh on the CPU, the blocks in order, so that tests
// can compare the GPU arithmetic with the JAX reference without a GPU.
// tl_host_<name>(grid_x, grid_y, block, shared_bytes, <tl_<name>'s arguments>) takes the launch
// configuration a launcher would give the GPU; `block` is ignored: each block runs with one thread
// (tid 0, nthreads 1), or with tl_host_set_threads(n) threads synchronized by a host barrier at
// every TL_BARRIER() (a test of the block-stride loops and barriers: a missing barrier shows as a
// wrong or NaN result). Each block gets shared_bytes of NaN-filled scratch, so a body that reads
// shared memory it did not write shows it.
//
// Build: nvcc -shared -Xcompiler -fPIC -o libtl_harness.so csrc/harness.cu
#include <condition_variable>
#include <cstddef>
#include <limits>
#include <mutex>
#include <thread>
#include <vector>

namespace {

// A reusable barrier for the threads of one emulated block.
class HostBarrier {
 public:
  explicit HostBarrier(int count) : count_(count) {}
  void wait() {
    std::unique_lock<std::mutex> lock(mutex_);
    const long generation = generation_;
    if (++waiting_ == count_) {
      waiting_ = 0;
      ++generation_;
      released_.notify_all();
    } else {
      released_.wait(lock, [&] { return generation != generation_; });
    }
  }

 private:
  std::mutex mutex_;
  std::condition_variable released_;
  const int count_;
  int waiting_ = 0;
  long generation_ = 0;
};

thread_local HostBarrier* current_barrier = nullptr;
int threads_per_block = 1;

void host_barrier() {
  if (current_barrier != nullptr) current_barrier->wait();
}

}  // namespace

#define TL_HOST_BARRIER host_barrier
#include "tiles.cuh"

namespace {

// body(block_x, block_y, tid, nthreads, scratch) for every block, with threads_per_block threads.
template <typename Body>
void run_blocks(int grid_x, int grid_y, size_t shared_bytes, Body body) {
  std::vector<double> scratch(shared_bytes / sizeof(double) + 1);
  const int n = threads_per_block;
  HostBarrier barrier(n);
  auto thread = [&](int tid) {
    current_barrier = n > 1 ? &barrier : nullptr;
    for (int by = 0; by < grid_y; ++by)
      for (int bx = 0; bx < grid_x; ++bx) {
        if (tid == 0)
          for (double& v : scratch) v = std::numeric_limits<double>::quiet_NaN();
        host_barrier();
        body(bx, by, tid, n, static_cast<void*>(scratch.data()));
        host_barrier();
      }
    current_barrier = nullptr;
  };
  std::vector<std::thread> others;
  for (int tid = 1; tid < n; ++tid) others.emplace_back(thread, tid);
  thread(0);
  for (std::thread& t : others) t.join();
}

}  // namespace

#define TL_HOST_ARGS int grid_x, int grid_y, int /*block*/, size_t shared_bytes

extern "C" {

// Threads per emulated block for the following calls (1 at load; n >= 1).
void tl_host_set_threads(int n) { threads_per_block = n; }

void tl_host_pixel_conv(TL_HOST_ARGS, const float* x, const float* y, float* out, int bx, int by,
                        int h, int w, int c, int size) {
  run_blocks(grid_x, grid_y, shared_bytes, [&](int gx, int gy, int tid, int nt, void* s) {
    body_pixel_conv<float>(gx, gy, tid, nt, x, y, out, bx, by, h, w, c, size, static_cast<float*>(s));
  });
}

void tl_host_conv(TL_HOST_ARGS, const float* in, float* out, int pairs, int h, int w, int size) {
  run_blocks(grid_x, grid_y, shared_bytes, [&](int gx, int gy, int tid, int nt, void* s) {
    body_conv<float>(gx, gy, tid, nt, in, out, pairs, h, w, size, static_cast<float*>(s));
  });
}

void tl_host_conv_f64(TL_HOST_ARGS, const double* in, double* out, int pairs, int h, int w,
                      int size) {
  run_blocks(grid_x, grid_y, shared_bytes, [&](int gx, int gy, int tid, int nt, void* s) {
    body_conv<double>(gx, gy, tid, nt, in, out, pairs, h, w, size, static_cast<double*>(s));
  });
}

void tl_host_pointwise(TL_HOST_ARGS, float* k, const float* nx, const float* ny, int bx, int by,
                       int h, int w, int op, float param) {
  run_blocks(grid_x, grid_y, shared_bytes, [&](int gx, int gy, int tid, int nt, void* s) {
    body_pointwise<float>(gx, gy, tid, nt, k, nx, ny, bx, by, h, w, op, param,
                          static_cast<float*>(s));
  });
}

void tl_host_pointwise_f64(TL_HOST_ARGS, double* k, const double* nx, const double* ny, int bx,
                           int by, int h, int w, int op, double param) {
  run_blocks(grid_x, grid_y, shared_bytes, [&](int gx, int gy, int tid, int nt, void* s) {
    body_pointwise<double>(gx, gy, tid, nt, k, nx, ny, bx, by, h, w, op, param,
                           static_cast<double*>(s));
  });
}

void tl_host_pool(TL_HOST_ARGS, const float* in, float* out, int pairs, int h, int w, int p) {
  run_blocks(grid_x, grid_y, shared_bytes, [&](int gx, int gy, int tid, int nt, void* s) {
    body_pool<float>(gx, gy, tid, nt, in, out, pairs, h, w, p, static_cast<float*>(s));
  });
}

void tl_host_pool_f64(TL_HOST_ARGS, const double* in, double* out, int pairs, int h, int w,
                      int p) {
  run_blocks(grid_x, grid_y, shared_bytes, [&](int gx, int gy, int tid, int nt, void* s) {
    body_pool<double>(gx, gy, tid, nt, in, out, pairs, h, w, p, static_cast<double*>(s));
  });
}

void tl_host_global_pool(TL_HOST_ARGS, const float* in, float* out, int pairs, int h, int w) {
  run_blocks(grid_x, grid_y, shared_bytes, [&](int gx, int gy, int tid, int nt, void* s) {
    body_global_pool<float>(gx, gy, tid, nt, in, out, pairs, h, w, static_cast<float*>(s));
  });
}

void tl_host_global_pool_f64(TL_HOST_ARGS, const double* in, double* out, int pairs, int h,
                             int w) {
  run_blocks(grid_x, grid_y, shared_bytes, [&](int gx, int gy, int tid, int nt, void* s) {
    body_global_pool<double>(gx, gy, tid, nt, in, out, pairs, h, w, static_cast<double*>(s));
  });
}

void tl_host_cast_f64(TL_HOST_ARGS, const float* in, double* out, long long n) {
  run_blocks(grid_x, grid_y, shared_bytes, [&](int gx, int gy, int tid, int nt, void* s) {
    body_cast_f64(gx, gy, tid, nt, in, out, n, s);
  });
}

void tl_host_fused_stage(TL_HOST_ARGS, const float* x, const float* y, const float* in, float* out,
                         const float* norms_x, const float* norms_y, const int* ops,
                         const float* op_params, int n_ops, int bx, int by, int h, int w, int c,
                         int pool) {
  run_blocks(grid_x, grid_y, shared_bytes, [&](int gx, int gy, int tid, int nt, void* s) {
    body_fused_stage<float>(gx, gy, tid, nt, x, y, in, out, norms_x, norms_y, ops, op_params, n_ops,
                            bx, by, h, w, c, pool, static_cast<float*>(s));
  });
}

}  // extern "C"
