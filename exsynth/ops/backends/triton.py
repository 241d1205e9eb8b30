"""`triton` backend: Triton kernels shipped as exsynth.kernels.

On a CUDA GPU: float32, float16 and bfloat16. Without a GPU the kernels can
run through Triton's interpreter (TRITON_INTERPRET=1 set before exsynth is
imported) on CPU tensors, float32 only; that is for tests, not speed.
"""
from __future__ import annotations

import importlib
import os

import torch

_GPU_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def interpreting() -> bool:
    return _INTERPRETING


# The interpreter must be chosen before the kernels are defined, so the
# variable is read once, when exsynth is imported.
_INTERPRETING = os.environ.get("TRITON_INTERPRET", "0") == "1"


def _triton():
    try:
        import triton
    except ImportError as e:
        return None, f"triton not installed ({e}); pip install 'exsynth[triton]'"
    if torch.cuda.is_available():
        return triton, f"triton {triton.__version__} on CUDA"
    if interpreting():
        return triton, f"triton {triton.__version__} through its interpreter (TRITON_INTERPRET=1; slow)"
    return None, f"triton {triton.__version__} installed but no CUDA GPU (TRITON_INTERPRET=1 runs the interpreter)"


# Probed once at import: status() must stay plain Python for torch.compile.
_STATUS = _triton()


def status():
    return _STATUS[0] is not None, _STATUS[1]


def supports(device: torch.device, dtype: torch.dtype):
    if device.type == "cuda":
        return None if dtype in _GPU_DTYPES else f"supports {_GPU_DTYPES}, got {dtype}"
    if device.type == "cpu" and interpreting():
        return None if dtype == torch.float32 else f"the interpreter path supports float32, got {dtype}"
    return f"needs CUDA tensors (or CPU tensors under TRITON_INTERPRET=1), got device {device}"


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Kernels run in the input dtype (bf16/fp16 tensor cores on GPU)."""
    return dtype


def kernels(name: str):
    """exsynth.kernels.<name>, imported on first use (defines the @triton.jit kernels)."""
    return importlib.import_module(f"exsynth.kernels.{name}")


def attention_forward(q, k, v, alpha):
    return kernels("correlation").attention_forward(q, k, v, float(alpha))


def attention_backward(q, k, v, out, lse, dlse, dout, alpha):
    return kernels("correlation").attention_backward(q, k, v, out.to(q.dtype).contiguous(), lse, dlse,
                                                     dout, float(alpha))


def match_forward(q, k):
    return kernels("correlation").match_forward(q, k)


def positional_norm_forward(x, eps):
    return kernels("pono").positional_norm_forward(x, float(eps))


def positional_norm_backward(x, mean, std, dy, dmean, dstd):
    return kernels("pono").positional_norm_backward(x, mean, std, dy, dmean, dstd)


def pn_modulate_forward(x, gamma, beta, eps):
    return kernels("pono").pn_modulate_forward(x, gamma, beta, float(eps))


def pn_modulate_backward(x, gamma, mean, std, dout):
    return kernels("pono").pn_modulate_backward(x, gamma, mean, std, dout)


def msca_forward(value, spatial, channel, gate):
    return kernels("msca").msca_forward(value, spatial, channel, gate)


def msca_backward(value, spatial, channel, gate, V, stats, dout):
    return kernels("msca").msca_backward(value, spatial, channel, gate, V, stats, dout)
