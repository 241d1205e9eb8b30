"""Stub of CoCosNet's util.util (see ../README.md): the helpers its networks call."""
import sys

import torch


def feature_normalize(feature_in):
    """Each position's channel vector over (its L2 norm + Python's float epsilon)."""
    return feature_in / (torch.norm(feature_in, 2, 1, keepdim=True) + sys.float_info.epsilon)


def vgg_preprocess(tensor, vgg_normal_correct=False):
    raise NotImplementedError("the oracle's VGG is not used")
