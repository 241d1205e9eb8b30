// Body of one instruction-set translation unit: all CPU kernels and their
// explicit float/double instantiations. Expects EXSYNTH_ISA and EXSYNTH_VBYTES.
namespace exsynth { namespace cpu { namespace EXSYNTH_ISA {
#include "simd.h"
#include "correlation_kernel.h"
#include "norm_kernel.h"
#include "msca_kernel.h"

#define EXSYNTH_INSTANTIATE(T)                                                                  \
  template void attention_forward<T>(const T*, const T*, const T*, T*, T*, int64_t, int64_t,    \
                                     int64_t, int64_t, int64_t, T, int);                       \
  template void attention_backward<T>(const T*, const T*, const T*, const T*, const T*,         \
                                      const T*, T*, T*, T*, int64_t, int64_t, int64_t, int64_t, \
                                      int64_t, T, int);                                         \
  template void match_forward<T>(const T*, const T*, int64_t*, T*, int64_t, int64_t, int64_t,  \
                                 int64_t, int);                                                 \
  template void pono_forward<T>(const T*, const T*, const T*, T*, T*, T*, int64_t, int64_t,    \
                                int64_t, int64_t, double, int);                                \
  template void pono_backward<T>(const T*, const T*, const T*, const T*, const T*, const T*,    \
                                 const T*, T*, T*, T*, int64_t, int64_t, int64_t, int64_t, int); \
  template void msca_forward<T>(const T*, const T*, const T*, const T*, T*, T*, T*, int64_t,    \
                                int64_t, int64_t, int64_t, int);                               \
  template void msca_backward<T>(const T*, const T*, const T*, const T*, const T*, const T*,    \
                                 const T*, T*, T*, T*, T*, int64_t, int64_t, int64_t, int64_t,  \
                                 int);
EXSYNTH_INSTANTIATE(float)
EXSYNTH_INSTANTIATE(double)
#undef EXSYNTH_INSTANTIATE
}}}
