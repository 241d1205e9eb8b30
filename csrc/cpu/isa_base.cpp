// Baseline build (SSE2 on x86-64, the compiler default elsewhere).
#include "isa_prelude.h"
#include "kernels.h"
#define EXSYNTH_ISA base
#define EXSYNTH_VBYTES 16
#include "instantiate.h"
