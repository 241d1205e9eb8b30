// Positional normalisation (PONO) and PN-SPADE modulation on the GPU.
//
// x (B, C, L) row-major (NCHW with L = H*W). Per (b, l), over c:
//   mean, std = sqrt(unbiased var + eps), y = (x - mean) / std,
//   PN-modulate: out = y (1 + gamma) + beta, gamma/beta (Bg, C, L), Bg in {1, B}.
// Backward (n = C):
//   dx = (dy - sum(dy)/n - y sum(dy y)/(n-1)) / std + dmean/n + dstd y/(n-1),
//   PN-modulate: dy = dout (1 + gamma), dgamma = dout y, dbeta = dout (summed over b if Bg == 1).
//
// Memory-bound. Block = 32 x 8 threads: threadIdx.x (the lane) is a position, so a
// warp touches 32 consecutive positions of one channel row (coalesced); threadIdx.y
// (the warp) is a channel group: warp g handles channels g, g + 8, g + 16, ... Each
// thread accumulates float32 partial sums over its channels; the 8 partials of a
// position are combined in shared memory in a fixed order (deterministic).
// The forward makes two statistics passes (mean, then sum of squared deviations:
// exact two-pass variance, as the CPU kernel) and one output pass; the re-reads of a
// block's 32 x C slab come from L1/L2, so DRAM sees about one read of x.
//
// Races: a block owns positions [l0, l0 + 32) of one batch element (or, for the
// batch-shared gamma gradient, of every batch element: it loops over b), so every
// output element is written by exactly one thread.
#include "cuda/common.cuh"

namespace exsynth {
namespace cuda {
namespace detail {
namespace norm {

constexpr int LANES = 32;   // positions per block
constexpr int GROUPS = 8;   // channel groups (warps) per block

// Sum of the 8 per-group partials red[g][lane]; all threads call (contains __syncthreads()).
// On return every thread of column `lane` has the total. `red` is free for reuse only
// after the next __syncthreads().
__device__ __forceinline__ float block_column_sum(float (*red)[LANES + 1], float part) {
  red[threadIdx.y][threadIdx.x] = part;
  __syncthreads();
  float t = 0.0f;
#pragma unroll
  for (int g = 0; g < GROUPS; ++g) t += red[g][threadIdx.x];
  return t;
}

// Grid (ceil(L / 32), B); block (32, 8).
template <typename T>
__global__ void __launch_bounds__(LANES * GROUPS)
    pono_fwd_kernel(const T* __restrict__ x, const T* __restrict__ gamma,
                    const T* __restrict__ beta, T* __restrict__ y, float* __restrict__ mean_out,
                    float* __restrict__ std_out, int64_t Bg, int64_t C, int64_t L, float eps) {
  __shared__ float red[GROUPS][LANES + 1];
  const int64_t b = blockIdx.y;
  const int64_t l = static_cast<int64_t>(blockIdx.x) * LANES + threadIdx.x;
  const bool ok = l < L;
  const int g = threadIdx.y;
  const T* xb = x + b * C * L + l;  // element (c) of this position: xb[c * L]

  float s = 0.0f;
  if (ok)
    for (int64_t c = g; c < C; c += GROUPS) s += to_f(xb[c * L]);
  const float mean = block_column_sum(red, s) / static_cast<float>(C);
  __syncthreads();  // red is rewritten below

  float ss = 0.0f;
  if (ok)
    for (int64_t c = g; c < C; c += GROUPS) {
      const float d = to_f(xb[c * L]) - mean;
      ss += d * d;
    }
  const float var = block_column_sum(red, ss) / static_cast<float>(C - 1);
  const float sd = sqrtf(var + eps);
  const float rstd = 1.0f / sd;
  if (ok && g == 0) {
    mean_out[b * L + l] = mean;
    std_out[b * L + l] = sd;
  }
  if (!ok) return;  // no __syncthreads() below

  T* yb = y + b * C * L + l;
  if (gamma != nullptr) {
    const int64_t gb = Bg == 1 ? 0 : b;
    const T* gm = gamma + gb * C * L + l;
    const T* bt = beta + gb * C * L + l;
    for (int64_t c = g; c < C; c += GROUPS) {
      const float v = (to_f(xb[c * L]) - mean) * rstd;
      yb[c * L] = from_f<T>(v * (1.0f + to_f(gm[c * L])) + to_f(bt[c * L]));
    }
  } else {
    for (int64_t c = g; c < C; c += GROUPS) yb[c * L] = from_f<T>((to_f(xb[c * L]) - mean) * rstd);
  }
}

// Grid (ceil(L / 32), nb) with nb = 1 when loop_batch (the block handles every b in
// turn: gamma is shared over the batch and its gradients are sums over b) and nb = B
// otherwise; block (32, 8). G is the element type of dgamma/dbeta (T, or float32 for
// the batch sum of 16-bit inputs).
template <typename T, typename G>
__global__ void __launch_bounds__(LANES * GROUPS)
    pono_bwd_kernel(const T* __restrict__ x, const float* __restrict__ mean_in,
                    const float* __restrict__ std_in, const T* __restrict__ dy,
                    const float* __restrict__ dmean, const float* __restrict__ dstd,
                    const T* __restrict__ gamma, T* __restrict__ dx, G* __restrict__ dgamma,
                    G* __restrict__ dbeta, bool loop_batch, int64_t B, int64_t Bg, int64_t C,
                    int64_t L) {
  __shared__ float red[GROUPS][LANES + 1];
  const int64_t l = static_cast<int64_t>(blockIdx.x) * LANES + threadIdx.x;
  const bool ok = l < L;
  const int g = threadIdx.y;
  const float n = static_cast<float>(C);
  const int64_t b_begin = loop_batch ? 0 : blockIdx.y;
  const int64_t b_end = loop_batch ? B : b_begin + 1;

  for (int64_t b = b_begin; b < b_end; ++b) {  // block-uniform trip count
    const float m = ok ? mean_in[b * L + l] : 0.0f;
    const float r = ok ? 1.0f / std_in[b * L + l] : 0.0f;
    const T* xb = x + b * C * L + l;
    const T* dyb = dy != nullptr ? dy + b * C * L + l : nullptr;
    const int64_t gb = Bg == 1 ? 0 : b;
    const T* gm = gamma != nullptr ? gamma + gb * C * L + l : nullptr;

    float sdy = 0.0f, sdyy = 0.0f;
    if (ok && dyb != nullptr)
      for (int64_t c = g; c < C; c += GROUPS) {
        const float yv = (to_f(xb[c * L]) - m) * r;
        float d = to_f(dyb[c * L]);
        if (gm != nullptr) d *= 1.0f + to_f(gm[c * L]);
        sdy += d;
        sdyy += d * yv;
      }
    const float tdy = block_column_sum(red, sdy);
    __syncthreads();
    const float tdyy = block_column_sum(red, sdyy);
    __syncthreads();  // red is rewritten in the next iteration

    if (ok) {
      // dx = d r + a + s y with a, s constant over c.
      const float dm = dmean != nullptr ? dmean[b * L + l] : 0.0f;
      const float dsd = dstd != nullptr ? dstd[b * L + l] : 0.0f;
      const float a = -tdy / n * r + dm / n;
      const float s = -tdyy / (n - 1.0f) * r + dsd / (n - 1.0f);
      T* dxb = dx + b * C * L + l;
      G* dgb = gm != nullptr ? dgamma + gb * C * L + l : nullptr;  // PN-modulate only
      G* dbb = gm != nullptr ? dbeta + gb * C * L + l : nullptr;
      const bool accumulate = loop_batch && b > b_begin;
      for (int64_t c = g; c < C; c += GROUPS) {
        const float yv = (to_f(xb[c * L]) - m) * r;
        const float go = dyb != nullptr ? to_f(dyb[c * L]) : 0.0f;
        const float d = gm != nullptr ? go * (1.0f + to_f(gm[c * L])) : go;
        dxb[c * L] = from_f<T>(d * r + a + s * yv);
        if (dgb != nullptr) {
          // Same thread, same element for every b: the batch sum is race-free.
          const float dg = go * yv;
          if (accumulate) {
            dgb[c * L] = from_f<G>(to_f(dgb[c * L]) + dg);
            dbb[c * L] = from_f<G>(to_f(dbb[c * L]) + go);
          } else {
            dgb[c * L] = from_f<G>(dg);
            dbb[c * L] = from_f<G>(go);
          }
        }
      }
    }
  }
}

inline bool grid_ok(int64_t L, int64_t nb) {
  return ceil_div(L, LANES) <= 0x7fffffff && nb >= 1 && nb <= 65535;
}

template <typename T>
cudaError_t forward(const void* x, const void* gamma, const void* beta, void* y, float* mean,
                    float* std_, int64_t B, int64_t Bg, int64_t C, int64_t L, float eps,
                    cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(ceil_div(L, LANES)), static_cast<unsigned>(B));
  pono_fwd_kernel<T><<<grid, dim3(LANES, GROUPS), 0, stream>>>(
      static_cast<const T*>(x), static_cast<const T*>(gamma), static_cast<const T*>(beta),
      static_cast<T*>(y), mean, std_, Bg, C, L, eps);
  return cudaGetLastError();
}

template <typename T, typename G>
cudaError_t backward(const void* x, const float* mean, const float* std_, const void* dy,
                     const float* dmean, const float* dstd, const void* gamma, void* dx,
                     void* dgamma, void* dbeta, int64_t B, int64_t Bg, int64_t C, int64_t L,
                     cudaStream_t stream) {
  // Batch-shared gamma: one block per position chunk walks the batch (race-free sum).
  const bool loop_batch = gamma != nullptr && Bg == 1;
  const int64_t nb = loop_batch ? 1 : B;
  if (!grid_ok(L, nb)) return cudaErrorInvalidValue;
  const dim3 grid(static_cast<unsigned>(ceil_div(L, LANES)), static_cast<unsigned>(nb));
  pono_bwd_kernel<T, G><<<grid, dim3(LANES, GROUPS), 0, stream>>>(
      static_cast<const T*>(x), mean, std_, static_cast<const T*>(dy), dmean, dstd,
      static_cast<const T*>(gamma), static_cast<T*>(dx), static_cast<G*>(dgamma),
      static_cast<G*>(dbeta), loop_batch, B, Bg, C, L);
  return cudaGetLastError();
}

}  // namespace norm
}  // namespace detail

cudaError_t pono_forward(DType dtype, const void* x, const void* gamma, const void* beta, void* y,
                         float* mean, float* std_, int64_t B, int64_t Bg, int64_t C, int64_t L,
                         float eps, cudaStream_t stream) {
  using namespace detail;
  if (B == 0 || L == 0) return cudaSuccess;
  if (C < 2 || (gamma != nullptr) != (beta != nullptr) ||
      (gamma != nullptr && Bg != 1 && Bg != B) || !norm::grid_ok(L, B))
    return cudaErrorInvalidValue;
  return dispatch_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    return norm::forward<T>(x, gamma, beta, y, mean, std_, B, Bg, C, L, eps, stream);
  });
}

cudaError_t pono_backward(DType dtype, const void* x, const float* mean, const float* std_,
                          const void* dy, const float* dmean, const float* dstd,
                          const void* gamma, void* dx, void* dgamma, void* dbeta,
                          bool grad_gamma_fp32, int64_t B, int64_t Bg, int64_t C, int64_t L,
                          cudaStream_t stream) {
  using namespace detail;
  if (B == 0 || L == 0) return cudaSuccess;
  if (C < 2) return cudaErrorInvalidValue;
  if (gamma != nullptr &&
      (dy == nullptr || dgamma == nullptr || dbeta == nullptr || (Bg != 1 && Bg != B)))
    return cudaErrorInvalidValue;
  return dispatch_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    if (grad_gamma_fp32)
      return norm::backward<T, float>(x, mean, std_, dy, dmean, dstd, gamma, dx, dgamma, dbeta,
                                      B, Bg, C, L, stream);
    return norm::backward<T, T>(x, mean, std_, dy, dmean, dstd, gamma, dx, dgamma, dbeta, B, Bg,
                                C, L, stream);
  });
}

}  // namespace cuda
}  // namespace exsynth
