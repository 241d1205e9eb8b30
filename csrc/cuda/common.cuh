// Shared helpers of exsynth's CUDA kernels: dtype conversion, ceil_div,
// warp reductions, dtype dispatch and dynamic shared memory set-up.
//
// Conventions of every kernel in csrc/cuda:
//   * tensors are contiguous row-major; global offsets are computed in int64_t;
//   * inputs/outputs have the user's dtype T in {float, __half, __nv_bfloat16};
//     every accumulation, softmax statistic and saved statistic is float32;
//   * launchers return cudaSuccess or the first error (launch errors are read
//     with cudaGetLastError() right after each launch).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/launchers.h"

namespace exsynth {
namespace cuda {
namespace detail {

__host__ __device__ inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
__host__ __device__ inline int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }

// ---- float32 <-> T ----------------------------------------------------------------------------
__device__ __forceinline__ float to_f(float x) { return x; }
__device__ __forceinline__ float to_f(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_f(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T> __device__ __forceinline__ T from_f(float x);
template <> __device__ __forceinline__ float from_f<float>(float x) { return x; }
template <> __device__ __forceinline__ __half from_f<__half>(float x) { return __float2half_rn(x); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}

// ---- warp reductions (every lane of the warp must call; all lanes get the result) ------------
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, off));
  return v;
}

// ---- host helpers -----------------------------------------------------------------------------

// Runs f(T{}) with T the C++ type of `dt`.
template <typename F> inline cudaError_t dispatch_dtype(DType dt, F&& f) {
  switch (dt) {
    case DType::kFloat32: return f(float{});
    case DType::kFloat16: return f(__half{});
    case DType::kBFloat16: return f(__nv_bfloat16{});
  }
  return cudaErrorInvalidValue;
}

// Allows `kernel` to use `bytes` of dynamic shared memory on the current
// device (needed above 48 KiB); fails with cudaErrorInvalidValue when the
// device cannot give that much to one block.
template <typename K> inline cudaError_t allow_dynamic_smem(K kernel, size_t bytes) {
  int dev = 0, optin = 0;
  cudaError_t err = cudaGetDevice(&dev);
  if (err != cudaSuccess) return err;
  err = cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev);
  if (err != cudaSuccess) return err;
  if (bytes > static_cast<size_t>(optin)) return cudaErrorInvalidValue;
  return cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                              static_cast<int>(bytes));
}

// Bump allocator over one dynamic shared memory (or global workspace) block:
// every region starts on a 128-byte boundary (WMMA needs 32-byte-aligned
// fragment pointers; 16-byte vector copies need 16).
struct Carve {
  size_t offset = 0;
  template <typename U> __host__ __device__ size_t take(size_t count) {
    const size_t at = offset;
    offset = static_cast<size_t>(round_up(static_cast<int64_t>(offset + count * sizeof(U)), 128));
    return at;
  }
};

}  // namespace detail
}  // namespace cuda
}  // namespace exsynth
