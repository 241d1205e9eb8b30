"""`cuda` backend: CUDA C++ kernels in exsynth._C_cuda (built only where nvcc
and a CUDA-enabled torch were present at install time)."""
from __future__ import annotations


import torch


def _load():
    if not torch.cuda.is_available():
        why = "this torch has no CUDA" if torch.version.cuda is None else "no CUDA GPU visible"
        return None, why
    try:
        from exsynth import _C_cuda
    except ImportError as e:
        return None, (f"extension exsynth._C_cuda not built ({e}); install with nvcc and a "
                      "CUDA-enabled torch present, or EXSYNTH_CUDA=1")
    return _C_cuda, "CUDA C++ kernels"


# Probed once at import: status() must stay plain Python for torch.compile.
_STATUS = _load()


def status():
    return _STATUS[0] is not None, _STATUS[1]


def supports(device: torch.device, dtype: torch.dtype):
    if device.type != "cuda":
        return f"needs CUDA tensors, got device {device}"
    return "no kernels for this op in exsynth._C_cuda yet"
