"""correlation_warp, cycle_warp and correlation_match: CoCosNet's
correspondence layer with the softmax and warp fused (docs/design.md).

The public functions check arguments, build the normalised (B, L, D)
features in plain PyTorch (O(L*D), autograd through them), and hand the
O(Lq*Lk*D) core to a fused backend through the custom ops below, which never
materialise the Lq x Lk matrix.
"""
from __future__ import annotations

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
    q = _features(query, patch_size, center, dtype)
    k = _features(key, patch_size, center, dtype)
    v = value.flatten(2).transpose(1, 2).to(dtype).contiguous()
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
    backend: "auto", "reference", "cpu", "triton" or "cuda".
    """
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
    _check_options(op, 1.0, patch_size)
    _check_query_key(op, query, key)
    _validate.finite(op, query=query, key=key)
    name = _dispatch.resolve(op, backend, query.device, query.dtype)
    if name == "reference":
        return reference.correlation_match(query, key, patch_size=patch_size, center=center)
    B, _, Hq, Wq = query.shape
    dtype = _dispatch.implementation(name).compute_dtype(query.dtype)
    with torch.no_grad():
        q = _features(query, patch_size, center, dtype)
        k = _features(key, patch_size, center, dtype)
        index, best = _corr_match(q, k, name, _validate.in_op_checks())
    return index.reshape(B, Hq, Wq), best.to(query.dtype).reshape(B, Hq, Wq)
