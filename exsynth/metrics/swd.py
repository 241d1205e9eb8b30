"""Sliced Wasserstein distance between image sets, as CoCosNet reports it: PGGAN's metric
(Karras et al. 2018, `metrics/sliced_wasserstein.py` of progressive_growing_of_gans).

Per image, a Laplacian pyramid (5x5 binomial filter [1 4 6 4 1]^2 / 256, mirrored borders,
levels from the image side down to 16 px); from every level 128 random 7x7 patches (all
channels) are taken. Per level and per set, the patch descriptors are normalised by their
per-channel mean and standard deviation; the distance of two sets at a level is the mean over
4 repeats of 128 random unit directions of the mean absolute difference of the sorted
projections, times 1e3. The result is one number per level (finest first) and their mean.

Descriptors are kept (float32, 147 values x 128 patches per image and level: ~74 KiB per
image and level); random positions and directions come from `seed`, with one generator per
set, so a set compared with itself gives exactly 0.
"""
from __future__ import annotations

from typing import Dict, List, Optional

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["SlicedWasserstein", "laplacian_pyramid", "sliced_wasserstein"]

PATCH = 7
PATCHES_PER_IMAGE = 128
DIR_REPEATS = 4
DIRS_PER_REPEAT = 128
_BINOMIAL = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], dtype=torch.float64)
_KERNEL = (_BINOMIAL[:, None] * _BINOMIAL[None, :]) / 256.0


def _blur(x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
    c = x.shape[1]
    k = (_KERNEL * gain).to(x.dtype).to(x.device).expand(c, 1, 5, 5)
    return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), k, groups=c)  # scipy's "mirror"


def laplacian_pyramid(images: torch.Tensor, levels: int) -> List[torch.Tensor]:
    """[finest band-pass, ..., coarsest low-pass] of (B, C, H, W) images, as PGGAN's
    generate_laplacian_pyramid (cv2.pyrDown / pyrUp equivalents) builds it."""
    pyr = [images.double()]
    for _ in range(1, levels):
        down = _blur(pyr[-1])[:, :, ::2, ::2]
        up = torch.zeros_like(pyr[-1])
        up[:, :, ::2, ::2] = down
        pyr[-1] = pyr[-1] - _blur(up, 4.0)
        pyr.append(down)
    return [p.float() for p in pyr]


def _descriptors(level: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """(B * 128, C, 7, 7) patches at random positions (PGGAN: centres in [3, S - 3))."""
    B, C, H, W = level.shape
    h = PATCH // 2
    n = B * PATCHES_PER_IMAGE
    ys = torch.from_numpy(rng.integers(h, H - h, size=n))
    xs = torch.from_numpy(rng.integers(h, W - h, size=n))
    img = torch.arange(n) // PATCHES_PER_IMAGE
    off = torch.arange(-h, h + 1)
    yy = (ys[:, None] + off)[:, :, None].expand(n, PATCH, PATCH)
    xx = (xs[:, None] + off)[:, None, :].expand(n, PATCH, PATCH)
    return level.detach().cpu()[img[:, None, None], :, yy, xx].permute(0, 3, 1, 2).contiguous()


def _finalize(parts: List[torch.Tensor]) -> torch.Tensor:
    d = torch.cat(parts).double()
    d = (d - d.mean(dim=(0, 2, 3), keepdim=True)) / d.std(dim=(0, 2, 3), keepdim=True, unbiased=False)
    return d.flatten(1).float()


def sliced_wasserstein(a: torch.Tensor, b: torch.Tensor, rng: np.random.Generator) -> float:
    """Mean |sorted projection difference| over DIR_REPEATS x DIRS_PER_REPEAT random unit directions
    (sets of equal size, as PGGAN compares them)."""
    if len(a) != len(b):
        n = min(len(a), len(b))
        a, b = a[:n], b[:n]
    out = []
    for _ in range(DIR_REPEATS):
        dirs = torch.from_numpy(rng.standard_normal((a.shape[1], DIRS_PER_REPEAT))).float()
        dirs = dirs / dirs.norm(dim=0, keepdim=True)
        pa, _ = torch.sort(a @ dirs, dim=0)
        pb, _ = torch.sort(b @ dirs, dim=0)
        out.append(float((pa - pb).abs().mean()))
    return float(np.mean(out))


class SlicedWasserstein:
    """Streaming SWD of a real and a fake set: `add_real(images)`, `add_fake(images)` (batches
    in [-1, 1] of one size, at least 16 px), then `compute()` -> {"swd/<side>px": ..., "swd": mean}."""

    def __init__(self, seed: int = 0):
        self.seed = int(seed)
        self.size: Optional[tuple] = None
        self._rng = {"real": np.random.default_rng(self.seed), "fake": np.random.default_rng(self.seed)}
        self._desc: Dict[str, List[List[torch.Tensor]]] = {"real": [], "fake": []}

    def _levels(self, images: torch.Tensor) -> int:
        if images.dim() != 4:
            raise ValueError(f"SWD: images must be (B, C, H, W), got {tuple(images.shape)}")
        size = tuple(images.shape[1:])
        if self.size is None:
            if min(size[1:]) < 16:
                raise ValueError(f"SWD: images must be at least 16x16, got {size[1]}x{size[2]}")
            self.size = size
        elif size != self.size:
            raise ValueError(f"SWD: every image must be {self.size}, got {size}")
        n, res = 0, min(size[1:])
        while res >= 16:
            n, res = n + 1, res // 2
        return n

    def _add(self, which: str, images: torch.Tensor) -> None:
        levels = self._levels(images)
        store = self._desc[which]
        if not store:
            store.extend([] for _ in range(levels))
        for i, level in enumerate(laplacian_pyramid(images, levels)):
            store[i].append(_descriptors(level, self._rng[which]))

    def add_real(self, images: torch.Tensor) -> None:
        self._add("real", images)

    def add_fake(self, images: torch.Tensor) -> None:
        self._add("fake", images)

    def compute(self) -> Dict[str, float]:
        real, fake = self._desc["real"], self._desc["fake"]
        if not real or not fake:
            raise ValueError("SWD needs images of both sets")
        rng = np.random.default_rng(self.seed + 1)
        out: Dict[str, float] = {}
        side = min(self.size[1:])
        for r, f in zip(real, fake):
            out[f"swd/{side}px"] = 1e3 * sliced_wasserstein(_finalize(r), _finalize(f), rng)
            side //= 2
        out["swd"] = float(np.mean(list(out.values())))
        return out
