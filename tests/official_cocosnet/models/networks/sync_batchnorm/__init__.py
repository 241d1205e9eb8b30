"""Stub of Synchronized-BatchNorm-PyTorch (see ../../../README.md): named by the unused
DomainClassifier and by SPADE's syncbatch option, which the tests do not select."""
from torch.nn import BatchNorm1d as SynchronizedBatchNorm1d  # noqa: F401
from torch.nn import BatchNorm2d as SynchronizedBatchNorm2d  # noqa: F401
