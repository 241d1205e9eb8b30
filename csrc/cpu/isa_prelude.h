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
