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

Self-supervision (Sec. 3.4, Eq. 9-12): `cross_reconstruction_crops` cuts two
non-overlapping patches of one image, `reconstruction_losses` computes the patch
cross-reconstruction (x_p from c_p and exemplar x_q, and vice versa) and the global
self-reconstruction (x from c and exemplar x) L1 terms (+ optional perceptual terms);
`MSCAObjective` adds the GAN terms (Eq. 12). The registry entry and presets close the file.

Notes on choices the paper leaves open or that this package makes:
- The SPADE layers are `exsynth.nn.PNSPADE` (positional normalisation instead of
  SPADE's batch norm: batch-independent, and a fused op) inside `exsynth.nn.SPADEResBlock`.
- The synthesis starts from a conv of the coarsest [F_x1^(L), F_c1^(L)] (no noise z).
- Label maps are resized with nearest-neighbour interpolation.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..losses.objective import Objective
from ..nn import MSCAModule, load_vgg19
from ..nn.blocks import SPADEResBlock
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
    "reconstruction_losses",
    "msca_warp",
    "MSCAObjective",
    "SPEC",
]

VGG_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
VGG_CHANNELS = (64, 128, 256, 512, 512)


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

    def __post_init__(self):
        self.ks = tuple(int(k) for k in self.ks)
        if len(self.ks) != self.num_scales:
            raise ValueError(f"MSCANetConfig: len(ks)={len(self.ks)} must equal num_scales={self.num_scales}")
        if self.use_vgg and not 1 <= self.num_scales <= len(VGG_LAYERS):
            raise ValueError(f"MSCANetConfig: with use_vgg, num_scales must be in 1..{len(VGG_LAYERS)}")
        if self.use_vgg and self.image_channels != 3:
            raise ValueError("MSCANetConfig: use_vgg needs image_channels == 3")

    @property
    def n_feat(self) -> int:
        return self.feature_channels or self.width

    @property
    def m_feat(self) -> int:
        return self.label_feature_channels or self.width

    def decoder_channels(self, i: int) -> int:
        return self.width * min(2 ** i, 8)


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
                          cfg.spade_hidden, norm="pono", backend=cfg.backend)
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


def cross_reconstruction_crops(image: torch.Tensor, label: torch.Tensor, crop, generator=None) -> CropPair:
    """Cut two non-overlapping crops (x_p, c_p), (x_q, c_q) from each image for Eq. 9.

    crop: int or (h, w); the image must fit two crops side by side along height or width.
    Positions are drawn per sample from `generator` (deterministic given its seed):
    the crops are separated along a randomly chosen axis and placed uniformly otherwise.
    """
    ch, cw = (crop, crop) if isinstance(crop, int) else map(int, crop)
    B, _, H, W = image.shape
    if label.shape[0] != B or label.shape[2:] != image.shape[2:]:
        raise ValueError("cross_reconstruction_crops: image and label must share batch and spatial size")
    if ch < 1 or cw < 1 or ch > H or cw > W or (H < 2 * ch and W < 2 * cw):
        raise ValueError(f"cross_reconstruction_crops: two non-overlapping {ch}x{cw} crops do not fit "
                         f"in a {H}x{W} image")
    xs_p, cs_p, xs_q, cs_q, bp, bq = [], [], [], [], [], []
    for b in range(B):
        (tp, lp), (tq, lq) = _sample_pair(H, W, ch, cw, generator)
        xs_p.append(image[b, :, tp:tp + ch, lp:lp + cw])
        cs_p.append(label[b, :, tp:tp + ch, lp:lp + cw])
        xs_q.append(image[b, :, tq:tq + ch, lq:lq + cw])
        cs_q.append(label[b, :, tq:tq + ch, lq:lq + cw])
        bp.append((tp, lp, ch, cw))
        bq.append((tq, lq, ch, cw))
    st = torch.stack
    return CropPair(st(xs_p), st(cs_p), st(xs_q), st(cs_q),
                    torch.tensor(bp, dtype=torch.long), torch.tensor(bq, dtype=torch.long))


def reconstruction_losses(model: MSCANet, image: torch.Tensor, label: torch.Tensor, crop=None,
                          generator: Optional[torch.Generator] = None,
                          vgg_loss: Optional[Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = None,
                          lambda_global: float = 1.0, forward: Optional[Callable] = None) -> Dict[str, torch.Tensor]:
    """Reconstruction terms of Eq. 9-11 (without the GAN terms).

    patch_l1: mean over both directions of |G(c_p, x_q, c_q) - x_p|_1 and |G(c_q, x_p, c_p) - x_q|_1
    global_l1: |G(c, x, c) - x|_1
    patch_vgg / global_vgg: the same with `vgg_loss(fake, real)` when given.
    total: patch terms + lambda_global * global terms.
    fake: the global self-reconstruction G(c, x, c) (for GAN terms).
    crop: patch size (default: half the shorter side, rounded down to the model's multiple).
    forward: what to call for the three passes (default `model`; a DistributedDataParallel
    wrapper of it under multi-process training).
    """
    forward = model if forward is None else forward
    H, W = image.shape[2:]
    if crop is None:
        f = 2 ** (model.cfg.num_scales - 1)
        crop = max(f, (min(H, W) // 2) // f * f)
    pair = cross_reconstruction_crops(image, label, crop, generator)
    fake_p = forward(pair.c_p, pair.x_q, pair.c_q)["fake"]
    fake_q = forward(pair.c_q, pair.x_p, pair.c_p)["fake"]
    fake = forward(label, image, label)["fake"]
    out = dict(
        patch_l1=0.5 * (F.l1_loss(fake_p, pair.x_p) + F.l1_loss(fake_q, pair.x_q)),
        global_l1=F.l1_loss(fake, image),
    )
    total = out["patch_l1"] + lambda_global * out["global_l1"]
    if vgg_loss is not None:
        out["patch_vgg"] = 0.5 * (vgg_loss(fake_p, pair.x_p) + vgg_loss(fake_q, pair.x_q))
        out["global_vgg"] = vgg_loss(fake, image)
        total = total + out["patch_vgg"] + lambda_global * out["global_vgg"]
    out["total"] = total
    out["fake"] = fake
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


class MSCAObjective(Objective):
    """MSCA-Net: "pair" supervision is L1 (+ VGG) of G(c, x_exemplar, c_exemplar) against the
    ground truth; "self" is Sec. 3.4's patch cross-reconstruction + global self-reconstruction
    (Eq. 9-11, `reconstruction_losses`); both add the GAN terms (Eq. 12). Sec. 4's attention
    pre-training: for the TrainConfig's `attn_pretrain_steps` first steps the only loss is
    `attn` (the attention decoders' feature reconstruction, needs the model option
    attention_decoder=True) and the discriminator rests; afterwards `attn` joins with its weight.

    Paper weights (Eq. 9-12): L1 reconstruction 1, feature matching 1, GAN 1; attn off."""

    loss_names = ("l1", "feat", "perc", "adv", "gan_feat", "attn")
    default_weights = dict(l1=1.0, feat=1.0, perc=0.0, adv=1.0, gan_feat=10.0, attn=0.0)

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.attn_pretrain_steps = int(getattr(self.cfg, "attn_pretrain_steps", 0) or 0)
        if (self.on("attn") or self.attn_pretrain_steps) and self.model.attention_decoder is None:
            raise ValueError("the attn loss (attention pre-training) needs the model option attention_decoder=true")

    def pretraining(self, step: int) -> bool:
        return step < self.attn_pretrain_steps

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
        if self.supervision == "self":
            label, image = batch["label"], batch["image"]
            vgg = self.vgg.feature_matching if (self.vgg is not None and self.on("feat")) else None
            r = reconstruction_losses(self.model, image, label, generator=gen, vgg_loss=vgg, forward=self.G)
            terms["l1"] = r["patch_l1"] + r["global_l1"]
            if vgg is not None:
                terms["feat"] = r["patch_vgg"] + r["global_vgg"]
            fake, exemplar, warped = r["fake"], image, None
            if self.on("attn"):  # one more global pass: reconstruction_losses keeps its outputs
                terms["attn"] = self.model.attention_pretrain_loss(self.G(label, image, label, decode_attention=True),
                                                                   image)
        else:
            label, image, exemplar, exemplar_label = self.inputs(batch, gen)
            out = self.G(label, exemplar, exemplar_label, return_attention=True, decode_attention=self.on("attn"))
            fake = out["fake"]
            with torch.no_grad():  # for the image grid: the exemplar carried by the finest attention
                warped = msca_warp(out["attention"][0], exemplar)
            if self.on("l1"):
                terms["l1"] = F.l1_loss(fake, image)
            self.vgg_terms(terms, fake, image)
            if self.on("attn"):
                terms["attn"] = self.model.attention_pretrain_loss(out, image)
        self.gan_terms(terms, label, fake, image)
        visuals = dict(label=label, exemplar=exemplar, fake=fake, image=image)
        if warped is not None:
            visuals["warped"] = warped
        return self.total(terms), terms, visuals


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
