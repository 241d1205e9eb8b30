"""Exemplar-based synthesis models built on exsynth.ops / exsynth.nn."""
from .cocosnet import (
    CoCosNet,
    CoCosNetConfig,
    CorrespondenceNet,
    MultiscalePatchDiscriminator,
    TranslationNet,
    distort_exemplar,
)
from .msca_net import MSCANet, MSCANetConfig, cross_reconstruction_crops, reconstruction_losses

__all__ = [
    "CoCosNetConfig",
    "CorrespondenceNet",
    "TranslationNet",
    "CoCosNet",
    "MultiscalePatchDiscriminator",
    "distort_exemplar",
    "MSCANetConfig",
    "MSCANet",
    "cross_reconstruction_crops",
    "reconstruction_losses",
]
