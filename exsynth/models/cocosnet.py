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
`exsynth.nn.PNSPADE` inside the shared `exsynth.nn.SPADEResBlock`. Below the networks:
`CoCosNetObjective` (Eq. 8-14) and the registry entry with the presets.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from .. import ops
from ..losses.objective import Objective
from ..nn.blocks import NonLocalBlock, SPADEResBlock, maybe_spectral_norm
from ..registry import ModelSpec, register_model
from ..visuals import coordinate_image

__all__ = [
    "CoCosNetConfig",
    "CorrespondenceNet",
    "TranslationNet",
    "CoCosNet",
    "CoCosNetObjective",
    "CODE_ARCHITECTURE",
    "init_weights",
    "SPEC",
]


@dataclass
class CoCosNetConfig:
    """Options of CoCosNet. Paper (256 px): width=64, feature_size=64, num_up=5, max_mult=16.

    label_channels: classes of the one-hot input label map (set from the number of classes).
    image_channels: channels of the exemplar and the output (3).
    width: base channel width of the adaptors (w, features 4w) and of the generator.
    patch_size: correlation on k x k patches, 1 or 3 (the released code's match_kernel defaults to 3).
    alpha: correlation temperature 1/tau (100 in the paper).
    use_nonlocal: the non-local block before the generator's last upsampling.
    backend: kernel backend of the fused ops ("auto", "reference", "cpu", "triton", "cuda").
    use_spectral_norm: spectral norm on the generator's convs (as the paper).
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
    perceptual_layer: the layer of the perceptual loss (an MSE, as the code; its
        which_perceptual: relu5_2 is its default and ADE20k's, relu4_2 the CelebA-HQ and
        DeepFashion commands').
    adaptor: the domain adaptors' blocks. "conv": Table 5 read literally, conv-IN-LReLU
        layers and plain residual blocks; "spade": the released code's AdaptiveFeatureGenerator,
        five spectral-norm convs with affine-free instance norm, then three PN-SPADE resblocks
        conditioned on the adaptor's own input.
    adaptor_kernel: kernel of the adaptors' stride-2 convs (4: Table 5; the code's
        --adaptor_kernel defaults to 3, its released CelebA-HQ and DeepFashion models use 4).
    normalize_adaptor_features: divide each position's adaptor output by its L2 norm before the
        shared block (the code's feature_normalize).
    feature_block: the shared adaptive feature block's four resblocks. "conv": conv-IN-LReLU-
        conv-IN + x; "prelu": the code's ResidualBlock (reflection padding, affine-free instance
        norm, one PReLU after each half).
    separate_theta_phi: the code's two 1x1 convs after the shared block, theta for the input's
        features and phi for the exemplar's; False: one shared 1x1 conv (Table 5).
    maskmix: the code's --maskmix: the shared block also sees a label map, the input's for the
        input side and the exemplar's for the exemplar side (nearest-downsampled, concatenated).
    noise_for_mask: the code's --noise_for_mask (with maskmix): the exemplar's map is fed during
        the training warm-up (TrainConfig.mask_warmup_steps) only; after it, and at inference,
        Gaussian noise (std 0.01) takes its place, so synthesis needs no exemplar label.
    warp_upsample: how the warped exemplar is brought to the image size for the generator,
        "bilinear" or "nearest" (the code: nearest, bilinear with --warp_bilinear).
    warp_patch: the code's --warp_patch (DeepFashion): warp the exemplar's full-resolution
        s x s patches (s = image / feature size) instead of its average-pooled pixels.
    generator_layout: the translation network's block sequence. "table5": one PN-SPADE
        resblock after each of num_up upsamplings and one more at full resolution, the
        non-local block before the last upsampling; "spade": the code's SPADEGenerator (num_up 5:
        head_0, two middle blocks after the first upsampling, up_0..up_3, the non-local block
        after the fourth upsampling, the condition resized nearest and no spectral norm on the
        first conv).
    spade_padding: padding of the PN-SPADE resblocks' convs, "zeros" or "reflect" (the code).
    nonlocal_pool_keys: the non-local block max-pools its keys and values 2x2 (the code).
    init: weight initialisation of the convs and linear layers, "pytorch" (PyTorch's default),
        "xavier" (xavier-normal, the code's default --init_type) or "normal" (N(0, init_gain)).
    init_gain: the gain of "xavier" / the std of "normal" (the code's --init_variance, 0.02).
    mask_loss: the mask warm-up loss (weight "mask"). "soft": cross-entropy of the warped
        average-pooled exemplar label against the average-pooled input label; "code": the
        code's warp_mask_losstype direct, nearest-downsampled one-hot maps, the negative log
        of the warped probability of the input's class, positions of class 0 and of classes
        absent from the exemplar ignored.
    warp_loss_at: where the warp-self loss (weight "warp") compares the warped exemplar with
        the ground truth. "features": on the correspondence grid, against the average-pooled
        image; "image": the code's warp_self_w, the warped exemplar brought to the image size as
        the generator gets it (warp_upsample; warp_patch already is) against the full image.
    disc_attention: the code's discriminator under --use_attention: each scale's PatchGAN has
        a SAGAN self-attention block (keys pooled 2x2, spectral norm) before its stride-1 conv.
    disc_padding: padding of the discriminator's k4 convs: 2 (pix2pixHD / SPADE) or 1 (the
        code's NLayerDiscriminator).
    disc_loss_weight: the discriminator's hinge loss times this (the code multiplies it by
        weight_gan, 10; under Adam the scale only moves eps's relative size).
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
    perceptual_layer: str = "relu5_2"
    adaptor: str = "conv"
    adaptor_kernel: int = 4
    normalize_adaptor_features: bool = False
    feature_block: str = "conv"
    separate_theta_phi: bool = False
    maskmix: bool = False
    noise_for_mask: bool = False
    warp_upsample: str = "bilinear"
    warp_patch: bool = False
    generator_layout: str = "table5"
    spade_padding: str = "zeros"
    nonlocal_pool_keys: bool = False
    init: str = "pytorch"
    init_gain: float = 0.02
    mask_loss: str = "soft"
    warp_loss_at: str = "features"
    disc_attention: bool = False
    disc_padding: int = 2
    disc_loss_weight: float = 1.0

    def __post_init__(self):
        if self.adaptor_downsample not in (0, 1, 2):
            raise ValueError(f"CoCosNetConfig: adaptor_downsample must be 0, 1 or 2, got {self.adaptor_downsample}")
        if self.patch_size not in (1, 3):
            raise ValueError(f"CoCosNetConfig: patch_size must be 1 or 3, got {self.patch_size}")
        if self.adaptor_kernel not in (3, 4):
            raise ValueError(f"CoCosNetConfig: adaptor_kernel must be 3 or 4, got {self.adaptor_kernel}")
        for name, allowed in (("adaptor", ("conv", "spade")), ("feature_block", ("conv", "prelu")),
                              ("warp_upsample", ("bilinear", "nearest")), ("generator_layout", ("table5", "spade")),
                              ("spade_padding", ("zeros", "reflect")), ("init", ("pytorch", "xavier", "normal")),
                              ("mask_loss", ("soft", "code")), ("warp_loss_at", ("features", "image")),
                              ("disc_padding", (1, 2))):
            if getattr(self, name) not in allowed:
                raise ValueError(f"CoCosNetConfig: {name} must be one of {list(allowed)}, got {getattr(self, name)!r}")
        if not self.disc_loss_weight > 0:
            raise ValueError(f"CoCosNetConfig: disc_loss_weight must be > 0, got {self.disc_loss_weight}")
        if self.noise_for_mask and not self.maskmix:
            raise ValueError("CoCosNetConfig: noise_for_mask replaces the exemplar's mask that maskmix feeds; "
                             "set maskmix=True too")
        if self.generator_layout == "spade" and self.num_up != 5:
            raise ValueError(f"CoCosNetConfig: generator_layout 'spade' is SPADE's generator with 5 upsamplings, "
                             f"got num_up={self.num_up}")
        if self.warp_patch and self.feature_size is not None:
            raise ValueError(f"CoCosNetConfig: warp_patch warps the image's s x s patches, s = image / adaptor "
                             f"output size; feature_size must be None, got {self.feature_size}")


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
    With downsample < 2 the last k4s2 convs become k3s1 (same channels); kernel: of the k4s2 convs."""

    def __init__(self, in_channels: int, width: int, downsample: int = 2, kernel: int = 4):
        w = width
        down = lambda i: (kernel, 2) if i < downsample else (3, 1)  # noqa: E731
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


class SPADEDomainAdaptor(nn.Module):
    """The released code's domain adaptor (`AdaptiveFeatureGenerator`): five convs (spectral
    norm, no bias, affine-free instance norm; LeakyReLU(0.2) before each but the first), the
    same shapes as Table 5, then three PN-SPADE resblocks (8w, 8w, 8w -> 4w) modulated by the
    adaptor's own input."""

    def __init__(self, in_channels: int, cfg: CoCosNetConfig):
        super().__init__()
        w, sn = cfg.width, cfg.use_spectral_norm
        down = lambda i: (cfg.adaptor_kernel, 2) if i < cfg.adaptor_downsample else (3, 1)  # noqa: E731
        shapes = [(in_channels, w, 3, 1), (w, 2 * w, *down(0)), (2 * w, 4 * w, 3, 1), (4 * w, 8 * w, *down(1)),
                  (8 * w, 8 * w, 3, 1)]
        self.convs = nn.ModuleList([
            nn.Sequential(maybe_spectral_norm(nn.Conv2d(cin, cout, k, stride, padding=1, bias=False), sn),
                          nn.InstanceNorm2d(cout, affine=False))
            for cin, cout, k, stride in shapes])
        block = lambda cin, cout: SPADEResBlock(cin, cout, in_channels, cfg.spade_hidden, norm="pono",  # noqa: E731
                                                spectral_norm=sn, backend=cfg.backend,
                                                padding_mode=cfg.spade_padding)
        self.blocks = nn.ModuleList([block(8 * w, 8 * w), block(8 * w, 8 * w), block(8 * w, 4 * w)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cond = x
        for i, conv in enumerate(self.convs):
            x = conv(F.leaky_relu(x, 0.2) if i else x)
        for block in self.blocks:
            x = block(x, cond)
        return x


class _PReLUResBlock(nn.Module):
    """The code's `ResidualBlock` of the shared feature block: reflection-padded conv3 -
    affine-free IN - PReLU - reflection-padded conv3 - IN, + x, PReLU (one PReLU, used twice)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, padding_mode="reflect")
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, padding_mode="reflect")
        self.prelu = nn.PReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.prelu(F.instance_norm(self.conv1(x)))
        return self.prelu(x + F.instance_norm(self.conv2(y)))


MASK_NOISE_STD = 0.01  # the code's noise in place of the exemplar's mask (--noise_for_mask)


class CorrespondenceNet(nn.Module):
    """Two unshared domain adaptors + a shared adaptive feature block + correlation warp."""

    def __init__(self, cfg: CoCosNetConfig):
        super().__init__()
        self.cfg = cfg
        c = 4 * cfg.width
        ex_in = cfg.image_channels + (cfg.label_channels if cfg.exemplar_label_input else 0)
        if cfg.adaptor == "spade":
            self.label_adaptor = SPADEDomainAdaptor(cfg.label_channels, cfg)                   # F_{A→S}
            self.exemplar_adaptor = SPADEDomainAdaptor(ex_in, cfg)                             # F_{B→S}
        else:
            self.label_adaptor = DomainAdaptor(cfg.label_channels, cfg.width, cfg.adaptor_downsample,
                                               cfg.adaptor_kernel)
            self.exemplar_adaptor = DomainAdaptor(ex_in, cfg.width, cfg.adaptor_downsample, cfg.adaptor_kernel)
        cin = c + (cfg.label_channels if cfg.maskmix else 0)   # the maps maskmix concatenates
        block = (lambda: _PReLUResBlock(cin)) if cfg.feature_block == "prelu" else (lambda: _ResBlock(cin, cin))
        blocks = [block() for _ in range(4)]                                     # shared
        if cfg.separate_theta_phi:
            self.adaptive_block = nn.Sequential(*blocks)
            self.theta = nn.Conv2d(cin, c, 1)    # input side
            self.phi = nn.Conv2d(cin, c, 1)      # exemplar side
        else:
            self.adaptive_block = nn.Sequential(*blocks, nn.Conv2d(cin, c, 1))

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

    def _exemplar_mask(self, exemplar_label: Optional[torch.Tensor], like: torch.Tensor,
                       mask_warmup: bool) -> torch.Tensor:
        """What maskmix concatenates on the exemplar side: its label map at feature size, or
        (noise_for_mask, after the warm-up and at inference) N(0, 0.01^2) noise of that shape."""
        B, _, h, w = like.shape
        if self.cfg.noise_for_mask and not mask_warmup:
            return torch.randn(B, self.cfg.label_channels, h, w, dtype=like.dtype, device=like.device) * MASK_NOISE_STD
        if exemplar_label is None:
            raise ValueError("CoCosNet: maskmix feeds the exemplar's label map to the correspondence; pass "
                             "exemplar_label (or use a model trained with noise_for_mask)")
        return F.interpolate(exemplar_label.to(like.dtype), size=(h, w), mode="nearest")

    def _warp_value(self, exemplar: torch.Tensor, size) -> torch.Tensor:
        """The exemplar on the correspondence grid: average-pooled pixels, or (warp_patch) its
        s x s patches as channels (F.unfold's order, which pixel_unshuffle shares)."""
        if self.cfg.warp_patch:
            return F.pixel_unshuffle(exemplar, self._patch_scale(exemplar, size))
        return F.adaptive_avg_pool2d(exemplar, size)

    def _from_warp_grid(self, warped: torch.Tensor, exemplar: torch.Tensor) -> torch.Tensor:
        """warp_patch: the warped patches folded back into an image at the exemplar's size."""
        if self.cfg.warp_patch:
            return F.pixel_shuffle(warped, self._patch_scale(exemplar, warped.shape[-2:]))
        return warped

    @staticmethod
    def _patch_scale(exemplar: torch.Tensor, size) -> int:
        H, W = exemplar.shape[-2:]
        if H % size[0] or W % size[1] or H // size[0] != W // size[1]:
            raise ValueError(f"CoCosNet: warp_patch needs the image {H}x{W} to be one whole multiple of the "
                             f"correspondence grid {size[0]}x{size[1]}")
        return H // size[0]

    def _label_on_grid(self, label: torch.Tensor, size, dtype: torch.dtype) -> torch.Tensor:
        """A label map on the correspondence grid for the mask loss: nearest (mask_loss "code")
        or average-pooled ("soft")."""
        if self.cfg.mask_loss == "code":
            return F.interpolate(label, size=size, mode="nearest").to(dtype)
        return F.adaptive_avg_pool2d(label, size).to(dtype)

    def forward(self, label: torch.Tensor, exemplar: torch.Tensor,
                exemplar_label: Optional[torch.Tensor] = None, *, mask_warmup: bool = False) -> dict:
        """mask_warmup: with noise_for_mask, feed the exemplar's label map instead of noise (the
        training warm-up)."""
        cfg = self.cfg
        xa, yb = self.align_features(label, exemplar, exemplar_label)
        if cfg.normalize_adaptor_features:
            xa, yb = _feature_normalize(xa), _feature_normalize(yb)
        if cfg.maskmix:
            xa = torch.cat([xa, F.interpolate(label.to(xa.dtype), size=xa.shape[-2:], mode="nearest")], dim=1)
            yb = torch.cat([yb, self._exemplar_mask(exemplar_label, yb, mask_warmup)], dim=1)
        x_s, y_s = self.adaptive_block(xa), self.adaptive_block(yb)
        if cfg.separate_theta_phi:
            x_s, y_s = self.theta(x_s), self.phi(y_s)
        size = x_s.shape[-2:]
        # under autocast the features come out in bf16/fp16 while pooling keeps fp32: the
        # fused op takes one dtype
        value = self._warp_value(exemplar, size).to(x_s.dtype)
        warped, lse = ops.correlation_warp(x_s, y_s, value, alpha=cfg.alpha,
                                           patch_size=cfg.patch_size, backend=cfg.backend,
                                           return_lse=True)
        cycle = ops.cycle_warp(x_s, y_s, warped, alpha=cfg.alpha, patch_size=cfg.patch_size, backend=cfg.backend)
        # exemplar_small: the exemplar on the warp's grid, the cycle's target
        out = dict(warped=self._from_warp_grid(warped, exemplar), exemplar_small=self._from_warp_grid(value, exemplar),
                   cycle=self._from_warp_grid(cycle, exemplar), features_x=x_s, features_y=y_s, lse=lse)
        if exemplar_label is not None:
            out["warped_label"] = ops.correlation_warp(
                x_s, y_s, self._label_on_grid(exemplar_label.to(exemplar.dtype), size, x_s.dtype),
                alpha=cfg.alpha, patch_size=cfg.patch_size, backend=cfg.backend)
        return out


# ---- translation network -----------------------------------------------------------------------

def upsample_warped(warped: torch.Tensor, size, mode: str) -> torch.Tensor:
    """The warped exemplar at the image size, as the generator gets it (`warp_upsample`)."""
    if tuple(warped.shape[-2:]) == tuple(size):
        return warped
    return F.interpolate(warped, size=tuple(size), mode=mode, **({"align_corners": False} if mode == "bilinear" else {}))


class TranslationNet(nn.Module):
    """Generator: a conv on the cond resized to image_size / 2**num_up, then PN-SPADE resblocks,
    nearest 2x upsamplings and a non-local block in the order of `generator_layout`, then
    LReLU, conv k3s1 + tanh.

    "table5": a resblock at the start, one after each of num_up upsamplings, the non-local block
    before the last upsampling, one more resblock at full resolution. With num_up=5 this is
    Table 5's 7 resblocks (8x8x1024 → 128x128x256, non-local, → 256x256x64).
    "spade": the code's SPADEGenerator, head_0 (8x8), up, G_middle_0, G_middle_1, up, up_0, up,
    up_1 (64x64x256), up, non-local, up_2, up, up_3 (256x256x64).

    cond = concat(warped exemplar at the label's size, label map)."""

    def __init__(self, cfg: CoCosNetConfig):
        super().__init__()
        self.cfg = cfg
        w, n, sn = cfg.width, cfg.num_up, cfg.use_spectral_norm
        cond_ch = cfg.image_channels + cfg.label_channels
        blk = lambda a, b: SPADEResBlock(a * w, b * w, cond_ch, cfg.spade_hidden, norm="pono",  # noqa: E731
                                         spectral_norm=sn, backend=cfg.backend, padding_mode=cfg.spade_padding)
        if cfg.generator_layout == "spade":
            m = lambda k: min(cfg.max_mult, k)  # noqa: E731
            # (in, out) multipliers of G_middle_0, G_middle_1, up_0, up_1, up_2, up_3
            mults = [(m(16), m(16)), (m(16), m(16)), (m(16), m(8)), (m(8), m(4)), (m(4), m(2)), (m(2), 1)]
            head, tail = m(16), None
            self.plan = ("block", "up", "block", "block", "up", "block", "up", "block", "up") + \
                (("nonlocal",) if cfg.use_nonlocal else ()) + ("block", "up", "block")
            nonlocal_mult = m(4)
        else:
            def mult(i):  # channel multiplier after the i-th upsampling (0 = start)
                return 1 if i == n else min(cfg.max_mult, 2 ** (n - i + 1))
            mults = [(mult(i - 1), mult(i)) for i in range(1, n + 1)]
            head, tail = mult(0), (1, 1)
            use_nl = cfg.use_nonlocal and n >= 1
            self.plan = ("block",) + sum(((("nonlocal",) if i == n and use_nl else ()) + ("up", "block")
                                          for i in range(1, n + 1)), ()) + ("block",)
            nonlocal_mult = mult(n - 1)
        head_sn = sn and cfg.generator_layout == "table5"   # the code's fc has no spectral norm
        self.head_conv = maybe_spectral_norm(nn.Conv2d(cond_ch, head * w, 3, padding=1), head_sn)
        self.head = blk(head, head)
        self.ups = nn.ModuleList([blk(a, b) for a, b in mults])
        self.tail = blk(*tail) if tail else None
        self.nonlocal_block = NonLocalBlock(nonlocal_mult * w, spectral_norm=sn, pool_keys=cfg.nonlocal_pool_keys) \
            if "nonlocal" in self.plan else None
        self.to_image = nn.Conv2d(w, cfg.image_channels, 3, padding=1)

    def forward(self, label: torch.Tensor, warped: torch.Tensor) -> torch.Tensor:
        H, W = label.shape[-2:]
        n = self.cfg.num_up
        if H % 2 ** n or W % 2 ** n:
            raise ValueError(f"TranslationNet: image size {(H, W)} must be divisible by 2**num_up = {2 ** n}")
        warped = upsample_warped(warped, (H, W), self.cfg.warp_upsample)
        cond = torch.cat([warped, label.to(warped.dtype)], dim=1)
        if self.cfg.generator_layout == "spade":
            start = F.interpolate(cond, size=(H >> n, W >> n), mode="nearest")
        else:
            start = F.interpolate(cond, size=(H >> n, W >> n), mode="bilinear", align_corners=False)
        x = self.head_conv(start)
        blocks = iter([self.head, *self.ups, *([self.tail] if self.tail is not None else [])])
        for op in self.plan:
            if op == "up":
                x = F.interpolate(x, scale_factor=2, mode="nearest")
            elif op == "nonlocal":
                x = self.nonlocal_block(x)
            else:
                x = next(blocks)(x, cond)
        return torch.tanh(self.to_image(F.leaky_relu(x, 0.2)))


# ---- full model --------------------------------------------------------------------------------

def init_weights(module: nn.Module, kind: str, gain: float) -> None:
    """The code's BaseNetwork.init_weights: conv and linear weights xavier-normal (gain) or
    N(0, gain) (the weight under a spectral norm: its original), their biases 0; batch-norm
    scales N(1, gain), shifts 0. kind "pytorch" leaves PyTorch's initialisation."""
    if kind == "pytorch":
        return
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            if m.weight is not None:
                nn.init.normal_(m.weight, 1.0, gain)
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.modules.conv._ConvNd, nn.Linear)):
            weight = m.parametrizations.weight.original if hasattr(m, "parametrizations") else m.weight
            with torch.no_grad():
                if kind == "xavier":
                    nn.init.xavier_normal_(weight, gain=gain)
                else:
                    nn.init.normal_(weight, 0.0, gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class CoCosNet(nn.Module):
    """forward(label, exemplar, exemplar_label=None, *, mask_warmup=False) -> dict(fake, warped,
    cycle, exemplar_small, features_x, features_y, lse[, warped_label])."""

    def __init__(self, cfg: CoCosNetConfig):
        super().__init__()
        self.cfg = cfg
        self.correspondence = CorrespondenceNet(cfg)
        self.translation = TranslationNet(cfg)
        init_weights(self, cfg.init, cfg.init_gain)

    def align_features(self, label: torch.Tensor, image: torch.Tensor,
                       image_label: Optional[torch.Tensor] = None):
        return self.correspondence.align_features(label, image, image_label)

    def forward(self, label: torch.Tensor, exemplar: torch.Tensor,
                exemplar_label: Optional[torch.Tensor] = None, *, mask_warmup: bool = False) -> dict:
        out = self.correspondence(label, exemplar, exemplar_label, mask_warmup=mask_warmup)
        out["fake"] = self.translation(label, out["warped"])
        return out


# ---- training objective (Eq. 8-14) -------------------------------------------------------------

def _feature_normalize(x: torch.Tensor) -> torch.Tensor:
    """Each position's channel vector over its L2 norm (the code's util.feature_normalize)."""
    return x / (x.norm(dim=1, keepdim=True) + torch.finfo(torch.float64).eps)


def _soft_mask_loss(warped_label: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the warped exemplar label against the average-pooled input label
    (in float32 even under autocast: a bf16 log of small probabilities is coarse)."""
    target = F.adaptive_avg_pool2d(label.float(), warped_label.shape[-2:])
    return -(target * torch.log(warped_label.float().clamp_min(1e-6))).sum(1).mean()


def _code_mask_loss(warped_label: torch.Tensor, label: torch.Tensor, exemplar_label: torch.Tensor) -> torch.Tensor:
    """The code's warp_mask_losstype "direct": the negative log of the warped (nearest-
    downsampled one-hot) exemplar label's probability of the input's class, averaged over the
    positions whose class is not 0 and is present in the exemplar (its nll_loss with weights)."""
    size = warped_label.shape[-2:]
    gt = F.interpolate(label.float(), size=size, mode="nearest").argmax(1)                  # (B, h, w)
    ref = F.interpolate(exemplar_label.float(), size=size, mode="nearest").argmax(1)
    present = F.one_hot(ref.flatten(1), label.shape[1]).amax(1)                            # (B, K)
    weight = (present.gather(1, gt.flatten(1)).view_as(gt) * (gt != 0)).float()
    nll = -torch.log(warped_label.float().gather(1, gt[:, None])[:, 0] + 1e-10)
    return (nll * weight).sum() / (weight.sum() + 1e-5)


class CoCosNetObjective(Objective):
    """CoCosNet Eq. 8-14 as its released code computes them (`pix2pix_model.py`):
    feat: VGG feature matching relu1_2..relu5_2 (weights 1/32..1), on the self-exemplar
        samples only when the batch flags them (the code's sample weights, `self_ref`);
    perc: MSE on `perceptual_layer` (the model option);
    context: `exsynth.losses.contextual_loss_layers`, the code's get_ctx_loss (forward
        direction, position centring, relu3_2 pooled 2x / relu4_2 / relu5_2 weighted 2/4/8);
    domain: L1 between the channel-normalised adaptor features of the label and of the
        ground-truth photo (its feature_normalize);
    reg: the cycle L1 of the twice-warped exemplar; adv / gan_feat: hinge GAN and the
        discriminator feature matching summed over layers (averaged over scales);
    plus an L1 on the output (off), the warp-self L1 (the code's warp_self_w, self-exemplars
    only when flagged) and the mask loss (the exemplar's one-hot label warped with the same
    correspondence against the input label, the model's `mask_loss`): for `mask_warmup_steps`
    (TrainConfig), or, when the model has noise_for_mask, throughout the run while the warm-up
    decides whether the correspondence sees the exemplar's mask or noise (the code's mask_epoch).

    Default weights are the code's effective defaults (train_options.py): feat = lambda_vgg 10 x
    fm_ratio 0.1 (the CelebA-HQ / DeepFashion commands set fm_ratio 1: 10), perc 0.01
    (weight_perceptual; those commands use 0.001), context = lambda_vgg 10 x ctx_w 1, domain 10
    (novgg_featpair), adv = weight_gan 10, gan_feat = lambda_feat 10; reg 1 (the paper's L_reg;
    the code's warp_cycle_w defaults to 0 and its CelebA-HQ commands set 0.1 / 1); warp-self and
    the mask off (their commands set them)."""

    loss_names = ("l1", "feat", "perc", "context", "domain", "reg", "warp", "mask", "adv", "gan_feat")
    default_weights = dict(l1=0.0, feat=1.0, perc=0.01, context=10.0, domain=10.0, reg=1.0, warp=0.0, mask=0.0,
                           adv=10.0, gan_feat=10.0)
    gan_feat_sum_layers = True
    ddp_find_unused_parameters = False  # every step runs both adaptors and the whole translation net

    def discriminator_options(self):
        return dict(padding=self.model.cfg.disc_padding, attention=self.model.cfg.disc_attention)

    def build_discriminators(self):
        discriminators = super().build_discriminators()
        for d in discriminators.values():  # the code initialises its discriminator as its generator
            init_weights(d, self.model.cfg.init, self.model.cfg.init_gain)
        return discriminators

    def discriminator_terms(self, visuals, step: int):
        loss, terms = super().discriminator_terms(visuals, step)
        return loss * self.model.cfg.disc_loss_weight, terms

    def generator_terms(self, batch, step: int, gen: torch.Generator):
        label, image, exemplar, exemplar_label = self.inputs(batch, gen)
        mcfg = self.model.cfg
        warmup = self.cfg.mask_warmup_end() if hasattr(self.cfg, "mask_warmup_end") else None
        in_warmup = warmup is None or step < warmup
        # noise_for_mask (the code): the warm-up feeds the exemplar's mask, the mask loss stays on
        use_mask = self.on("mask") and (in_warmup or mcfg.noise_for_mask)
        needs_ex_label = use_mask or mcfg.exemplar_label_input or mcfg.maskmix
        out = self.G(label, exemplar, exemplar_label if needs_ex_label else None, mask_warmup=in_warmup)
        fake = out["fake"]
        terms = {}
        if self.on("l1"):
            terms["l1"] = F.l1_loss(fake, image)
        self_ref = batch.get("self_ref") if self.supervision == "pair" else None
        if self.vgg is not None and (self.on("feat") or self.on("perc")):
            layers = tuple(dict.fromkeys(self.vgg.fm_layers + (self.model.cfg.perceptual_layer,)))
            ff = self.vgg.features(fake, layers)
            with torch.no_grad():
                fr = self.vgg.features(image, layers)
            if self.on("feat"):
                if self_ref is not None:   # the code's weighted_l1_loss with self_ref / sum(self_ref)
                    w = self_ref.to(fake.dtype).view(-1, 1, 1, 1)
                    w = w / (w.sum() + 1e-5)
                    terms["feat"] = sum(lw * ((ff[n] - fr[n]).abs() * w).mean()
                                        for n, lw in zip(self.vgg.fm_layers, self.vgg.fm_weights))
                else:
                    terms["feat"] = sum(lw * F.l1_loss(ff[n], fr[n]) for n, lw in zip(self.vgg.fm_layers,
                                                                                       self.vgg.fm_weights))
            if self.on("perc"):
                n = self.model.cfg.perceptual_layer
                terms["perc"] = F.mse_loss(ff[n], fr[n])
        if self.vgg is not None and self.on("context"):
            terms["context"] = self.vgg.contextual(fake, exemplar)
        if self.on("domain"):
            xa, yb = self.model.align_features(label, image, label)
            terms["domain"] = F.l1_loss(_feature_normalize(xa), _feature_normalize(yb))
        if self.on("reg"):
            terms["reg"] = F.l1_loss(out["cycle"], out["exemplar_small"])
        if self.on("warp"):
            if mcfg.warp_loss_at == "image":
                warped, target = upsample_warped(out["warped"], image.shape[-2:], mcfg.warp_upsample), image
            else:
                warped = out["warped"]
                target = F.adaptive_avg_pool2d(image, warped.shape[-2:])
            if self_ref is not None:
                # a retrieved reference warped onto the input is not the ground truth: the
                # released code applies this term to self-exemplars only, weighted as its "feat"
                w = self_ref.to(target.dtype).view(-1, 1, 1, 1)
                terms["warp"] = ((warped - target).abs() * (w / (w.sum() + 1e-5))).mean()
            else:
                terms["warp"] = F.l1_loss(warped, target)
        if use_mask:
            terms["mask"] = (_code_mask_loss(out["warped_label"], label, exemplar_label) if mcfg.mask_loss == "code"
                             else _soft_mask_loss(out["warped_label"], label))
        self.gan_terms(terms, label, fake, image)
        visuals = dict(label=label, exemplar=exemplar, warped=out["warped"], fake=fake, image=image)
        return self.total(terms), terms, visuals


# ---- registry entry ----------------------------------------------------------------------------

def run(model: CoCosNet, label, exemplar, exemplar_label=None, visuals=()) -> dict:
    """Inference outputs: fake, warped (the correlation warp of the pooled exemplar) and
    correspondence (the exemplar's coordinate image warped by the same correlation)."""
    out = model(label, exemplar, exemplar_label)
    res = dict(fake=out["fake"], warped=out["warped"])
    if "correspondence" in visuals:
        fs = out["features_y"].shape[-2:]
        coords = coordinate_image(exemplar.shape[0], fs, exemplar.device, exemplar.dtype)
        res["correspondence"] = ops.correlation_warp(out["features_x"], out["features_y"], coords,
                                                     alpha=model.cfg.alpha, patch_size=model.cfg.patch_size,
                                                     backend=model.cfg.backend)
    return res


# The released code's network as its README's commands build it: --use_attention --PONO --PONO_C,
# and its defaults (ngf 64, match_kernel 3, temperature 0.01, adaptor_kernel 3, nearest warp upsampling,
# norm_G spectralspadesyncbatch3x3 with PONO, init_type xavier, init_variance 0.02).
CODE_ARCHITECTURE = dict(
    width=64, num_up=5, max_mult=16, spade_hidden=128, use_spectral_norm=True, adaptor_downsample=2,
    patch_size=3, alpha=100.0, use_nonlocal=True, adaptor="spade", adaptor_kernel=3, normalize_adaptor_features=True,
    feature_block="prelu", separate_theta_phi=True, generator_layout="spade", spade_padding="reflect",
    nonlocal_pool_keys=True, warp_upsample="nearest", init="xavier", init_gain=0.02, mask_loss="code",
    warp_loss_at="image", disc_attention=True, disc_padding=1, disc_loss_weight=10.0,
)

# The README's training runs: 256 px, batchSize 32, Adam with TTUR (G 1e-4, D 4e-4, betas (0, 0.9),
# the generator's eps 1e-3 as create_optimizers sets it), niter epochs at a constant rate then
# niter_decay (= niter in every command) decaying to 0, lowered at each epoch's end, the
# multi-scale discriminator with 4 layers at 2 scales; logs, images and checkpoints at its
# print_freq 100, display_freq 2000, save_latest_freq 5000 iterations.
_CODE_TRAINING = dict(
    model="cocosnet", size=256, batch_size=32, lr_g=1e-4, lr_d=4e-4, betas=(0.0, 0.9), eps_g=1e-3, lr_decay_steps=0.5,
    lr_decay_per="epoch",
    disc_width=64, disc_layers=4, disc_scales=2, log_every=100, image_every=2000, checkpoint_every=5000,
)


# the loaders' references (real_reference_probability 0.7, hard 0.2), flips and bicubic photos
_CODE_DATA = dict(real_reference_probability=0.7, hard_reference_probability=0.2, flip=True, resample="bicubic")


def _code_losses(fm_ratio: float, weight_perceptual: float, warp_cycle_w: float = 0.0, warp_self_w: float = 0.0,
                 weight_mask: float = 0.0) -> dict:
    """The loss weights of a train.py command from its flags (lambda_vgg 10, ctx_w 1,
    novgg_featpair 10, weight_gan 10, lambda_feat 10 in every command)."""
    return dict(l1=0.0, feat=10.0 * fm_ratio, perc=weight_perceptual, context=10.0, domain=10.0, reg=warp_cycle_w,
                warp=warp_self_w, mask=weight_mask, adv=10.0, gan_feat=10.0)


PRESETS = {
    # python train.py --name ade20k --dataset_mode ade20k --dataroot dataset_path --niter 100 --niter_decay 100
    #   --use_attention --maskmix --noise_for_mask --mask_epoch 150 --warp_mask_losstype direct --weight_mask 100.0
    #   --PONO --PONO_C --vgg_normal_correct --batchSize 32
    # (the README's ADE20k model that needs no exemplar mask at test; its released checkpoint is
    # epoch 90's: `exsynth convert --epoch 90`)
    "cocosnet-ade20k": dict(
        _CODE_TRAINING, dataset="ade20k", epochs=200, mask_warmup_steps=150 / 200,
        data_options=dict(_CODE_DATA),
        model_options=dict(CODE_ARCHITECTURE, maskmix=True, noise_for_mask=True, perceptual_layer="relu5_2"),
        losses=_code_losses(fm_ratio=0.1, weight_perceptual=0.01, weight_mask=100.0),
    ),
    # python train.py --name ade20k --dataset_mode ade20k --dataroot dataset_path --niter 100 --niter_decay 100
    #   --use_attention --maskmix --warp_mask_losstype direct --weight_mask 100.0 --PONO --PONO_C
    #   --batchSize 32 --vgg_normal_correct
    # (the README's first ADE20k model, released as latest: synthesis takes the exemplar's mask)
    "cocosnet-ade20k-mask": dict(
        _CODE_TRAINING, dataset="ade20k", epochs=200,
        data_options=dict(_CODE_DATA),
        model_options=dict(CODE_ARCHITECTURE, maskmix=True, perceptual_layer="relu5_2"),
        losses=_code_losses(fm_ratio=0.1, weight_perceptual=0.01, weight_mask=100.0),
    ),
    # python train.py --name celebahq --dataset_mode celebahq --dataroot dataset_path --niter 30 --niter_decay 30
    #   --which_perceptual 4_2 --weight_perceptual 0.001 --use_attention --maskmix --warp_mask_losstype direct
    #   --weight_mask 100.0 --PONO --PONO_C --vgg_normal_correct --fm_ratio 1.0 --warp_bilinear --warp_cycle_w 0.1
    #   --batchSize 32
    # with --adaptor_kernel 4, which the README's test command gives the released model (the training
    # command leaves it at 3, which would not load that checkpoint)
    "cocosnet-celebahq": dict(
        _CODE_TRAINING, dataset="celebahq", epochs=60,
        data_options=dict(_CODE_DATA),
        model_options=dict(CODE_ARCHITECTURE, maskmix=True, warp_upsample="bilinear", adaptor_kernel=4,
                           perceptual_layer="relu4_2"),
        losses=_code_losses(fm_ratio=1.0, weight_perceptual=0.001, warp_cycle_w=0.1, weight_mask=100.0),
    ),
    # python train.py --name celebahqedge --dataset_mode celebahqedge --dataroot dataset_path --niter 30
    #   --niter_decay 30 --which_perceptual 4_2 --weight_perceptual 0.001 --use_attention --maskmix --PONO --PONO_C
    #   --vgg_normal_correct --fm_ratio 1.0 --warp_bilinear --warp_cycle_w 1 --batchSize 32
    # with the test command's --adaptor_kernel 4 (the released model)
    "cocosnet-celebahq-edge": dict(
        _CODE_TRAINING, dataset="celebahq-edge", epochs=60,
        data_options=dict(_CODE_DATA),
        model_options=dict(CODE_ARCHITECTURE, maskmix=True, warp_upsample="bilinear", adaptor_kernel=4,
                           perceptual_layer="relu4_2"),
        losses=_code_losses(fm_ratio=1.0, weight_perceptual=0.001, warp_cycle_w=1.0),
    ),
    # python train.py --name deepfashion --dataset_mode deepfashion --dataroot dataset_path --niter 50
    #   --niter_decay 50 --which_perceptual 4_2 --weight_perceptual 0.001 --use_attention
    #   --real_reference_probability 0.0 --PONO --PONO_C --vgg_normal_correct --fm_ratio 1.0 --warp_bilinear
    #   --warp_self_w 100 --no_flip --warp_patch --video_like --batchSize 32
    # with the test command's --adaptor_kernel 4 (the released model)
    "cocosnet-deepfashion": dict(
        _CODE_TRAINING, dataset="deepfashion", epochs=100,
        data_options=dict(real_reference_probability=0.0, flip=False, video_like=True, resample="bicubic"),
        model_options=dict(CODE_ARCHITECTURE, warp_upsample="bilinear", warp_patch=True, adaptor_kernel=4,
                           perceptual_layer="relu4_2"),
        losses=_code_losses(fm_ratio=1.0, weight_perceptual=0.001, warp_self_w=100.0),
    ),
    # the 10-CPU-minute recipe at 64 px of `exsynth demo`'s checkpoint (see below for the match kernel)
    "cocosnet-cpu64": dict(
        model="cocosnet", size=64, batch_size=8, lr_g=4e-4, lr_d=4e-4, betas=(0.5, 0.999),
        steps=700,
        # the paper's match kernel 3 (the cpu backend's Gram path): 10 minutes each, back to
        # back on one machine, kernel 3 reached 614 steps and 21.59 / 21.83 dB (output /
        # warped), kernel 1 643 steps and 21.09 / 21.24 (bench/results/train/cocosnet64_k*b_*).
        # The shipped demo checkpoint is an earlier kernel-1 run that reached all 700 steps
        # (21.86 / 22.30); its stored config is what `exsynth demo` builds. Full-resolution
        # correspondence (64x64, adaptor_downsample=0) measured ~10x slower per step.
        model_options=dict(width=8, adaptor_downsample=1, num_up=3, max_mult=8, spade_hidden=32,
                           exemplar_label_input=True, patch_size=3),
        losses=dict(l1=10.0, feat=0.0, perc=0.0, context=0.0, domain=1.0, reg=1.0, warp=10.0, mask=1.0,
                    adv=0.0, gan_feat=0.0),
        checkpoint_every=200, image_every=100,
    ),
}

SPEC = register_model(ModelSpec(
    name="cocosnet",
    config=CoCosNetConfig,
    generator=CoCosNet,
    objective=CoCosNetObjective,
    supervision=("pair", "pseudo"),
    unpaired_supervision="pseudo",
    run=run,
    needs_exemplar_label=lambda cfg: cfg.exemplar_label_input or (cfg.maskmix and not cfg.noise_for_mask),
    # generator upsamplings; the adaptors' stride-2 convs
    size_multiple=lambda cfg: max(2 ** cfg.num_up, 2 ** cfg.adaptor_downsample),
    visuals=("warped", "correspondence"),
    presets=PRESETS,
    description="CoCosNet (Zhang et al., CVPR 2020): cross-domain correspondence + PN-SPADE translation",
    default=True,
))
