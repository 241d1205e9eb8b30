"""`cpu` backend: C++/OpenMP kernels in exsynth._C (float32, float64).

Half-precision inputs are computed in float32 and cast back (see
compute_dtype): the CPU has no fast half GEMM, and bf16 features would lose
the cosine precision that alpha = 100 magnifies.
"""
from __future__ import annotations


import importlib

import torch

_NATIVE = (torch.float32, torch.float64)
_UPCAST = (torch.float16, torch.bfloat16)


def _load():
    try:
        _C = importlib.import_module("exsynth._C")
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
    lse = torch.empty(B, Lq, dtype=torch.float64)  # float64 for every dtype (see ops/correlation.py)
    _ext().corr_attention_forward(q.data_ptr(), k.data_ptr(), v.data_ptr(), out.data_ptr(),
                                  lse.data_ptr(), B, Lq, Lk, D, Cv, float(alpha),
                                  _dtype_name(q), torch.get_num_threads())
    return out.to(dtype), lse


def attention_backward(q, k, v, out, lse, dlse, dout, alpha):
    dtypes = (q.dtype, k.dtype, v.dtype)
    q, k, v, dout, out = _work_dtype(q), _work_dtype(k), _work_dtype(v), _work_dtype(dout), _work_dtype(out)
    lse, dlse = lse.to(torch.float64).contiguous(), dlse.to(q.dtype).contiguous()
    B, Lq, D = q.shape
    Lk, Cv = k.shape[1], v.shape[2]
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    _ext().corr_attention_backward(q.data_ptr(), k.data_ptr(), v.data_ptr(), out.data_ptr(), lse.data_ptr(),
                                   dlse.data_ptr(), dout.data_ptr(), dq.data_ptr(), dk.data_ptr(),
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


def _ptr(t):
    return 0 if t is None else t.data_ptr()


# ---- k x k patches through the pixel Gram matrix (patch_correlation_kernel.h) ----------------
# xq (B, Hq, Wq, C), xk (B, Hk, Wk, C) channels last; a*, m* (B, H*W): each position's
# 1 / (|patch - mean| + eps) and patch mean (0 without centring); v (B, Hk*Wk, Cv). All in
# the compute dtype, contiguous (ops/correlation.py prepares them).

def patch_attention_forward(xq, xk, v, aq, mq, ak, mk, patch_size, alpha):
    B, Hq, Wq, C = xq.shape
    _, Hk, Wk, _ = xk.shape
    Cv = v.shape[2]
    out = torch.empty(B, Hq * Wq, Cv, dtype=xq.dtype)
    lse = torch.empty(B, Hq * Wq, dtype=torch.float64)
    _ext().corr_patch_attention_forward(
        xq.data_ptr(), xk.data_ptr(), v.data_ptr(), aq.data_ptr(), mq.data_ptr(), ak.data_ptr(),
        mk.data_ptr(), out.data_ptr(), lse.data_ptr(), B, Hq, Wq, Hk, Wk, C, Cv, patch_size,
        float(alpha), _dtype_name(xq), torch.get_num_threads())
    return out, lse


def patch_attention_backward(xq, xk, v, aq, mq, ak, mk, out, lse, dlse, dout, patch_size, alpha):
    """(dxq, dxk, dv, daq, dmq, dak, dmk)."""
    B, Hq, Wq, C = xq.shape
    _, Hk, Wk, _ = xk.shape
    Cv = v.shape[2]
    dout, dlse = dout.to(xq.dtype).contiguous(), dlse.to(xq.dtype).contiguous()
    grads = [torch.empty_like(t) for t in (xq, xk, v, aq, mq, ak, mk)]
    dxq, dxk, dv, daq, dmq, dak, dmk = grads
    _ext().corr_patch_attention_backward(
        xq.data_ptr(), xk.data_ptr(), v.data_ptr(), aq.data_ptr(), mq.data_ptr(), ak.data_ptr(),
        mk.data_ptr(), out.data_ptr(), lse.data_ptr(), dlse.data_ptr(), dout.data_ptr(),
        dxq.data_ptr(), dxk.data_ptr(), dv.data_ptr(), daq.data_ptr(), dmq.data_ptr(),
        dak.data_ptr(), dmk.data_ptr(), B, Hq, Wq, Hk, Wk, C, Cv, patch_size, float(alpha),
        _dtype_name(xq), torch.get_num_threads())
    return tuple(grads)


def patch_match_forward(xq, xk, aq, mq, ak, mk, patch_size):
    B, Hq, Wq, C = xq.shape
    _, Hk, Wk, _ = xk.shape
    index = torch.empty(B, Hq * Wq, dtype=torch.int64)
    best = torch.empty(B, Hq * Wq, dtype=xq.dtype)
    _ext().corr_patch_match_forward(
        xq.data_ptr(), xk.data_ptr(), aq.data_ptr(), mq.data_ptr(), ak.data_ptr(), mk.data_ptr(),
        index.data_ptr(), best.data_ptr(), B, Hq, Wq, Hk, Wk, C, patch_size, _dtype_name(xq),
        torch.get_num_threads())
    return index, best


def positional_norm_forward(x, eps):
    dtype = x.dtype
    x = _work_dtype(x)
    B, C, L = x.shape
    y = torch.empty_like(x)
    mean, std = torch.empty(B, L, dtype=x.dtype), torch.empty(B, L, dtype=x.dtype)
    _ext().pono_forward(x.data_ptr(), 0, 0, y.data_ptr(), mean.data_ptr(), std.data_ptr(),
                        B, 1, C, L, float(eps), _dtype_name(x), torch.get_num_threads())
    return y.to(dtype), mean, std


def positional_norm_backward(x, mean, std, dy, dmean, dstd):
    dtype = x.dtype
    x = _work_dtype(x)
    cast = lambda t: None if t is None else t.to(x.dtype).contiguous()
    mean, std, dy, dmean, dstd = map(cast, (mean, std, dy, dmean, dstd))
    B, C, L = x.shape
    dx = torch.empty_like(x)
    _ext().pono_backward(x.data_ptr(), mean.data_ptr(), std.data_ptr(), _ptr(dy), _ptr(dmean),
                         _ptr(dstd), 0, dx.data_ptr(), 0, 0, B, 1, C, L, _dtype_name(x),
                         torch.get_num_threads())
    return dx.to(dtype)


def pn_modulate_forward(x, gamma, beta, eps):
    dtype = x.dtype
    x, gamma, beta = _work_dtype(x), _work_dtype(gamma), _work_dtype(beta)
    B, C, L = x.shape
    out = torch.empty_like(x)
    mean, std = torch.empty(B, L, dtype=x.dtype), torch.empty(B, L, dtype=x.dtype)
    _ext().pono_forward(x.data_ptr(), gamma.data_ptr(), beta.data_ptr(), out.data_ptr(),
                        mean.data_ptr(), std.data_ptr(), B, gamma.shape[0], C, L, float(eps),
                        _dtype_name(x), torch.get_num_threads())
    return out.to(dtype), mean, std


def pn_modulate_backward(x, gamma, mean, std, dout):
    dtypes = (x.dtype, gamma.dtype)
    x, gamma, dout = _work_dtype(x), _work_dtype(gamma), _work_dtype(dout)
    mean, std = mean.to(x.dtype).contiguous(), std.to(x.dtype).contiguous()
    B, C, L = x.shape
    dx, dgamma, dbeta = torch.empty_like(x), torch.empty_like(gamma), torch.empty_like(gamma)
    _ext().pono_backward(x.data_ptr(), mean.data_ptr(), std.data_ptr(), dout.data_ptr(), 0, 0,
                         gamma.data_ptr(), dx.data_ptr(), dgamma.data_ptr(), dbeta.data_ptr(),
                         B, gamma.shape[0], C, L, _dtype_name(x), torch.get_num_threads())
    return dx.to(dtypes[0]), dgamma.to(dtypes[1]), dbeta.to(dtypes[1])


def msca_forward(value, spatial, channel, gate):
    dtype = value.dtype
    value, spatial, channel = _work_dtype(value), _work_dtype(spatial), _work_dtype(channel)
    gate = None if gate is None else _work_dtype(gate)
    B, N, L = value.shape
    K = spatial.shape[1]
    out = torch.empty_like(value)
    V = torch.empty(B, N, K, dtype=value.dtype)
    stats = torch.empty(B, K, 2, dtype=value.dtype)
    _ext().msca_forward(value.data_ptr(), spatial.data_ptr(), channel.data_ptr(), _ptr(gate),
                        out.data_ptr(), V.data_ptr(), stats.data_ptr(), B, N, K, L,
                        _dtype_name(value), torch.get_num_threads())
    return out.to(dtype), V, stats


def msca_backward(value, spatial, channel, gate, V, stats, dout):
    dtype = value.dtype
    value, spatial, channel, dout = map(_work_dtype, (value, spatial, channel, dout))
    gate = None if gate is None else _work_dtype(gate)
    V, stats = V.to(value.dtype).contiguous(), stats.to(value.dtype).contiguous()
    B, N, L = value.shape
    K = spatial.shape[1]
    dvalue, dspatial, dchannel = (torch.empty_like(t) for t in (value, spatial, channel))
    dgate = None if gate is None else torch.empty_like(gate)
    _ext().msca_backward(value.data_ptr(), spatial.data_ptr(), channel.data_ptr(), _ptr(gate),
                         V.data_ptr(), stats.data_ptr(), dout.data_ptr(), dvalue.data_ptr(),
                         dspatial.data_ptr(), dchannel.data_ptr(), _ptr(dgate), B, N, K, L,
                         _dtype_name(value), torch.get_num_threads())
    grads = (dvalue, dspatial, dchannel, dgate)
    return tuple(None if g is None else g.to(dtype) for g in grads)
