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

// The entry points: each kernel of kernels.h, run in the active instruction set.
EXSYNTH_CPU_KERNELS(EXSYNTH_DECLARE_KERNEL)

}}  // namespace exsynth::cpu
