"""Pictures that explain a correspondence: a coordinate image whose warp shows where each
output pixel takes its colour from. Tensor code only, usable by models and inference alike."""
from __future__ import annotations

import torch

__all__ = ["coordinate_image"]


def coordinate_image(batch: int, size, device=None, dtype=torch.float32) -> torch.Tensor:
    """(B, 3, h, w) in [-1, 1]: red grows left→right, green top→bottom, blue = 1 - mean of both,
    so every exemplar position has its own colour and a warp of it shows where each target
    pixel takes its colour from."""
    h, w = int(size[0]), int(size[1])
    x = torch.linspace(0, 1, w, device=device, dtype=dtype).view(1, w).expand(h, w)
    y = torch.linspace(0, 1, h, device=device, dtype=dtype).view(h, 1).expand(h, w)
    img = torch.stack([x, y, 1 - (x + y) / 2]) * 2 - 1
    return img[None].expand(batch, 3, h, w).contiguous()
