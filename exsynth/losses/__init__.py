"""Training losses: VGG-feature losses, GAN losses, and the `Objective` base class a model's
training objective derives from."""
from .gan import (
    gan_feature_matching_loss,
    hinge_d_loss,
    hinge_d_loss_fake,
    hinge_d_loss_real,
    hinge_g_loss,
    lsgan_d_loss,
    lsgan_g_loss,
    lsgan_loss,
    tv_loss,
)
from .objective import Objective, weighted_sum
from .perceptual import (
    CONTEXTUAL_LAYERS,
    CONTEXTUAL_POOLS,
    CONTEXTUAL_WEIGHTS,
    FEATURE_MATCHING_LAYERS,
    FEATURE_MATCHING_WEIGHTS,
    STYLE_LAYERS,
    VGGLoss,
    contextual_loss,
    contextual_loss_layers,
    gram_matrix,
    style_loss,
    weighted_l1,
)

__all__ = [
    "Objective", "weighted_sum",
    "VGGLoss", "weighted_l1", "gram_matrix", "style_loss", "contextual_loss", "contextual_loss_layers",
    "FEATURE_MATCHING_LAYERS", "FEATURE_MATCHING_WEIGHTS", "CONTEXTUAL_LAYERS", "CONTEXTUAL_WEIGHTS",
    "CONTEXTUAL_POOLS", "STYLE_LAYERS",
    "hinge_d_loss_real", "hinge_d_loss_fake", "hinge_d_loss", "hinge_g_loss",
    "lsgan_loss", "lsgan_d_loss", "lsgan_g_loss", "gan_feature_matching_loss", "tv_loss",
]
