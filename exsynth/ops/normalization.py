"""positional_norm and pn_modulate: PONO and CoCosNet's PN-SPADE modulation,
fused (docs/design.md). Kernels see x as (B, C, L) with L = H*W."""
from __future__ import annotations

from typing import Optional

import torch

from . import _dispatch, _validate, reference


# ---- custom ops ------------------------------------------------------------------------------

@torch.library.custom_op("exsynth::positional_norm", mutates_args=())
def _pono(x: torch.Tensor, eps: float, backend: str,
          check_finite: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if check_finite:
        _validate.finite("positional_norm", x=x)
    return _dispatch.implementation(backend).positional_norm_forward(x, eps)


@_pono.register_fake
def _(x, eps, backend, check_finite):
    B, _, L = x.shape
    acc = _validate.accum_dtype(x.dtype)
    return torch.empty_like(x), x.new_empty(B, L, dtype=acc), x.new_empty(B, L, dtype=acc)


@torch.library.custom_op("exsynth::positional_norm_backward", mutates_args=())
def _pono_backward(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, dy: Optional[torch.Tensor],
                   dmean: Optional[torch.Tensor], dstd: Optional[torch.Tensor],
                   backend: str) -> torch.Tensor:
    return _dispatch.implementation(backend).positional_norm_backward(x, mean, std, dy, dmean, dstd)


@_pono_backward.register_fake
def _(x, mean, std, dy, dmean, dstd, backend):
    return torch.empty_like(x)


def _pono_setup(ctx, inputs, output):
    x, eps, backend, _ = inputs
    _, mean, std = output
    ctx.save_for_backward(x, mean, std)
    ctx.backend = backend


def _pono_grad(ctx, dy, dmean, dstd):
    x, mean, std = ctx.saved_tensors
    c = lambda t: None if t is None else t.contiguous()
    return _pono_backward(x, mean, std, c(dy), c(dmean), c(dstd), ctx.backend), None, None, None


_pono.register_autograd(_pono_grad, setup_context=_pono_setup)


@torch.library.custom_op("exsynth::pn_modulate", mutates_args=())
def _pn(x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, eps: float, backend: str,
        check_finite: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if check_finite:
        _validate.finite("pn_modulate", x=x, gamma=gamma, beta=beta)
    return _dispatch.implementation(backend).pn_modulate_forward(x, gamma, beta, eps)


@_pn.register_fake
def _(x, gamma, beta, eps, backend, check_finite):
    B, _, L = x.shape
    acc = _validate.accum_dtype(x.dtype)
    return torch.empty_like(x), x.new_empty(B, L, dtype=acc), x.new_empty(B, L, dtype=acc)


@torch.library.custom_op("exsynth::pn_modulate_backward", mutates_args=())
def _pn_backward(x: torch.Tensor, gamma: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
                 dout: torch.Tensor, backend: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return _dispatch.implementation(backend).pn_modulate_backward(x, gamma, mean, std, dout)


@_pn_backward.register_fake
def _(x, gamma, mean, std, dout, backend):
    return torch.empty_like(x), torch.empty_like(gamma), torch.empty_like(gamma)


def _pn_setup(ctx, inputs, output):
    x, gamma, beta, eps, backend, _ = inputs
    _, mean, std = output
    ctx.save_for_backward(x, gamma, mean, std)
    ctx.backend = backend


def _pn_grad(ctx, dout, _dmean, _dstd):
    # mean/std are saved statistics, not part of the public result.
    x, gamma, mean, std = ctx.saved_tensors
    dx, dgamma, dbeta = _pn_backward(x, gamma, mean, std, dout.contiguous(), ctx.backend)
    return dx, dgamma, dbeta, None, None, None


_pn.register_autograd(_pn_grad, setup_context=_pn_setup)


# ---- public API ------------------------------------------------------------------------------

def _check_x(op, x, eps):
    _validate.tensor(op, "x", x, 4)
    # The unbiased variance divides by C - 1.
    _validate.positive_int_dim(op, "channels (dim 1)", "x", x.shape[1], 2)
    return _validate.positive_finite(op, "eps", eps)


def positional_norm(x: torch.Tensor, *, eps: float = 1e-5, backend: str = "auto"):
    """Positional normalisation (PONO) of x (B, C, H, W) over channels.

    Returns (y, mean, std): y like x; mean and std (B, 1, H, W), with
    std = sqrt(unbiased variance + eps) as in the PONO and CoCosNet code, for
    the moment shortcut. Differentiable through all three.
    """
    op = "positional_norm"
    eps = _check_x(op, x, eps)
    _validate.finite(op, x=x)
    name = _dispatch.resolve(op, backend, x.device, x.dtype)
    if name == "reference":
        return reference.positional_norm(x, eps=eps)
    B, C, H, W = x.shape
    y, mean, std = _pono(x.reshape(B, C, H * W).contiguous(), eps, name, _validate.in_op_checks())
    return (y.reshape(B, C, H, W), mean.to(x.dtype).reshape(B, 1, H, W),
            std.to(x.dtype).reshape(B, 1, H, W))


def pn_modulate(x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, *, eps: float = 1e-5,
                backend: str = "auto") -> torch.Tensor:
    """positional_norm(x).y * (1 + gamma) + beta in one pass (CoCosNet's
    SPADE with PONO). x (B, C, H, W); gamma, beta (B, C, H, W) or
    (1, C, H, W) (shared over the batch). Gradients to x, gamma and beta.
    Under torch.autocast the inputs are taken in their widest dtype.
    """
    op = "pn_modulate"
    x, gamma, beta = _validate.autocast_promote(x, gamma, beta)
    eps = _check_x(op, x, eps)
    B, C, H, W = x.shape
    for name, t in (("gamma", gamma), ("beta", beta)):
        _validate.tensor(op, name, t, 4)
        if t.shape[1:] != x.shape[1:] or t.shape[0] not in (1, B):
            raise ValueError(f"{op}: {name} must have shape ({B} or 1, {C}, {H}, {W}) to match x, "
                             f"got {tuple(t.shape)}")
    if gamma.shape[0] != beta.shape[0]:
        raise ValueError(f"{op}: gamma and beta must have the same batch size, got "
                         f"{gamma.shape[0]} and {beta.shape[0]}")
    _validate.same_device_dtype(op, x=x, gamma=gamma, beta=beta)
    _validate.finite(op, x=x, gamma=gamma, beta=beta)
    name = _dispatch.resolve(op, backend, x.device, x.dtype)
    if name == "reference":
        return reference.pn_modulate(x, gamma, beta, eps=eps)
    flat = lambda t: t.reshape(t.shape[0], C, H * W).contiguous()
    out, _, _ = _pn(flat(x), flat(gamma), flat(beta), eps, name, _validate.in_op_checks())
    return out.reshape(B, C, H, W)
