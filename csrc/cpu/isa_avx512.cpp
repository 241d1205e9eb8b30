// AVX-512 (F + DQ + VL) build, chosen at run time on CPUs that have it.
#include "isa_prelude.h"
#include "kernels.h"
#if defined(__x86_64__)
#pragma GCC target("avx512f,avx512dq,avx512vl,avx2,fma")
#define EXSYNTH_ISA avx512
#define EXSYNTH_VBYTES 64
#include "instantiate.h"
#endif
