"""GAN losses (hinge, LSGAN), discriminator feature matching, total variation.

Discriminator outputs may be given as pix2pixHD / SPADE do for multi-scale
discriminators: a tensor (one scale, prediction only), a list of tensors (one
entry per scale), or a list of lists (per scale: intermediate features ...,
prediction last). Adversarial losses use the last tensor of each scale and are
averaged over scales.
"""
from __future__ import annotations

from typing import List, Sequence, Union

import torch
import torch.nn.functional as F

__all__ = [
    "hinge_d_loss_real", "hinge_d_loss_fake", "hinge_d_loss", "hinge_g_loss",
    "lsgan_loss", "lsgan_d_loss", "lsgan_g_loss", "gan_feature_matching_loss", "tv_loss",
]

DOutput = Union[torch.Tensor, Sequence[torch.Tensor], Sequence[Sequence[torch.Tensor]]]


def _scales(out: DOutput) -> List[List[torch.Tensor]]:
    """Normalise D output to ``[[feat..., pred], ...]`` (one inner list per scale)."""
    if isinstance(out, torch.Tensor):
        return [[out]]
    if not isinstance(out, (list, tuple)) or len(out) == 0:
        raise ValueError("discriminator output must be a tensor or a non-empty (nested) list of tensors")
    scales = []
    for s in out:
        if isinstance(s, torch.Tensor):
            scales.append([s])
        elif isinstance(s, (list, tuple)) and s and all(isinstance(t, torch.Tensor) for t in s):
            scales.append(list(s))
        else:
            raise ValueError("each discriminator scale must be a tensor or a non-empty list of tensors")
    return scales


def _preds(out: DOutput) -> List[torch.Tensor]:
    return [s[-1] for s in _scales(out)]


def _mean_over_scales(out: DOutput, fn) -> torch.Tensor:
    preds = _preds(out)
    return sum(fn(p) for p in preds) / len(preds)


def hinge_d_loss_real(real_pred: DOutput) -> torch.Tensor:
    """``E[relu(1 - D(real))]``, averaged over scales."""
    return _mean_over_scales(real_pred, lambda p: F.relu(1.0 - p).mean())


def hinge_d_loss_fake(fake_pred: DOutput) -> torch.Tensor:
    """``E[relu(1 + D(fake))]``, averaged over scales."""
    return _mean_over_scales(fake_pred, lambda p: F.relu(1.0 + p).mean())


def hinge_d_loss(real_pred: DOutput, fake_pred: DOutput) -> torch.Tensor:
    """CoCosNet Eq. 13 (D): ``hinge_d_loss_real + hinge_d_loss_fake``."""
    return hinge_d_loss_real(real_pred) + hinge_d_loss_fake(fake_pred)


def hinge_g_loss(fake_pred: DOutput) -> torch.Tensor:
    """CoCosNet Eq. 13 (G): ``-E[D(fake)]``, averaged over scales."""
    return _mean_over_scales(fake_pred, lambda p: -p.mean())


def lsgan_loss(pred: DOutput, target_is_real: bool) -> torch.Tensor:
    """Least-squares GAN: ``E[(D(x) - t)^2]`` with ``t = 1`` (real) or ``0`` (fake)."""
    t = 1.0 if target_is_real else 0.0
    return _mean_over_scales(pred, lambda p: ((p - t) ** 2).mean())


def lsgan_d_loss(real_pred: DOutput, fake_pred: DOutput) -> torch.Tensor:
    """``E[(D(real) - 1)^2] + E[D(fake)^2]`` (pix2pixHD / pix2pixSC convention, no 1/2)."""
    return lsgan_loss(real_pred, True) + lsgan_loss(fake_pred, False)


def lsgan_g_loss(fake_pred: DOutput) -> torch.Tensor:
    """``E[(D(fake) - 1)^2]``."""
    return lsgan_loss(fake_pred, True)


def gan_feature_matching_loss(fake_out: DOutput, real_out: DOutput, include_last: bool = False,
                              sum_layers: bool = False) -> torch.Tensor:
    """Discriminator feature matching (pix2pixHD): L1 between intermediate features.

    Per scale, the L1 distances of all tensors except the last (the prediction;
    include it with ``include_last=True``) are averaged over layers (summed with
    ``sum_layers``, as pix2pixHD / SPADE / CoCosNet's code do); the result is averaged
    over scales. Real features are detached.
    """
    fs, rs = _scales(fake_out), _scales(real_out)
    if len(fs) != len(rs):
        raise ValueError(f"fake has {len(fs)} discriminator scales, real has {len(rs)}")
    per_scale = []
    for f, r in zip(fs, rs):
        if len(f) != len(r):
            raise ValueError(f"fake/real scale has {len(f)} vs {len(r)} outputs")
        n = len(f) if include_last else len(f) - 1
        if n == 0:
            raise ValueError("no intermediate discriminator features to match "
                             "(each scale must return [features..., prediction])")
        per_scale.append(sum(F.l1_loss(a, b.detach()) for a, b in zip(f[:n], r[:n])) / (1 if sum_layers else n))
    return sum(per_scale) / len(per_scale)


def tv_loss(x: torch.Tensor, form: str = "l1") -> torch.Tensor:
    """Total variation of (..., H, W) images:
    "l1": anisotropic, mean|x[..., 1:, :] - x[..., :-1, :]| + mean|x[..., 1:] - x[..., :-1]|;
    "isotropic": mean over pixels of sqrt(dh^2 + dw^2) (SEGIN's Eq. 8);
    "squared": 2 (sum dh^2 / count_h + sum dw^2 / count_w) / B, SEGIN's code (counts per image)."""
    if x.dim() < 2:
        raise ValueError("tv_loss expects a tensor with at least 2 (spatial) dims")
    if form == "isotropic":
        dh, dw = x[..., 1:, :-1] - x[..., :-1, :-1], x[..., :-1, 1:] - x[..., :-1, :-1]
        return torch.sqrt(dh ** 2 + dw ** 2 + 1e-8).mean()
    if form == "squared":
        per = x[0] if x.dim() == 4 else x
        h = (x[..., 1:, :] - x[..., :-1, :]).pow(2).sum() / max(per[..., 1:, :].numel(), 1)
        w = (x[..., :, 1:] - x[..., :, :-1]).pow(2).sum() / max(per[..., :, 1:].numel(), 1)
        return 2 * (h + w) / (x.shape[0] if x.dim() == 4 else 1)
    if form != "l1":
        raise ValueError(f"tv_loss: form must be 'l1', 'isotropic' or 'squared', got {form!r}")
    dh = (x[..., 1:, :] - x[..., :-1, :]).abs()
    dw = (x[..., :, 1:] - x[..., :, :-1]).abs()
    zero = x.new_zeros(())
    return (dh.mean() if dh.numel() else zero) + (dw.mean() if dw.numel() else zero)