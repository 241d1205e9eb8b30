"""Exemplar-based synthesis models built on exsynth.ops / exsynth.nn."""
from .cocosnet import (
    CoCosNet,
    CoCosNetConfig,
    CorrespondenceNet,
    MultiscalePatchDiscriminator,
    TranslationNet,
    distort_exemplar,
)

__all__ = [
    "CoCosNetConfig",
    "CorrespondenceNet",
    "TranslationNet",
    "CoCosNet",
    "MultiscalePatchDiscriminator",
    "distort_exemplar",
]
