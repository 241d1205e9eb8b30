"""correlation_warp, cycle_warp and correlation_match: CoCosNet's
correspondence layer with the softmax and warp fused (docs/design.md).

The public functions check arguments, build the normalised (B, L, D)
features in plain PyTorch (O(L*D), autograd through them), and hand the
O(Lq*Lk*D) core to a fused backend through the custom ops below, which never
materialise the Lq x Lk matrix.

k x k patches (patch_size > 1) on a backend with a Gram path (`cpu`) never
unfold either: the kernel gets the pixel features and, per position, the
patch mean m and the scale a = 1 / (|patch - m| + eps), computed here from box
sums (O(L*C), autograd through them), and builds each block of logits from the
pixel Gram matrix (csrc/cpu/patch_correlation_kernel.h; docs/design.md).
"""
from __future__ import annotations

import contextlib
import sys

import torch
import torch.nn.functional as F

from . import _dispatch, _validate, reference

_WARP = "correlation_warp"


def _features(x: torch.Tensor, patch_size: int, center: bool, dtype: torch.dtype) -> torch.Tensor:
    """(B, C, H, W) -> normalised (B, H*W, D) rows, contiguous, in `dtype`.

    The reference's steps, laid out for the kernels (one row per position).
    Patches are gathered as k*k shifted channels-last views stacked along the
    row, which writes the (B, L, D) rows once; F.unfold would write (B, D, L)
    and need a transposing copy (2x slower at D = 2304). The order of the D
    entries differs from F.unfold's, which no cosine can tell: q and k share it.
    Norms are taken in float32 or wider so eps stays meaningful.
    """
    x = x.to(torch.float64 if x.dtype == torch.float64 else torch.float32)
    B, C, H, W = x.shape
    if patch_size > 1:
        p = patch_size // 2
        x = F.pad(x, (p, p, p, p)).permute(0, 2, 3, 1)  # zero padding k//2, channels last
        f = torch.stack([x[:, dy:dy + H, dx:dx + W, :] for dy in range(patch_size)
                         for dx in range(patch_size)], dim=3).reshape(B, H * W, -1)
    else:
        f = x.flatten(2).transpose(1, 2)
    if center:
        f = f - f.mean(dim=2, keepdim=True)
    f = f / (torch.linalg.vector_norm(f, dim=2, keepdim=True) + reference.NORM_EPS)
    return f.to(dtype).contiguous()


# How k x k patches reach a backend that has both paths: "auto" (the Gram path where the
# backend has one), "gram", or "unfold" (the (B, L, C k^2) rows of _features). For benchmarks
# and tests; see patch_method().
PATCH_METHODS = ("auto", "gram", "unfold")
_patch_method = "auto"


@contextlib.contextmanager
def patch_method(method: str):
    """Within the block, k x k patches take `method` ("auto", "gram" or "unfold") on backends
    that offer a choice (the `cpu` backend's Gram path and its unfolded rows compute the same
    function; the benchmarks time one against the other)."""
    global _patch_method
    if method not in PATCH_METHODS:
        raise ValueError(f"patch_method: method must be one of {PATCH_METHODS}, got {method!r}")
    before, _patch_method = _patch_method, method
    try:
        yield
    finally:
        _patch_method = before


def _uses_gram(backend: str, patch_size: int) -> bool:
    if patch_size == 1 or _patch_method == "unfold":
        return False
    has = hasattr(_dispatch.implementation(backend), "patch_attention_forward")
    if _patch_method == "gram" and not has:
        raise ValueError(f"patch_method 'gram': backend {backend!r} has no Gram path for patches")
    return has


_TINY = sys.float_info.min  # keeps sqrt's gradient finite where a patch is constant


def _patch_operands(x: torch.Tensor, patch_size: int, center: bool, dtype: torch.dtype):
    """(B, C, H, W) -> (x channels last (B, H, W, C), a (B, H*W), m (B, H*W)) in `dtype`, with
    m the mean of each position's zero-padded k x k patch (0 without centring) and
    a = 1 / (|patch - m| + eps), the reference's normalisation. |patch - m|^2 = S2 - S1^2 / D
    from box sums S1, S2 of the channel sums of x and x^2, in float64 (the subtraction
    cancels what the mean explains)."""
    k, C = patch_size, x.shape[1]
    D = C * k * k
    x = x.to(dtype)
    x64 = x.to(torch.float64)

    def box(t):  # sum over each position's zero-padded k x k window
        return F.avg_pool2d(t, k, stride=1, padding=k // 2, count_include_pad=True) * (k * k)

    s1 = box(x64.sum(dim=1, keepdim=True)).flatten(1)
    s2 = box((x64 * x64).sum(dim=1, keepdim=True)).flatten(1)
    if center:
        m = s1 / D
        sq = s2 - s1 * m
    else:
        m = torch.zeros_like(s1)
        sq = s2
    a = 1.0 / (sq.clamp_min(_TINY).sqrt() + reference.NORM_EPS)
    return x.permute(0, 2, 3, 1).contiguous(), a.to(dtype).contiguous(), m.to(dtype).contiguous()


@torch.library.custom_op("exsynth::corr_patch_attention", mutates_args=())
def _corr_patch_attention(xq: torch.Tensor, xk: torch.Tensor, v: torch.Tensor, aq: torch.Tensor,
                          mq: torch.Tensor, ak: torch.Tensor, mk: torch.Tensor, patch_size: int,
                          alpha: float, backend: str, check_finite: bool) -> tuple[torch.Tensor, torch.Tensor]:
    if check_finite:
        _validate.finite(_WARP, query_features=xq, key_features=xk, value=v, query_scale=aq,
                         key_scale=ak)
    return _dispatch.implementation(backend).patch_attention_forward(xq, xk, v, aq, mq, ak, mk,
                                                                     patch_size, alpha)


@_corr_patch_attention.register_fake
def _(xq, xk, v, aq, mq, ak, mk, patch_size, alpha, backend, check_finite):
    B, Hq, Wq, _ = xq.shape
    return xq.new_empty(B, Hq * Wq, v.shape[2]), xq.new_empty(B, Hq * Wq, dtype=torch.float64)


@torch.library.custom_op("exsynth::corr_patch_attention_backward", mutates_args=())
def _corr_patch_attention_backward(
        xq: torch.Tensor, xk: torch.Tensor, v: torch.Tensor, aq: torch.Tensor, mq: torch.Tensor,
        ak: torch.Tensor, mk: torch.Tensor, out: torch.Tensor, lse: torch.Tensor, dlse: torch.Tensor,
        dout: torch.Tensor, patch_size: int, alpha: float, backend: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    return _dispatch.implementation(backend).patch_attention_backward(
        xq, xk, v, aq, mq, ak, mk, out, lse, dlse, dout, patch_size, alpha)


@_corr_patch_attention_backward.register_fake
def _(xq, xk, v, aq, mq, ak, mk, out, lse, dlse, dout, patch_size, alpha, backend):
    return tuple(torch.empty_like(t) for t in (xq, xk, v, aq, mq, ak, mk))


def _patch_attention_setup_context(ctx, inputs, output):
    xq, xk, v, aq, mq, ak, mk, patch_size, alpha, backend, _ = inputs
    ctx.save_for_backward(xq, xk, v, aq, mq, ak, mk, *output)
    ctx.patch_size, ctx.alpha, ctx.backend = patch_size, alpha, backend


def _patch_attention_backward(ctx, grad_out, grad_lse):
    xq, xk, v, aq, mq, ak, mk, out, lse = ctx.saved_tensors
    if grad_out is None:
        grad_out = torch.zeros_like(out)
    acc = _validate.accum_dtype(xq.dtype)
    dlse = torch.zeros(lse.shape, dtype=acc, device=lse.device) if grad_lse is None else grad_lse.to(acc)
    grads = _corr_patch_attention_backward(xq, xk, v, aq, mq, ak, mk, out, lse, dlse.contiguous(),
                                           grad_out.contiguous(), ctx.patch_size, ctx.alpha,
                                           ctx.backend)
    return (*grads, None, None, None, None)


_corr_patch_attention.register_autograd(_patch_attention_backward,
                                        setup_context=_patch_attention_setup_context)


@torch.library.custom_op("exsynth::corr_patch_match", mutates_args=())
def _corr_patch_match(xq: torch.Tensor, xk: torch.Tensor, aq: torch.Tensor, mq: torch.Tensor,
                      ak: torch.Tensor, mk: torch.Tensor, patch_size: int, backend: str,
                      check_finite: bool) -> tuple[torch.Tensor, torch.Tensor]:
    if check_finite:
        _validate.finite("correlation_match", query_features=xq, key_features=xk, query_scale=aq,
                         key_scale=ak)
    return _dispatch.implementation(backend).patch_match_forward(xq, xk, aq, mq, ak, mk, patch_size)


@_corr_patch_match.register_fake
def _(xq, xk, aq, mq, ak, mk, patch_size, backend, check_finite):
    B, Hq, Wq, _ = xq.shape
    return xq.new_empty(B, Hq * Wq, dtype=torch.int64), xq.new_empty(B, Hq * Wq)


# ---- custom ops: the fused core on (B, L, D) features ---------------------------------------

@torch.library.custom_op("exsynth::corr_attention", mutates_args=())
def _corr_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, alpha: float,
                    backend: str, check_finite: bool) -> tuple[torch.Tensor, torch.Tensor]:
    if check_finite:
        _validate.finite(_WARP, query_features=q, key_features=k, value=v)
    return _dispatch.implementation(backend).attention_forward(q, k, v, alpha)


# The log-sum-exp carried from forward to backward is float64 for every input dtype: its
# magnitude is ~alpha, so a float32 lse would leave the rebuilt P = exp(alpha s - lse) only
# log2(alpha) bits short of float32 (rows summing to 1 within 1e-3 at alpha = 1e4).
@_corr_attention.register_fake
def _(q, k, v, alpha, backend, check_finite):
    B, Lq, _ = q.shape
    return q.new_empty(B, Lq, v.shape[2]), q.new_empty(B, Lq, dtype=torch.float64)


@torch.library.custom_op("exsynth::corr_attention_backward", mutates_args=())
def _corr_attention_backward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor,
                             lse: torch.Tensor, dlse: torch.Tensor, dout: torch.Tensor, alpha: float,
                             backend: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return _dispatch.implementation(backend).attention_backward(q, k, v, out, lse, dlse, dout, alpha)


@_corr_attention_backward.register_fake
def _(q, k, v, out, lse, dlse, dout, alpha, backend):
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


def _attention_setup_context(ctx, inputs, output):
    q, k, v, alpha, backend, _ = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse)
    ctx.alpha, ctx.backend = alpha, backend


def _attention_backward(ctx, grad_out, grad_lse):
    q, k, v, out, lse = ctx.saved_tensors
    if grad_out is None:
        grad_out = torch.zeros_like(out)
    # dS_ij = P_ij (dP_ij - delta_i), delta_i = sum_c dO_ic O_ic - dlse_i (d lse_i / d S_ij =
    # P_ij: flash-attention's D term). Backends form delta from out and dlse themselves, so
    # that dP - delta can cancel exactly where a row is one-hot.
    acc = _validate.accum_dtype(q.dtype)
    dlse = torch.zeros(lse.shape, dtype=acc, device=lse.device) if grad_lse is None else grad_lse.to(acc)
    dq, dk, dv = _corr_attention_backward(q, k, v, out, lse, dlse.contiguous(), grad_out.contiguous(),
                                          ctx.alpha, ctx.backend)
    return dq, dk, dv, None, None, None


_corr_attention.register_autograd(_attention_backward, setup_context=_attention_setup_context)


@torch.library.custom_op("exsynth::corr_match", mutates_args=())
def _corr_match(q: torch.Tensor, k: torch.Tensor, backend: str,
                check_finite: bool) -> tuple[torch.Tensor, torch.Tensor]:
    if check_finite:
        _validate.finite("correlation_match", query_features=q, key_features=k)
    return _dispatch.implementation(backend).match_forward(q, k)


@_corr_match.register_fake
def _(q, k, backend, check_finite):
    B, Lq, _ = q.shape
    return q.new_empty(B, Lq, dtype=torch.int64), q.new_empty(B, Lq, dtype=_validate.accum_dtype(q.dtype))


# ---- argument checks -------------------------------------------------------------------------

def _check_options(op: str, alpha, patch_size) -> float:
    if isinstance(patch_size, bool) or not isinstance(patch_size, int):
        raise TypeError(f"{op}: patch_size must be an int, got {type(patch_size).__name__}")
    if patch_size < 1 or patch_size % 2 == 0:
        raise ValueError(f"{op}: patch_size must be an odd integer >= 1, got {patch_size}")
    return _validate.positive_finite(op, "alpha", alpha)


def _check_query_key(op: str, query, key) -> None:
    _validate.tensor(op, "query", query, 4)
    _validate.tensor(op, "key", key, 4)
    _validate.same_device_dtype(op, query=query, key=key)
    _validate.dim_equal(op, "batch size (dim 0)", "query", query.shape[0], "key", key.shape[0])
    _validate.dim_equal(op, "channels (dim 1)", "query", query.shape[1], "key", key.shape[1])


def _check_warp_args(op, query, key, value, value_name, alpha, patch_size, grid_name="key"):
    """Checks in the user's names; `value` lives on the grid of `grid_name`
    (the key's for a warp, the query's for the cycle warp)."""
    alpha = _check_options(op, alpha, patch_size)
    _check_query_key(op, query, key)
    grid = key if grid_name == "key" else query
    _validate.tensor(op, value_name, value, 4)
    _validate.same_device_dtype(op, query=query, **{value_name: value})
    _validate.dim_equal(op, "batch size (dim 0)", value_name, value.shape[0], "key", key.shape[0])
    if value.shape[2:] != grid.shape[2:]:
        raise ValueError(
            f"{op}: spatial size of {value_name} {tuple(value.shape[2:])} must equal that of "
            f"{grid_name} {tuple(grid.shape[2:])}"
        )
    _validate.finite(op, query=query, key=key, **{value_name: value})
    return alpha


# ---- public API ------------------------------------------------------------------------------

def _warp(op, query, key, value, alpha, patch_size, center, backend, return_lse):
    name = _dispatch.resolve(op, backend, query.device, query.dtype)
    if name == "reference":
        return reference.correlation_warp(query, key, value, alpha=alpha, patch_size=patch_size,
                                          center=center, return_lse=return_lse)
    B, _, Hq, Wq = query.shape
    dtype = _dispatch.implementation(name).compute_dtype(query.dtype)
    v = value.flatten(2).transpose(1, 2).to(dtype).contiguous()
    if _uses_gram(name, patch_size):
        xq, aq, mq = _patch_operands(query, patch_size, center, dtype)
        xk, ak, mk = _patch_operands(key, patch_size, center, dtype)
        out, lse = _corr_patch_attention(xq, xk, v, aq, mq, ak, mk, patch_size, alpha, name,
                                         _validate.in_op_checks())
    else:
        q = _features(query, patch_size, center, dtype)
        k = _features(key, patch_size, center, dtype)
        out, lse = _corr_attention(q, k, v, alpha, name, _validate.in_op_checks())
    out = out.transpose(1, 2).reshape(B, -1, Hq, Wq).to(value.dtype)
    if return_lse:  # the user's lse in the usual statistics dtype (float32 unless float64 inputs)
        return out, lse.reshape(B, Hq, Wq).to(_validate.accum_dtype(query.dtype))
    return out


def correlation_warp(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, *,
                     alpha: float = 100.0, patch_size: int = 1, center: bool = True,
                     backend: str = "auto", return_lse: bool = False):
    """Warp `value` (B, Cv, Hk, Wk) onto the query grid by soft correspondence.

    out(u) = sum_v softmax_v(alpha * cos(q_u, k_v)) * value(v), where q_u, k_v
    are the (k x k patch-unfolded, centred, L2-normalised) feature vectors of
    `query` (B, C, Hq, Wq) and `key` (B, C, Hk, Wk). Returns (B, Cv, Hq, Wq);
    with ``return_lse=True`` also the log-sum-exp of the logits, (B, Hq, Wq),
    a per-position confidence. Differentiable in query, key and value.
    backend: "auto", "reference", "cpu", "triton" or "cuda". Under torch.autocast the inputs
    are taken in the autocast dtype, as a matmul's are.
    """
    query, key, value = _validate.autocast_lower(query, key, value)
    alpha = _check_warp_args(_WARP, query, key, value, "value", alpha, patch_size)
    return _warp(_WARP, query, key, value, alpha, patch_size, center, backend, return_lse)


def cycle_warp(query: torch.Tensor, key: torch.Tensor, warped: torch.Tensor, *,
               alpha: float = 100.0, patch_size: int = 1, center: bool = True,
               backend: str = "auto") -> torch.Tensor:
    """CoCosNet's cycle warp (L_reg): warp `warped` (B, Cw, Hq, Wq), which
    lives on the query grid, back onto the key grid with the column softmax
    of the same correlation: cycle(v) = sum_u softmax_u(M(u, v)) warped(u).
    It is correlation_warp with query and key swapped. Returns (B, Cw, Hk, Wk).
    """
    op = "cycle_warp"
    query, key, warped = _validate.autocast_lower(query, key, warped)
    alpha = _check_warp_args(op, query, key, warped, "warped", alpha, patch_size, grid_name="query")
    return _warp(op, key, query, warped, alpha, patch_size, center, backend, False)


def correlation_match(query: torch.Tensor, key: torch.Tensor, *, patch_size: int = 1,
                      center: bool = True, backend: str = "auto"):
    """Hard match (SEGIN's semantic match, CoCosNet's similarity map): for
    each query position the best key position. Returns (index, cosine), both
    (B, Hq, Wq): index into the flattened Hk*Wk grid (int64) and the cosine
    similarity there. Not differentiable (argmax).
    """
    op = "correlation_match"
    query, key = _validate.autocast_lower(query, key)
    _check_options(op, 1.0, patch_size)
    _check_query_key(op, query, key)
    _validate.finite(op, query=query, key=key)
    name = _dispatch.resolve(op, backend, query.device, query.dtype)
    if name == "reference":
        return reference.correlation_match(query, key, patch_size=patch_size, center=center)
    B, _, Hq, Wq = query.shape
    dtype = _dispatch.implementation(name).compute_dtype(query.dtype)
    with torch.no_grad():
        if _uses_gram(name, patch_size):
            xq, aq, mq = _patch_operands(query, patch_size, center, dtype)
            xk, ak, mk = _patch_operands(key, patch_size, center, dtype)
            index, best = _corr_patch_match(xq, xk, aq, mq, ak, mk, patch_size, name,
                                            _validate.in_op_checks())
        else:
            q = _features(query, patch_size, center, dtype)
            k = _features(key, patch_size, center, dtype)
            index, best = _corr_match(q, k, name, _validate.in_op_checks())
    return index.reshape(B, Hq, Wq), best.to(query.dtype).reshape(B, Hq, Wq)
