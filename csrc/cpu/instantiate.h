// Body of one instruction-set translation unit: all CPU kernels and their
// explicit float/double instantiations (the list in kernels.h). Expects EXSYNTH_ISA and EXSYNTH_VBYTES.
namespace exsynth { namespace cpu { namespace EXSYNTH_ISA {
#include "simd.h"
#include "gemm.h"
#include "correlation_kernel.h"
#include "patch_correlation_kernel.h"
#include "norm_kernel.h"
#include "msca_kernel.h"

EXSYNTH_CPU_KERNELS(EXSYNTH_INSTANTIATE_KERNEL)
}}}
