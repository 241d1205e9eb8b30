"""Exemplar-based synthesis models built on exsynth.ops / exsynth.nn.

Each model is one file here that registers a `exsynth.registry.ModelSpec`; importing the
package registers them all (the registry also discovers files added later on its own).
`MultiscalePatchDiscriminator` and `distort_exemplar` are re-exported from their shared homes
(`exsynth.nn.blocks`, `exsynth.data.augment`) for existing imports.
"""
from ..data.augment import distort_exemplar
from ..nn.blocks import MultiscalePatchDiscriminator
from .cocosnet import CoCosNet, CoCosNetConfig, CoCosNetObjective, CorrespondenceNet, TranslationNet
from .msca_net import MSCANet, MSCANetConfig, MSCAObjective, cross_reconstruction_crops, msca_warp, reconstruction_losses

__all__ = [
    "CoCosNetConfig",
    "CorrespondenceNet",
    "TranslationNet",
    "CoCosNet",
    "CoCosNetObjective",
    "MultiscalePatchDiscriminator",
    "distort_exemplar",
    "MSCANetConfig",
    "MSCANet",
    "MSCAObjective",
    "cross_reconstruction_crops",
    "reconstruction_losses",
    "msca_warp",
]
