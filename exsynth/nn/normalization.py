"""PONO and CoCosNet's SPADE block with PONO (PN-SPADE)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import ops


class PositionalNorm2d(nn.Module):
    """Positional normalisation over channels (no parameters).

    With return_stats=True the forward returns (y, mean, std) for PONO's
    moment shortcut; otherwise y.
    """

    def __init__(self, eps: float = 1e-5, return_stats: bool = False, backend: str = "auto"):
        super().__init__()
        self.eps, self.return_stats, self.backend = eps, return_stats, backend

    def forward(self, x: torch.Tensor):
        y, mean, std = ops.positional_norm(x, eps=self.eps, backend=self.backend)
        return (y, mean, std) if self.return_stats else y

    def extra_repr(self) -> str:
        return f"eps={self.eps}"


class PNSPADE(nn.Module):
    """CoCosNet's SPADE with positional normalisation.

    The condition (e.g. the warped exemplar, or a label map) is resized to
    x's grid, a shared conv + ReLU embeds it, and two convs predict the
    per-pixel gamma and beta; out = PONO(x) * (1 + gamma) + beta, fused in
    exsynth.ops.pn_modulate. padding_mode: the convs' padding, "zeros" or "reflect" (CoCosNet's
    code reflection-pads them).
    """

    def __init__(self, channels: int, cond_channels: int, hidden: int = 128, kernel_size: int = 3,
                 eps: float = 1e-5, backend: str = "auto", padding_mode: str = "zeros"):
        super().__init__()
        conv = lambda cin, cout: nn.Conv2d(cin, cout, kernel_size, padding=kernel_size // 2,  # noqa: E731
                                           padding_mode=padding_mode)
        self.shared = nn.Sequential(conv(cond_channels, hidden), nn.ReLU())
        self.to_gamma = conv(hidden, channels)
        self.to_beta = conv(hidden, channels)
        self.eps, self.backend = eps, backend

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        if cond.shape[2:] != x.shape[2:]:
            cond = F.interpolate(cond, size=x.shape[2:], mode="nearest")
        h = self.shared(cond)
        return ops.pn_modulate(x, self.to_gamma(h), self.to_beta(h), eps=self.eps, backend=self.backend)
