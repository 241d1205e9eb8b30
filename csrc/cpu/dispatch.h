// Entry points of the CPU kernels, dispatched to the best instruction set.
#pragma once
#include <cstdint>
#include <string>

#include "kernels.h"

namespace exsynth { namespace cpu {

enum class Isa : int { base = 0, avx2 = 1, avx512 = 2 };
Isa best_isa();
Isa active_isa();
const char* isa_name(Isa isa);
void set_isa(const std::string& name);  // for tests and benchmarks of each build

template <typename T>
void attention_forward(const T* q, const T* k, const T* v, T* out, double* lse, int64_t B,
                       int64_t Lq, int64_t Lk, int64_t D, int64_t Cv, T alpha, int nthreads);
template <typename T>
void attention_backward(const T* q, const T* k, const T* v, const T* out, const double* lse,
                        const T* dlse, const T* dout, T* dq, T* dk, T* dv, int64_t B, int64_t Lq,
                        int64_t Lk, int64_t D, int64_t Cv, T alpha, int nthreads);
template <typename T>
void match_forward(const T* q, const T* k, int64_t* index, T* best, int64_t B, int64_t Lq,
                   int64_t Lk, int64_t D, int nthreads);
EXSYNTH_DECLARE_NORM_MSCA

}}  // namespace exsynth::cpu
