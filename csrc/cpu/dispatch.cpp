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

#define EXSYNTH_DISPATCH_KERNEL(name, params, args) \
  template <typename T>                              \
  void name params { EXSYNTH_ISA_SWITCH(name<T> args) }
EXSYNTH_CPU_KERNELS(EXSYNTH_DISPATCH_KERNEL)
EXSYNTH_CPU_KERNELS(EXSYNTH_INSTANTIATE_KERNEL)

}}  // namespace exsynth::cpu
