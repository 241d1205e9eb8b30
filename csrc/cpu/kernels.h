// Declarations of the CPU kernels compiled once per instruction set.
// Pointers are raw, sizes are element counts; no torch headers anywhere.
#pragma once
#include <cstdint>

#define EXSYNTH_DECLARE_CPU_KERNELS(ISA)                                                        \
  namespace exsynth { namespace cpu { namespace ISA {                                          \
  template <typename T>                                                                        \
  void attention_forward(const T* q, const T* k, const T* v, T* out, T* lse, int64_t B,        \
                         int64_t Lq, int64_t Lk, int64_t D, int64_t Cv, T alpha, int nthreads); \
  template <typename T>                                                                        \
  void attention_backward(const T* q, const T* k, const T* v, const T* lse, const T* delta,    \
                          const T* dout, T* dq, T* dk, T* dv, int64_t B, int64_t Lq,           \
                          int64_t Lk, int64_t D, int64_t Cv, T alpha, int nthreads);           \
  template <typename T>                                                                        \
  void match_forward(const T* q, const T* k, int64_t* index, T* best, int64_t B, int64_t Lq,   \
                     int64_t Lk, int64_t D, int nthreads);                                     \
  }}}

EXSYNTH_DECLARE_CPU_KERNELS(base)
#if defined(__x86_64__)
EXSYNTH_DECLARE_CPU_KERNELS(avx2)
EXSYNTH_DECLARE_CPU_KERNELS(avx512)
#endif
