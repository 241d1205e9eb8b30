"""msca_attention: MSCA-Net's decoupled spatial-channel attention, fused
(docs/design.md; MSCA paper Eq. 4-8). Kernels see (B, N, L) / (B, K, L)."""
from __future__ import annotations

from typing import Optional

import torch

from . import _dispatch, _validate, reference

_OP = "msca_attention"


@torch.library.custom_op("exsynth::msca_attention", mutates_args=())
def _msca(value: torch.Tensor, spatial: torch.Tensor, channel: torch.Tensor,
          gate: Optional[torch.Tensor], backend: str,
          check_finite: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if check_finite:
        extra = {} if gate is None else {"gate": gate}
        _validate.finite(_OP, value=value, spatial_logits=spatial, channel_logits=channel, **extra)
    return _dispatch.implementation(backend).msca_forward(value, spatial, channel, gate)


@_msca.register_fake
def _(value, spatial, channel, gate, backend, check_finite):
    B, N, _ = value.shape
    K = spatial.shape[1]
    acc = _validate.accum_dtype(value.dtype)
    return torch.empty_like(value), value.new_empty(B, N, K, dtype=acc), value.new_empty(B, K, 2, dtype=acc)


@torch.library.custom_op("exsynth::msca_attention_backward", mutates_args=())
def _msca_backward(value: torch.Tensor, spatial: torch.Tensor, channel: torch.Tensor,
                   gate: Optional[torch.Tensor], V: torch.Tensor, stats: torch.Tensor,
                   dout: torch.Tensor, backend: str) -> list[torch.Tensor]:
    grads = _dispatch.implementation(backend).msca_backward(value, spatial, channel, gate, V, stats, dout)
    return [g for g in grads if g is not None]  # dgate only when there is a gate


@_msca_backward.register_fake
def _(value, spatial, channel, gate, V, stats, dout, backend):
    out = [torch.empty_like(value), torch.empty_like(spatial), torch.empty_like(channel)]
    return out + ([torch.empty_like(gate)] if gate is not None else [])


def _setup(ctx, inputs, output):
    value, spatial, channel, gate, backend, _ = inputs
    _, V, stats = output
    ctx.save_for_backward(value, spatial, channel, gate, V, stats)
    ctx.backend = backend


def _grad(ctx, dout, _dV, _dstats):
    value, spatial, channel, gate, V, stats = ctx.saved_tensors
    grads = _msca_backward(value, spatial, channel, gate, V, stats, dout.contiguous(), ctx.backend)
    dgate = grads[3] if gate is not None else None
    return grads[0], grads[1], grads[2], dgate, None, None


_msca.register_autograd(_grad, setup_context=_setup)


def msca_attention(value: torch.Tensor, spatial_logits: torch.Tensor, channel_logits: torch.Tensor,
                   gate: Optional[torch.Tensor] = None, *, return_attention: bool = False,
                   backend: str = "auto"):
    """MSCA's decoupled attention.

    value (B, N, H, W); spatial_logits and channel_logits (B, K, H, W); gate
    (B, K) or None. alpha = softmax over H*W per k; V = value alpha^T
    (B, N, K); V~ = V * gate; beta = softmax over K per position;
    out = V~ beta -> (B, N, H, W). With return_attention=True also returns
    (alpha, beta), each (B, K, H, W), for visualisation (paper's Fig. 6).
    Gradients to value, both logits and gate. Under torch.autocast the inputs are taken in the
    autocast dtype, as a matmul's are.
    """
    value, spatial_logits, channel_logits, gate = _validate.autocast_lower(
        value, spatial_logits, channel_logits, gate)
    for name, t in (("value", value), ("spatial_logits", spatial_logits),
                    ("channel_logits", channel_logits)):
        _validate.tensor(_OP, name, t, 4)
    _validate.same_device_dtype(_OP, value=value, spatial_logits=spatial_logits,
                                channel_logits=channel_logits)
    B, N, H, W = value.shape
    K = spatial_logits.shape[1]
    for name, t in (("spatial_logits", spatial_logits), ("channel_logits", channel_logits)):
        _validate.dim_equal(_OP, "batch size (dim 0)", name, t.shape[0], "value", B)
        if t.shape[2:] != value.shape[2:]:
            raise ValueError(f"{_OP}: spatial size of {name} {tuple(t.shape[2:])} must equal that of "
                             f"value {tuple(value.shape[2:])}")
    _validate.dim_equal(_OP, "K (dim 1)", "channel_logits", channel_logits.shape[1],
                        "spatial_logits", K)
    tensors = dict(value=value, spatial_logits=spatial_logits, channel_logits=channel_logits)
    if gate is not None:
        if not isinstance(gate, torch.Tensor):
            raise TypeError(f"{_OP}: gate must be a torch.Tensor or None, got {type(gate).__name__}")
        if tuple(gate.shape) != (B, K):
            raise ValueError(f"{_OP}: gate must have shape (B, K) = ({B}, {K}), got {tuple(gate.shape)}")
        _validate.same_device_dtype(_OP, value=value, gate=gate)
        tensors["gate"] = gate
    _validate.finite(_OP, **tensors)
    name = _dispatch.resolve(_OP, backend, value.device, value.dtype)
    if name == "reference":
        return reference.msca_attention(value, spatial_logits, channel_logits, gate,
                                         return_attention=return_attention)
    flat = lambda t: t.reshape(t.shape[0], t.shape[1], H * W).contiguous()
    out, _, _ = _msca(flat(value), flat(spatial_logits), flat(channel_logits),
                      None if gate is None else gate.contiguous(), name,
                      _validate.in_op_checks())
    out = out.reshape(B, N, H, W)
    if return_attention:
        # alpha and beta are visualisation outputs, computed on request only.
        alpha = torch.softmax(spatial_logits.flatten(2), dim=-1).reshape(B, K, H, W)
        beta = torch.softmax(channel_logits, dim=1)
        return out, alpha, beta
    return out
