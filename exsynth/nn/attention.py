"""MSCA-Net's masked spatial-channel attention module (paper Fig. 2 right)."""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from .. import ops


class MSCAModule(nn.Module):
    """Aligns exemplar image features to a target label map (MSCA Eq. 4-8).

    forward(f_x2, f_c1, f_c2):
      f_x2 (B, N, H, W): exemplar image features
      f_c1 (B, M1, H, W): features of the target label map c1
      f_c2 (B, M2, H, W): features of the exemplar's label map c2
    alpha = softmax_HW(phi * [f_x2, f_c2])   (K spatial attention maps)
    gate  = sigmoid(mlp([gap(f_c1), gap(f_c2)]))   (feature masking, Eq. 6)
    beta  = softmax_K(psi * f_c1)             (channel attention)
    out   = (f_x2 alpha^T * gate) beta -> (B, N, H, W), aligned to c1.

    logit_scale multiplies both logits (1 = the paper's form). A softmax over H*W positions
    starts out flat and its gradients are ~1/(H*W): with Adam's fixed step size the maps then
    need thousands of steps to sharpen; a scale s makes that s times faster.
    matched_init (needs m1 == m2, as when c1 and c2 share a label encoder) starts phi's label
    part equal to psi and its image part at 0, so map k pools the exemplar where the label
    features look like what map k assigns in the target: a class-consistent (if soft)
    correspondence from step 0 instead of two random projections that must find each other.
    """

    def __init__(self, value_channels: int, target_label_channels: int, exemplar_label_channels: int,
                 k: int = 8, masking: bool = True, mlp_hidden: Optional[int] = None,
                 backend: str = "auto", logit_scale: float = 1.0, matched_init: bool = False):
        super().__init__()
        n, m1, m2 = value_channels, target_label_channels, exemplar_label_channels
        self.phi = nn.Conv2d(n + m2, k, 1)
        self.psi = nn.Conv2d(m1, k, 1)
        self.logit_scale = float(logit_scale)
        if matched_init:
            if m1 != m2:
                raise ValueError(f"MSCAModule: matched_init needs equal label feature channels, got {m1} and {m2}")
            with torch.no_grad():
                self.phi.weight.zero_()
                self.phi.weight[:, n:] = self.psi.weight
                self.phi.bias.copy_(self.psi.bias)
        self.mask_mlp = None
        if masking:
            hidden = mlp_hidden or max(k, (m1 + m2) // 4)
            self.mask_mlp = nn.Sequential(nn.Linear(m1 + m2, hidden), nn.ReLU(), nn.Linear(hidden, k))
        self.k, self.backend = k, backend

    def logits_and_gate(self, f_x2, f_c1, f_c2):
        spatial = self.phi(torch.cat([f_x2, f_c2], dim=1))
        channel = self.psi(f_c1)
        if self.logit_scale != 1.0:
            spatial, channel = spatial * self.logit_scale, channel * self.logit_scale
        gate = None
        if self.mask_mlp is not None:
            pooled = torch.cat([f_c1.mean(dim=(2, 3)), f_c2.mean(dim=(2, 3))], dim=1)
            gate = torch.sigmoid(self.mask_mlp(pooled))
        return spatial, channel, gate

    def forward(self, f_x2: torch.Tensor, f_c1: torch.Tensor, f_c2: torch.Tensor,
                return_attention: bool = False):
        spatial, channel, gate = self.logits_and_gate(f_x2, f_c1, f_c2)
        return ops.msca_attention(f_x2, spatial, channel, gate, return_attention=return_attention,
                                  backend=self.backend)
