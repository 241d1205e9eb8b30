// Run-time choice of the instruction set for the CPU kernels.
#include "dispatch.h"

#include <cstdlib>
#include <stdexcept>
#include <string>

#include "kernels.h"

namespace exsynth { namespace cpu {

static Isa detect() {
#if defined(__x86_64__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
      __builtin_cpu_supports("avx512vl"))
    return Isa::avx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Isa::avx2;
#endif
  return Isa::base;
}

Isa best_isa() {
  static const Isa best = detect();
  return best;
}

static Isa current = best_isa();

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::avx512: return "avx512";
    case Isa::avx2: return "avx2";
    default: return "base";
  }
}

Isa active_isa() { return current; }

void set_isa(const std::string& name) {
  Isa want;
  if (name == "base") want = Isa::base;
  else if (name == "avx2") want = Isa::avx2;
  else if (name == "avx512") want = Isa::avx512;
  else throw std::invalid_argument("isa must be 'base', 'avx2' or 'avx512', got '" + name + "'");
  if (static_cast<int>(want) > static_cast<int>(best_isa()))
    throw std::invalid_argument(std::string("this CPU does not support ") + name +
                                " (best available: " + isa_name(best_isa()) + ")");
  current = want;
}

#if defined(__x86_64__)
#define EXSYNTH_ISA_SWITCH(CALL)            \
  switch (current) {                        \
    case Isa::avx512: avx512::CALL; break;  \
    case Isa::avx2: avx2::CALL; break;      \
    default: base::CALL; break;             \
  }
#else
#define EXSYNTH_ISA_SWITCH(CALL) base::CALL;
#endif

template <typename T>
void attention_forward(const T* q, const T* k, const T* v, T* out, double* lse, int64_t B,
                       int64_t Lq, int64_t Lk, int64_t D, int64_t Cv, T alpha, int nthreads) {
  EXSYNTH_ISA_SWITCH(attention_forward<T>(q, k, v, out, lse, B, Lq, Lk, D, Cv, alpha, nthreads))
}

template <typename T>
void attention_backward(const T* q, const T* k, const T* v, const T* out, const double* lse,
                        const T* dlse, const T* dout, T* dq, T* dk, T* dv, int64_t B, int64_t Lq,
                        int64_t Lk, int64_t D, int64_t Cv, T alpha, int nthreads) {
  EXSYNTH_ISA_SWITCH(attention_backward<T>(q, k, v, out, lse, dlse, dout, dq, dk, dv, B, Lq, Lk,
                                           D, Cv, alpha, nthreads))
}

template <typename T>
void match_forward(const T* q, const T* k, int64_t* index, T* best, int64_t B, int64_t Lq,
                   int64_t Lk, int64_t D, int nthreads) {
  EXSYNTH_ISA_SWITCH(match_forward<T>(q, k, index, best, B, Lq, Lk, D, nthreads))
}

template <typename T>
void pono_forward(const T* x, const T* gamma, const T* beta, T* y, T* mean, T* std, int64_t B,
                  int64_t Bg, int64_t C, int64_t L, double eps, int nthreads) {
  EXSYNTH_ISA_SWITCH(pono_forward<T>(x, gamma, beta, y, mean, std, B, Bg, C, L, eps, nthreads))
}

template <typename T>
void pono_backward(const T* x, const T* mean, const T* std, const T* dy, const T* dmean,
                   const T* dstd, const T* gamma, T* dx, T* dgamma, T* dbeta, int64_t B,
                   int64_t Bg, int64_t C, int64_t L, int nthreads) {
  EXSYNTH_ISA_SWITCH(pono_backward<T>(x, mean, std, dy, dmean, dstd, gamma, dx, dgamma, dbeta, B,
                                      Bg, C, L, nthreads))
}

template <typename T>
void msca_forward(const T* F, const T* S, const T* G, const T* gate, T* out, T* V, T* stats,
                  int64_t B, int64_t N, int64_t K, int64_t L, int nthreads) {
  EXSYNTH_ISA_SWITCH(msca_forward<T>(F, S, G, gate, out, V, stats, B, N, K, L, nthreads))
}

template <typename T>
void msca_backward(const T* F, const T* S, const T* G, const T* gate, const T* V, const T* stats,
                   const T* dout, T* dF, T* dS, T* dG, T* dgate, int64_t B, int64_t N, int64_t K,
                   int64_t L, int nthreads) {
  EXSYNTH_ISA_SWITCH(msca_backward<T>(F, S, G, gate, V, stats, dout, dF, dS, dG, dgate, B, N, K,
                                      L, nthreads))
}

EXSYNTH_INSTANTIATE_KERNELS(float)
EXSYNTH_INSTANTIATE_KERNELS(double)

}}  // namespace exsynth::cpu
