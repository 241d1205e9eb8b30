// AVX2 + FMA build, chosen at run time on CPUs that have them.
#include "isa_prelude.h"
#include "kernels.h"
#if defined(__x86_64__)
#pragma GCC target("avx2,fma")
#define EXSYNTH_ISA avx2
#define EXSYNTH_VBYTES 32
#include "instantiate.h"
#endif
