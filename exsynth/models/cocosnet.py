"""CoCosNet: cross-domain correspondence network + exemplar-guided translation network.

Reads top-down like the paper's Fig. 2 / Table 5:

    label x_A ──► label adaptor    ─┐                      ┌─► x_S ─┐
                                    ├─► shared adaptive ───┤        ├─► correlation_warp (Eq. 3-4)
    exemplar y_B ─► exemplar adaptor┘    feature block     └─► y_S ─┘        │
                                                                              ▼
                          warped exemplar r_{y→x} ──► TranslationNet (PN-SPADE resblocks, Eq. 5,
                          (+ label map as cond)            non-local block, tanh) ──► fake x̂_B

The correlation and the cycle warp back to the exemplar grid (L_reg) are the fused
`exsynth.ops.correlation_warp` / `exsynth.ops.cycle_warp`; the modulation is
`exsynth.nn.PNSPADE`. Losses and training live elsewhere; this module only builds
the networks, the multi-scale discriminator, and the pseudo-exemplar distortion.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from .. import ops
from ..nn import PNSPADE

__all__ = [
    "CoCosNetConfig",
    "CorrespondenceNet",
    "TranslationNet",
    "CoCosNet",
    "MultiscalePatchDiscriminator",
    "distort_exemplar",
]


@dataclass
class CoCosNetConfig:
    """Options of CoCosNet. Paper (256 px): width=64, feature_size=64, num_up=5, max_mult=16.

    feature_size: resolution of the correspondence (x_S, y_S, warped exemplar). None means
        input size / 4 (the adaptors' two stride-2 convs); any other value resizes the
        adaptor output to feature_size x feature_size.
    num_up: upsamplings in the generator; it starts at image_size / 2**num_up.
    max_mult: cap of the generator's channel multiplier (16 in the paper: 16*64 = 1024).
    spade_hidden: hidden channels of each PN-SPADE style encoder (128 in the paper).
    adaptor_downsample: stride-2 convs in each domain adaptor (2 in the paper: features at
        input / 4); 1 or 0 keep more resolution for the correspondence (0: full resolution).
    exemplar_label_input: the exemplar adaptor also sees the exemplar's label map (its
        input is concat(exemplar, exemplar_label)). The paper's adaptor sees the image alone,
        which works where a class has a typical look (sky is blue); where appearance says
        nothing about the class (the synthetic set draws a fresh style per sample) the
        exemplar's segmentation is the only way to tell its regions apart.
    """

    label_channels: int
    image_channels: int = 3
    width: int = 64
    feature_size: Optional[int] = None
    patch_size: int = 1
    alpha: float = 100.0
    use_nonlocal: bool = True
    backend: str = "auto"
    num_up: int = 5
    max_mult: int = 16
    spade_hidden: int = 128
    use_spectral_norm: bool = True
    adaptor_downsample: int = 2
    exemplar_label_input: bool = False

    def __post_init__(self):
        if self.adaptor_downsample not in (0, 1, 2):
            raise ValueError(f"CoCosNetConfig: adaptor_downsample must be 0, 1 or 2, got {self.adaptor_downsample}")
        if self.patch_size not in (1, 3):
            raise ValueError(f"CoCosNetConfig: patch_size must be 1 or 3, got {self.patch_size}")


def _sn(module: nn.Module, enabled: bool) -> nn.Module:
    return spectral_norm(module) if enabled else module


# ---- correspondence network --------------------------------------------------------------------

class _ConvBlock(nn.Sequential):
    """Conv (no bias: InstanceNorm removes it) - InstanceNorm - LeakyReLU(0.2)."""

    def __init__(self, cin: int, cout: int, kernel_size: int, stride: int):
        super().__init__(
            nn.Conv2d(cin, cout, kernel_size, stride, padding=1, bias=False),
            nn.InstanceNorm2d(cout, affine=True),
            nn.LeakyReLU(0.2),
        )


class _ResBlock(nn.Module):
    """Conv-IN-LReLU-Conv-IN with an identity (or 1x1 conv) shortcut."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.InstanceNorm2d(cout, affine=True),
            nn.LeakyReLU(0.2),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.InstanceNorm2d(cout, affine=True),
        )
        self.skip = nn.Identity() if cin == cout else nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.skip(x) + self.body(x)


class DomainAdaptor(nn.Sequential):
    """Table 5 domain adaptor: k3s1 (w), k4s2 (2w), k3s1 (4w), k4s2 (8w), k3s1 (8w), 3 resblocks (4w).
    With downsample < 2 the last k4s2 convs become k3s1 (same channels)."""

    def __init__(self, in_channels: int, width: int, downsample: int = 2):
        w = width
        down = lambda i: (4, 2) if i < downsample else (3, 1)  # noqa: E731
        super().__init__(
            _ConvBlock(in_channels, w, 3, 1),
            _ConvBlock(w, 2 * w, *down(0)),
            _ConvBlock(2 * w, 4 * w, 3, 1),
            _ConvBlock(4 * w, 8 * w, *down(1)),
            _ConvBlock(8 * w, 8 * w, 3, 1),
            _ResBlock(8 * w, 4 * w),
            _ResBlock(4 * w, 4 * w),
            _ResBlock(4 * w, 4 * w),
        )


class CorrespondenceNet(nn.Module):
    """Two unshared domain adaptors + a shared adaptive feature block + correlation warp."""

    def __init__(self, cfg: CoCosNetConfig):
        super().__init__()
        self.cfg = cfg
        c = 4 * cfg.width
        ex_in = cfg.image_channels + (cfg.label_channels if cfg.exemplar_label_input else 0)
        self.label_adaptor = DomainAdaptor(cfg.label_channels, cfg.width, cfg.adaptor_downsample)  # F_{A→S}
        self.exemplar_adaptor = DomainAdaptor(ex_in, cfg.width, cfg.adaptor_downsample)            # F_{B→S}
        self.adaptive_block = nn.Sequential(                                   # shared
            *[_ResBlock(c, c) for _ in range(4)], nn.Conv2d(c, c, 1)
        )

    def _resize(self, feat: torch.Tensor) -> torch.Tensor:
        fs = self.cfg.feature_size
        if fs is None or feat.shape[-2:] == (fs, fs):
            return feat
        return F.interpolate(feat, size=(fs, fs), mode="bilinear", align_corners=False)

    def _exemplar_input(self, image: torch.Tensor, image_label: Optional[torch.Tensor]) -> torch.Tensor:
        if not self.cfg.exemplar_label_input:
            return image
        if image_label is None:
            raise ValueError("CoCosNet: exemplar_label is required when exemplar_label_input=True")
        if image_label.shape != (image.shape[0], self.cfg.label_channels) + image.shape[2:]:
            raise ValueError(f"CoCosNet: exemplar_label must be {(image.shape[0], self.cfg.label_channels) + tuple(image.shape[2:])}, "
                             f"got {tuple(image_label.shape)}")
        return torch.cat([image, image_label.to(image.dtype)], dim=1)

    def align_features(self, label: torch.Tensor, image: torch.Tensor,
                       image_label: Optional[torch.Tensor] = None):
        """Domain-alignment pair (Eq. 1-2): (F_{A→S}(label), F_{B→S}(image)) at feature_size,
        for L_domain = ||F_{A→S}(x_A) - F_{B→S}(x_B)||_1 with x_B the ground-truth image
        (image_label = label when the exemplar adaptor takes labels too)."""
        return (self._resize(self.label_adaptor(label)),
                self._resize(self.exemplar_adaptor(self._exemplar_input(image, image_label))))

    def forward(self, label: torch.Tensor, exemplar: torch.Tensor,
                exemplar_label: Optional[torch.Tensor] = None) -> dict:
        cfg = self.cfg
        xa, yb = self.align_features(label, exemplar, exemplar_label)
        x_s, y_s = self.adaptive_block(xa), self.adaptive_block(yb)
        size = x_s.shape[-2:]
        # under autocast the features come out in bf16/fp16 while pooling keeps fp32: the
        # fused op takes one dtype
        exemplar_small = F.adaptive_avg_pool2d(exemplar, size).to(x_s.dtype)
        warped, lse = ops.correlation_warp(x_s, y_s, exemplar_small, alpha=cfg.alpha,
                                           patch_size=cfg.patch_size, backend=cfg.backend,
                                           return_lse=True)
        out = dict(warped=warped, exemplar_small=exemplar_small, features_x=x_s, features_y=y_s,
                   lse=lse)
        out["cycle"] = ops.cycle_warp(x_s, y_s, warped, alpha=cfg.alpha, patch_size=cfg.patch_size,
                                      backend=cfg.backend)
        if exemplar_label is not None:
            out["warped_label"] = ops.correlation_warp(
                x_s, y_s, F.adaptive_avg_pool2d(exemplar_label.to(exemplar.dtype), size).to(x_s.dtype),
                alpha=cfg.alpha, patch_size=cfg.patch_size, backend=cfg.backend)
        return out


# ---- translation network -----------------------------------------------------------------------

class PNSPADEResBlock(nn.Module):
    """SPADE residual block with PN-SPADE normalisation (Eq. 5-6)."""

    def __init__(self, cin: int, cout: int, cond_channels: int, hidden: int, sn: bool, backend: str):
        super().__init__()
        mid = min(cin, cout)
        self.norm0 = PNSPADE(cin, cond_channels, hidden, backend=backend)
        self.conv0 = _sn(nn.Conv2d(cin, mid, 3, padding=1), sn)
        self.norm1 = PNSPADE(mid, cond_channels, hidden, backend=backend)
        self.conv1 = _sn(nn.Conv2d(mid, cout, 3, padding=1), sn)
        self.learned_skip = cin != cout
        if self.learned_skip:
            self.norm_s = PNSPADE(cin, cond_channels, hidden, backend=backend)
            self.conv_s = _sn(nn.Conv2d(cin, cout, 1, bias=False), sn)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        skip = self.conv_s(self.norm_s(x, cond)) if self.learned_skip else x
        dx = self.conv0(F.leaky_relu(self.norm0(x, cond), 0.2))
        dx = self.conv1(F.leaky_relu(self.norm1(dx, cond), 0.2))
        return skip + dx


class NonLocalBlock(nn.Module):
    """Embedded-Gaussian non-local block (self-attention, SAGAN style):
    y = x + gamma * W_o( g(x) softmax(theta(x)^T phi(x)) ), gamma initialised to 0."""

    def __init__(self, channels: int, sn: bool):
        super().__init__()
        c8, c2 = max(channels // 8, 1), max(channels // 2, 1)
        self.theta = _sn(nn.Conv2d(channels, c8, 1, bias=False), sn)
        self.phi = _sn(nn.Conv2d(channels, c8, 1, bias=False), sn)
        self.g = _sn(nn.Conv2d(channels, c2, 1, bias=False), sn)
        self.out = _sn(nn.Conv2d(c2, channels, 1, bias=False), sn)
        self.gamma = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, _, H, W = x.shape
        q = self.theta(x).flatten(2).transpose(1, 2)                 # (B, N, c8)
        k = self.phi(x).flatten(2).transpose(1, 2)                   # (B, N, c8)
        v = self.g(x).flatten(2).transpose(1, 2)                     # (B, N, c2)
        attn = torch.softmax(q @ k.transpose(1, 2), dim=-1)          # embedded Gaussian, no scaling
        y = (attn @ v).transpose(1, 2).reshape(B, -1, H, W)
        return x + self.gamma * self.out(y)


class TranslationNet(nn.Module):
    """Generator: conv on the downsampled cond at image_size / 2**num_up, a PN-SPADE resblock
    there, one resblock after each of num_up nearest upsamplings, a non-local block before the
    last upsampling, one more resblock at full resolution, conv k3s1 + tanh. With num_up=5 this
    is Table 5's 7 resblocks (8x8x1024 → 128x128x256, non-local, → 256x256x64).

    cond = concat(warped exemplar upsampled to the label's size, label map)."""

    def __init__(self, cfg: CoCosNetConfig):
        super().__init__()
        self.cfg = cfg
        w, n, sn = cfg.width, cfg.num_up, cfg.use_spectral_norm
        cond_ch = cfg.image_channels + cfg.label_channels

        def mult(i):  # channel multiplier after the i-th upsampling (0 = start)
            return 1 if i == n else min(cfg.max_mult, 2 ** (n - i + 1))

        self.head_conv = _sn(nn.Conv2d(cond_ch, mult(0) * w, 3, padding=1), sn)
        blk = lambda a, b: PNSPADEResBlock(a * w, b * w, cond_ch, cfg.spade_hidden, sn, cfg.backend)  # noqa: E731
        self.head = blk(mult(0), mult(0))
        self.ups = nn.ModuleList([blk(mult(i - 1), mult(i)) for i in range(1, n + 1)])
        self.tail = blk(1, 1)
        self.nonlocal_block = NonLocalBlock(mult(n - 1) * w, sn) if cfg.use_nonlocal and n >= 1 else None
        self.to_image = nn.Conv2d(w, cfg.image_channels, 3, padding=1)

    def forward(self, label: torch.Tensor, warped: torch.Tensor) -> torch.Tensor:
        H, W = label.shape[-2:]
        n = self.cfg.num_up
        if H % 2 ** n or W % 2 ** n:
            raise ValueError(f"TranslationNet: image size {(H, W)} must be divisible by 2**num_up = {2 ** n}")
        warped_up = F.interpolate(warped, size=(H, W), mode="bilinear", align_corners=False)
        cond = torch.cat([warped_up, label.to(warped.dtype)], dim=1)
        x = self.head_conv(F.interpolate(cond, size=(H >> n, W >> n), mode="bilinear", align_corners=False))
        x = self.head(x, cond)
        for i, block in enumerate(self.ups, start=1):
            if i == n and self.nonlocal_block is not None:
                x = self.nonlocal_block(x)
            x = block(F.interpolate(x, scale_factor=2, mode="nearest"), cond)
        x = self.tail(x, cond)
        return torch.tanh(self.to_image(F.leaky_relu(x, 0.2)))


# ---- full model --------------------------------------------------------------------------------

class CoCosNet(nn.Module):
    """forward(label, exemplar, exemplar_label=None) -> dict(fake, warped, cycle, exemplar_small,
    features_x, features_y, lse[, warped_label])."""

    def __init__(self, cfg: CoCosNetConfig):
        super().__init__()
        self.cfg = cfg
        self.correspondence = CorrespondenceNet(cfg)
        self.translation = TranslationNet(cfg)

    def align_features(self, label: torch.Tensor, image: torch.Tensor,
                       image_label: Optional[torch.Tensor] = None):
        return self.correspondence.align_features(label, image, image_label)

    def forward(self, label: torch.Tensor, exemplar: torch.Tensor,
                exemplar_label: Optional[torch.Tensor] = None) -> dict:
        out = self.correspondence(label, exemplar, exemplar_label)
        out["fake"] = self.translation(label, out["warped"])
        return out


# ---- discriminator -----------------------------------------------------------------------------

class _PatchDiscriminator(nn.Module):
    def __init__(self, in_channels: int, width: int, n_layers: int, sn: bool):
        super().__init__()
        pad = 2  # ceil((4 - 1) / 2), as pix2pixHD/SPADE
        layers = [nn.Sequential(nn.Conv2d(in_channels, width, 4, 2, pad), nn.LeakyReLU(0.2))]
        ch = width
        for i in range(1, n_layers):
            nxt = min(ch * 2, width * 8)
            stride = 1 if i == n_layers - 1 else 2
            layers.append(nn.Sequential(_sn(nn.Conv2d(ch, nxt, 4, stride, pad, bias=False), sn),
                                        nn.InstanceNorm2d(nxt), nn.LeakyReLU(0.2)))
            ch = nxt
        layers.append(nn.Conv2d(ch, 1, 4, 1, pad))
        self.layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> list:
        feats = []
        for layer in self.layers:
            x = layer(x)
            feats.append(x)
        return feats


class MultiscalePatchDiscriminator(nn.Module):
    """Spectral-normalised PatchGAN at num_scales scales (input halved by average pooling per
    scale). forward(label, image) -> [per scale: [intermediate features..., logit map]]."""

    def __init__(self, label_channels: int, image_channels: int = 3, width: int = 64,
                 n_layers: int = 4, num_scales: int = 2, use_spectral_norm: bool = True):
        super().__init__()
        self.scales = nn.ModuleList([
            _PatchDiscriminator(label_channels + image_channels, width, n_layers, use_spectral_norm)
            for _ in range(num_scales)
        ])

    def forward(self, label: torch.Tensor, image: torch.Tensor) -> list:
        x = torch.cat([label.to(image.dtype), image], dim=1)
        outs = []
        for i, d in enumerate(self.scales):
            if i:
                x = F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)
            outs.append(d(x))
        return outs


# ---- pseudo exemplar pairs ---------------------------------------------------------------------

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
