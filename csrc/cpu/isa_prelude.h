// Standard headers every instruction-set translation unit needs; they must be
// included before `#pragma GCC target`, which then applies to our code only.
#pragma once
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>
#if defined(__x86_64__)
#include <xmmintrin.h>  // _mm_getcsr / _mm_setcsr (SSE, every x86-64)
#endif
