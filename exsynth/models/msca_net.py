"""MSCA-Net: masked spatial-channel attention for example-guided scene synthesis.

Reads top-down like the paper's Fig. 2 (scales i = 0 (finest, image size) ... L (coarsest)):

    exemplar x_2 ──► VGG19 relu{1..5}_1 (frozen) ──► 1x1 W_x^(i) ─────────► F_x2^(i)  (Eq. 1)
                     (or a light trainable conv encoder)                       │
    label c_1 ──► label pyramid c_1^(i) ─┐  shared 1x1 convs, coarse→fine  ─► F_c1^(i)  (Eq. 2)
    label c_2 ──► label pyramid c_2^(i) ─┘  (LReLU(W_c [↑F^(i+1), c^(i)])) ─► F_c2^(i)  (Eq. 3)
                                                                               │
            MSCAModule_i (K = 8,16,16,16,16; feature masking) (Eq. 4-8) ◄──────┘
                                                                               │
                                                                               ▼ F_x1^(i)
    SPADE synthesis, coarse → fine: conv([F_x1^(L), F_c1^(L)]) ─► ResBlk_L ─► ↑ ─► ResBlk_{L-1} ...
    each ResBlk's (PN-)SPADE layers are conditioned on [F_x1^(i), F_c1^(i)] ─► conv ─► tanh ─► x̂

Self-supervision (Sec. 3.4, Eq. 9-12): `cross_reconstruction_crops` cuts two patches of
one image, `self_supervised_passes` runs the generator on the patch cross-reconstruction
(x_p from c_p and exemplar x_q, and vice versa) and the global self-reconstruction (x from c
and exemplar x), `reconstruction_losses` gives their L1 (+ optional perceptual) terms;
`MSCAObjective` is Eq. 11: L_spade (VGG and GAN feature matching) and the GAN terms of the
exemplar-conditioned discriminator D(x_p, c_p, x_q, c_q) on both tasks, with the paper's
one generator update per 5 discriminator updates. The registry entry and presets close the file.

Where exsynth departs from the paper, a config option names it and the `msca-cocostuff`
preset sets the paper's value (MSCANetConfig: synthesis_norm, synthesis_spectral_norm,
patch_gan, exemplar_discriminator, gan_mode, d_steps_per_g, late_crop, patch_both_directions,
vgg_loss_layers, gan_feat_sum_layers;
the loss weights l1 and feat; the TrainConfig's learning rates). Choices the paper leaves open:
- The synthesis starts from a conv of the coarsest [F_x1^(L), F_c1^(L)] (no noise z).
- Label maps are resized with nearest-neighbour interpolation.
- Patches too large to lie side by side (Sec. 4's 384 of 512) overlap: each is placed
  uniformly on its own (the appendix with the paper's patch sampling is not available).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..losses.gan import gan_feature_matching_loss, hinge_d_loss, hinge_g_loss
from ..losses.objective import Objective
from ..losses.perceptual import STYLE_LAYERS
from ..nn import MSCAModule, load_vgg19
from ..nn.blocks import NORMS, MultiscalePatchDiscriminator, SPADEResBlock
from ..registry import ModelSpec, register_model
from ..visuals import coordinate_image

__all__ = [
    "MSCANetConfig",
    "MSCANet",
    "LabelPyramidEncoder",
    "LightImageEncoder",
    "VGGImageEncoder",
    "CropPair",
    "cross_reconstruction_crops",
    "CrossReconstruction",
    "self_supervised_passes",
    "reconstruction_losses",
    "adversarial_g_loss",
    "adversarial_d_loss",
    "msca_warp",
    "MSCAObjective",
    "SPEC",
]

VGG_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
VGG_CHANNELS = (64, 128, 256, 512, 512)
GAN_MODES = ("hinge", "original")


@dataclass
class MSCANetConfig:
    """Options of MSCA-Net. Paper: 5 scales (L = 4), K = 8,16,16,16,16, VGG19 features.

    label_channels: classes of the one-hot label maps (set from the number of classes).
    image_channels: channels of the exemplar and the output (3).
    num_scales: scales of the label / feature pyramid (5 in the paper).
    masking: the feature-masking gate of each MSCA module (Eq. 7-8).
    backend: kernel backend of the fused ops ("auto", "reference", "cpu", "triton", "cuda").
    width: base channels of the synthesis decoder (scale i has width * min(2**i, 8) channels)
        and of the light image encoder.
    feature_channels: N, the channels F_x2^(i) is compressed to by W_x^(i) (None -> width).
    label_feature_channels: M1 = M2, channels of F_c^(i) (None -> width).
    ks: number of attention maps K per scale, finest first; len(ks) == num_scales.
    use_vgg: frozen VGG19 (relu1_1..relu5_1) image features; False -> a small trainable
        conv encoder (tests, light CPU training).
    vgg_path: local VGG19 weights (see exsynth.nn.load_vgg19; set from --vgg); None -> random
        init with a warning.
    spade_hidden: hidden channels of each PN-SPADE condition encoder.
    attention_logit_scale, attention_matched_init: see exsynth.nn.MSCAModule (1.0 / False
        is the paper's form; both speed up how fast the attention maps specialise).
    attention_decoder: add Sec. 4's lightweight decoders (a 1x1 conv per scale from
        [F_x1, F_c1] to the ground truth's feature there) for attention pre-training; see
        `MSCANet.attention_pretrain_loss`. They are not used to synthesize.
    synthesis_norm: the normalisation inside the synthesis net's SPADE layers: "pono"
        (exsynth's PN-SPADE: batch-independent, the fused op), "batch" (the paper's SPADE,
        Sec. 3.3: parameter-free batch norm) or "instance".
    synthesis_spectral_norm: spectral norm on the synthesis resblocks' convs (SPADE's generator,
        the paper's backbone).
    crop: side of the cross-reconstruction patches as a fraction of the image's shorter side,
        rounded down to a multiple of 2**(num_scales - 1) (Sec. 4: 256 of 512, 0.5).
    late_crop: the patch side (same unit) from `late_crop_start` on (Sec. 4: 384 of 512 after
        20 of the 40 epochs, 0.75); None: `crop` throughout. Patches too large to lie side by
        side overlap.
    late_crop_start: when late_crop takes over: a fraction (< 1) of the run or a whole step.
    patch_both_directions: the patch task reconstructs both ways, x_p from x_q and x_q from
        x_p, averaged (exsynth's; one more generator pass); False: Eq. 9 as written.
    patch_gan: Eq. 11's GAN and GAN feature-matching terms on the patch cross-reconstruction
        too; False: on the global self-reconstruction only.
    exemplar_discriminator: the discriminator also sees the exemplar and its label,
        D(x, c, x_exemplar, c_exemplar) as in Eq. 11; False: D(x, c).
    gan_mode: "hinge" (SPADE's code default) or "original" (Eq. 11's log D + log(1 - D); the
        generator minimises the non-saturating -log D(fake), as SPADE's "original" mode).
    d_steps_per_g: discriminator steps per generator step (Sec. 4, "the weights of generator
        are updated every 5 iterations": 5); the generator steps on the first of each cycle
        (after any attention pre-training). Needs a GAN term when > 1.
    vgg_loss_layers: the VGG feature-matching term's layers. "cocosnet": relu1_2..relu5_2
        (weights 1/32..1, exsynth's shared loss); "spade": relu1_1..relu5_1 with the same
        weights, SPADE's VGGLoss, which Eq. 11's L_spade takes from SPADE.
    gan_feat_sum_layers: GAN feature matching summed over each scale's discriminator layers
        (SPADE's GAN_Feat_loss, so L_spade's); False: averaged over them (about 1/4 as strong
        with 4 layers).
    Inputs must have height and width divisible by 2**(num_scales - 1).
    """

    label_channels: int
    image_channels: int = 3
    width: int = 64
    ks: Tuple[int, ...] = (8, 16, 16, 16, 16)
    num_scales: int = 5
    masking: bool = True
    vgg_path: Optional[str] = None
    use_vgg: bool = True
    backend: str = "auto"
    feature_channels: Optional[int] = None
    label_feature_channels: Optional[int] = None
    spade_hidden: int = 128
    attention_logit_scale: float = 1.0
    attention_matched_init: bool = False
    attention_decoder: bool = False
    synthesis_norm: str = "pono"
    synthesis_spectral_norm: bool = False
    crop: float = 0.5
    late_crop: Optional[float] = None
    late_crop_start: float = 0.5
    patch_both_directions: bool = True
    patch_gan: bool = False
    exemplar_discriminator: bool = False
    gan_mode: str = "hinge"
    d_steps_per_g: int = 1
    vgg_loss_layers: str = "cocosnet"
    gan_feat_sum_layers: bool = False

    def __post_init__(self):
        self.ks = tuple(int(k) for k in self.ks)
        if len(self.ks) != self.num_scales:
            raise ValueError(f"MSCANetConfig: len(ks)={len(self.ks)} must equal num_scales={self.num_scales}")
        if self.use_vgg and not 1 <= self.num_scales <= len(VGG_LAYERS):
            raise ValueError(f"MSCANetConfig: with use_vgg, num_scales must be in 1..{len(VGG_LAYERS)}")
        if self.use_vgg and self.image_channels != 3:
            raise ValueError("MSCANetConfig: use_vgg needs image_channels == 3")
        if self.synthesis_norm not in NORMS:
            raise ValueError(f"MSCANetConfig: synthesis_norm must be one of {NORMS}, got {self.synthesis_norm!r}")
        for name in ("crop", "late_crop"):
            value = getattr(self, name)
            if value is not None and not 0 < value <= 1:
                raise ValueError(f"MSCANetConfig: {name} must be a fraction of the shorter side in (0, 1], "
                                 f"got {value}")
        start = self.late_crop_start
        if not (0 < start < 1 or (float(start).is_integer() and start >= 1)):
            raise ValueError(f"MSCANetConfig: late_crop_start must be a fraction of the run in (0, 1) or a whole "
                             f"step number >= 1, got {start}")
        if self.gan_mode not in GAN_MODES:
            raise ValueError(f"MSCANetConfig: gan_mode must be one of {GAN_MODES}, got {self.gan_mode!r}")
        if self.vgg_loss_layers not in ("cocosnet", "spade"):
            raise ValueError(f"MSCANetConfig: vgg_loss_layers must be 'cocosnet' or 'spade', got {self.vgg_loss_layers!r}")
        if int(self.d_steps_per_g) != self.d_steps_per_g or self.d_steps_per_g < 1:
            raise ValueError(f"MSCANetConfig: d_steps_per_g must be a whole number >= 1, got {self.d_steps_per_g}")

    @property
    def n_feat(self) -> int:
        return self.feature_channels or self.width

    @property
    def m_feat(self) -> int:
        return self.label_feature_channels or self.width

    def decoder_channels(self, i: int) -> int:
        return self.width * min(2 ** i, 8)

    def crop_fraction(self, step: int, steps: int) -> float:
        """The patch side (a fraction of the shorter side) at `step` of a `steps`-step run."""
        if self.late_crop is None:
            return self.crop
        start = round(self.late_crop_start * steps) if self.late_crop_start < 1 else int(self.late_crop_start)
        return self.late_crop if step >= start else self.crop

    def patch_side(self, height: int, width: int, fraction: float) -> int:
        """Pixels of a patch `fraction` of the shorter side, rounded down to the pyramid's multiple."""
        multiple = 2 ** (self.num_scales - 1)
        return max(multiple, int(min(height, width) * fraction) // multiple * multiple)


# ---- feature extraction (Eq. 1-3) ----------------------------------------------------------------

class VGGImageEncoder(nn.Module):
    """Frozen VGG19 relu{i+1}_1 at scale i (stride 2**i), then 1x1 W_x^(i) (Eq. 1)."""

    def __init__(self, cfg: MSCANetConfig):
        super().__init__()
        self.layers = VGG_LAYERS[: cfg.num_scales]
        self.vgg = load_vgg19(cfg.vgg_path)
        for p in self.vgg.parameters():
            p.requires_grad_(False)
        self.vgg.eval()
        self.proj = nn.ModuleList(nn.Conv2d(c, cfg.n_feat, 1) for c in VGG_CHANNELS[: cfg.num_scales])

    def train(self, mode: bool = True):
        super().train(mode)
        self.vgg.eval()  # frozen backbone stays in eval mode
        return self

    def forward(self, image: torch.Tensor) -> List[torch.Tensor]:
        with torch.no_grad():
            feats = self.vgg(image, self.layers)
        return [w(feats[name]) for w, name in zip(self.proj, self.layers)]


class LightImageEncoder(nn.Module):
    """Trainable stand-in for VGG: conv stages at strides 1, 2, 4, ..., then 1x1 W_x^(i)."""

    def __init__(self, cfg: MSCANetConfig):
        super().__init__()
        w = cfg.width
        stages, cin = [], cfg.image_channels
        for i in range(cfg.num_scales):
            cout = w * min(2 ** i, 8)
            stride = 1 if i == 0 else 2
            stages.append(nn.Sequential(
                nn.Conv2d(cin, cout, 3, stride, padding=1), nn.LeakyReLU(0.2),
                nn.Conv2d(cout, cout, 3, padding=1), nn.LeakyReLU(0.2),
            ))
            cin = cout
        self.stages = nn.ModuleList(stages)
        self.proj = nn.ModuleList(nn.Conv2d(cfg.decoder_channels(i), cfg.n_feat, 1)
                                  for i in range(cfg.num_scales))

    def forward(self, image: torch.Tensor) -> List[torch.Tensor]:
        out, h = [], image
        for stage, w in zip(self.stages, self.proj):
            h = stage(h)
            out.append(w(h))
        return out


class LabelPyramidEncoder(nn.Module):
    """Eq. 2-3: F^(L) = LReLU(W_c^(L) c^(L)); F^(i) = LReLU(W_c^(i) [↑F^(i+1), c^(i)]).

    1x1 convs, x2 bilinear upsampling; one instance is shared by c_1 and c_2.
    Returns features finest (i = 0) first.
    """

    def __init__(self, cfg: MSCANetConfig):
        super().__init__()
        m, L = cfg.m_feat, cfg.num_scales - 1
        self.num_scales = cfg.num_scales
        self.convs = nn.ModuleList(
            nn.Conv2d(cfg.label_channels + (0 if i == L else m), m, 1) for i in range(cfg.num_scales)
        )

    def forward(self, label: torch.Tensor) -> List[torch.Tensor]:
        H, W = label.shape[2:]
        feats: List[Optional[torch.Tensor]] = [None] * self.num_scales
        prev = None
        for i in reversed(range(self.num_scales)):
            c_i = F.interpolate(label, size=(H >> i, W >> i), mode="nearest") if i else label
            x = c_i if prev is None else torch.cat(
                [F.interpolate(prev, size=c_i.shape[2:], mode="bilinear", align_corners=False), c_i], 1)
            prev = F.leaky_relu(self.convs[i](x), 0.2)
            feats[i] = prev
        return feats  # type: ignore[return-value]


# ---- synthesis (Sec. 3.3) ----------------------------------------------------------------------

class SynthesisNet(nn.Module):
    """Coarse-to-fine SPADE decoder conditioned at scale i on [F_x1^(i), F_c1^(i)]."""

    def __init__(self, cfg: MSCANetConfig):
        super().__init__()
        L = cfg.num_scales - 1
        cond = cfg.n_feat + cfg.m_feat
        self.head = nn.Conv2d(cond, cfg.decoder_channels(L), 3, padding=1)
        self.blocks = nn.ModuleList(
            SPADEResBlock(cfg.decoder_channels(min(i + 1, L)), cfg.decoder_channels(i), cond,
                          cfg.spade_hidden, norm=cfg.synthesis_norm, spectral_norm=cfg.synthesis_spectral_norm,
                          backend=cfg.backend)
            for i in range(cfg.num_scales)
        )  # blocks[i] runs at scale i; its input comes from scale i+1 (or the head at L)
        self.to_image = nn.Conv2d(cfg.decoder_channels(0), cfg.image_channels, 3, padding=1)

    def forward(self, conds: Sequence[torch.Tensor]) -> torch.Tensor:
        L = len(conds) - 1
        h = self.head(conds[L])
        for i in reversed(range(L + 1)):
            if h.shape[2:] != conds[i].shape[2:]:
                h = F.interpolate(h, size=conds[i].shape[2:], mode="nearest")
            h = self.blocks[i](h, conds[i])
        return torch.tanh(self.to_image(F.leaky_relu(h, 0.2)))


# ---- the generator -----------------------------------------------------------------------------

class MSCANet(nn.Module):
    """forward(label c_1, exemplar x_2, exemplar_label c_2, return_attention=False)
    -> dict(fake (B, C, H, W) in [-1, 1], aligned=[F_x1^(i), finest first], label_features=[F_c1^(i)],
            attention=[(alpha, beta) each (B, K_i, H_i, W_i)] when requested).

    Labels are (B, label_channels, H, W) one-hot (or soft) maps; images are in [-1, 1].
    """

    def __init__(self, cfg: MSCANetConfig):
        super().__init__()
        self.cfg = cfg
        self.image_encoder = VGGImageEncoder(cfg) if cfg.use_vgg else LightImageEncoder(cfg)
        self.label_encoder = LabelPyramidEncoder(cfg)
        self.msca = nn.ModuleList(
            MSCAModule(cfg.n_feat, cfg.m_feat, cfg.m_feat, k=k, masking=cfg.masking, backend=cfg.backend,
                       logit_scale=cfg.attention_logit_scale, matched_init=cfg.attention_matched_init)
            for k in cfg.ks
        )
        self.synthesis = SynthesisNet(cfg)
        self.attention_decoder = None
        if cfg.attention_decoder:
            target = VGG_CHANNELS if cfg.use_vgg else (cfg.image_channels,) * cfg.num_scales
            self.attention_decoder = nn.ModuleList(
                nn.Conv2d(cfg.n_feat + cfg.m_feat, target[i], 1) for i in range(cfg.num_scales))

    def _check(self, label, exemplar, exemplar_label):
        cfg = self.cfg
        if label.dim() != 4 or label.shape[1] != cfg.label_channels:
            raise ValueError(f"MSCANet: label must be (B, {cfg.label_channels}, H, W), got {tuple(label.shape)}")
        if exemplar_label.dim() != 4 or exemplar_label.shape[1] != cfg.label_channels:
            raise ValueError(f"MSCANet: exemplar_label must be (B, {cfg.label_channels}, H, W), "
                             f"got {tuple(exemplar_label.shape)}")
        if exemplar.dim() != 4 or exemplar.shape[1] != cfg.image_channels:
            raise ValueError(f"MSCANet: exemplar must be (B, {cfg.image_channels}, H, W), got {tuple(exemplar.shape)}")
        if exemplar.shape[2:] != exemplar_label.shape[2:]:
            raise ValueError("MSCANet: exemplar and exemplar_label must have the same spatial size")
        f = 2 ** (cfg.num_scales - 1)
        for name, t in (("label", label), ("exemplar", exemplar)):
            if t.shape[2] % f or t.shape[3] % f:
                raise ValueError(f"MSCANet: {name} height and width must be divisible by {f}, "
                                 f"got {tuple(t.shape[2:])}")

    def extract_features(self, label, exemplar, exemplar_label):
        """Eq. 1-3: (F_x2, F_c1, F_c2), lists finest first."""
        return self.image_encoder(exemplar), self.label_encoder(label), self.label_encoder(exemplar_label)

    def forward(self, label: torch.Tensor, exemplar: torch.Tensor, exemplar_label: torch.Tensor,
                return_attention: bool = False, decode_attention: bool = False,
                grad_synthesis: bool = True) -> Dict[str, object]:
        """decode_attention: also run the attention decoders (out["attention_decoded"]), inside
        forward so that multi-process training sees their parameters used. grad_synthesis=False
        synthesizes without autograd (attention pre-training trains only the attention)."""
        self._check(label, exemplar, exemplar_label)
        f_x2, f_c1, f_c2 = self.extract_features(label, exemplar, exemplar_label)
        aligned, attention, conds = [], [], []
        for i, msca in enumerate(self.msca):
            fx2, fc2 = f_x2[i], f_c2[i]
            if fx2.shape[2:] != f_c1[i].shape[2:]:  # exemplar and target may differ in size
                fx2 = F.interpolate(fx2, size=f_c1[i].shape[2:], mode="bilinear", align_corners=False)
                fc2 = F.interpolate(fc2, size=f_c1[i].shape[2:], mode="bilinear", align_corners=False)
            res = msca(fx2, f_c1[i], fc2, return_attention=return_attention)
            if return_attention:
                fx1, alpha, beta = res
                attention.append((alpha, beta))
            else:
                fx1 = res
            aligned.append(fx1)
            conds.append(torch.cat([fx1, f_c1[i]], dim=1))
        with torch.set_grad_enabled(torch.is_grad_enabled() and grad_synthesis):
            fake = self.synthesis(conds)
        out: Dict[str, object] = dict(fake=fake, aligned=aligned, label_features=f_c1)
        if return_attention:
            out["attention"] = attention
        if decode_attention:
            if self.attention_decoder is None:
                raise ValueError("MSCANet: decode_attention needs attention_decoder=True")
            out["attention_decoded"] = self.decode_attention(aligned, f_c1)
        return out


    def decode_attention(self, aligned, label_features) -> List[torch.Tensor]:
        """Sec. 4's decoders: per scale, a 1x1 conv from [F_x1, F_c1] to a feature prediction."""
        return [dec(torch.cat([a, c], dim=1)) for dec, a, c in zip(self.attention_decoder, aligned, label_features)]

    def attention_pretrain_loss(self, out: Dict[str, object], image: torch.Tensor) -> torch.Tensor:
        """Sec. 4's attention pre-training: at every scale a 1x1 decoder reads [F_x1, F_c1] and
        must reproduce the ground truth's feature there (frozen VGG relu{i+1}_1 with the VGG
        encoder; the image average-pooled to that scale with the light encoder, whose own
        features are trained and would make a moving, collapsible target). Mean L1 over
        scales. `out` is this model's forward output for the ground truth's label."""
        if self.attention_decoder is None:
            raise ValueError("MSCANet: attention_pretrain_loss needs attention_decoder=True")
        aligned, f_c1 = out["aligned"], out["label_features"]
        if self.cfg.use_vgg:
            enc = self.image_encoder
            with torch.no_grad():
                feats = enc.vgg(image, enc.layers)
            targets = [feats[name] for name in enc.layers]
        else:
            targets = [F.adaptive_avg_pool2d(image, a.shape[2:]) for a in aligned]
        preds = out.get("attention_decoded") or self.decode_attention(aligned, f_c1)
        total = 0
        for pred, t in zip(preds, targets):
            if t.shape[2:] != pred.shape[2:]:
                t = F.interpolate(t, size=pred.shape[2:], mode="bilinear", align_corners=False)
            total = total + F.l1_loss(pred, t.detach())
        return total / len(aligned)


# ---- self-supervision (Sec. 3.4) ---------------------------------------------------------------

class CropPair(NamedTuple):
    """Two non-overlapping crops per sample; boxes are (B, 4) long tensors (top, left, h, w)."""

    x_p: torch.Tensor
    c_p: torch.Tensor
    x_q: torch.Tensor
    c_q: torch.Tensor
    box_p: torch.Tensor
    box_q: torch.Tensor


def _randint(n: int, generator: Optional[torch.Generator]) -> int:
    return int(torch.randint(n, (1,), generator=generator).item())


def _sample_pair(H: int, W: int, ch: int, cw: int, generator) -> Tuple[Tuple[int, int], Tuple[int, int]]:
    axes = [a for a, (s, c) in enumerate(((H, ch), (W, cw))) if s >= 2 * c]
    axis = axes[_randint(len(axes), generator)]
    S, c = (H, ch) if axis == 0 else (W, cw)
    # split axis: p anywhere a non-overlapping q exists, then q uniformly among those
    ps = [p for p in range(S - c + 1) if p >= c or p + 2 * c <= S]
    p = ps[_randint(len(ps), generator)]
    qs = [q for q in range(S - c + 1) if abs(q - p) >= c]
    q = qs[_randint(len(qs), generator)]
    S2, c2 = (W, cw) if axis == 0 else (H, ch)
    p2, q2 = _randint(S2 - c2 + 1, generator), _randint(S2 - c2 + 1, generator)
    return ((p, p2), (q, q2)) if axis == 0 else ((p2, p), (q2, q))


def cross_reconstruction_crops(image: torch.Tensor, label: torch.Tensor, crop, generator=None,
                               allow_overlap: bool = False) -> CropPair:
    """Cut two crops (x_p, c_p), (x_q, c_q) from each image for Eq. 9.

    crop: int or (h, w). Where two crops fit side by side along height or width they do not
    overlap: they are separated along a randomly chosen axis and placed uniformly otherwise.
    Where they do not fit (Sec. 4's 384 of 512), allow_overlap=True places each uniformly on
    its own; without it that is an error. Positions are drawn per sample from `generator`
    (deterministic given its seed).
    """
    ch, cw = (crop, crop) if isinstance(crop, int) else map(int, crop)
    B, _, H, W = image.shape
    if label.shape[0] != B or label.shape[2:] != image.shape[2:]:
        raise ValueError("cross_reconstruction_crops: image and label must share batch and spatial size")
    if ch < 1 or cw < 1 or ch > H or cw > W:
        raise ValueError(f"cross_reconstruction_crops: a {ch}x{cw} crop does not fit in a {H}x{W} image")
    side_by_side = H >= 2 * ch or W >= 2 * cw
    if not side_by_side and not allow_overlap:
        raise ValueError(f"cross_reconstruction_crops: two non-overlapping {ch}x{cw} crops do not fit "
                         f"in a {H}x{W} image (allow_overlap=True lets them overlap)")
    xs_p, cs_p, xs_q, cs_q, bp, bq = [], [], [], [], [], []
    for b in range(B):
        if side_by_side:
            (tp, lp), (tq, lq) = _sample_pair(H, W, ch, cw, generator)
        else:
            tp, lp = _randint(H - ch + 1, generator), _randint(W - cw + 1, generator)
            tq, lq = _randint(H - ch + 1, generator), _randint(W - cw + 1, generator)
        xs_p.append(image[b, :, tp:tp + ch, lp:lp + cw])
        cs_p.append(label[b, :, tp:tp + ch, lp:lp + cw])
        xs_q.append(image[b, :, tq:tq + ch, lq:lq + cw])
        cs_q.append(label[b, :, tq:tq + ch, lq:lq + cw])
        bp.append((tp, lp, ch, cw))
        bq.append((tq, lq, ch, cw))
    st = torch.stack
    return CropPair(st(xs_p), st(cs_p), st(xs_q), st(cs_q),
                    torch.tensor(bp, dtype=torch.long), torch.tensor(bq, dtype=torch.long))


class CrossReconstruction(NamedTuple):
    """One generator pass of the self-supervision: fake = G(label, exemplar, exemplar_label)
    reconstructs target; the discriminator of Eq. 11 judges (target or fake, label, exemplar,
    exemplar_label)."""

    fake: torch.Tensor
    target: torch.Tensor
    label: torch.Tensor
    exemplar: torch.Tensor
    exemplar_label: torch.Tensor


def self_supervised_passes(model: MSCANet, image: torch.Tensor, label: torch.Tensor, crop=None,
                           generator: Optional[torch.Generator] = None, forward: Optional[Callable] = None,
                           both_directions: bool = True, allow_overlap: bool = False
                           ) -> Tuple[List[CrossReconstruction], CrossReconstruction]:
    """Sec. 3.4's generator passes, in this order: the patch cross-reconstruction x̂_p =
    G(c_p, x_q, c_q) (Eq. 9), with both_directions also x̂_q = G(c_q, x_p, c_p), then the
    global self-reconstruction x̂ = G(c, x, c) (Eq. 10). Returns (patch passes, global pass).

    crop: patch side in pixels, or (h, w) (default: the model's `crop` fraction of the shorter
    side); allow_overlap: see `cross_reconstruction_crops`. forward: what to call (default
    `model`; a DistributedDataParallel wrapper of it under multi-process training).
    """
    forward = model if forward is None else forward
    if crop is None:
        crop = model.cfg.patch_side(image.shape[2], image.shape[3], model.cfg.crop)
    pair = cross_reconstruction_crops(image, label, crop, generator, allow_overlap=allow_overlap)
    patches = [CrossReconstruction(forward(pair.c_p, pair.x_q, pair.c_q)["fake"], pair.x_p, pair.c_p,
                                   pair.x_q, pair.c_q)]
    if both_directions:
        patches.append(CrossReconstruction(forward(pair.c_q, pair.x_p, pair.c_p)["fake"], pair.x_q, pair.c_q,
                                           pair.x_p, pair.c_p))
    whole = CrossReconstruction(forward(label, image, label)["fake"], image, label, image, label)
    return patches, whole


def _mean(values) -> torch.Tensor:
    values = list(values)
    return sum(values[1:], values[0]) / len(values)


def reconstruction_losses(model: MSCANet, image: torch.Tensor, label: torch.Tensor, crop=None,
                          generator: Optional[torch.Generator] = None,
                          vgg_loss: Optional[Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = None,
                          lambda_global: float = 1.0, forward: Optional[Callable] = None) -> Dict[str, torch.Tensor]:
    """Reconstruction terms of Eq. 9-11 (without the GAN terms), from `self_supervised_passes`
    in both directions.

    patch_l1: mean over both directions of |G(c_p, x_q, c_q) - x_p|_1 and |G(c_q, x_p, c_p) - x_q|_1
    global_l1: |G(c, x, c) - x|_1
    patch_vgg / global_vgg: the same with `vgg_loss(fake, real)` when given.
    total: patch terms + lambda_global * global terms.
    fake: the global self-reconstruction G(c, x, c) (for GAN terms).
    crop: patch size (default: the model's `crop`, half the shorter side, rounded down to the
    model's multiple).
    """
    patches, whole = self_supervised_passes(model, image, label, crop, generator, forward)
    out = dict(
        patch_l1=_mean(F.l1_loss(p.fake, p.target) for p in patches),
        global_l1=F.l1_loss(whole.fake, image),
    )
    total = out["patch_l1"] + lambda_global * out["global_l1"]
    if vgg_loss is not None:
        out["patch_vgg"] = _mean(vgg_loss(p.fake, p.target) for p in patches)
        out["global_vgg"] = vgg_loss(whole.fake, image)
        total = total + out["patch_vgg"] + lambda_global * out["global_vgg"]
    out["total"] = total
    out["fake"] = whole.fake
    return out


# ---- training objective (Eq. 9-12, Sec. 4) -----------------------------------------------------

def msca_warp(attention, image: torch.Tensor) -> torch.Tensor:
    """An image carried to the target by one MSCA scale's attention (alpha, beta), each
    (B, K, h, w): out(p) = sum_k beta_k(p) sum_q alpha_k(q) image(q), image resized to (h, w).
    The feature-masking gate is left out: this shows where colours come from, not how much
    of each map the network keeps."""
    alpha, beta = attention
    B, K, h, w = alpha.shape
    img = F.interpolate(image.to(alpha.dtype), size=(h, w), mode="bilinear", align_corners=False)
    v = torch.einsum("bkq,bcq->bck", alpha.flatten(2), img.flatten(2))
    return torch.einsum("bck,bkp->bcp", v, beta.flatten(2)).reshape(B, -1, h, w)


def _logits(pred) -> List[torch.Tensor]:
    """The logit map of each scale of a multi-scale discriminator's output."""
    return [scale[-1] if isinstance(scale, (list, tuple)) else scale for scale in pred]


def adversarial_g_loss(fake_pred, mode: str) -> torch.Tensor:
    """The generator's GAN loss on D(fake), averaged over scales: "hinge" -E[D(fake)];
    "original" the non-saturating -E[log sigmoid(D(fake))] (Eq. 11's log form, as SPADE's
    "original" mode trains G)."""
    if mode == "hinge":
        return hinge_g_loss(fake_pred)
    if mode == "original":
        return _mean(F.softplus(-p).mean() for p in _logits(fake_pred))
    raise ValueError(f"adversarial_g_loss: mode must be one of {GAN_MODES}, got {mode!r}")


def adversarial_d_loss(real_pred, fake_pred, mode: str) -> torch.Tensor:
    """The discriminator's GAN loss, averaged over scales: "hinge" E[relu(1 - D(real))] +
    E[relu(1 + D(fake))]; "original" -E[log sigmoid(D(real))] - E[log(1 - sigmoid(D(fake)))]
    (Eq. 11's log D + log(1 - D), maximised by D)."""
    if mode == "hinge":
        return hinge_d_loss(real_pred, fake_pred)
    if mode == "original":
        return (_mean(F.softplus(-p).mean() for p in _logits(real_pred))
                + _mean(F.softplus(p).mean() for p in _logits(fake_pred)))
    raise ValueError(f"adversarial_d_loss: mode must be one of {GAN_MODES}, got {mode!r}")


class MSCAObjective(Objective):
    """MSCA-Net: "pair" supervision is L1 (+ VGG) of G(c, x_exemplar, c_exemplar) against the
    ground truth; "self" is Sec. 3.4's patch cross-reconstruction + global self-reconstruction
    (Eq. 9-11, `self_supervised_passes`), each with L1 (`l1`), VGG feature matching (`feat`)
    and, for the global pass and with the model's patch_gan for the patch passes too, the GAN
    terms (`adv`, `gan_feat`); patch terms are averaged over the patch passes, and the global
    task weighs lambda = 1 (Eq. 11). The discriminator is D(x, c), or with the model's
    exemplar_discriminator Eq. 11's D(x, c, x_exemplar, c_exemplar); its loss is the model's
    gan_mode; the generator steps once per d_steps_per_g discriminator steps. Sec. 4's
    attention pre-training: for the TrainConfig's `attn_pretrain_steps` first steps the only
    loss is `attn` (the attention decoders' feature reconstruction, needs the model option
    attention_decoder=True) and the discriminator rests; afterwards `attn` joins with its weight.

    Default weights are exsynth's (L1 1, VGG feature matching 1, GAN 1, GAN feature matching
    10); Eq. 11's (no L1, L_spade's VGG 10 and GAN feature matching 10, GAN 1) are the
    `msca-cocostuff` preset's."""

    loss_names = ("l1", "feat", "perc", "adv", "gan_feat", "attn")
    default_weights = dict(l1=1.0, feat=1.0, perc=0.0, adv=1.0, gan_feat=10.0, attn=0.0)

    def __init__(self, model, *args, **kw):
        self.gan_feat_sum_layers = model.cfg.gan_feat_sum_layers
        super().__init__(model, *args, **kw)
        m = model.cfg
        if m.use_vgg and m.vgg_path is None and not getattr(self.cfg, "allow_random_vgg", False):
            raise ValueError("msca's image encoder is a frozen ImageNet VGG19 (use_vgg): pass --vgg FILE, use a small "
                             "trainable encoder (--option use_vgg=false), or --allow-random-vgg (tests only: a "
                             "random VGG's features mean nothing)")
        self.attn_pretrain_steps = int(getattr(self.cfg, "attn_pretrain_steps", 0) or 0)
        if (self.on("attn") or self.attn_pretrain_steps) and self.model.attention_decoder is None:
            raise ValueError("the attn loss (attention pre-training) needs the model option attention_decoder=true")
        ratio = self.model.cfg.d_steps_per_g
        if ratio > 1 and not len(self.discriminators):
            raise ValueError(f"d_steps_per_g={ratio} trains the discriminator between generator steps, but no GAN "
                             f"term is on (the adv and gan_feat weights are 0); use d_steps_per_g=1")

    def vgg_options(self):
        if self.model.cfg.vgg_loss_layers == "spade":
            return dict(fm_layers=STYLE_LAYERS)   # relu1_1..relu5_1, weights 1/32..1
        return {}

    def build_discriminators(self) -> Dict[str, nn.Module]:
        """One multi-scale PatchGAN on (label, image), or with exemplar_discriminator on
        ([label, exemplar label], [image, exemplar]), when a GAN term is on."""
        if not any(self.on(k) for k in self.gan_losses):
            return {}
        c, m = self.cfg, self.model.cfg
        copies = 2 if m.exemplar_discriminator else 1
        return {"discriminator": MultiscalePatchDiscriminator(
            copies * c.num_classes, copies * m.image_channels, width=c.disc_width, n_layers=c.disc_layers,
            num_scales=c.disc_scales)}

    def pretraining(self, step: int) -> bool:
        return step < self.attn_pretrain_steps

    def generator_step(self, step: int) -> bool:
        """Every pre-training step; afterwards the first of every d_steps_per_g steps."""
        if self.pretraining(step):
            return True
        return (step - self.attn_pretrain_steps) % self.model.cfg.d_steps_per_g == 0

    def discriminate(self, image: torch.Tensor, task: CrossReconstruction):
        """The discriminator's output for `image` (the target or the fake) in the setting of `task`."""
        d = self.D("discriminator")
        if not self.model.cfg.exemplar_discriminator:
            return d(task.label, image)
        exemplar, exemplar_label = task.exemplar, task.exemplar_label
        if exemplar.shape[2:] != image.shape[2:]:   # a "pair" exemplar of another size
            exemplar = F.interpolate(exemplar, size=image.shape[2:], mode="bilinear", align_corners=False)
            exemplar_label = F.interpolate(exemplar_label, size=image.shape[2:], mode="nearest")
        return d(torch.cat([task.label, exemplar_label], 1), torch.cat([image, exemplar], 1))

    def _gan_task_terms(self, task: CrossReconstruction) -> Dict[str, torch.Tensor]:
        """adv and gan_feat of one pass against the frozen discriminator."""
        out = {}
        fake_pred = self.discriminate(task.fake, task)
        if self.on("adv"):
            out["adv"] = adversarial_g_loss(fake_pred, self.model.cfg.gan_mode)
        if self.on("gan_feat"):
            with torch.no_grad():
                real_pred = self.discriminate(task.target, task)
            out["gan_feat"] = gan_feature_matching_loss(fake_pred, real_pred, sum_layers=self.gan_feat_sum_layers)
        return out

    def _gan_terms(self, terms, whole: CrossReconstruction, patches: List[CrossReconstruction]) -> None:
        """Eq. 11's GAN terms: the global pass's, plus the mean of the patch passes'."""
        if not len(self.discriminators):
            return
        found = self._gan_task_terms(whole)
        if patches:
            per_patch = [self._gan_task_terms(p) for p in patches]
            found = {k: v + _mean(t[k] for t in per_patch) for k, v in found.items()}
        terms.update(found)

    def generator_terms(self, batch, step: int, gen: torch.Generator):
        terms = {}
        if self.pretraining(step):
            label, image, exemplar, exemplar_label = self.inputs(batch, gen)
            if self.supervision == "self":  # the image is its own exemplar
                exemplar, exemplar_label = image, label
            out = self.G(label, exemplar, exemplar_label, return_attention=True, decode_attention=True,
                         grad_synthesis=False)
            terms["attn"] = self.model.attention_pretrain_loss(out, image)
            with torch.no_grad():
                warped = msca_warp(out["attention"][0], exemplar)
            visuals = dict(label=label, exemplar=exemplar, warped=warped, fake=out["fake"].detach(), image=image)
            return terms["attn"], terms, visuals
        m = self.model.cfg
        if self.supervision == "self":
            label, image = batch["label"], batch["image"]
            crop = m.patch_side(image.shape[2], image.shape[3], m.crop_fraction(step, self.cfg.steps))
            patches, whole = self_supervised_passes(self.model, image, label, crop, gen, forward=self.G,
                                                    both_directions=m.patch_both_directions, allow_overlap=True)
            if self.on("l1"):
                terms["l1"] = _mean(F.l1_loss(p.fake, p.target) for p in patches) + F.l1_loss(whole.fake, image)
            if self.vgg is not None and self.on("feat"):
                feat = self.vgg.feature_matching
                terms["feat"] = _mean(feat(p.fake, p.target) for p in patches) + feat(whole.fake, image)
            exemplar, warped = image, None
            if self.on("attn"):  # one more global pass: the passes above keep their outputs
                terms["attn"] = self.model.attention_pretrain_loss(self.G(label, image, label, decode_attention=True),
                                                                   image)
            gan_patches = patches if m.patch_gan else []
        else:
            label, image, exemplar, exemplar_label = self.inputs(batch, gen)
            out = self.G(label, exemplar, exemplar_label, return_attention=True, decode_attention=self.on("attn"))
            whole = CrossReconstruction(out["fake"], image, label, exemplar, exemplar_label)
            with torch.no_grad():  # for the image grid: the exemplar carried by the finest attention
                warped = msca_warp(out["attention"][0], exemplar)
            if self.on("l1"):
                terms["l1"] = F.l1_loss(whole.fake, image)
            self.vgg_terms(terms, whole.fake, image)
            if self.on("attn"):
                terms["attn"] = self.model.attention_pretrain_loss(out, image)
            gan_patches = []
        self._gan_terms(terms, whole, gan_patches)
        visuals = dict(label=label, exemplar=exemplar, fake=whole.fake, image=image, global_pass=whole,
                       patch_passes=gan_patches)
        if warped is not None:
            visuals["warped"] = warped
        return self.total(terms), terms, visuals

    def discriminator_terms(self, visuals, step: int):
        """The model's gan_mode loss on the global pass (logged under the mode's name), plus the
        mean over the patch passes with patch_gan (logged as patch_<mode>)."""
        mode = self.model.cfg.gan_mode

        def loss(task: CrossReconstruction) -> torch.Tensor:
            return adversarial_d_loss(self.discriminate(task.target, task),
                                      self.discriminate(task.fake.detach(), task), mode)

        terms = {mode: loss(visuals["global_pass"])}
        if visuals["patch_passes"]:
            terms[f"patch_{mode}"] = _mean(loss(p) for p in visuals["patch_passes"])
        return sum(terms.values()), terms


# ---- registry entry ----------------------------------------------------------------------------

def run(model: MSCANet, label, exemplar, exemplar_label=None, visuals=()) -> dict:
    """Inference outputs: fake, warped (exemplar pixels carried by the finest-scale attention)
    and correspondence (the exemplar's coordinate image carried alike)."""
    out = model(label, exemplar, exemplar_label, return_attention=True)
    att = out["attention"][0]              # finest scale: alpha, beta (B, K, h, w) each
    res = dict(fake=out["fake"], warped=msca_warp(att, exemplar))
    if "correspondence" in visuals:
        h, w = att[0].shape[-2:]
        res["correspondence"] = msca_warp(att, coordinate_image(exemplar.shape[0], (h, w), exemplar.device,
                                                                exemplar.dtype))
    return res


PRESETS = {
    # 10 CPU minutes at 64 px: a light trainable encoder and the attention speed-ups
    "msca-cpu64": dict(
        model="msca", size=64, batch_size=8, lr_g=4e-4, lr_d=4e-4, betas=(0.5, 0.999),
        steps=1500,
        model_options=dict(width=16, use_vgg=False, spade_hidden=32, attention_logit_scale=100.0,
                           attention_matched_init=True),
        losses=dict(l1=10.0, feat=0.0, perc=0.0, adv=0.0, gan_feat=0.0),
        checkpoint_every=200, image_every=100,
    ),
    # The paper's COCO-stuff training (Zheng et al., ECCV 2020; Sec. 4 "Implementation Details",
    # Sec. 3.3-3.4, Eq. 9-11): images resized to 512 x 512, two 256 x 256 patches, 384 x 384 after
    # 20 of the 40 epochs; lr 0.0002 for G and D, G updated every 5 iterations; K = 8,16,16,16,16
    # on VGG19 features; SPADE synthesis (batch norm; spectral norm as SPADE's generator);
    # Eq. 11: x_p from x_q only, GAN terms of D(x_p, c_p, x_q, c_q) in the log form on both tasks,
    # L_spade = VGG + GAN feature matching at SPADE's weights (10, 10), lambda = 1, no pixel L1.
    # The paper does not state: the batch size (8 here), Adam's betas ((0.5, 0.999): SPADE's with
    # equal G and D rates), the discriminator (SPADE's: 2 scales, 4 layers, width 64), the
    # attention pre-training's length (so none; attn_pretrain_steps with attention_decoder=true
    # adds it). Its 40 epochs were over 34,698 filtered images; here over the data given.
    "msca-cocostuff": dict(
        model="msca", dataset="cocostuff", size=512, batch_size=8, epochs=40, lr_g=2e-4, lr_d=2e-4,
        betas=(0.5, 0.999), supervision="self", data_options=dict(load_size=512),
        disc_width=64, disc_layers=4, disc_scales=2,
        model_options=dict(use_vgg=True, ks=(8, 16, 16, 16, 16), synthesis_norm="batch",
                           synthesis_spectral_norm=True, crop=0.5, late_crop=0.75, late_crop_start=0.5,
                           patch_both_directions=False, patch_gan=True, exemplar_discriminator=True,
                           gan_mode="original", d_steps_per_g=5, vgg_loss_layers="spade", gan_feat_sum_layers=True),
        losses=dict(l1=0.0, feat=10.0, perc=0.0, adv=1.0, gan_feat=10.0, attn=0.0),
    ),
}

SPEC = register_model(ModelSpec(
    name="msca",
    config=MSCANetConfig,
    generator=MSCANet,
    objective=MSCAObjective,
    supervision=("pair", "self"),
    unpaired_supervision="self",
    run=run,
    needs_exemplar_label=lambda cfg: True,            # c_2 is an input of every MSCA module
    size_multiple=lambda cfg: 2 ** (cfg.num_scales - 1),  # the label / feature pyramid
    visuals=("warped", "correspondence"),
    unstored_prefixes=lambda cfg: ("image_encoder.vgg.",) if cfg.use_vgg and cfg.vgg_path is not None else (),
    presets=PRESETS,
    description="MSCA-Net (Zheng et al., ECCV 2020): masked spatial-channel attention at 5 scales + SPADE synthesis",
))
