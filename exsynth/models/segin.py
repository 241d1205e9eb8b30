"""SEGIN (Huang, Liao, Kwong: "Semantic Example Guided Image-to-Image Translation", 2019).

Read top-down as the paper's Fig. 2:

1. Semantic match S (Sec. III-A, Eq. 1-2): VGG19 features of the input x (drawn as a sketch
   image) and of the reference r; for each x position the r position of highest cosine
   (`exsynth.ops.correlation_match`: no HW x HW matrix), then the matched delta x delta blocks of r
   copied into the auxiliary image W(x, r) (`block_copy`, one gather). Not trained.
2. Translation network N (Sec. III-B): a U-Net encoder over [x, W] (W's near-white holes
   marked -1 as the code does), a bottleneck of non-local blocks with residual blocks between,
   an upsample + conv decoder with skip connections and non-local blocks, and the
   segmentation head N_s on the bottleneck (multi-task learning, Sec. III-C).
3. Training (Sec. III-D, Fig. 4): W made from the ground truth y itself by patch shifting,
   pattern repeating and white holes (75 % of steps), or from the semantic match of x with y
   plus shifts and holes (25 %), in the code's proportions with its geometry scaled to the
   image size (`auxiliary_from_photo`, `auxiliary_from_warp`); losses Eq. 5-11.

Where the official code (github HideUnderBush/SEGIN, `train_holdon2.py`, `network_nonlocal_nfc.py`)
and the paper differ, the paper's choice is the default and the code's one option away:
`feature_loss` (L1 | code: mse), `tv_loss` (isotropic | code: squared), `label_flip_steps`
(None | code: flip the GAN labels on even epochs), `shared_weights` (the code reuses one
residual and one non-local block; the paper's figure draws distinct ones: default code, since
the paper does not say), `test_batch_stats` (the code never calls eval()). The code feeds N only
[x, W], not r (the paper says x, r and W; r reaches N only through W here too).
"""
from __future__ import annotations

import math
from collections import OrderedDict
import warnings
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from ..losses.gan import tv_loss
from ..losses.objective import Objective
from ..nn.blocks import NonLocalBlock2D
from ..ops import correlation_match
from ..registry import ModelSpec, register_model
from ..visuals import coordinate_image

__all__ = ["SEGINConfig", "SEGIN", "SemanticMatch", "SEGINDiscriminator", "SEGINObjective", "block_copy",
           "auxiliary_from_photo", "auxiliary_from_warp", "PRESETS"]

_VGG_STRIDE = {"relu1": 1, "relu2": 2, "relu3": 4, "relu4": 8, "relu5": 16}
_ENC_MULT = (1, 2, 4, 4, 8, 8)          # e1..e6 channels in units of width (paper: 64..512)
_SEG_MULT = (8, 4, 4, 2, 1)             # N_s transposed convs, the last `downsamples` of them


@dataclass
class SEGINConfig:
    """SEGIN's options (paper values unless said otherwise).

    label_channels: input map channels (an edge map or sketch: 1) (set from the data).
    width: base channels of N (the paper's 64).
    downsamples: stride-2 encoder convs (5 at 256 px: an 8x8 bottleneck; 3 at 64 px).
    shared_weights: one residual block and one non-local block reused across the bottleneck and
        the decoder, as the official code has them; False: an own module for every use.
    match_layer: VGG19 layer of the semantic match (relu5_1: a 16x16 grid at 256 px; relu3_1
        keeps that grid at 64 px).
    match_imagenet_norm: give the match's VGG ImageNet-normalised input; False: [-1, 1] as is
        (the official code's mean = std = 0.5).
    hole_threshold: W pixels whose red channel is at least this (near white, in [-1, 1]) are
        multiplied by -1, the code's hole marking; None: off.
    seg_dropout: dropout of the segmentation head (0.5, always on as the code's training=True).
    feature_loss: "l1" (Eq. 6) or "mse" (the code) for the VGG relu3_2 feature loss.
    tv_loss: "isotropic" (Eq. 8, sum of sqrt(dh^2 + dw^2)) or "squared" (the code's anisotropic
        squared form).
    label_flip_steps: None (the paper); N: the GAN targets flipped on even N-step epochs (the code
        flips them on even epochs).
    test_batch_stats: batch norm keeps using batch statistics in eval mode (the official code
        never calls eval()).
    vgg_path: VGG19 weights for the semantic match (None: random init, with a warning: the match
        is then not semantic).
    match_cache_mb: memory for training's cache of W(x, y) per sample (the code precomputes them
        all offline; at 256 px one W is 0.75 MiB, 39 GB for edges2shoes' 50k), least recently
        used first out; 0: no cache (each W recomputed when drawn).
    """

    label_channels: int
    width: int = 64
    downsamples: int = 5
    shared_weights: bool = True
    match_layer: str = "relu5_1"
    match_imagenet_norm: bool = False
    hole_threshold: Optional[float] = 0.93
    seg_dropout: float = 0.5
    feature_loss: str = "l1"
    tv_loss: str = "isotropic"
    label_flip_steps: Optional[int] = None
    test_batch_stats: bool = False
    vgg_path: Optional[str] = None
    match_cache_mb: float = 1024.0

    def __post_init__(self):
        if self.label_channels < 1 or self.width < 1:
            raise ValueError(f"SEGIN: label_channels and width must be >= 1, got {self.label_channels}, {self.width}")
        if not 1 <= self.downsamples <= 5:
            raise ValueError(f"SEGIN: downsamples must be 1..5 (e1..e5 may stride), got {self.downsamples}")
        if self.match_layer[:5] not in _VGG_STRIDE:
            raise ValueError(f"SEGIN: match_layer must be a VGG19 relu layer (relu1_1 .. relu5_4), got "
                             f"{self.match_layer!r}")
        if self.feature_loss not in ("l1", "mse"):
            raise ValueError(f"SEGIN: feature_loss must be 'l1' or 'mse', got {self.feature_loss!r}")
        if self.tv_loss not in ("isotropic", "squared"):
            raise ValueError(f"SEGIN: tv_loss must be 'isotropic' or 'squared', got {self.tv_loss!r}")
        if self.match_cache_mb < 0:
            raise ValueError(f"SEGIN: match_cache_mb must be >= 0, got {self.match_cache_mb}")
        if self.label_flip_steps is not None and self.label_flip_steps < 1:
            raise ValueError(f"SEGIN: label_flip_steps must be None or >= 1, got {self.label_flip_steps}")

    @property
    def match_stride(self) -> int:
        return _VGG_STRIDE[self.match_layer[:5]]


# ---- 1. the semantic match ---------------------------------------------------------------------

def block_copy(reference: torch.Tensor, index: torch.Tensor, block: int) -> torch.Tensor:
    """W: query block i := reference block index[i]. reference (B, C, hk*block, wk*block), index
    (B, hq, wq) into the flattened hk*wk grid -> (B, C, hq*block, wq*block). One gather."""
    B, C, H, W = reference.shape
    if H % block or W % block:
        raise ValueError(f"block_copy: the reference is {H}x{W}, not a multiple of the block size {block}")
    hq, wq = index.shape[-2:]
    blocks = F.unfold(reference, block, stride=block)                        # (B, C*b*b, hk*wk)
    idx = index.reshape(B, 1, hq * wq).expand(-1, blocks.shape[1], -1)
    picked = torch.gather(blocks, 2, idx)
    return F.fold(picked, (hq * block, wq * block), block, stride=block)


def sketch_image(label: torch.Tensor) -> torch.Tensor:
    """The input drawn as a 3-channel image in [-1, 1] for the VGG of the match: one channel
    (edges in [0, 1]) as black lines on white, three as they are, more as the class palette."""
    if label.shape[1] == 1:
        return (1 - 2 * label).expand(-1, 3, -1, -1)
    if label.shape[1] == 3:
        return label * 2 - 1
    from ..imageio import colorize_label
    return colorize_label(label)


class SemanticMatch(nn.Module):
    """S(x, r): VGG19 features up to `match_layer`, cosine argmax per input position, the
    matched blocks of r copied into W. Frozen; never in the gradient."""

    def __init__(self, cfg: SEGINConfig):
        super().__init__()
        from ..nn import load_vgg19
        self.cfg = cfg
        self.vgg = load_vgg19(cfg.vgg_path)
        self.last = self.vgg.layer_index(cfg.match_layer)
        self.vgg.features = self.vgg.features[:self.last + 1]   # nothing past the match layer
        self.requires_grad_(False)

    def train(self, mode: bool = True):
        return super().train(False)

    def features(self, image: torch.Tensor) -> torch.Tensor:
        h = self.vgg.normalize(image) if self.cfg.match_imagenet_norm else image
        return self.vgg.features(h)

    @torch.no_grad()
    def forward(self, label: torch.Tensor, reference: torch.Tensor) -> Dict[str, torch.Tensor]:
        """dict(aux=W (B, 3, H, W), index (B, h, w), cosine (B, h, w), block)."""
        if reference.shape[-2:] != label.shape[-2:]:
            raise ValueError(f"SEGIN: the reference must be the input's size {tuple(label.shape[-2:])}, got "
                             f"{tuple(reference.shape[-2:])}")
        H, W = label.shape[-2:]
        s = self.cfg.match_stride
        if H % s or W % s:
            raise ValueError(f"SEGIN: image sides must be multiples of {s} (the {self.cfg.match_layer} grid), "
                             f"got {H}x{W}")
        q, k = self.features(sketch_image(label)), self.features(reference)
        index, cosine = correlation_match(q, k, center=False)
        return dict(aux=block_copy(reference, index, s), index=index, cosine=cosine, block=s)


# ---- 2. the translation network ------------------------------------------------------------------

class ResidualBlock(nn.Module):
    """Conv3 - BN - ReLU - Conv3 - BN, + x, ReLU (the code's ResidualBlock)."""

    def __init__(self, ch: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(ch, ch, 3, 1, 1), nn.BatchNorm2d(ch), nn.ReLU(),
                                  nn.Conv2d(ch, ch, 3, 1, 1), nn.BatchNorm2d(ch))

    def forward(self, x):
        return F.relu(x + self.body(x))


class SEGIN(nn.Module):
    """N and N_s over [x, W(x, r)]; see the module docstring. forward(label, exemplar) matches
    on the fly; forward(label, aux=W) takes a given auxiliary image (training, precomputed)."""

    def __init__(self, cfg: SEGINConfig):
        super().__init__()
        self.cfg = cfg
        d, n = cfg.width, cfg.downsamples
        ch = [d * m for m in _ENC_MULT]
        self.strides = [2 if i < n else 1 for i in range(6)]
        cin = cfg.label_channels + 3
        enc = []
        for i in range(6):
            k, s = (4, 2) if self.strides[i] == 2 else (3, 1)
            conv = nn.Conv2d(cin if i == 0 else ch[i - 1], ch[i], k, s, 1)
            enc.append(conv if i == 0 else nn.Sequential(nn.LeakyReLU(0.2), conv, nn.BatchNorm2d(ch[i])))
        self.encoder = nn.ModuleList(enc)
        c6 = ch[5]
        uses_res, uses_nl = 6, 6   # bottleneck: 3 NL (+ 3 decoder NL), 6 residual applications
        self.res = nn.ModuleList([ResidualBlock(c6)] if cfg.shared_weights else
                                 [ResidualBlock(c6) for _ in range(uses_res)])
        self.nl = nn.ModuleList([NonLocalBlock2D(c6)] if cfg.shared_weights else
                                [NonLocalBlock2D(c6) for _ in range(uses_nl)])
        self.nl_wide = NonLocalBlock2D(2 * c6)           # on [d1, e5], its own module in the code too

        def up_block(cin_, cout):
            return nn.Sequential(nn.ReLU(), nn.Conv2d(cin_, cout, 3, 1, 1), nn.BatchNorm2d(cout))
        # decoder: d1 (cat e5), d2, d3 (cat e4), d4 (cat e3), d5 (cat e2), d6 (cat e1), out
        self.dec = nn.ModuleList([
            up_block(c6, ch[4]),                   # d1 -> cat e5: 2*c6
            up_block(ch[4] + ch[4], ch[4]),        # d2
            up_block(ch[4], ch[3]),                # d3 -> cat e4
            up_block(ch[3] + ch[3], ch[2]),        # d4 -> cat e3
            up_block(ch[2] + ch[2], ch[1]),        # d5 -> cat e2
            up_block(ch[1] + ch[1], ch[0]),        # d6 -> cat e1
        ])
        self.out = nn.Sequential(nn.ReLU(), nn.Conv2d(ch[0] + ch[0], 3, 3, 1, 1), nn.Tanh())
        seg = []
        cprev = c6
        mults = _SEG_MULT[len(_SEG_MULT) - n:]
        for j, m in enumerate(mults):
            seg += [nn.ReLU(), nn.ConvTranspose2d(cprev, d * m, 4, 2, 1), nn.BatchNorm2d(d * m)]
            cprev = d * m
            if j < min(3, n - 1):
                seg.append(_AlwaysDropout(cfg.seg_dropout))
        seg += [nn.ReLU(), nn.ConvTranspose2d(cprev, 1, 3, 1, 1), nn.Tanh()]
        self.seg_head = nn.Sequential(*seg)
        self.matcher = SemanticMatch(cfg)

    def _res(self, i):
        return self.res[0 if self.cfg.shared_weights else i]

    def _nl(self, i):
        return self.nl[0 if self.cfg.shared_weights else i]

    def train(self, mode: bool = True):
        super().train(mode)
        if not mode and self.cfg.test_batch_stats:
            for m in self.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.train(True)
        self.matcher.train(False)
        return self

    def network_input(self, label: torch.Tensor, aux: torch.Tensor) -> torch.Tensor:
        if self.cfg.hole_threshold is not None:   # near-white holes in W -> -1 (the code's marking)
            holes = (aux[:, :1] >= self.cfg.hole_threshold).to(aux.dtype)
            aux = aux * (1 - 2 * holes)
        return torch.cat([label, aux], 1)

    def forward(self, label: torch.Tensor, exemplar: Optional[torch.Tensor] = None, exemplar_label=None, *,
                aux: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        """dict(fake (B, 3, H, W), seg (B, 1, H, W) in [-1, 1], aux = the W used)."""
        cfg = self.cfg
        if label.dim() != 4 or label.shape[1] != cfg.label_channels:
            raise ValueError(f"SEGIN: label must be (B, {cfg.label_channels}, H, W), got {tuple(label.shape)}")
        mult = 2 ** cfg.downsamples
        if label.shape[-1] % mult or label.shape[-2] % mult:
            raise ValueError(f"SEGIN: image sides must be multiples of {mult} (downsamples {cfg.downsamples}), got "
                             f"{tuple(label.shape[-2:])}")
        if aux is None:
            if exemplar is None:
                raise ValueError("SEGIN: give the exemplar (reference) or the auxiliary image aux")
            if exemplar.dim() != 4 or exemplar.shape[0] != label.shape[0] or exemplar.shape[1] != 3:
                raise ValueError(f"SEGIN: exemplar must be (B={label.shape[0]}, 3, H, W), got {tuple(exemplar.shape)}")
            aux = self.matcher(label, exemplar)["aux"]
        elif aux.shape != (label.shape[0], 3) + tuple(label.shape[-2:]):
            raise ValueError(f"SEGIN: aux must be (B, 3) + the input's size {tuple(label.shape[-2:])}, got "
                             f"{tuple(aux.shape)}")
        e = []
        h = self.network_input(label, aux)
        for layer in self.encoder:
            h = layer(h)
            e.append(h)
        # bottleneck: NL - 3 Res - NL - 3 Res - NL
        b = self._nl(0)(e[5])
        for i in range(3):
            b = self._res(i)(b)
        b = self._nl(1)(b)
        for i in range(3, 6):
            b = self._res(i)(b)
        b = self._nl(2)(b)
        seg = self.seg_head(b)
        # decoder
        d = self.nl_wide(torch.cat([self.dec[0](b), e[4]], 1))
        d = self._nl(3)(self.dec[1](d))
        for k, (skip, nl) in enumerate(((e[3], 4), (e[2], 5), (e[1], None), (e[0], None))):
            x = d
            if skip.shape[-1] > x.shape[-1]:
                x = F.interpolate(x, size=skip.shape[-2:], mode="nearest")
            x = torch.cat([self._up_conv(k + 2, x), skip], 1)
            d = self._nl(nl)(x) if nl is not None else x
        if d.shape[-1] < label.shape[-1]:
            d = F.interpolate(d, size=label.shape[-2:], mode="nearest")
        return dict(fake=self.out(d), seg=seg, aux=aux)

    def _up_conv(self, i: int, x: torch.Tensor) -> torch.Tensor:
        return self.dec[i](x)


class _AlwaysDropout(nn.Module):
    """Dropout that stays on in eval mode (the code's F.dropout(training=True))."""

    def __init__(self, p: float):
        super().__init__()
        self.p = float(p)

    def forward(self, x):
        return F.dropout(x, self.p, training=True) if self.p > 0 else x


# ---- the discriminator ------------------------------------------------------------------------------

class SEGINDiscriminator(nn.Module):
    """The code's discriminator_snIns: spectral-norm convs with instance norm, a per-position
    spectral-norm MLP, and groups of 4 consecutive positions scored by one linear layer and a
    sigmoid (256 scores at 256 px). Unconditional (the code; Eq. 7 writes D(x, y))."""

    def __init__(self, width: int = 64):
        super().__init__()
        w = width
        spec = [(3, w, 4, 2, 1, False), (w, w, 4, 2, 1, True), (w, 2 * w, 3, 1, 1, True), (2 * w, 2 * w, 4, 1, 1, True),
                (2 * w, 4 * w, 3, 1, 1, True), (4 * w, 4 * w, 2, 1, 1, True), (4 * w, 8 * w, 4, 2, 1, False)]
        layers = []
        for cin, cout, k, s, p, norm in spec:
            layers.append(spectral_norm(nn.Conv2d(cin, cout, k, s, p)))
            if norm:
                layers.append(nn.InstanceNorm2d(cout))
            layers.append(nn.LeakyReLU(0.2))
        self.convs = nn.Sequential(*layers)
        self.mlp = nn.Sequential(spectral_norm(nn.Linear(8 * w, 16 * w)), spectral_norm(nn.Linear(16 * w, 32 * w)),
                                 spectral_norm(nn.Linear(32 * w, 32 * w)))
        self.score = spectral_norm(nn.Linear(4 * 32 * w, 1))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """(B, positions / 4) probabilities."""
        h = self.convs(image)
        B, C, H, W = h.shape
        if (H * W) % 4:
            raise ValueError(f"SEGIN discriminator: {H}x{W} positions do not group by 4 (image {tuple(image.shape)})")
        z = self.mlp(h.flatten(2).transpose(1, 2))               # (B, HW, 32w)
        return torch.sigmoid(self.score(z.reshape(B, H * W // 4, -1))).squeeze(-1)


# ---- 3. training: auxiliary images and losses ------------------------------------------------------

def _u(gen: torch.Generator, lo: float, hi: float) -> int:
    """An integer uniform in [lo, hi) (at least lo) from the generator."""
    lo_i, hi_i = int(round(lo)), max(int(round(hi)), int(round(lo)) + 1)
    return int(torch.randint(lo_i, hi_i, (1,), generator=gen))


def _paste(dst: torch.Tensor, src: torch.Tensor, cy: int, cx: int, p: int) -> None:
    """dst[:, cy-p:cy+p, cx-p:cx+p] = src (2p x 2p), clipped to the image."""
    H, W = dst.shape[-2:]
    y0, x0 = cy - p, cx - p
    ya, xa, yb, xb = max(y0, 0), max(x0, 0), min(y0 + 2 * p, H), min(x0 + 2 * p, W)
    if ya < yb and xa < xb:
        dst[:, ya:yb, xa:xb] = src[:, ya - y0:yb - y0, xa - x0:xb - x0]


def _patches_and_holes(src: torch.Tensor, gen: torch.Generator, *, patches: int, centre: Tuple[float, float],
                       copies: Tuple[int, int], offset, holes: int, hole_centre: Tuple[float, float]) -> torch.Tensor:
    """The code's auxiliary-image recipe in 256-px units scaled to the image: `patches` patches
    of half-size U[30, 35) centred U[centre)^2, each pasted U[copies) times at offset(gen, j, s)
    (dy, dx, transposed) from its place, then `holes` white holes of one half-size U[15, 20)
    per batch centred U[hole_centre)^2."""
    out = src.clone()
    B, _, H, W = src.shape
    s = min(H, W) / 256.0
    hole = _u(gen, 15 * s, 20 * s)                       # one hole size per batch, as the code
    white = torch.ones(3, 2 * hole, 2 * hole, dtype=out.dtype, device=out.device)
    for b in range(B):
        for _ in range(patches):
            p = _u(gen, 30 * s, 35 * s)
            cy, cx = _u(gen, centre[0] * s, centre[1] * s), _u(gen, centre[0] * s, centre[1] * s)
            patch = src[b, :, max(cy - p, 0):cy + p, max(cx - p, 0):cx + p]
            if patch.shape[-2:] != (2 * p, 2 * p):
                continue
            for j in range(_u(gen, *copies)):
                dy, dx, transposed = offset(gen, j, s)
                _paste(out[b], patch, *((cx + dx, cy + dy) if transposed else (cy + dy, cx + dx)), p)
        for _ in range(holes):
            _paste(out[b], white, _u(gen, hole_centre[0] * s, hole_centre[1] * s),
                   _u(gen, hole_centre[0] * s, hole_centre[1] * s), hole)
    return out


_PHOTO_OFFSETS = (6, 7, 8, 9, -10, -9, -8, -7)


def auxiliary_from_photo(photo: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Fig. 4's auxiliary image from the ground truth itself (the code's 75 % branch), geometry
    in 256-px units scaled to the image: 25 patches of half-size U[30, 35) centred U[50, 200)^2,
    each pasted U[5, 20) times at offsets from {6..9, -10..-7} (every 5th copy at the transposed
    location), then 17 white holes of half-size U[15, 20) centred U[60, 195)^2."""
    def offset(g, j, s):
        pick = torch.randint(8, (2,), generator=g)
        return round(_PHOTO_OFFSETS[int(pick[0])] * s), round(_PHOTO_OFFSETS[int(pick[1])] * s), j % 5 == 0
    return _patches_and_holes(photo, gen, patches=25, centre=(50, 200), copies=(5, 20), offset=offset, holes=17,
                              hole_centre=(60, 195))


def auxiliary_from_warp(warp: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """The code's 25 % branch: the semantic match W(x, y), then 20 patches (half-size U[30, 35),
    centres U[50, 210)^2) pasted U[0, 10) times at offsets U[-10, 10)^2, and 10 white holes
    (half-size U[15, 20), centres U[35, 220)^2); 256-px units scaled to the image."""
    def offset(g, j, s):
        return _u(g, -10 * s, 10 * s), _u(g, -10 * s, 10 * s), False
    return _patches_and_holes(warp, gen, patches=20, centre=(50, 210), copies=(0, 10), offset=offset, holes=10,
                              hole_centre=(35, 220))


class SEGINObjective(Objective):
    """Eq. 5-11: L1 reconstruction, VGG relu3_2 feature loss, GAN (BCE on the patch
    probabilities of an unconditional D), total variation, segmentation L1 and segmentation
    attention L1. "self" supervision (the paper's): W from the ground truth (Fig. 4); "pair":
    W = the semantic match with the data's exemplar, whose exact output is the ground truth.
    The foreground mask y_seg comes from the batch's "mask" ({-1, 1}); without one the two
    segmentation terms cannot be computed (an error names them).

    Paper weights (Sec. IV): recon 100, feature 5e-6, GAN 1, seg 100, seg-attention 10, TV 10."""

    loss_names = ("l1", "feat", "adv", "tv", "seg", "seg_att")
    default_weights = dict(l1=100.0, feat=5e-6, adv=1.0, tv=10.0, seg=100.0, seg_att=10.0)
    vgg_losses = ("feat",)
    gan_losses = ("adv",)

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self._warp_cache: "OrderedDict[int, torch.Tensor]" = OrderedDict()
        self._cache_bytes = 0

    def build_discriminators(self):
        if not self.on("adv"):
            return {}
        return {"discriminator": SEGINDiscriminator(self.cfg.disc_width)}

    def _targets(self, step: int) -> Tuple[float, float]:
        """(real target, fake target) of this step: flipped on even epochs with label_flip_steps."""
        n = self.model.cfg.label_flip_steps
        if n is not None and (step // n) % 2 == 0:
            return 0.0, 1.0
        return 1.0, 0.0

    def _warp(self, batch, label, image) -> torch.Tensor:
        """W(x, y), cached per sample index (the code precomputes it once, offline) within
        match_cache_mb, least recently used out first."""
        idx = batch.get("index")
        budget = self.model.cfg.match_cache_mb * 2 ** 20
        if idx is None or not torch.is_tensor(idx) or budget <= 0:
            return self.model.matcher(label, image)["aux"]
        keys = [int(i) for i in idx]
        cache = self._warp_cache
        missing = [j for j, k in enumerate(keys) if k not in cache]
        fresh = {}
        if missing:
            w = self.model.matcher(label[missing], image[missing])["aux"]
            fresh = {keys[j]: wj.detach() for j, wj in zip(missing, w)}
        out = torch.stack([fresh[k] if k in fresh else cache[k] for k in keys]).to(image.device)
        for k in keys:
            if k in cache:
                cache.move_to_end(k)
        for k, wj in fresh.items():
            cache[k] = wj
            self._cache_bytes += wj.numel() * wj.element_size()
        while self._cache_bytes > budget and cache:
            _, old = cache.popitem(last=False)
            self._cache_bytes -= old.numel() * old.element_size()
        return out

    def generator_terms(self, batch, step: int, gen: torch.Generator):
        label, image = batch["label"], batch["image"]
        if self.supervision == "pair":
            exemplar = batch["exemplar"]
            aux = self.model.matcher(label, exemplar)["aux"]
        else:
            exemplar = image
            if step % 4 == 0:
                aux = auxiliary_from_warp(self._warp(batch, label, image), gen)
            else:
                aux = auxiliary_from_photo(image, gen)
        out = self.G(label, aux=aux)
        fake, seg = out["fake"], out["seg"]
        terms = {}
        if self.on("l1"):
            terms["l1"] = F.l1_loss(fake, image)
        if self.on("feat") and self.vgg is not None:
            a, b = self.vgg.features(fake, ("relu3_2",))["relu3_2"], self.vgg.features(image, ("relu3_2",))["relu3_2"]
            terms["feat"] = F.l1_loss(a, b) if self.model.cfg.feature_loss == "l1" else F.mse_loss(a, b)
        if self.on("tv"):
            terms["tv"] = tv_loss(fake, self.model.cfg.tv_loss)
        if self.on("seg") or self.on("seg_att"):
            if "mask" not in batch:
                raise ValueError("SEGIN: the seg and seg_att losses need a foreground mask ('mask' in the batch; "
                                 "synthetic-edges has one), or --loss seg=0 --loss seg_att=0")
            mask = batch["mask"].to(fake.dtype)
            if self.on("seg"):
                terms["seg"] = F.l1_loss(seg, mask)
            if self.on("seg_att"):
                terms["seg_att"] = F.l1_loss(seg * fake, mask * image)
        if self.on("adv") and "discriminator" in self.discriminators:
            real_t, _ = self._targets(step)
            p = self.D("discriminator")(fake)
            terms["adv"] = F.binary_cross_entropy(p, torch.full_like(p, real_t))
        visuals = dict(label=label, exemplar=exemplar, warped=aux.detach(), fake=fake, image=image)
        return self.total(terms), terms, visuals

    def discriminator_terms(self, visuals, step: int):
        d = self.D("discriminator")
        real_t, fake_t = self._targets(step)
        pr, pf = d(visuals["image"]), d(visuals["fake"].detach())
        loss = F.binary_cross_entropy(pr, torch.full_like(pr, real_t)) + \
            F.binary_cross_entropy(pf, torch.full_like(pf, fake_t))
        return loss, {"bce": loss}


# ---- registry entry --------------------------------------------------------------------------------

def run(model: SEGIN, label, exemplar, exemplar_label=None, visuals=()) -> dict:
    """fake; warped = the auxiliary image W(x, r); correspondence = the exemplar's coordinate
    image carried by the same block match."""
    m = model.matcher(label, exemplar)
    res = dict(fake=model(label, aux=m["aux"])["fake"], warped=m["aux"])
    if "correspondence" in visuals:
        coords = coordinate_image(exemplar.shape[0], tuple(exemplar.shape[-2:]), exemplar.device, exemplar.dtype)
        res["correspondence"] = block_copy(coords, m["index"], m["block"])
    return res


def _size_multiple(cfg: SEGINConfig) -> int:
    a, b = 2 ** cfg.downsamples, cfg.match_stride
    return a * b // math.gcd(a, b)


PRESETS = {
    # the paper at 256 px: width 64, 5 downsamples, relu5_1 match, batch 5, Adam 2e-4 / 1.3e-5
    "segin-paper": dict(
        model="segin", dataset="synthetic-edges", size=256, batch_size=5, lr_g=2e-4, lr_d=1.3e-5,
        betas=(0.9, 0.999), supervision="self", disc_width=64,
        model_options=dict(width=64, downsamples=5, match_layer="relu5_1"),
    ),
    # 10 CPU minutes at 64 px (spec (g)): width 16, 3 downsamples (8x8 bottleneck), relu3_1 match
    # (the 16x16 grid of 4x4 blocks), no VGG feature loss (no pretrained VGG is shipped)
    "segin-cpu64": dict(
        model="segin", dataset="synthetic-edges", size=64, batch_size=5, lr_g=2e-4, lr_d=1.3e-5,
        betas=(0.9, 0.999), supervision="self", disc_width=16, steps=3000,
        model_options=dict(width=16, downsamples=3, match_layer="relu3_1"),
        losses=dict(feat=0.0), checkpoint_every=250, image_every=250,
    ),
}

SPEC = register_model(ModelSpec(
    name="segin",
    config=SEGINConfig,
    generator=SEGIN,
    objective=SEGINObjective,
    supervision=("self", "pair"),
    unpaired_supervision="self",
    run=run,
    needs_exemplar_label=lambda cfg: False,
    size_multiple=_size_multiple,
    visuals=("warped", "correspondence"),
    unstored_prefixes=lambda cfg: ("matcher.",) if cfg.vgg_path is not None else (),
    presets=PRESETS,
    description="SEGIN (Huang et al. 2019): VGG semantic hard match -> auxiliary image -> non-local U-Net with a "
                "segmentation head",
))
