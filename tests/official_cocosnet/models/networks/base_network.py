"""Stub of CoCosNet's BaseNetwork (see ../../README.md): the networks only subclass it."""
import torch.nn as nn


class BaseNetwork(nn.Module):
    pass
