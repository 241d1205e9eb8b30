// Body of one instruction-set translation unit: all CPU kernels and their
// explicit float/double instantiations. Expects EXSYNTH_ISA and EXSYNTH_VBYTES.
namespace exsynth { namespace cpu { namespace EXSYNTH_ISA {
#include "simd.h"
#include "correlation_kernel.h"
#include "norm_kernel.h"
#include "msca_kernel.h"

EXSYNTH_INSTANTIATE_KERNELS(float)
EXSYNTH_INSTANTIATE_KERNELS(double)
}}}
