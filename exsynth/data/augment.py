"""Data augmentation shared by every model's training: pseudo exemplars by geometric
distortion (CoCosNet's pseudo pairs; any model trained without exemplar triples)."""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F

__all__ = ["distort_exemplar"]


def distort_exemplar(image: torch.Tensor, generator: Optional[torch.Generator] = None, *,
                     max_rotation: float = 15.0, scale_range: tuple = (0.9, 1.1),
                     max_translation: float = 0.1, flip: bool = True) -> torch.Tensor:
    """Pseudo exemplar by a random affine distortion of the ground truth (B, C, H, W):
    rotation in +-max_rotation degrees, isotropic scale in scale_range, translation in
    +-max_translation (fraction of the half-size), horizontal flip with probability 0.5 when
    `flip`. Random numbers are drawn on the CPU from `generator` (seeded → deterministic)."""
    B = image.shape[0]
    r = torch.rand(B, 5, generator=generator, dtype=torch.float64)
    angle = (2 * r[:, 0] - 1) * math.radians(max_rotation)
    scale = scale_range[0] + r[:, 1] * (scale_range[1] - scale_range[0])
    tx, ty = (2 * r[:, 2] - 1) * max_translation, (2 * r[:, 3] - 1) * max_translation
    sx = torch.where(r[:, 4] < 0.5, -1.0, 1.0) if flip else torch.ones(B, dtype=torch.float64)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([
        torch.stack([cos * sx, -sin, tx], dim=1),
        torch.stack([sin * sx, cos, ty], dim=1),
    ], dim=1)
    dtype = image.dtype if image.is_floating_point() else torch.float32
    theta = theta.to(device=image.device, dtype=dtype)
    grid = F.affine_grid(theta, list(image.shape), align_corners=False)
    return F.grid_sample(image.to(dtype), grid, mode="bilinear", padding_mode="reflection",
                         align_corners=False)
