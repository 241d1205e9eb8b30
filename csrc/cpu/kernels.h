// The CPU kernels, declared once: EXSYNTH_CPU_KERNELS(X) calls X(name, (parameters),
// (arguments)) for each, and every list that names them -- the declarations per instruction
// set and for the dispatcher, the explicit instantiations, the dispatch functions -- is
// generated from it. Each kernel is a template on its scalar type T (float, double).
// Pointers are raw, sizes are element counts; no torch headers anywhere.
#pragma once
#include <cstdint>

#define EXSYNTH_CPU_KERNELS(X)                                                                 \
  /* correlation_kernel.h: q (B, Lq, D), k (B, Lk, D), v (B, Lk, Cv); lse float64 */           \
  X(attention_forward,                                                                         \
    (const T* q, const T* k, const T* v, T* out, double* lse, int64_t B, int64_t Lq,           \
     int64_t Lk, int64_t D, int64_t Cv, T alpha, int nthreads),                                \
    (q, k, v, out, lse, B, Lq, Lk, D, Cv, alpha, nthreads))                                    \
  X(attention_backward,                                                                        \
    (const T* q, const T* k, const T* v, const T* out, const double* lse, const T* dlse,       \
     const T* dout, T* dq, T* dk, T* dv, int64_t B, int64_t Lq, int64_t Lk, int64_t D,         \
     int64_t Cv, T alpha, int nthreads),                                                       \
    (q, k, v, out, lse, dlse, dout, dq, dk, dv, B, Lq, Lk, D, Cv, alpha, nthreads))            \
  X(match_forward,                                                                             \
    (const T* q, const T* k, int64_t* index, T* best, int64_t B, int64_t Lq, int64_t Lk,       \
     int64_t D, int nthreads),                                                                 \
    (q, k, index, best, B, Lq, Lk, D, nthreads))                                               \
  /* patch_correlation_kernel.h: x (B, H, W, C) channels last, per-position a, m (B, H W) */   \
  X(patch_attention_forward,                                                                   \
    (const T* xq, const T* xk, const T* v, const T* aq, const T* mq, const T* ak,              \
     const T* mk, T* out, double* lse, int64_t B, int64_t Hq, int64_t Wq, int64_t Hk,          \
     int64_t Wk, int64_t C, int64_t Cv, int64_t k, T alpha, int nthreads),                     \
    (xq, xk, v, aq, mq, ak, mk, out, lse, B, Hq, Wq, Hk, Wk, C, Cv, k, alpha, nthreads))       \
  X(patch_attention_backward,                                                                  \
    (const T* xq, const T* xk, const T* v, const T* aq, const T* mq, const T* ak,              \
     const T* mk, const T* out, const double* lse, const T* dlse, const T* dout, T* dxq,       \
     T* dxk, T* dv, T* daq, T* dmq, T* dak, T* dmk, int64_t B, int64_t Hq, int64_t Wq,         \
     int64_t Hk, int64_t Wk, int64_t C, int64_t Cv, int64_t k, T alpha, int nthreads),         \
    (xq, xk, v, aq, mq, ak, mk, out, lse, dlse, dout, dxq, dxk, dv, daq, dmq, dak, dmk, B, Hq, \
     Wq, Hk, Wk, C, Cv, k, alpha, nthreads))                                                   \
  X(patch_match_forward,                                                                       \
    (const T* xq, const T* xk, const T* aq, const T* mq, const T* ak, const T* mk,             \
     int64_t* index, T* best, int64_t B, int64_t Hq, int64_t Wq, int64_t Hk, int64_t Wk,       \
     int64_t C, int64_t k, int nthreads),                                                      \
    (xq, xk, aq, mq, ak, mk, index, best, B, Hq, Wq, Hk, Wk, C, k, nthreads))                  \
  /* norm_kernel.h: x (B, C, L); gamma, beta (Bg, C, L) or null */                             \
  X(pono_forward,                                                                              \
    (const T* x, const T* gamma, const T* beta, T* y, T* mean, T* std, int64_t B, int64_t Bg,  \
     int64_t C, int64_t L, double eps, int nthreads),                                          \
    (x, gamma, beta, y, mean, std, B, Bg, C, L, eps, nthreads))                                \
  X(pono_backward,                                                                             \
    (const T* x, const T* mean, const T* std, const T* dy, const T* dmean, const T* dstd,      \
     const T* gamma, T* dx, T* dgamma, T* dbeta, int64_t B, int64_t Bg, int64_t C, int64_t L,  \
     int nthreads),                                                                            \
    (x, mean, std, dy, dmean, dstd, gamma, dx, dgamma, dbeta, B, Bg, C, L, nthreads))          \
  /* msca_kernel.h: F (B, N, L), S, G (B, K, L), gate (B, K) or null */                        \
  X(msca_forward,                                                                              \
    (const T* F, const T* S, const T* G, const T* gate, T* out, T* V, T* stats, int64_t B,     \
     int64_t N, int64_t K, int64_t L, int nthreads),                                           \
    (F, S, G, gate, out, V, stats, B, N, K, L, nthreads))                                      \
  X(msca_backward,                                                                             \
    (const T* F, const T* S, const T* G, const T* gate, const T* V, const T* stats,            \
     const T* dout, T* dF, T* dS, T* dG, T* dgate, int64_t B, int64_t N, int64_t K, int64_t L, \
     int nthreads),                                                                            \
    (F, S, G, gate, V, stats, dout, dF, dS, dG, dgate, B, N, K, L, nthreads))

// template <typename T> void name(parameters);
#define EXSYNTH_DECLARE_KERNEL(name, params, args) template <typename T> void name params;
// the explicit instantiations for float and double, in the current namespace
#define EXSYNTH_INSTANTIATE_KERNEL(name, params, args) \
  template decltype(name<float>) name<float>;          \
  template decltype(name<double>) name<double>;

#define EXSYNTH_DECLARE_ISA_KERNELS(ISA)                 \
  namespace exsynth { namespace cpu { namespace ISA {    \
  EXSYNTH_CPU_KERNELS(EXSYNTH_DECLARE_KERNEL)            \
  }}}

EXSYNTH_DECLARE_ISA_KERNELS(base)
#if defined(__x86_64__)
EXSYNTH_DECLARE_ISA_KERNELS(avx2)
EXSYNTH_DECLARE_ISA_KERNELS(avx512)
#endif
