"""VGG-feature losses: perceptual, feature matching, Gram style, contextual.

The functional forms take feature tensors or ``{layer: tensor}`` dicts, so they
work with any feature extractor; :class:`VGGLoss` wraps a frozen
:class:`~exsynth.nn.vgg.VGG19Features` and computes features from ``[-1, 1]``
images. Targets (real / exemplar features) are detached: gradients flow only
to the generated image.
"""
from __future__ import annotations

from typing import Dict, Mapping, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..nn.vgg import VGG19Features, load_vgg19

__all__ = [
    "FEATURE_MATCHING_LAYERS", "FEATURE_MATCHING_WEIGHTS", "CONTEXTUAL_LAYERS", "CONTEXTUAL_WEIGHTS",
    "CONTEXTUAL_POOLS",
    "STYLE_LAYERS", "weighted_l1", "gram_matrix", "style_loss", "contextual_loss",
    "contextual_loss_layers", "VGGLoss",
]

# CoCosNet's VGG feature matching (Eq. 8; its code's relu*_2 layers; pix2pixHD and SPADE use relu*_1,
# STYLE_LAYERS, with the same weights).
FEATURE_MATCHING_LAYERS = ("relu1_2", "relu2_2", "relu3_2", "relu4_2", "relu5_2")
FEATURE_MATCHING_WEIGHTS = (1.0 / 32, 1.0 / 16, 1.0 / 8, 1.0 / 4, 1.0)
# CoCosNet contextual loss (Eq. 11) as its code's get_ctx_loss computes it: relu5_2 x 8, relu4_2 x 4,
# relu3_2 average-pooled 2x x 2 (relu2_2 pooled 4x x 1 is its --use_22ctx option).
CONTEXTUAL_LAYERS = ("relu3_2", "relu4_2", "relu5_2")
CONTEXTUAL_WEIGHTS = (2.0, 4.0, 8.0)
CONTEXTUAL_POOLS = (2, 1, 1)
STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")


def _check_layers(layers: Sequence[str], weights: Optional[Sequence[float]]) -> Sequence[float]:
    if weights is None:
        return [1.0] * len(layers)
    if len(weights) != len(layers):
        raise ValueError(f"got {len(weights)} weights for {len(layers)} layers")
    return weights


def weighted_l1(fake: Mapping[str, torch.Tensor], real: Mapping[str, torch.Tensor],
                layers: Sequence[str], weights: Optional[Sequence[float]] = None) -> torch.Tensor:
    """``sum_l w_l * mean|fake_l - real_l|`` (real detached)."""
    weights = _check_layers(layers, weights)
    total = None
    for name, w in zip(layers, weights):
        term = w * F.l1_loss(fake[name], real[name].detach())
        total = term if total is None else total + term
    return total


def gram_matrix(feat: torch.Tensor) -> torch.Tensor:
    """``(N, C, H, W) -> (N, C, C)`` Gram matrix normalised by ``C*H*W``."""
    n, c, h, w = feat.shape
    f = feat.reshape(n, c, h * w)
    return torch.bmm(f, f.transpose(1, 2)) / (c * h * w)


def style_loss(fake: Mapping[str, torch.Tensor], real: Mapping[str, torch.Tensor],
               layers: Sequence[str] = STYLE_LAYERS, weights: Optional[Sequence[float]] = None) -> torch.Tensor:
    """Gram-matrix style loss (EGSC-IT / Gatys): ``sum_l w_l * MSE(G(fake_l), G(real_l))``."""
    weights = _check_layers(layers, weights)
    total = None
    for name, w in zip(layers, weights):
        term = w * F.mse_loss(gram_matrix(fake[name]), gram_matrix(real[name].detach()))
        total = term if total is None else total + term
    return total


def contextual_loss(generated: torch.Tensor, exemplar: torch.Tensor, *, bandwidth: float = 0.1, eps: float = 1e-3,
                    center: Optional[str] = "position") -> torch.Tensor:
    """Per-sample contextual loss (B,) exactly as CoCosNet's `ContextualLoss_forward`:

    center: "position" (its --PONO: subtract the exemplar feature's per-position channel mean
        from both maps, which must then share a size), "spatial" (the exemplar's per-channel
        spatial mean) or None;
    then each position's channel vector is L2-normalised (x / (|x| + float eps));
    d_ij = 1 - cos(generated_i, exemplar_j); d~_ij = d_ij / (min_k d_ik + eps);
    A_ij = softmax_j((1 - d~_ij) / bandwidth); CX = mean over generated positions i of
    max_j A_ij; loss = -log(CX). The exemplar features are detached."""
    x, y = generated, exemplar.detach()
    if x.dim() != 4 or y.dim() != 4 or x.shape[:2] != y.shape[:2]:
        raise ValueError(f"contextual_loss expects (B, C, H, W) maps with equal B, C; got {tuple(x.shape)} and "
                         f"{tuple(y.shape)}")
    if center == "position":
        if x.shape != y.shape:
            raise ValueError(f"contextual_loss: center='position' needs maps of one size, got {tuple(x.shape)} and "
                             f"{tuple(y.shape)}")
        mu = y.mean(dim=1, keepdim=True)
        x, y = x - mu, y - mu
    elif center == "spatial":
        mu = y.mean(dim=(2, 3), keepdim=True)
        x, y = x - mu, y - mu
    elif center is not None:
        raise ValueError(f"contextual_loss: center must be 'position', 'spatial' or None, got {center!r}")
    tiny = torch.finfo(torch.float64).eps        # the code's sys.float_info.epsilon
    B, C = x.shape[:2]
    xf = x.reshape(B, C, -1)
    yf = y.reshape(B, C, -1)
    xf = xf / (xf.norm(dim=1, keepdim=True) + tiny)
    yf = yf / (yf.norm(dim=1, keepdim=True) + tiny)
    d = 1.0 - torch.bmm(xf.transpose(1, 2), yf)                      # (B, P_generated, P_exemplar)
    d_tilde = d / (d.min(dim=2, keepdim=True).values + eps)
    a = torch.softmax((1.0 - d_tilde) / bandwidth, dim=2)            # = w / sum_j w, without overflow
    return -torch.log(a.max(dim=2).values.mean(dim=1))


def _shrink(f: torch.Tensor, max_positions: Optional[int]) -> torch.Tensor:
    if max_positions is None:
        return f
    while f.shape[2] * f.shape[3] > max_positions and min(f.shape[2:]) >= 2:
        f = F.avg_pool2d(f, 2)
    return f


def contextual_loss_layers(fake: Mapping[str, torch.Tensor], ref: Mapping[str, torch.Tensor],
                           layers: Sequence[str] = CONTEXTUAL_LAYERS,
                           weights: Optional[Sequence[float]] = CONTEXTUAL_WEIGHTS,
                           pools: Optional[Sequence[int]] = CONTEXTUAL_POOLS, *, bandwidth: float = 0.1,
                           center: Optional[str] = "position", max_positions: Optional[int] = None) -> torch.Tensor:
    """sum_l w_l * mean over the batch of contextual_loss(pool_l(fake_l), pool_l(ref_l)): CoCosNet's
    get_ctx_loss with the defaults (average pooling by `pools`). max_positions: further 2x
    average pooling of a layer until H*W <= max_positions (the distance matrix is quadratic)."""
    weights = _check_layers(layers, weights)
    pools = [1] * len(layers) if pools is None else list(pools)
    if len(pools) != len(layers):
        raise ValueError(f"got {len(pools)} pooling factors for {len(layers)} layers")
    total = None
    for name, w, k in zip(layers, weights, pools):
        f, r = fake[name], ref[name]
        if k > 1:
            f, r = F.avg_pool2d(f, k), F.avg_pool2d(r, k)
        term = w * contextual_loss(_shrink(f, max_positions), _shrink(r, max_positions), bandwidth=bandwidth,
                                   center=center).mean()
        total = term if total is None else total + term
    return total


class VGGLoss(nn.Module):
    """VGG19-based losses on ``[-1, 1]`` images.

    ``vgg``: a :class:`VGG19Features` (e.g. ``load_vgg19(path)``); default
    ``load_vgg19()`` (random-init, warns once). The network is frozen.

    * ``forward(fake, real)`` / ``feature_matching``: CoCosNet Eq. 8, L1 on
      ``fm_layers`` (relu1_2..relu5_2; pix2pixHD / SPADE: relu1_1..relu5_1) with
      weights 1/32, 1/16, 1/8, 1/4, 1.
    * ``perceptual(fake, real)``: Eq. 10, L1 on relu4_2 (configurable).
    * ``style(fake, real)``: Gram-matrix loss on relu{1..5}_1.
    * ``contextual(fake, ref)``: Eq. 11 as CoCosNet's code computes it (see
      `contextual_loss_layers`), ``bandwidth = 0.1``, position centring.
    * ``features(x, layers)``: the raw activations.
    """

    def __init__(self, vgg: Optional[VGG19Features] = None, *,
                 fm_layers: Sequence[str] = FEATURE_MATCHING_LAYERS,
                 fm_weights: Sequence[float] = FEATURE_MATCHING_WEIGHTS,
                 perceptual_layers: Sequence[str] = ("relu4_2",),
                 perceptual_weights: Optional[Sequence[float]] = None,
                 style_layers: Sequence[str] = STYLE_LAYERS,
                 style_weights: Optional[Sequence[float]] = None,
                 cx_layers: Sequence[str] = CONTEXTUAL_LAYERS,
                 cx_weights: Sequence[float] = CONTEXTUAL_WEIGHTS,
                 cx_pools: Sequence[int] = CONTEXTUAL_POOLS,
                 cx_h: float = 0.1, cx_center: Optional[str] = "position",
                 cx_max_positions: Optional[int] = None) -> None:
        super().__init__()
        self.vgg = vgg if vgg is not None else load_vgg19()
        self.vgg.eval()
        for p in self.vgg.parameters():
            p.requires_grad_(False)
        self.fm_layers, self.fm_weights = tuple(fm_layers), tuple(_check_layers(fm_layers, fm_weights))
        self.perceptual_layers = tuple(perceptual_layers)
        self.perceptual_weights = tuple(_check_layers(perceptual_layers, perceptual_weights))
        self.style_layers = tuple(style_layers)
        self.style_weights = tuple(_check_layers(style_layers, style_weights))
        self.cx_layers, self.cx_weights = tuple(cx_layers), tuple(_check_layers(cx_layers, cx_weights))
        self.cx_pools = tuple(cx_pools)
        self.cx_h, self.cx_center, self.cx_max_positions = cx_h, cx_center, cx_max_positions

    def train(self, mode: bool = True) -> "VGGLoss":
        super().train(mode)
        self.vgg.eval()  # always frozen
        return self

    def features(self, x: torch.Tensor, layers: Sequence[str]) -> Dict[str, torch.Tensor]:
        return self.vgg(x, layers)

    def _pair(self, fake: torch.Tensor, real: torch.Tensor, layers: Sequence[str]):
        with torch.no_grad():
            rf = self.vgg(real, layers)
        return self.vgg(fake, layers), rf

    def feature_matching(self, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        return weighted_l1(*self._pair(fake, real, self.fm_layers), self.fm_layers, self.fm_weights)

    def perceptual(self, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        return weighted_l1(*self._pair(fake, real, self.perceptual_layers),
                           self.perceptual_layers, self.perceptual_weights)

    def style(self, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        return style_loss(*self._pair(fake, real, self.style_layers), self.style_layers, self.style_weights)

    def contextual(self, fake: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        return contextual_loss_layers(*self._pair(fake, ref, self.cx_layers), self.cx_layers, self.cx_weights,
                                      self.cx_pools, bandwidth=self.cx_h, center=self.cx_center,
                                      max_positions=self.cx_max_positions)

    def forward(self, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        return self.feature_matching(fake, real)
