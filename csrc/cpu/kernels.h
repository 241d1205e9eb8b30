// Declarations of the CPU kernels compiled once per instruction set.
// Pointers are raw, sizes are element counts; no torch headers anywhere.
#pragma once
#include <cstdint>

#define EXSYNTH_DECLARE_NORM_MSCA                                                              \
  template <typename T>                                                                        \
  void pono_forward(const T* x, const T* gamma, const T* beta, T* y, T* mean, T* std,          \
                    int64_t B, int64_t Bg, int64_t C, int64_t L, double eps, int nthreads);    \
  template <typename T>                                                                        \
  void pono_backward(const T* x, const T* mean, const T* std, const T* dy, const T* dmean,     \
                     const T* dstd, const T* gamma, T* dx, T* dgamma, T* dbeta, int64_t B,     \
                     int64_t Bg, int64_t C, int64_t L, int nthreads);                          \
  template <typename T>                                                                        \
  void msca_forward(const T* F, const T* S, const T* G, const T* gate, T* out, T* V, T* stats,  \
                    int64_t B, int64_t N, int64_t K, int64_t L, int nthreads);                 \
  template <typename T>                                                                        \
  void msca_backward(const T* F, const T* S, const T* G, const T* gate, const T* V,            \
                     const T* stats, const T* dout, T* dF, T* dS, T* dG, T* dgate, int64_t B,  \
                     int64_t N, int64_t K, int64_t L, int nthreads);

#define EXSYNTH_DECLARE_CPU_KERNELS(ISA)                                                        \
  namespace exsynth { namespace cpu { namespace ISA {                                          \
  template <typename T>                                                                        \
  void attention_forward(const T* q, const T* k, const T* v, T* out, double* lse, int64_t B,   \
                         int64_t Lq, int64_t Lk, int64_t D, int64_t Cv, T alpha, int nthreads); \
  template <typename T>                                                                        \
  void attention_backward(const T* q, const T* k, const T* v, const T* out, const double* lse, \
                          const T* dlse, const T* dout, T* dq, T* dk, T* dv, int64_t B,        \
                          int64_t Lq, int64_t Lk, int64_t D, int64_t Cv, T alpha, int nthreads); \
  template <typename T>                                                                        \
  void match_forward(const T* q, const T* k, int64_t* index, T* best, int64_t B, int64_t Lq,   \
                     int64_t Lk, int64_t D, int nthreads);                                     \
  EXSYNTH_DECLARE_NORM_MSCA                                                                    \
  }}}

EXSYNTH_DECLARE_CPU_KERNELS(base)
#if defined(__x86_64__)
EXSYNTH_DECLARE_CPU_KERNELS(avx2)
EXSYNTH_DECLARE_CPU_KERNELS(avx512)
#endif

// Explicit instantiations of every kernel for one scalar type, in the current
// namespace: each ISA translation unit and the dispatcher use the same list.
#define EXSYNTH_INSTANTIATE_KERNELS(T)                                                        \
  template void attention_forward<T>(const T*, const T*, const T*, T*, double*, int64_t,        \
                                     int64_t, int64_t, int64_t, int64_t, T, int);              \
  template void attention_backward<T>(const T*, const T*, const T*, const T*, const double*,    \
                                      const T*, const T*, T*, T*, T*, int64_t, int64_t, int64_t, \
                                      int64_t, int64_t, T, int);                                \
  template void match_forward<T>(const T*, const T*, int64_t*, T*, int64_t, int64_t, int64_t,  \
                                 int64_t, int);                                                 \
  template void pono_forward<T>(const T*, const T*, const T*, T*, T*, T*, int64_t, int64_t,    \
                                int64_t, int64_t, double, int);                                \
  template void pono_backward<T>(const T*, const T*, const T*, const T*, const T*, const T*,    \
                                 const T*, T*, T*, T*, int64_t, int64_t, int64_t, int64_t, int); \
  template void msca_forward<T>(const T*, const T*, const T*, const T*, T*, T*, T*, int64_t,    \
                                int64_t, int64_t, int64_t, int);                               \
  template void msca_backward<T>(const T*, const T*, const T*, const T*, const T*, const T*,    \
                                 const T*, T*, T*, T*, T*, int64_t, int64_t, int64_t, int64_t,  \
                                 int);
