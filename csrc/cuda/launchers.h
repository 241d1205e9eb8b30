// Host entry points of exsynth's CUDA kernels (exsynth._C_cuda).
//
// Plain C++: included by the nvcc-compiled .cu files and by the host-compiled
// pybind11 module csrc/bindings_cuda.cpp, so it uses nothing but the CUDA
// runtime API's types. No torch headers anywhere: tensors cross as raw device
// pointers of contiguous row-major data, plus sizes and a stream; Python
// allocates every output and workspace and checks shapes, devices and dtypes.
//
// Dtypes: inputs/outputs are float32, float16 or bfloat16 (`DType`); every
// saved statistic (lse, delta, mean, std, V, stats) is float32 whatever the
// input dtype. Optional tensors are passed as null pointers.
//
// Each function enqueues its kernels on `stream` and returns cudaSuccess, or
// the first error: an invalid argument (cudaErrorInvalidValue, e.g. too much
// shared memory for this device) or a launch error read with
// cudaGetLastError() after each launch. Execution is asynchronous: errors
// raised while kernels run surface at the caller's next synchronisation.
// Every launch uses the current CUDA device (the caller selects it).
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace exsynth {
namespace cuda {

enum class DType : int { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2 };

// ---- correlation attention: q (B, Lq, D), k (B, Lk, D), v (B, Lk, Cv) --------------------------
// Limits: 1 <= Cv <= kMaxValueChannels (the forward keeps a 64 x Cv float32
// output tile in shared memory); D >= 1 any size (tiled).
constexpr int64_t kMaxValueChannels = 256;

// out (B, Lq, Cv) dtype; lse (B, Lq) float64 = natural-log logsumexp_j alpha q_i.k_j.
cudaError_t corr_attention_forward(DType dtype, const void* q, const void* k, const void* v,
                                   void* out, double* lse, int64_t B, int64_t Lq, int64_t Lk,
                                   int64_t D, int64_t Cv, float alpha, cudaStream_t stream);

// Bytes of device workspace corr_attention_backward needs (0 for float32:
// the float32 outputs are their own accumulators).
size_t corr_attention_backward_workspace(DType dtype, int64_t B, int64_t Lq, int64_t Lk,
                                         int64_t D, int64_t Cv);

// lse (B, Lq) float64, delta (B, Lq) float32 (delta_i = sum_c dout_ic out_ic - dlse_i);
// dout (B, Lq, Cv); writes dq, dk, dv (dtype). `workspace` holds at least
// corr_attention_backward_workspace(...) bytes (may be null when that is 0).
cudaError_t corr_attention_backward(DType dtype, const void* q, const void* k, const void* v,
                                    const double* lse, const float* delta, const void* dout,
                                    void* dq, void* dk, void* dv, void* workspace, int64_t B,
                                    int64_t Lq, int64_t Lk, int64_t D, int64_t Cv, float alpha,
                                    cudaStream_t stream);

// index (B, Lq) int64 = argmax_j q_i.k_j (first on ties); best (B, Lq) float32 = the max.
cudaError_t corr_match_forward(DType dtype, const void* q, const void* k, int64_t* index,
                               float* best, int64_t B, int64_t Lq, int64_t Lk, int64_t D,
                               cudaStream_t stream);

// ---- positional normalisation: x (B, C, L), C >= 2 -----------------------------------------------
// y = (x - mean) / std per (b, l) over c, std = sqrt(unbiased var + eps);
// with gamma/beta (Bg, C, L), Bg in {1, B}: y = y * (1 + gamma) + beta.
// mean, std (B, L) float32.
cudaError_t pono_forward(DType dtype, const void* x, const void* gamma, const void* beta, void* y,
                         float* mean, float* std_, int64_t B, int64_t Bg, int64_t C, int64_t L,
                         float eps, cudaStream_t stream);

// dx = (dy - sum(dy)/C - y sum(dy y)/(C-1)) / std + dmean/C + dstd y/(C-1).
// PONO: gamma null, dy/dmean/dstd each optional (null = zero).
// PN-modulate: gamma non-null, `dy` is the gradient of the modulated output
// (the kernel uses dout (1 + gamma)), dgamma = sum over the broadcast batch
// of dout y, dbeta likewise of dout; both (Bg, C, L). Their element type is
// float32 when grad_gamma_fp32 is true (Python casts afterwards; used for
// Bg == 1 < B with half inputs so the batch sum is accumulated in float32),
// else the input dtype.
cudaError_t pono_backward(DType dtype, const void* x, const float* mean, const float* std_,
                          const void* dy, const float* dmean, const float* dstd,
                          const void* gamma, void* dx, void* dgamma, void* dbeta,
                          bool grad_gamma_fp32, int64_t B, int64_t Bg, int64_t C, int64_t L,
                          cudaStream_t stream);

// ---- MSCA attention: value F (B, N, L), spatial S (B, K, L), channel G (B, K, L), gate (B, K) ---
// alpha = softmax_l S; V = F alpha^T (B, N, K) float32 (before gating);
// beta = softmax_k G; out = (V * gate) beta (B, N, L); stats (B, K, 2) float32
// = [max_l S, sum_l exp(S - max)].
size_t msca_workspace(int64_t B, int64_t N, int64_t K, int64_t L, bool backward);

cudaError_t msca_forward(DType dtype, const void* F, const void* S, const void* G,
                         const void* gate, void* out, float* V, float* stats, void* workspace,
                         int64_t B, int64_t N, int64_t K, int64_t L, cudaStream_t stream);

// dgate may be null (and must be when gate is null).
cudaError_t msca_backward(DType dtype, const void* F, const void* S, const void* G,
                          const void* gate, const float* V, const float* stats, const void* dout,
                          void* dF, void* dS, void* dG, void* dgate, void* workspace, int64_t B,
                          int64_t N, int64_t K, int64_t L, cudaStream_t stream);

}  // namespace cuda
}  // namespace exsynth
