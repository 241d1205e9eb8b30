"""Layers built on exsynth.ops, for the models and for other projects."""
from .attention import MSCAModule
from .normalization import PNSPADE, PositionalNorm2d

__all__ = ["PositionalNorm2d", "PNSPADE", "MSCAModule"]
