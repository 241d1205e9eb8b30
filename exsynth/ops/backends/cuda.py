"""`cuda` backend: CUDA C++ kernels in exsynth._C_cuda (built only where nvcc
and a CUDA-enabled torch were present at install time).

float32, float16 and bfloat16 CUDA tensors, computed in their own dtype
(16-bit inputs on tensor cores with float32 accumulation; float32 with exact
float32 FMAs). Saved statistics (lse, mean/std, V, stats) are float32.

The kernels take raw device pointers (csrc/cuda/launchers.h): this module
allocates every output and workspace, makes inputs contiguous, selects the
tensors' device and passes torch's current stream. Same functions and return
conventions as the `cpu` backend.
"""
from __future__ import annotations


import torch

_DTYPES = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"}


def _load():
    if not torch.cuda.is_available():
        why = "this torch has no CUDA" if torch.version.cuda is None else "no CUDA GPU visible"
        return None, why
    try:
        from exsynth import _C_cuda
    except ImportError as e:
        return None, (f"extension exsynth._C_cuda not built ({e}); install with nvcc and a "
                      "CUDA-enabled torch present, or EXSYNTH_CUDA=1")
    return _C_cuda, "CUDA C++ kernels (WMMA tensor cores for float16/bfloat16, FFMA for float32)"


# Probed once at import: status() must stay plain Python for torch.compile.
_STATUS = _load()


def status():
    return _STATUS[0] is not None, _STATUS[1]


def supports(device: torch.device, dtype: torch.dtype):
    if device.type != "cuda":
        return f"needs CUDA tensors, got device {device}"
    if dtype not in _DTYPES:
        return f"supports float32/float16/bfloat16, got {dtype}"
    return None


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the kernels run in for inputs of `dtype` (their own)."""
    return dtype


def _ext():
    ext = _STATUS[0]
    if ext is None:
        raise RuntimeError(f"cuda backend unavailable: {_STATUS[1]}")
    return ext


def _c(t):
    return None if t is None else t.contiguous()


def _f32(t):
    return None if t is None else t.to(torch.float32).contiguous()


def _ptr(t):
    return 0 if t is None else t.data_ptr()


def _name(t: torch.Tensor) -> str:
    try:
        return _DTYPES[t.dtype]
    except KeyError:
        raise TypeError(f"cuda backend: unsupported dtype {t.dtype}") from None


def _stream(t: torch.Tensor) -> int:
    return torch.cuda.current_stream(t.device).cuda_stream


def _workspace(nbytes: int, like: torch.Tensor):
    return torch.empty(max(int(nbytes), 1), dtype=torch.uint8, device=like.device)


# ---- correlation ------------------------------------------------------------------------------

def attention_forward(q, k, v, alpha):
    q, k, v = _c(q), _c(k.to(q.dtype)), _c(v.to(q.dtype))
    B, Lq, D = q.shape
    Lk, Cv = k.shape[1], v.shape[2]
    out = torch.empty(B, Lq, Cv, dtype=q.dtype, device=q.device)
    lse = torch.empty(B, Lq, dtype=torch.float64, device=q.device)  # |lse| ~ alpha: float64
    # The kernel keeps a 64 x Cv float32 output tile in shared memory, so it takes at most
    # MAX_VALUE_CHANNELS value channels per call; wider values go in channel groups (the
    # softmax, hence lse, does not depend on v).
    group = _ext().MAX_VALUE_CHANNELS
    with torch.cuda.device(q.device):
        for c0 in range(0, Cv, group):
            c1 = min(Cv, c0 + group)
            vg = v if (c0, c1) == (0, Cv) else v[:, :, c0:c1].contiguous()
            og = out if (c0, c1) == (0, Cv) else torch.empty(B, Lq, c1 - c0, dtype=q.dtype,
                                                             device=q.device)
            _ext().corr_attention_forward(q.data_ptr(), k.data_ptr(), vg.data_ptr(),
                                          og.data_ptr(), lse.data_ptr(), B, Lq, Lk, D, c1 - c0,
                                          float(alpha), _name(q), _stream(q))
            if og is not out:
                out[:, :, c0:c1] = og
    return out, lse


def attention_backward(q, k, v, out, lse, dlse, dout, alpha):
    dtypes = (q.dtype, k.dtype, v.dtype)
    # delta = rowsum(dO * out) - dlse, formed here for this kernel (the cpu and triton kernels
    # form it themselves, so that it cancels dP exactly on one-hot rows: a GPU session's work)
    delta = (dout.float() * out.float()).sum(-1) - dlse.float()
    q, k, v, dout = _c(q), _c(k.to(q.dtype)), _c(v.to(q.dtype)), _c(dout.to(q.dtype))
    lse, delta = lse.to(torch.float64).contiguous(), _f32(delta)
    B, Lq, D = q.shape
    Lk, Cv = k.shape[1], v.shape[2]
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    name = _name(q)
    ws = _workspace(_ext().corr_attention_backward_workspace(B, Lq, Lk, D, Cv, name), q)
    with torch.cuda.device(q.device):
        _ext().corr_attention_backward(q.data_ptr(), k.data_ptr(), v.data_ptr(), lse.data_ptr(),
                                       delta.data_ptr(), dout.data_ptr(), dq.data_ptr(),
                                       dk.data_ptr(), dv.data_ptr(), ws.data_ptr(), B, Lq, Lk, D,
                                       Cv, float(alpha), name, _stream(q))
    return tuple(g.to(t) for g, t in zip((dq, dk, dv), dtypes))


def match_forward(q, k):
    q, k = _c(q), _c(k.to(q.dtype))
    B, Lq, D = q.shape
    Lk = k.shape[1]
    index = torch.empty(B, Lq, dtype=torch.int64, device=q.device)
    best = torch.empty(B, Lq, dtype=torch.float32, device=q.device)
    with torch.cuda.device(q.device):
        _ext().corr_match_forward(q.data_ptr(), k.data_ptr(), index.data_ptr(), best.data_ptr(),
                                  B, Lq, Lk, D, _name(q), _stream(q))
    return index, best


# ---- positional normalisation ---------------------------------------------------------------------

def positional_norm_forward(x, eps):
    x = _c(x)
    B, C, L = x.shape
    y = torch.empty_like(x)
    mean = torch.empty(B, L, dtype=torch.float32, device=x.device)
    std = torch.empty(B, L, dtype=torch.float32, device=x.device)
    with torch.cuda.device(x.device):
        _ext().pono_forward(x.data_ptr(), 0, 0, y.data_ptr(), mean.data_ptr(), std.data_ptr(),
                            B, 1, C, L, float(eps), _name(x), _stream(x))
    return y, mean, std


def positional_norm_backward(x, mean, std, dy, dmean, dstd):
    x = _c(x)
    mean, std, dmean, dstd = _f32(mean), _f32(std), _f32(dmean), _f32(dstd)
    dy = None if dy is None else _c(dy.to(x.dtype))
    B, C, L = x.shape
    dx = torch.empty_like(x)
    with torch.cuda.device(x.device):
        _ext().pono_backward(x.data_ptr(), mean.data_ptr(), std.data_ptr(), _ptr(dy),
                             _ptr(dmean), _ptr(dstd), 0, dx.data_ptr(), 0, 0, False, B, 1, C, L,
                             _name(x), _stream(x))
    return dx


def pn_modulate_forward(x, gamma, beta, eps):
    x = _c(x)
    gamma, beta = _c(gamma.to(x.dtype)), _c(beta.to(x.dtype))
    B, C, L = x.shape
    out = torch.empty_like(x)
    mean = torch.empty(B, L, dtype=torch.float32, device=x.device)
    std = torch.empty(B, L, dtype=torch.float32, device=x.device)
    with torch.cuda.device(x.device):
        _ext().pono_forward(x.data_ptr(), gamma.data_ptr(), beta.data_ptr(), out.data_ptr(),
                            mean.data_ptr(), std.data_ptr(), B, gamma.shape[0], C, L, float(eps),
                            _name(x), _stream(x))
    return out, mean, std


def pn_modulate_backward(x, gamma, mean, std, dout):
    gamma_dtype = gamma.dtype
    x = _c(x)
    gamma, dout = _c(gamma.to(x.dtype)), _c(dout.to(x.dtype))
    mean, std = _f32(mean), _f32(std)
    B, C, L = x.shape
    Bg = gamma.shape[0]
    # A gamma shared over the batch gets gradients summed over b: accumulate those in
    # float32 for 16-bit inputs, then cast.
    fp32_sum = Bg == 1 and B > 1 and x.dtype != torch.float32
    gdtype = torch.float32 if fp32_sum else x.dtype
    dx = torch.empty_like(x)
    dgamma = torch.empty(gamma.shape, dtype=gdtype, device=x.device)
    dbeta = torch.empty(gamma.shape, dtype=gdtype, device=x.device)
    with torch.cuda.device(x.device):
        _ext().pono_backward(x.data_ptr(), mean.data_ptr(), std.data_ptr(), dout.data_ptr(), 0, 0,
                             gamma.data_ptr(), dx.data_ptr(), dgamma.data_ptr(), dbeta.data_ptr(),
                             fp32_sum, B, Bg, C, L, _name(x), _stream(x))
    return dx, dgamma.to(gamma_dtype), dbeta.to(gamma_dtype)


# ---- MSCA ---------------------------------------------------------------------------------------------

def msca_forward(value, spatial, channel, gate):
    value = _c(value)
    spatial, channel = _c(spatial.to(value.dtype)), _c(channel.to(value.dtype))
    gate = None if gate is None else _c(gate.to(value.dtype))
    B, N, L = value.shape
    K = spatial.shape[1]
    out = torch.empty_like(value)
    V = torch.empty(B, N, K, dtype=torch.float32, device=value.device)
    stats = torch.empty(B, K, 2, dtype=torch.float32, device=value.device)
    ws = _workspace(_ext().msca_workspace(B, N, K, L, False), value)
    with torch.cuda.device(value.device):
        _ext().msca_forward(value.data_ptr(), spatial.data_ptr(), channel.data_ptr(), _ptr(gate),
                            out.data_ptr(), V.data_ptr(), stats.data_ptr(), ws.data_ptr(), B, N, K,
                            L, _name(value), _stream(value))
    return out, V, stats


def msca_backward(value, spatial, channel, gate, V, stats, dout):
    dtype = value.dtype
    value = _c(value)
    spatial, channel = _c(spatial.to(dtype)), _c(channel.to(dtype))
    dout = _c(dout.to(dtype))
    gate = None if gate is None else _c(gate.to(dtype))
    V, stats = _f32(V), _f32(stats)
    B, N, L = value.shape
    K = spatial.shape[1]
    dvalue, dspatial, dchannel = (torch.empty_like(t) for t in (value, spatial, channel))
    dgate = None if gate is None else torch.empty_like(gate)
    ws = _workspace(_ext().msca_workspace(B, N, K, L, True), value)
    with torch.cuda.device(value.device):
        _ext().msca_backward(value.data_ptr(), spatial.data_ptr(), channel.data_ptr(), _ptr(gate),
                             V.data_ptr(), stats.data_ptr(), dout.data_ptr(), dvalue.data_ptr(),
                             dspatial.data_ptr(), dchannel.data_ptr(), _ptr(dgate), ws.data_ptr(),
                             B, N, K, L, _name(value), _stream(value))
    return dvalue, dspatial, dchannel, dgate
