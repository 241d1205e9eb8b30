"""`cpu` backend: C++/OpenMP kernels in exsynth._C (float32, float64).

Half-precision inputs are computed in float32 and cast back (see
compute_dtype): the CPU has no fast half GEMM, and bf16 features would lose
the cosine precision that alpha = 100 magnifies.
"""
from __future__ import annotations


import torch

_NATIVE = (torch.float32, torch.float64)
_UPCAST = (torch.float16, torch.bfloat16)


def _load():
    try:
        from exsynth import _C
    except ImportError as e:  # not built (e.g. imported from a source tree)
        return None, f"extension exsynth._C not importable ({e}); reinstall with `pip install .`"
    return _C, f"C++/OpenMP, SIMD: {_C.active_isa()} (best on this CPU: {_C.best_isa()})"


# Probed once at import: status() must stay plain Python for torch.compile.
_STATUS = _load()


def status():
    return _STATUS[0] is not None, _STATUS[1]


def supports(device: torch.device, dtype: torch.dtype):
    if device.type != "cpu":
        return f"needs CPU tensors, got device {device}"
    if dtype not in _NATIVE + _UPCAST:
        return f"supports float32/float64 (float16/bfloat16 via float32), got {dtype}"
    return None


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the kernels run in for inputs of `dtype`."""
    return dtype if dtype in _NATIVE else torch.float32


def _ext():
    return _STATUS[0]


def _work_dtype(t: torch.Tensor) -> torch.Tensor:
    return t.to(compute_dtype(t.dtype)).contiguous()


def _dtype_name(t: torch.Tensor) -> str:
    return "float64" if t.dtype == torch.float64 else "float32"


def attention_forward(q, k, v, alpha):
    dtype = q.dtype
    q, k, v = _work_dtype(q), _work_dtype(k), _work_dtype(v)
    B, Lq, D = q.shape
    Lk, Cv = k.shape[1], v.shape[2]
    out = torch.empty(B, Lq, Cv, dtype=q.dtype)
    lse = torch.empty(B, Lq, dtype=q.dtype)
    _ext().corr_attention_forward(q.data_ptr(), k.data_ptr(), v.data_ptr(), out.data_ptr(),
                                  lse.data_ptr(), B, Lq, Lk, D, Cv, float(alpha),
                                  _dtype_name(q), torch.get_num_threads())
    return out.to(dtype), lse


def attention_backward(q, k, v, lse, delta, dout, alpha):
    dtypes = (q.dtype, k.dtype, v.dtype)
    q, k, v, dout = _work_dtype(q), _work_dtype(k), _work_dtype(v), _work_dtype(dout)
    lse, delta = lse.to(q.dtype).contiguous(), delta.to(q.dtype).contiguous()
    B, Lq, D = q.shape
    Lk, Cv = k.shape[1], v.shape[2]
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    _ext().corr_attention_backward(q.data_ptr(), k.data_ptr(), v.data_ptr(), lse.data_ptr(),
                                   delta.data_ptr(), dout.data_ptr(), dq.data_ptr(), dk.data_ptr(),
                                   dv.data_ptr(), B, Lq, Lk, D, Cv, float(alpha),
                                   _dtype_name(q), torch.get_num_threads())
    return tuple(g.to(t) for g, t in zip((dq, dk, dv), dtypes))


def match_forward(q, k):
    q, k = _work_dtype(q), _work_dtype(k)
    B, Lq, D = q.shape
    Lk = k.shape[1]
    index = torch.empty(B, Lq, dtype=torch.int64)
    best = torch.empty(B, Lq, dtype=q.dtype)
    _ext().corr_match_forward(q.data_ptr(), k.data_ptr(), index.data_ptr(), best.data_ptr(),
                              B, Lq, Lk, D, _dtype_name(q), torch.get_num_threads())
    return index, best
