"""pix2pixSC (Wang et al.: "Example-Guided Style-Consistent Image Synthesis from Semantic
Labeling", CVPR 2019).

Read top-down as the paper's Fig. 2:

1. Generator G (App. B.1): a pix2pixHD global generator on the concatenation [x, F(I), I] of the
   input label map x, the exemplar's label map F(I) and the exemplar I: c7s1-64, d128 .. d1024,
   R1024 x 9, u512 .. u64, c7s1-3 at the paper's widths. No style encoder: the exemplar enters
   by concatenation alone.
2. Two discriminators (App. B.2, Sec. 3.2), 70x70 PatchGANs trained with the least-squares loss:
   D_R on (x, image) tells real photos from outputs (Eq. 4); D_SC on (image, exemplar) tells
   style-consistent pairs (two frames of one clip within T frames) from inconsistent ones (two
   clips) and from (G(x, I, F(I)), I) (Eq. 5).
3. The adaptive semantic-consistency loss L_SC (Eq. 6): VGG feature L1 between the output and the
   photo z of x, weight 1 per element when (z, I) are style-consistent and 1/M_i (the layer's
   element count: a mean) when not; L = L_StdAdv + 10 L_SCAdv + 10 L_SC (Eq. 7).
4. The schedule (App. C): L_SCAdv off for the first quarter of the run, then on; the second half
   decays the learning rate linearly to 0 (the preset's lr_decay_steps). D_SC trains from step 0,
   as in the official code.

Where the official code (github cxjyxxme/pix2pixSC, `c_pix2pixHD_model.py`, `train_*.py`) and the
paper differ, the paper's choice is the default and the code's one option away (see
Pix2PixSCConfig): `sc_loss` (paper | code), `vgg_input` (imagenet-normalised at native size | the
code's unnormalised [-1, 1] upsampled to 224), `sc_disc_labels` (the scripts' --no_D_label: off),
`sc_adv_schedule` (App. C's switch | e.g. the face script's ramp). Departures from both, off by
default: `region_style` (+ `region_style_skip`: the exemplar pooled per class of F(I) and painted
on x, at G's input and its last conv; the pix2pixsc-cpu64 preset uses it), `exemplar_roll`, the
`l1` loss term.

Training data: samples carry "photo" (z, x's own frame; "image" where absent), "exemplar",
"exemplar_label", "same_style" and real pairs "consistent" / "inconsistent" for D_SC
(`synthetic-video`, `video`). On data with exact exemplar pairs and none of these (e.g.
`synthetic`), the exemplar is style-consistent with the image by construction and another
sample's exemplar in the batch serves as the inconsistent one.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..losses.objective import Objective
from ..losses.gan import lsgan_loss
from ..nn.blocks import PatchDiscriminator, ReflectResBlock, region_style_map
from ..registry import ModelSpec, register_model

__all__ = ["Pix2PixSCConfig", "GlobalGenerator", "Pix2PixSC", "Pix2PixSCObjective", "semantic_consistency_loss",
           "adaptive_l1_loss", "roll_exemplar", "region_style_map", "style_discriminator", "style_discrimination",
           "PRESETS"]

_REGION_STYLE_CHANNELS = {"none": 0, "mean": 4, "mean_std": 7}
_HD_WEIGHTS = {"relu1_1": 1 / 32, "relu2_1": 1 / 16, "relu3_1": 1 / 8, "relu4_1": 1 / 4, "relu5_1": 1.0}


@dataclass
class Pix2PixSCConfig:
    """pix2pixSC's options (paper values unless said otherwise).

    label_channels: input label channels K (set from the data).
    width: channels of the first generator layer (the paper's 64, ngf).
    downsamples: stride-2 convs of the generator (4: d128 .. d1024).
    blocks: residual blocks at the bottleneck (9).
    max_width: cap on the generator's channels (None: width * 2^downsamples, the paper's 1024).
    exemplar_label: G sees F(I) (True, the paper and code; the code's --no_G_label drops it).
    sc_loss: "paper" (Eq. 6: per-element weight 1 for style-consistent (z, I), 1/M_i otherwise)
        or "code" (mean L1 per layer weighted (1/32 .. 1) + 2 x same_style, which x lambda 10 is
        the code's lambda_feat 10 pix2pixHD loss plus its self_vgg_mul 20 term).
    sc_layers: VGG19 layers of L_SC (relu1_1 .. relu5_1, the code's Vgg19 slices).
    vgg_input: "imagenet" (ImageNet-normalised, native size) or "code" (the [-1, 1] image fed
        unnormalised, bilinearly upsampled to 224 when smaller, as the code's VGGLoss does).
    sc_disc_labels: D_SC also sees the label maps, [x, image, F(I), I]; False: [image, I] (the
        scripts' --no_D_label).
    disc_layers: strided convs of each PatchGAN (4: C64, C128, C256, C512, the 70x70 net; 3 the
        34x34 one the paper's "35x35" would be).
    sc_adv_schedule: ((fraction of the run's steps, multiplier), ...) of L_SCAdv for G, piecewise
        constant from each fraction on (App. C: off for the first quarter, then on).
    exemplar_roll: training only, a departure from the paper (False: the paper, G's exemplar
        as the data gives it). True: G sees its exemplar (I and F(I) alike) circularly shifted
        by a random offset and flipped at random, one draw per sample; D_SC, L_SC and
        inference are unchanged. The reconstruction target of L_SC exists only for
        style-consistent pairs (another frame of z's clip), and when that frame's layout is
        close to z's (slow synthetic motion) G learns to copy the exemplar pixel by pixel
        instead of carrying each class's appearance over through F(I), which is all a frame
        of another clip allows at test time. The shift makes a pixel's position in I say
        nothing about z at that position; F(I) says where each class's appearance is.
        Measured (pix2pixsc-cpu64, 1000 steps, bench/results/cpu/pix2pixsc64_diagnosis.json):
        test clips with a same-clip exemplar 15.40 dB (raw exemplar: 15.37, i.e. a copy) ->
        13.50; the test split 12.42 -> 13.00 dB, still below class means (13.24); at the
        preset's 3000 steps 12.50 (off: 12.63), G painting the style it memorised for the
        input's training clip instead. It removes the copying, not the gap.
    region_style: a departure from the paper ("none": the exemplar enters by concatenation
        alone). "mean": G also gets, at each pixel of x, the exemplar's mean colour over the
        pixels F(I) gives that pixel's class, and a channel saying whether the class occurs in
        I at all (0 and colour 0 where it does not): region-wise average pooling of the
        exemplar, as SEAN's and SMIS's per-region style codes, here on the pixels. "mean_std"
        adds the per-class standard deviation (3 more channels). A concatenated exemplar
        whose layout differs from x's makes the plain global generator find each class's
        appearance across the image by itself, which it does not learn in the cpu64 time box
        (see exemplar_roll); the pooled colours hand it over where x needs it. Needs
        exemplar_label. Measured on pix2pixsc-cpu64's data and sizes (random VGG, one core,
        200 test pairs, PSNR against the exact output; class means 13.24 dB): "none" 12.63 dB
        at 3000 steps; "mean" 17.52 at 1000; "mean_std" 18.58 at 3000 (with the l1 term at
        weight 10: 18.68), blurred: the instance norms (below); "mean_std" with
        region_style_skip 22.81 at 3000 (22.41 at 1500), D_SC accuracy 97.8 %. No memorising:
        training clips with another clip's exemplar 23.41 dB, test clips 22.81.
    region_style_skip: with region_style, the pooled map also enters the last conv (c7s1-3),
        after the last instance norm: every conv of the global generator is followed by a
        non-affine instance norm, which removes each channel's mean over the image, so
        absolute colours given at the input reach the output only as differences.
    """

    label_channels: int
    width: int = 64
    downsamples: int = 4
    blocks: int = 9
    max_width: Optional[int] = None
    exemplar_label: bool = True
    sc_loss: str = "paper"
    sc_layers: Tuple[str, ...] = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
    vgg_input: str = "imagenet"
    sc_disc_labels: bool = False
    disc_layers: int = 4
    sc_adv_schedule: Tuple[Tuple[float, float], ...] = ((0.0, 0.0), (0.25, 1.0))
    exemplar_roll: bool = False
    region_style: str = "none"
    region_style_skip: bool = False

    def __post_init__(self):
        if self.label_channels < 1 or self.width < 1 or self.blocks < 0:
            raise ValueError(f"pix2pixSC: label_channels and width must be >= 1 and blocks >= 0, got "
                             f"{self.label_channels}, {self.width}, {self.blocks}")
        if not 1 <= self.downsamples <= 6:
            raise ValueError(f"pix2pixSC: downsamples must be 1..6, got {self.downsamples}")
        if self.sc_loss not in ("paper", "code"):
            raise ValueError(f"pix2pixSC: sc_loss must be 'paper' or 'code', got {self.sc_loss!r}")
        if self.vgg_input not in ("imagenet", "code"):
            raise ValueError(f"pix2pixSC: vgg_input must be 'imagenet' or 'code', got {self.vgg_input!r}")
        self.sc_layers = tuple(self.sc_layers)
        bad = [l for l in self.sc_layers if l not in _HD_WEIGHTS]
        if bad or not self.sc_layers:
            raise ValueError(f"pix2pixSC: sc_layers must be a non-empty subset of {tuple(_HD_WEIGHTS)}, got "
                             f"{self.sc_layers}")
        if self.disc_layers < 2:
            raise ValueError(f"pix2pixSC: disc_layers must be >= 2, got {self.disc_layers}")
        sched = tuple((float(a), float(b)) for a, b in self.sc_adv_schedule)
        if not sched or sched[0][0] != 0.0 or any(b[0] <= a[0] for a, b in zip(sched, sched[1:])):
            raise ValueError(f"pix2pixSC: sc_adv_schedule must start at fraction 0 and increase, got "
                             f"{self.sc_adv_schedule}")
        self.sc_adv_schedule = sched
        if self.region_style not in _REGION_STYLE_CHANNELS:
            raise ValueError(f"pix2pixSC: region_style must be one of {tuple(_REGION_STYLE_CHANNELS)}, got "
                             f"{self.region_style!r}")
        if self.region_style_skip and self.region_style == "none":
            raise ValueError("pix2pixSC: region_style_skip feeds the region style map to the last conv: it needs "
                             "region_style 'mean' or 'mean_std', got 'none'")
        if self.region_style != "none" and not self.exemplar_label:
            raise ValueError(f"pix2pixSC: region_style={self.region_style!r} pools the exemplar by its label map: it "
                             f"needs exemplar_label=True, got False")

    def sc_adv_multiplier(self, step: int, steps: int) -> float:
        f = step / max(int(steps), 1)
        mult = 0.0
        for start, m in self.sc_adv_schedule:
            if f >= start:
                mult = m
        return mult


# ---- 1. the generator --------------------------------------------------------------------------

class GlobalGenerator(nn.Module):
    """pix2pixHD's global generator: c7s1-w, d2w .. d(2^n)w, R x blocks, u .. uw, c7s1-out, tanh
    (instance norm without affine parameters, reflection padding)."""

    def __init__(self, in_channels: int, out_channels: int = 3, width: int = 64, downsamples: int = 4,
                 blocks: int = 9, max_width: Optional[int] = None, skip_channels: int = 0):
        super().__init__()
        self.skip_channels = int(skip_channels)
        cap = max_width or width * 2 ** downsamples
        chans = [min(width * 2 ** i, cap) for i in range(downsamples + 1)]
        layers = [nn.ReflectionPad2d(3), nn.Conv2d(in_channels, chans[0], 7), nn.InstanceNorm2d(chans[0]), nn.ReLU(True)]
        for a, b in zip(chans, chans[1:]):
            layers += [nn.Conv2d(a, b, 3, 2, 1), nn.InstanceNorm2d(b), nn.ReLU(True)]
        layers += [ReflectResBlock(chans[-1]) for _ in range(blocks)]
        for a, b in zip(chans[::-1], chans[-2::-1]):
            layers += [nn.ConvTranspose2d(a, b, 3, 2, 1, output_padding=1), nn.InstanceNorm2d(b), nn.ReLU(True)]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(chans[0] + self.skip_channels, out_channels, 7), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, x, skip: Optional[torch.Tensor] = None):
        """skip: (B, skip_channels, H, W) concatenated to the input of the last conv, after the
        last normalisation (None when skip_channels is 0)."""
        if (skip is None) != (self.skip_channels == 0):
            raise ValueError(f"GlobalGenerator: skip must be given exactly when skip_channels > 0 (here "
                             f"{self.skip_channels}), got {None if skip is None else tuple(skip.shape)}")
        if skip is None:
            return self.net(x)
        return self.net[-3:](torch.cat([self.net[:-3](x), skip.to(x.dtype)], 1))


def _init_normal(module: nn.Module) -> None:
    """The code's weights_init: conv weights N(0, 0.02); biases stay at their defaults."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)


class Pix2PixSC(nn.Module):
    """G(x, I, F(I)) = GlobalGenerator([x, F(I), I(, region style of I on x)])."""

    def __init__(self, cfg: Pix2PixSCConfig):
        super().__init__()
        self.cfg = cfg
        k = cfg.label_channels
        region = _REGION_STYLE_CHANNELS[cfg.region_style]
        self.generator = GlobalGenerator(k * (2 if cfg.exemplar_label else 1) + 3 + region, 3, cfg.width,
                                         cfg.downsamples, cfg.blocks, cfg.max_width,
                                         skip_channels=region if cfg.region_style_skip else 0)
        _init_normal(self.generator)

    def forward(self, label: torch.Tensor, exemplar: torch.Tensor,
                exemplar_label: Optional[torch.Tensor] = None) -> torch.Tensor:
        k = self.cfg.label_channels
        if label.dim() != 4 or label.shape[1] != k:
            raise ValueError(f"pix2pixSC: label must be (B, {k}, H, W), got {tuple(label.shape)}")
        if exemplar.dim() != 4 or exemplar.shape[1] != 3 or exemplar.shape[-2:] != label.shape[-2:]:
            raise ValueError(f"pix2pixSC: exemplar must be (B, 3, {label.shape[-2]}, {label.shape[-1]}) like the "
                             f"label, got {tuple(exemplar.shape)}")
        parts = [label.to(exemplar.dtype)]
        if self.cfg.exemplar_label:
            if exemplar_label is None or tuple(exemplar_label.shape) != tuple(label.shape):
                raise ValueError(f"pix2pixSC: exemplar_label must be given, shaped like the label "
                                 f"{tuple(label.shape)}, got "
                                 f"{None if exemplar_label is None else tuple(exemplar_label.shape)}")
            parts.append(exemplar_label.to(exemplar.dtype))
        parts.append(exemplar)
        skip = None
        if self.cfg.region_style != "none":
            parts.append(region_style_map(label, exemplar, exemplar_label, self.cfg.region_style))
            skip = parts[-1] if self.cfg.region_style_skip else None
        return self.generator(torch.cat(parts, 1), skip)


# ---- 2.-3. losses -----------------------------------------------------------------------------

def semantic_consistency_loss(fake: Dict[str, torch.Tensor], real: Dict[str, torch.Tensor], same_style: torch.Tensor,
                              form: str = "paper") -> torch.Tensor:
    """L_SC over VGG feature dicts (B, C, H, W per layer), mean over the batch.

    paper (Eq. 6): sum_i w_i |V_i(G) - V_i(z)|_1, w_i = 1 when same_style, 1/M_i otherwise
        (M_i = C*H*W of layer i: the per-sample mean);
    code: sum_i (w_i^HD + 2 same_style) mean|V_i(G) - V_i(z)| (w^HD = 1/32 .. 1)."""
    same = same_style.to(next(iter(fake.values())).dtype).reshape(-1)
    total = 0.0
    for name, f in fake.items():
        per = (f - real[name].detach()).abs().flatten(1)          # (B, M_i)
        mean = per.mean(1)
        if form == "paper":
            total = total + torch.where(same > 0.5, per.sum(1), mean)
        else:
            total = total + (_HD_WEIGHTS[name] + 2.0 * same) * mean
    return total.mean()


def adaptive_l1_loss(fake: torch.Tensor, photo: torch.Tensor, same_style: torch.Tensor) -> torch.Tensor:
    """Eq. 6 on the pixels (the identity in place of the VGG layers): per sample, sum |G - z|
    (weight 1 per element) when (z, I) are style-consistent, the mean (1/M) otherwise; mean
    over the batch."""
    same = same_style.to(fake.dtype).reshape(-1)
    per = (fake - photo.detach()).abs().flatten(1)
    return torch.where(same > 0.5, per.sum(1), per.mean(1)).mean()


def roll_exemplar(exemplar: torch.Tensor, exemplar_label: Optional[torch.Tensor], gen: Optional[torch.Generator]
                  ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """(I, F(I)) of each sample circularly shifted by a random (dy, dx) and flipped at random
    (vertically, horizontally), one draw per sample shared by I and F(I) so they stay aligned
    (exact: no resampling). Random numbers come from `gen` on the CPU."""
    b, _, h, w = exemplar.shape
    r = torch.rand(b, 4, generator=gen, dtype=torch.float64)
    outs, labs = [], []
    for i in range(b):
        shift = (int(r[i, 0] * h), int(r[i, 1] * w))
        dims = [d for d, flip in ((1, r[i, 2] < 0.5), (2, r[i, 3] < 0.5)) if flip]

        def move(t):
            t = t.roll(shift, (1, 2))
            return t.flip(dims) if dims else t
        outs.append(move(exemplar[i]))
        if exemplar_label is not None:
            labs.append(move(exemplar_label[i]))
    return torch.stack(outs), (torch.stack(labs) if exemplar_label is not None else None)


def style_discriminator(cfg: Pix2PixSCConfig, width: int) -> PatchDiscriminator:
    """D_SC: a PatchGAN on [image, I] (6 channels), or [x, image, F(I), I] with sc_disc_labels."""
    return PatchDiscriminator(6 + (2 * cfg.label_channels if cfg.sc_disc_labels else 0), width, cfg.disc_layers,
                              spectral_norm=False)


def style_discrimination(d_sc: nn.Module, image: torch.Tensor, reference: torch.Tensor,
                         label: Optional[torch.Tensor] = None, reference_label: Optional[torch.Tensor] = None
                         ) -> torch.Tensor:
    """D_SC's patch map on (image, reference); with labels ([x, image, F(I), I]) when given."""
    parts = [image, reference] if label is None else [label.to(image.dtype), image, reference_label.to(image.dtype),
                                                      reference]
    return d_sc(torch.cat(parts, 1))[-1]



class Pix2PixSCObjective(Objective):
    """Eq. 7 with the code's update order (G, then D_R and D_SC on the same forward pass).

    Terms: adv (L_StdAdv on D_R, LSGAN), sc_adv (L_SCAdv on D_SC, times the schedule's multiplier),
    sc (L_SC, VGG). Paper weights 1 / 10 / 10 (lambda_1 = lambda_2 = 10). D losses as the code:
    0.5 (fake + real) for D_R; 0.5 (fake + inconsistent + consistent) for D_SC.
    l1 (weight 0: not in the paper): Eq. 6 on the pixels instead of VGG features, sum |G - z|
    for a style-consistent (z, I), the mean for an inconsistent one (`adaptive_l1_loss`); a
    stand-in for L_SC where no ImageNet VGG19 may be had, and about twice as fast at 64 px
    without the VGG. At the cpu64 scale it measured no better than L_SC on a random VGG
    (bench/results/cpu/pix2pixsc64_diagnosis.json)."""

    loss_names = ("adv", "sc_adv", "sc", "l1")
    default_weights = dict(adv=1.0, sc_adv=10.0, sc=10.0, l1=0.0)
    vgg_losses = ("sc",)
    gan_losses = ("adv", "sc_adv")
    ddp_find_unused_parameters = False   # every generator parameter is used at every step

    def build_discriminators(self):
        m, c = self.model.cfg, self.cfg
        k = m.label_channels
        ds = {}
        if self.on("adv"):
            ds["d_real"] = PatchDiscriminator(k + 3, c.disc_width, m.disc_layers, spectral_norm=False)
        # D_SC trains from step 0 even while L_SCAdv is off for G (the code's schedule)
        if self.on("sc_adv"):
            ds["d_style"] = style_discriminator(m, c.disc_width)
        for d in ds.values():
            _init_normal(d)
        return ds

    def _vgg_features(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        m = self.model.cfg
        if m.vgg_input == "code":
            if x.shape[-1] < 224 or x.shape[-2] < 224:
                x = F.interpolate(x, size=(224, 224), mode="bilinear", align_corners=False)
            v = self.vgg.vgg
            if v.input_format == "torchvision":    # so that normalize() hands the VGG x itself
                x = 2 * (x * v.std.to(x.dtype) + v.mean.to(x.dtype)) - 1
            else:                                   # caffe: normalize(x') = (flip((x'+1)/2) - mean) * 255
                x = 2 * (x.flip(1) / 255.0 + v.caffe_bgr_mean.to(x.dtype)).flip(1) - 1
        return self.vgg.features(x, m.sc_layers)

    def _pairs(self, batch, image, exemplar):
        """(photo z, same_style, consistent, inconsistent) of the batch (see the module docstring)."""
        photo = batch.get("photo", image)
        if "same_style" in batch:
            same = batch["same_style"].to(image.dtype).reshape(-1)
        else:
            same = torch.ones(image.shape[0], dtype=image.dtype, device=image.device)
        consistent = batch.get("consistent", exemplar)
        if "inconsistent" in batch:
            inconsistent = batch["inconsistent"]
        else:
            if image.shape[0] < 2:
                raise ValueError("pix2pixSC: without 'inconsistent' frames in the batch (a video source has them), "
                                 "D_SC takes another sample's exemplar as the inconsistent one: batch_size must be "
                                 ">= 2")
            inconsistent = exemplar.roll(1, 0)
        return photo, same, consistent, inconsistent

    def generator_terms(self, batch, step: int, gen: torch.Generator):
        label, image, exemplar, exemplar_label = self.inputs(batch, gen)
        photo, same, consistent, inconsistent = self._pairs(batch, image, exemplar)
        m = self.model.cfg
        g_exemplar, g_exemplar_label = exemplar, exemplar_label
        if m.exemplar_roll and self.model.training:
            g_exemplar, g_exemplar_label = roll_exemplar(exemplar, exemplar_label, gen)
        fake = self.G(label, g_exemplar, g_exemplar_label)
        terms = {}
        if self.on("adv"):
            terms["adv"] = lsgan_loss(self.D("d_real")(torch.cat([label.to(fake.dtype), fake], 1))[-1], True)
        if self.on("sc_adv"):
            mult = m.sc_adv_multiplier(step, self.cfg.steps)
            if mult:
                lab = (label, exemplar_label) if m.sc_disc_labels else (None, None)
                pred = style_discrimination(self.D("d_style"), fake, exemplar, lab[0], lab[1])
                terms["sc_adv"] = mult * lsgan_loss(pred, True)
        if self.on("l1"):
            terms["l1"] = adaptive_l1_loss(fake, photo, same)
        if self.on("sc") and self.vgg is not None:
            with torch.no_grad():
                real_f = self._vgg_features(photo)
            terms["sc"] = semantic_consistency_loss(self._vgg_features(fake), real_f, same, m.sc_loss)
        visuals = dict(label=label, exemplar=exemplar, fake=fake, image=photo, exemplar_label=exemplar_label,
                       consistent=consistent, inconsistent=inconsistent)
        return self.total(terms), terms, visuals

    def discriminator_terms(self, visuals, step: int):
        m = self.model.cfg
        label, fake, photo, exemplar = visuals["label"], visuals["fake"].detach(), visuals["image"], visuals["exemplar"]
        terms = {}
        loss = 0.0
        if "d_real" in self.discriminators:
            d = self.D("d_real")
            lab = label.to(fake.dtype)
            terms["real"] = 0.5 * (lsgan_loss(d(torch.cat([lab, fake], 1))[-1], False)
                                   + lsgan_loss(d(torch.cat([lab, photo], 1))[-1], True))
            loss = loss + terms["real"]
        if "d_style" in self.discriminators:
            d = self.D("d_style")
            # pairs (first, second): the photo against a frame of its own clip / of another clip,
            # the output against its exemplar (Eq. 5)
            lab = (label, visuals["exemplar_label"]) if m.sc_disc_labels else (None, None)
            f = style_discrimination(d, fake, exemplar, *lab)
            lab_c = (label, label) if m.sc_disc_labels else (None, None)
            c = style_discrimination(d, photo, visuals["consistent"], *lab_c)
            n = style_discrimination(d, photo, visuals["inconsistent"], *lab_c)
            terms["style"] = 0.5 * (lsgan_loss(f, False) + lsgan_loss(n, False) + lsgan_loss(c, True))
            loss = loss + terms["style"]
        return loss, terms


# ---- registry entry --------------------------------------------------------------------------------

def run(model: Pix2PixSC, label, exemplar, exemplar_label=None, visuals=()) -> dict:
    return dict(fake=model(label, exemplar, exemplar_label if model.cfg.exemplar_label else None))


def style_accuracy(model: Pix2PixSC, payload, dataset, device, limit: int = 200,
                   batch_size: int = 16) -> Dict[str, float]:
    """D_SC's accuracy at telling held-out style-consistent real pairs (photo, a frame of its own
    clip within T) from inconsistent ones (photo, a frame of another clip): a pair is called
    consistent when the mean of D_SC's patch map exceeds 0.5 (the LSGAN targets are 1 and 0).
    Empty when the checkpoint holds no D_SC or the samples carry no such pairs."""
    state = payload.get("d_style")
    if state is None or len(dataset) == 0 or "consistent" not in dataset[0]:
        return {}
    m = model.cfg
    d = style_discriminator(m, (payload.get("train_config") or {}).get("disc_width", 64))
    d.load_state_dict(state)
    d.to(device).eval()
    right = {"consistent": 0, "inconsistent": 0}
    n = min(limit, len(dataset))
    with torch.no_grad():
        for start in range(0, n, batch_size):
            items = [dataset[i] for i in range(start, min(n, start + batch_size))]
            photo = torch.stack([s.get("photo", s["image"]) for s in items]).to(device)
            lab = torch.stack([s["label"] for s in items]).to(device) if m.sc_disc_labels else None
            for key, want in (("consistent", True), ("inconsistent", False)):
                ref = torch.stack([s[key] for s in items]).to(device)
                score = style_discrimination(d, photo, ref, lab, lab).flatten(1).mean(1)
                right[key] += int(((score > 0.5) == want).sum())
    return {"style_accuracy": (right["consistent"] + right["inconsistent"]) / (2.0 * n),
            "style_accuracy_consistent": right["consistent"] / float(n),
            "style_accuracy_inconsistent": right["inconsistent"] / float(n), "style_pairs": float(n)}


PRESETS = {
    # the paper (Sec. 4.1, App. B-C) at 256 px: ngf 64, 4 downsamples, 9 blocks, 70x70 PatchGANs,
    # Adam 2e-4 (0.5, 0.999), batch 1; L_SCAdv on after the first quarter, the second half decays
    "pix2pixsc-paper": dict(
        model="pix2pixsc", dataset="synthetic-video", size=256, batch_size=1, lr_g=2e-4, lr_d=2e-4,
        betas=(0.5, 0.999), supervision="pair", disc_width=64, steps=1_000_000, lr_decay_steps=0.5,
        model_options=dict(width=64, downsamples=4, blocks=9, disc_layers=4),
    ),
    # 10 CPU minutes at 64 px (spec (g)): c7s1-16, d32 .. d128, R128 x 3; 34x34 PatchGANs of width 32;
    # batch 4; relu1_1 .. relu3_1 at native size; the paper's L_SC. Data: consistent frames anywhere in
    # the clip (the official script's rule; within 10 frames the slow synthetic motion lets G copy the
    # exemplar, measured: 11.1 dB vs 12.4 dB after 1000 steps) with faster motion, and half of the
    # exemplars from the photo's own clip (the script's 0.3 leaves too few reconstruction targets).
    # A departure from the paper's generator: region_style mean_std with its skip (see
    # Pix2PixSCConfig; 3000 steps, one core: 22.81 dB against 18.58 without the skip and 12.63
    # with the paper's concatenation alone; class means 13.24)
    "pix2pixsc-cpu64": dict(
        model="pix2pixsc", dataset="synthetic-video", size=64, batch_size=4, lr_g=2e-4, lr_d=2e-4,
        betas=(0.5, 0.999), supervision="pair", disc_width=32, steps=3000, lr_decay_steps=0.5,
        data_options=dict(window=29, speed=1.5, spin=0.05, same_clip_probability=0.5),
        model_options=dict(width=16, downsamples=3, blocks=3, disc_layers=3,
                           sc_layers=("relu1_1", "relu2_1", "relu3_1"), region_style="mean_std",
                           region_style_skip=True),
        checkpoint_every=250, image_every=250,
    ),
}

SPEC = register_model(ModelSpec(
    name="pix2pixsc",
    config=Pix2PixSCConfig,
    generator=Pix2PixSC,
    objective=Pix2PixSCObjective,
    supervision=("pair", "pseudo"),
    unpaired_supervision="pseudo",
    run=run,
    needs_exemplar_label=lambda cfg: cfg.exemplar_label,
    size_multiple=lambda cfg: 2 ** cfg.downsamples,
    presets=PRESETS,
    extra_metrics=style_accuracy,
    description="pix2pixSC (Wang et al. 2019): pix2pixHD generator on [x, F(I), I], D_R + style-consistency D_SC "
                "(LSGAN), adaptive VGG loss; trained on video frame pairs",
))
