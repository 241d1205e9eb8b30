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

    def __post_init__(self):
        if self.adaptor_downsample not in (0, 1, 2):
            raise ValueError(f"CoCosNetConfig: adaptor_downsample must be 0, 1 or 2, got {self.adaptor_downsample}")
        if self.patch_size not in (1, 3):
            raise ValueError(f"CoCosNetConfig: patch_size must be 1 or 3, got {self.patch_size}")


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

        self.head_conv = maybe_spectral_norm(nn.Conv2d(cond_ch, mult(0) * w, 3, padding=1), sn)
        blk = lambda a, b: SPADEResBlock(a * w, b * w, cond_ch, cfg.spade_hidden, norm="pono",  # noqa: E731
                                         spectral_norm=sn, backend=cfg.backend)
        self.head = blk(mult(0), mult(0))
        self.ups = nn.ModuleList([blk(mult(i - 1), mult(i)) for i in range(1, n + 1)])
        self.tail = blk(1, 1)
        self.nonlocal_block = NonLocalBlock(mult(n - 1) * w, spectral_norm=sn) if cfg.use_nonlocal and n >= 1 else None
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




# ---- training objective (Eq. 8-14) -------------------------------------------------------------

def _feature_normalize(x: torch.Tensor) -> torch.Tensor:
    """Each position's channel vector over its L2 norm (the code's util.feature_normalize)."""
    return x / (x.norm(dim=1, keepdim=True) + torch.finfo(torch.float64).eps)


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
    only when flagged) and the mask warm-up (the exemplar's one-hot label warped with the same
    correspondence, cross-entropy against the input label, for `mask_warmup_steps`).

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

    def generator_terms(self, batch, step: int, gen: torch.Generator):
        label, image, exemplar, exemplar_label = self.inputs(batch, gen)
        warmup = getattr(self.cfg, "mask_warmup_steps", None)
        use_mask = self.on("mask") and (warmup is None or step < warmup)
        needs_ex_label = use_mask or self.model.cfg.exemplar_label_input
        out = self.G(label, exemplar, exemplar_label if needs_ex_label else None)
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
        size = out["warped"].shape[-2:]
        if self.on("warp"):
            target = F.adaptive_avg_pool2d(image, size)
            if "self_ref" in batch and self.supervision == "pair":
                # a retrieved reference warped onto the input is not the ground truth: the
                # released code applies this term to self-exemplars only
                w = batch["self_ref"].to(target.dtype).view(-1, 1, 1, 1)
                terms["warp"] = ((out["warped"] - target).abs() * w).mean()
            else:
                terms["warp"] = F.l1_loss(out["warped"], target)
        if use_mask:
            # in float32 even under autocast: a bf16 log of small probabilities is coarse
            target = F.adaptive_avg_pool2d(label.float(), size)
            terms["mask"] = -(target * torch.log(out["warped_label"].float().clamp_min(1e-6))).sum(1).mean()
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


PRESETS = {
    # the recipe of the checkpoint shipped for `exsynth demo`: 10 CPU minutes at 64 px
    "cocosnet-cpu64": dict(
        model="cocosnet", size=64, batch_size=8, lr_g=4e-4, lr_d=4e-4, betas=(0.5, 0.999),
        steps=700,
        model_options=dict(width=8, adaptor_downsample=1, num_up=3, max_mult=8, spade_hidden=32,
                           exemplar_label_input=True),
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
    needs_exemplar_label=lambda cfg: cfg.exemplar_label_input,
    # generator upsamplings; the adaptors' stride-2 convs
    size_multiple=lambda cfg: max(2 ** cfg.num_up, 2 ** cfg.adaptor_downsample),
    visuals=("warped", "correspondence"),
    presets=PRESETS,
    description="CoCosNet (Zhang et al., CVPR 2020): cross-domain correspondence + PN-SPADE translation",
    default=True,
))
