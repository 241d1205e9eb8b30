"""Building blocks shared by the models: the SPADE resblock (norm as a parameter), the
embedded-Gaussian non-local block and the multi-scale PatchGAN discriminator.

A model file composes these; a block used by one model only stays in its file. Parameter
names are part of the checkpoint format: keep them when editing a block.
"""
from __future__ import annotations

from typing import List

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

from .normalization import PNSPADE

__all__ = ["maybe_spectral_norm", "SPADE", "SPADEResBlock", "ReflectResBlock", "NonLocalBlock", "NonLocalBlock2D",
           "PatchDiscriminator", "MultiscalePatchDiscriminator", "NORMS", "region_style_map"]

NORMS = ("pono", "batch", "instance")


def maybe_spectral_norm(module: nn.Module, enabled: bool) -> nn.Module:
    return _spectral_norm(module) if enabled else module


class SPADE(nn.Module):
    """SPADE (Park et al. 2019) with a parameter-free batch or instance norm:
    out = norm(x) * (1 + gamma(cond)) + beta(cond). Same layer names as `PNSPADE`."""

    def __init__(self, channels: int, cond_channels: int, hidden: int = 128, kernel_size: int = 3,
                 norm: str = "batch", padding_mode: str = "zeros"):
        super().__init__()
        if norm not in ("batch", "instance"):
            raise ValueError(f"SPADE: norm must be 'batch' or 'instance', got {norm!r}")
        conv = lambda cin, cout: nn.Conv2d(cin, cout, kernel_size, padding=kernel_size // 2,  # noqa: E731
                                           padding_mode=padding_mode)
        self.norm = nn.BatchNorm2d(channels, affine=False) if norm == "batch" else \
            nn.InstanceNorm2d(channels, affine=False)
        self.shared = nn.Sequential(conv(cond_channels, hidden), nn.ReLU())
        self.to_gamma = conv(hidden, channels)
        self.to_beta = conv(hidden, channels)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        if cond.shape[2:] != x.shape[2:]:
            cond = F.interpolate(cond, size=x.shape[2:], mode="nearest")
        h = self.shared(cond)
        return self.norm(x) * (1 + self.to_gamma(h)) + self.to_beta(h)


def _spade_layer(channels: int, cond_channels: int, hidden: int, norm: str, backend: str,
                 padding_mode: str) -> nn.Module:
    if norm == "pono":
        return PNSPADE(channels, cond_channels, hidden, backend=backend, padding_mode=padding_mode)
    return SPADE(channels, cond_channels, hidden, norm=norm, padding_mode=padding_mode)


class SPADEResBlock(nn.Module):
    """SPADE residual block: [SPADE-LReLU(0.2)-conv] x 2 plus an identity shortcut, or a
    learned one (SPADE-conv1x1, no bias) when the channel count changes.

    norm: "pono" (CoCosNet's PN-SPADE, the fused `exsynth.ops.pn_modulate`), "batch"
    (SPADE's own; SyncBatchNorm under multi-GPU training) or "instance".
    spectral_norm: on the three convs (CoCosNet's generator; SPADE's option).
    padding_mode: of the 3x3 convs here and in the SPADE layers, "zeros" or "reflect" (the
    SPADE and CoCosNet code reflection-pad them)."""

    def __init__(self, cin: int, cout: int, cond_channels: int, hidden: int = 128, *, norm: str = "pono",
                 spectral_norm: bool = False, backend: str = "auto", padding_mode: str = "zeros"):
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"SPADEResBlock: norm must be one of {NORMS}, got {norm!r}")
        mid = min(cin, cout)
        sn = spectral_norm
        spade = lambda ch: _spade_layer(ch, cond_channels, hidden, norm, backend, padding_mode)  # noqa: E731
        self.norm0 = spade(cin)
        self.conv0 = maybe_spectral_norm(nn.Conv2d(cin, mid, 3, padding=1, padding_mode=padding_mode), sn)
        self.norm1 = spade(mid)
        self.conv1 = maybe_spectral_norm(nn.Conv2d(mid, cout, 3, padding=1, padding_mode=padding_mode), sn)
        self.learned_skip = cin != cout
        if self.learned_skip:
            self.norm_s = spade(cin)
            self.conv_s = maybe_spectral_norm(nn.Conv2d(cin, cout, 1, bias=False), sn)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        skip = self.conv_s(self.norm_s(x, cond)) if self.learned_skip else x
        dx = self.conv0(F.leaky_relu(self.norm0(x, cond), 0.2))
        dx = self.conv1(F.leaky_relu(self.norm1(dx, cond), 0.2))
        return skip + dx


def unscaled_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T) v for (B, N, d) q, (B, M, d) k, (B, M, dv) v, without the 1/sqrt(d) scale,
    through F.scaled_dot_product_attention. Its fused CPU kernel (no N x M matrix kept, forward
    or backward) needs one head size for q, k and v, so q and k are zero-padded to dv (same
    logits), and contiguous rows: at 128x128 positions, 4,096 keys, d 32, dv 128 the math path
    kept a 256 MiB matrix, the fused one 12 MiB, and ran forward + backward in 0.88 s against
    1.25."""
    d, dv = q.shape[-1], v.shape[-1]
    if d < dv:
        q, k = F.pad(q, (0, dv - d)), F.pad(k, (0, dv - d))
    elif dv < d:
        v = F.pad(v, (0, d - dv))
    # the fused kernel also needs each row contiguous (a transposed (B, C, N) view falls back
    # to the materialising math path)
    q, k, v = (t.contiguous()[:, None] for t in (q, k, v))
    y = F.scaled_dot_product_attention(q, k, v, scale=1.0)[:, 0]
    return y[..., :dv]


class NonLocalBlock(nn.Module):
    """Embedded-Gaussian non-local block (self-attention, SAGAN style):
    y = x + gamma * W_o( g(x) softmax(theta(x)^T phi(x)) ), gamma initialised to 0.
    pool_keys: phi(x) and g(x) max-pooled 2x2 (SAGAN's and CoCosNet's code; a quarter of the
    attention matrix); False: every position is a key."""

    def __init__(self, channels: int, spectral_norm: bool = False, pool_keys: bool = False):
        super().__init__()
        sn = spectral_norm
        self.pool_keys = pool_keys
        c8, c2 = max(channels // 8, 1), max(channels // 2, 1)
        self.theta = maybe_spectral_norm(nn.Conv2d(channels, c8, 1, bias=False), sn)
        self.phi = maybe_spectral_norm(nn.Conv2d(channels, c8, 1, bias=False), sn)
        self.g = maybe_spectral_norm(nn.Conv2d(channels, c2, 1, bias=False), sn)
        self.out = maybe_spectral_norm(nn.Conv2d(c2, channels, 1, bias=False), sn)
        self.gamma = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, _, H, W = x.shape
        q = self.theta(x).flatten(2).transpose(1, 2)                 # (B, N, c8)
        k, v = self.phi(x), self.g(x)
        if self.pool_keys:
            k, v = F.max_pool2d(k, 2), F.max_pool2d(v, 2)
        k = k.flatten(2).transpose(1, 2)                             # (B, N or N/4, c8)
        v = v.flatten(2).transpose(1, 2)                             # (B, N or N/4, c2)
        y = unscaled_attention(q, k, v).transpose(1, 2).reshape(B, -1, H, W)  # embedded Gaussian
        return x + self.gamma * self.out(y)


class NonLocalBlock2D(nn.Module):
    """Wang et al. 2018's embedded-Gaussian non-local block (SEGIN's Eq. 3-4): theta, phi, g are
    1x1 convs to C/2; phi and g are max-pooled 2x2 (sub_sample); y = softmax(theta^T phi) g
    (unscaled logits), z = x + BN(W y) with W a 1x1 conv back to C and the BN's gamma = beta = 0
    at init, so the block starts as the identity. Attention through `unscaled_attention`."""

    def __init__(self, channels: int, sub_sample: bool = True):
        super().__init__()
        inter = max(channels // 2, 1)
        self.theta = nn.Conv2d(channels, inter, 1)
        self.phi = nn.Conv2d(channels, inter, 1)
        self.g = nn.Conv2d(channels, inter, 1)
        self.pool = nn.MaxPool2d(2) if sub_sample else nn.Identity()
        self.W = nn.Sequential(nn.Conv2d(inter, channels, 1), nn.BatchNorm2d(channels))
        nn.init.zeros_(self.W[1].weight)
        nn.init.zeros_(self.W[1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, _, H, W = x.shape
        q = self.theta(x).flatten(2).transpose(1, 2)                       # (B, HW, C/2)
        pooled = self.pool(x) if min(H, W) >= 2 else x
        k = self.phi(pooled).flatten(2).transpose(1, 2)                    # (B, HW/4, C/2)
        v = self.g(pooled).flatten(2).transpose(1, 2)
        y = unscaled_attention(q, k, v)
        return x + self.W(y.transpose(1, 2).reshape(B, -1, H, W))


class ReflectResBlock(nn.Module):
    """pix2pixHD's / UNIT's residual block: (reflection pad 1, conv3[, instance norm], ReLU),
    (reflection pad 1, conv3[, instance norm]), + x, no activation after the add.
    instance_norm: pix2pixHD's (affine-free) instance norm after each conv; False: none (UNIT
    and EGSC-IT with norm None)."""

    def __init__(self, ch: int, instance_norm: bool = True):
        super().__init__()
        norm = (lambda: [nn.InstanceNorm2d(ch)]) if instance_norm else (lambda: [])
        self.body = nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(ch, ch, 3), *norm(), nn.ReLU(True),
                                  nn.ReflectionPad2d(1), nn.Conv2d(ch, ch, 3), *norm())

    def forward(self, x):
        return x + self.body(x)


class PatchDiscriminator(nn.Module):
    """pix2pixHD / SPADE PatchGAN: k4s2 convs (the last stride 1), instance norm and LReLU(0.2)
    after all but the first; forward returns every layer's output, the logit map last.
    padding: of every k4 conv: 2 = ceil(3 / 2) as pix2pixHD / SPADE; 1 = int(3 / 2) as
    CoCosNet's code (its discriminator.py comments the ceil out).
    attention: a SAGAN self-attention block (NonLocalBlock, keys pooled 2x2, spectral norm with
    the convs') on the input of the stride-1 conv, as CoCosNet's code with --use_attention."""

    def __init__(self, in_channels: int, width: int = 64, n_layers: int = 4, spectral_norm: bool = True,
                 padding: int = 2, attention: bool = False):
        super().__init__()
        if padding not in (1, 2):
            raise ValueError(f"PatchDiscriminator: padding must be 1 (CoCosNet's code) or 2 (pix2pixHD), got {padding!r}")
        if attention and n_layers < 2:
            raise ValueError(f"PatchDiscriminator: attention needs n_layers >= 2, got {n_layers}")
        pad = padding
        layers = [nn.Sequential(nn.Conv2d(in_channels, width, 4, 2, pad), nn.LeakyReLU(0.2))]
        ch = width
        self.attention_at = n_layers - 1 if attention else None
        self.attention = None
        for i in range(1, n_layers):
            nxt = min(ch * 2, width * 8)
            stride = 1 if i == n_layers - 1 else 2
            if i == self.attention_at:
                self.attention = NonLocalBlock(ch, spectral_norm=spectral_norm, pool_keys=True)
            layers.append(nn.Sequential(maybe_spectral_norm(nn.Conv2d(ch, nxt, 4, stride, pad, bias=False),
                                                            spectral_norm),
                                        nn.InstanceNorm2d(nxt), nn.LeakyReLU(0.2)))
            ch = nxt
        layers.append(nn.Conv2d(ch, 1, 4, 1, pad))
        self.layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        feats = []
        for i, layer in enumerate(self.layers):
            if i == self.attention_at:
                x = self.attention(x)
            x = layer(x)
            feats.append(x)
        return feats


class MultiscalePatchDiscriminator(nn.Module):
    """PatchGAN at num_scales scales (input halved by average pooling per scale), spectral
    norm optional. forward(label, image) -> [per scale: [intermediate features..., logit map]];
    the label (or any condition) is concatenated to the image, as in pix2pixHD and SPADE."""

    def __init__(self, label_channels: int, image_channels: int = 3, width: int = 64,
                 n_layers: int = 4, num_scales: int = 2, use_spectral_norm: bool = True,
                 padding: int = 2, attention: bool = False):
        super().__init__()
        self.scales = nn.ModuleList([
            PatchDiscriminator(label_channels + image_channels, width, n_layers, use_spectral_norm, padding, attention)
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


def region_style_map(label: torch.Tensor, exemplar: torch.Tensor, exemplar_label: torch.Tensor,
                     stats: str = "mean") -> torch.Tensor:
    """The exemplar pooled per class and painted onto x's layout (region-wise average pooling:
    Pix2PixSCConfig.region_style on label maps, EGSCITConfig.region_style on soft regions).

    label, exemplar_label: (B, K, H, W) label maps (one-hot or soft: a pixel's weights per class);
    exemplar: (B, 3, H, W). Per class k, mu_k = sum F(I)_k I / sum F(I)_k (and sigma_k, the
    weighted standard deviation, for "mean_std"); present_k = 1 where sum F(I)_k > 0.
    Returns (B, 4 or 7, H, W): [sum_k x_k mu_k, sum_k x_k present_k(, sum_k x_k sigma_k)];
    a class absent from I contributes zeros."""
    if stats not in ("mean", "mean_std"):
        raise ValueError(f"region_style_map: stats must be 'mean' or 'mean_std', got {stats!r}")
    lab, ex_lab = label.to(exemplar.dtype), exemplar_label.to(exemplar.dtype)
    area = ex_lab.sum((2, 3))                                         # (B, K)
    present = (area > 0).to(exemplar.dtype)
    denom = area.clamp_min(torch.finfo(exemplar.dtype).tiny)
    mean = torch.einsum("bkhw,bchw->bkc", ex_lab, exemplar) / denom[..., None]          # (B, K, 3)
    parts = [mean, present[..., None]]
    if stats == "mean_std":
        second = torch.einsum("bkhw,bchw->bkc", ex_lab, exemplar * exemplar) / denom[..., None]
        # the floor keeps sqrt's gradient finite for a flat or absent class (1e-6 off at most)
        parts.append((second - mean * mean).clamp_min(1e-12).sqrt())
    per_class = torch.cat(parts, -1) * present[..., None]               # (B, K, C)
    return torch.einsum("bkhw,bkc->bchw", lab, per_class)
