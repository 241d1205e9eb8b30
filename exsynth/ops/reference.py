"""Plain-PyTorch reference implementations: the oracles every backend is
tested against. Written for clarity, the way the papers' code does it: they
materialise the full correlation matrix and are not meant to be fast.
"""
from __future__ import annotations

import sys

import torch
import torch.nn.functional as F

# CoCosNet adds Python's float epsilon to the norm, so a constant (after
# centring: zero) feature vector maps to zero instead of NaN.
NORM_EPS = sys.float_info.epsilon


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def correspondence_features(x: torch.Tensor, patch_size: int = 1, center: bool = True) -> torch.Tensor:
    """(B, C, H, W) -> (B, D, H*W): unfold k x k patches (zero padding k//2),
    centre each D-vector and divide it by its L2 norm + eps (CoCosNet)."""
    x = x.to(_compute_dtype(x))
    if patch_size > 1:
        f = F.unfold(x, kernel_size=patch_size, padding=patch_size // 2)
    else:
        f = x.flatten(2)
    if center:
        f = f - f.mean(dim=1, keepdim=True)
    return f / (torch.linalg.vector_norm(f, dim=1, keepdim=True) + NORM_EPS)


def correlation_matrix(query, key, *, patch_size=1, center=True) -> torch.Tensor:
    """cos(q_u, k_v) as a (B, Hq*Wq, Hk*Wk) matrix."""
    q = correspondence_features(query, patch_size, center)
    k = correspondence_features(key, patch_size, center)
    return torch.bmm(q.transpose(1, 2), k)


def correlation_warp(query, key, value, *, alpha=100.0, patch_size=1, center=True, return_lse=False):
    """out(u) = sum_v softmax_v(alpha cos(q_u, k_v)) value(v) -> (B, Cv, Hq, Wq)."""
    B, _, Hq, Wq = query.shape
    logits = alpha * correlation_matrix(query, key, patch_size=patch_size, center=center)
    attn = torch.softmax(logits, dim=-1)
    v = value.to(logits.dtype).flatten(2).transpose(1, 2)  # (B, Lk, Cv)
    out = torch.bmm(attn, v).transpose(1, 2).reshape(B, -1, Hq, Wq).to(value.dtype)
    if return_lse:
        return out, torch.logsumexp(logits, dim=-1).reshape(B, Hq, Wq)
    return out


def cycle_warp(query, key, warped, *, alpha=100.0, patch_size=1, center=True):
    """CoCosNet's cycle: cycle(v) = sum_u softmax_u(M(u, v)) warped(u), the
    column softmax of the same matrix M = alpha cos(q_u, k_v) -> (B, Cw, Hk, Wk)."""
    B, _, Hk, Wk = key.shape
    logits = alpha * correlation_matrix(query, key, patch_size=patch_size, center=center)
    attn_cols = torch.softmax(logits, dim=1)  # over query positions u
    w = warped.to(logits.dtype).flatten(2)  # (B, Cw, Lq)
    return torch.bmm(w, attn_cols).reshape(B, -1, Hk, Wk).to(warped.dtype)


def correlation_match(query, key, *, patch_size=1, center=True):
    """Best key position per query position: (index (B, Hq, Wq) int64 into
    Hk*Wk, cosine (B, Hq, Wq))."""
    B, _, Hq, Wq = query.shape
    corr = correlation_matrix(query, key, patch_size=patch_size, center=center)
    best, index = corr.max(dim=-1)
    return index.reshape(B, Hq, Wq), best.reshape(B, Hq, Wq).to(query.dtype)


def positional_norm(x, *, eps=1e-5):
    """PONO: normalise each (b, h, w) over channels; std uses the unbiased
    variance, as the PONO and CoCosNet code (torch.var default) do.
    Returns (y, mean, std) with mean/std of shape (B, 1, H, W)."""
    mean = x.mean(dim=1, keepdim=True)
    std = (x.var(dim=1, keepdim=True) + eps).sqrt()
    return (x - mean) / std, mean, std


def pn_modulate(x, gamma, beta, *, eps=1e-5):
    """CoCosNet's SPADE with PONO: positional_norm(x) * (1 + gamma) + beta."""
    y, _, _ = positional_norm(x, eps=eps)
    return y * (1 + gamma) + beta


def msca_attention(value, spatial_logits, channel_logits, gate=None, *, return_attention=False):
    """MSCA's decoupled attention (Eq. 4-8). value (B, N, H, W), logits
    (B, K, H, W), gate (B, K) or None -> out (B, N, H, W); with
    return_attention also alpha (spatial softmax over H*W per k) and beta
    (channel softmax over K per position), both (B, K, H, W)."""
    B, N, H, W = value.shape
    K = spatial_logits.shape[1]
    alpha = torch.softmax(spatial_logits.flatten(2), dim=-1)  # (B, K, L)
    v = torch.bmm(value.flatten(2), alpha.transpose(1, 2))  # (B, N, K)
    if gate is not None:
        v = v * gate[:, None, :]
    beta = torch.softmax(channel_logits.flatten(2), dim=1)  # (B, K, L)
    out = torch.bmm(v, beta).reshape(B, N, H, W)
    if return_attention:
        return out, alpha.reshape(B, K, H, W), beta.reshape(B, K, H, W)
    return out
