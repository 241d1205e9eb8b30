"""Layers built on exsynth.ops, for the models and for other projects."""
from .attention import MSCAModule
from .blocks import MultiscalePatchDiscriminator, NonLocalBlock, PatchDiscriminator, SPADE, SPADEResBlock
from .normalization import PNSPADE, PositionalNorm2d
from .inception import FIDInceptionV3, load_fid_inception
from .vgg import VGG19Features, load_vgg19

__all__ = ["PositionalNorm2d", "PNSPADE", "SPADE", "SPADEResBlock", "NonLocalBlock", "PatchDiscriminator",
           "MultiscalePatchDiscriminator", "MSCAModule", "VGG19Features", "load_vgg19", "FIDInceptionV3",
           "load_fid_inception"]
