"""FID Inception-v3 feature extractor (the pytorch-fid variant), torchvision-free.

This is the Inception-v3 network that FID is defined with: the TensorFlow
``inception-2015-12-05`` graph, ported to PyTorch by pytorch-fid
(``pytorch_fid.inception.fid_inception_v3``). It takes the weight file
``pt_inception-2015-12-05-6726825d.pth`` -- the one pytorch-fid and
torch-fidelity use -- which is a state dict of torchvision's ``Inception3``
built with ``num_classes=1008, aux_logits=False``. The modules here carry
exactly torchvision's names (``Conv2d_1a_3x3.conv.weight``,
``Mixed_7c.branch_pool.bn.running_var``, ``fc.weight`` ...), so that file
loads strictly.

It is the pytorch-fid variant, not torchvision's Inception-v3. The FID graph
differs from torchvision's in the pooling branches:

* ``Mixed_5b/5c/5d`` (InceptionA), ``Mixed_6b..6e`` (InceptionC) and
  ``Mixed_7b`` (first InceptionE) average-pool with
  ``count_include_pad=False`` (TensorFlow does not count padded zeros);
* ``Mixed_7c`` (second InceptionE) max-pools (3x3, stride 1, padding 1) in its
  pool branch instead of average-pooling.

:class:`FIDInceptionV3` returns the 2048-d "pool3" features (output of the
final adaptive average pool). Weights are never downloaded: pass the local
file to :func:`load_fid_inception`.
"""
from __future__ import annotations

import os
from collections import OrderedDict
from typing import Any, Dict, List, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["FIDInceptionV3", "load_fid_inception", "FID_WEIGHTS_NAME", "FID_FEATURE_DIM"]

#: File name of the standard FID weights (pytorch-fid release ``fid_weights``).
FID_WEIGHTS_NAME = "pt_inception-2015-12-05-6726825d.pth"
#: Dimension of the pool3 features.
FID_FEATURE_DIM = 2048
_INPUT_SIZE = (299, 299)
_NUM_CLASSES = 1008


# --------------------------------------------------------------------------- building blocks

class BasicConv2d(nn.Module):
    """Conv (no bias) -> BatchNorm(eps=1e-3) -> ReLU, as in torchvision."""

    def __init__(self, in_channels: int, out_channels: int, **conv_kwargs: Any) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, bias=False, **conv_kwargs)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x)), inplace=True)


def _avg_pool_tf(x: Tensor) -> Tensor:
    # TensorFlow's 3x3 / stride 1 / SAME average pool ignores padded zeros.
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class FIDInceptionA(nn.Module):
    """InceptionA (Mixed_5b/5c/5d); pool branch: avg pool without padded zeros."""

    def __init__(self, in_channels: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch5x5_1 = BasicConv2d(in_channels, 48, kernel_size=1)
        self.branch5x5_2 = BasicConv2d(48, 64, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)
        self.branch_pool = BasicConv2d(in_channels, pool_features, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        b1 = self.branch1x1(x)
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = self.branch_pool(_avg_pool_tf(x))
        return torch.cat([b1, b5, b3, bp], 1)


class InceptionB(nn.Module):
    """InceptionB (Mixed_6a), grid reduction 35 -> 17; same as torchvision."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3 = BasicConv2d(in_channels, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        b3 = self.branch3x3(x)
        bd = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([b3, bd, bp], 1)


class FIDInceptionC(nn.Module):
    """InceptionC (Mixed_6b..6e); pool branch: avg pool without padded zeros."""

    def __init__(self, in_channels: int, channels_7x7: int) -> None:
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch7x7_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7_2 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(in_channels, 192, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        b1 = self.branch1x1(x)
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = self.branch7x7dbl_1(x)
        for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            bd = layer(bd)
        bp = self.branch_pool(_avg_pool_tf(x))
        return torch.cat([b1, b7, bd, bp], 1)


class InceptionD(nn.Module):
    """InceptionD (Mixed_7a), grid reduction 17 -> 8; same as torchvision."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3_1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch3x3_2 = BasicConv2d(192, 320, kernel_size=3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, kernel_size=3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_1(x)
        for layer in (self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4):
            b7 = layer(b7)
        bp = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([b3, b7, bp], 1)


class _InceptionE(nn.Module):
    """InceptionE layout (Mixed_7b/7c); subclasses choose the pool branch."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(in_channels, 320, kernel_size=1)
        self.branch3x3_1 = BasicConv2d(in_channels, 384, kernel_size=1)
        self.branch3x3_2a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 448, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(in_channels, 192, kernel_size=1)

    def _pool(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        b1 = self.branch1x1(x)
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
        bp = self.branch_pool(self._pool(x))
        return torch.cat([b1, b3, bd, bp], 1)


class FIDInceptionE_1(_InceptionE):  # noqa: N801 - pytorch-fid's name
    """First InceptionE (Mixed_7b); pool branch: avg pool without padded zeros."""

    def _pool(self, x: Tensor) -> Tensor:
        return _avg_pool_tf(x)


class FIDInceptionE_2(_InceptionE):  # noqa: N801 - pytorch-fid's name
    """Second InceptionE (Mixed_7c); pool branch: 3x3 / stride 1 / pad 1 MAX pool."""

    def _pool(self, x: Tensor) -> Tensor:
        return F.max_pool2d(x, kernel_size=3, stride=1, padding=1)


# --------------------------------------------------------------------------- network

class FIDInceptionV3(nn.Module):
    """FID Inception-v3 returning 2048-d pool3 features.

    ``forward(images)``: images in ``[-1, 1]`` of shape ``(B, 3, H, W)``, any
    ``H, W``. They are resized to 299x299 with bilinear interpolation
    (``align_corners=False``), as pytorch-fid's ``InceptionV3(resize_input=True)``
    does; since they are already in ``[-1, 1]`` no other normalisation is
    applied. Returns ``(B, 2048)`` float32 features.

    ``fc`` (2048 -> 1008) exists only so the weight file loads strictly; it
    is not used by ``forward``.

    A freshly built network is random-init (Kaiming, so activations keep a
    sensible scale); use :func:`load_fid_inception` for the real weights.
    """

    def __init__(self) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
        self.maxpool1 = nn.MaxPool2d(kernel_size=3, stride=2)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
        self.maxpool2 = nn.MaxPool2d(kernel_size=3, stride=2)
        self.Mixed_5b = FIDInceptionA(192, pool_features=32)
        self.Mixed_5c = FIDInceptionA(256, pool_features=64)
        self.Mixed_5d = FIDInceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = FIDInceptionC(768, channels_7x7=128)
        self.Mixed_6c = FIDInceptionC(768, channels_7x7=160)
        self.Mixed_6d = FIDInceptionC(768, channels_7x7=160)
        self.Mixed_6e = FIDInceptionC(768, channels_7x7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = FIDInceptionE_1(1280)
        self.Mixed_7c = FIDInceptionE_2(2048)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(FID_FEATURE_DIM, _NUM_CLASSES)  # unused in forward
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")

    def forward(self, images: Tensor) -> Tensor:
        if not isinstance(images, Tensor):
            raise ValueError(f"FIDInceptionV3 expects a tensor of shape (B, 3, H, W), got {type(images).__name__}")
        if images.dim() != 4 or images.shape[1] != 3 or images.numel() == 0:
            raise ValueError(f"FIDInceptionV3 expects images of shape (B, 3, H, W) in [-1, 1], "
                             f"got shape {tuple(images.shape)}")
        if not images.is_floating_point():
            raise ValueError(f"FIDInceptionV3 expects floating-point images in [-1, 1], got dtype {images.dtype}")
        x = images.to(dtype=self.fc.weight.dtype)
        x = F.interpolate(x, size=_INPUT_SIZE, mode="bilinear", align_corners=False)
        x = self.Conv2d_1a_3x3(x)   # 32 x 149 x 149
        x = self.Conv2d_2a_3x3(x)   # 32 x 147 x 147
        x = self.Conv2d_2b_3x3(x)   # 64 x 147 x 147
        x = self.maxpool1(x)        # 64 x 73 x 73
        x = self.Conv2d_3b_1x1(x)   # 80 x 73 x 73
        x = self.Conv2d_4a_3x3(x)   # 192 x 71 x 71
        x = self.maxpool2(x)        # 192 x 35 x 35
        x = self.Mixed_5b(x)        # 256 x 35 x 35
        x = self.Mixed_5c(x)        # 288 x 35 x 35
        x = self.Mixed_5d(x)        # 288 x 35 x 35
        x = self.Mixed_6a(x)        # 768 x 17 x 17
        x = self.Mixed_6b(x)
        x = self.Mixed_6c(x)
        x = self.Mixed_6d(x)
        x = self.Mixed_6e(x)        # 768 x 17 x 17
        x = self.Mixed_7a(x)        # 1280 x 8 x 8
        x = self.Mixed_7b(x)        # 2048 x 8 x 8
        x = self.Mixed_7c(x)        # 2048 x 8 x 8
        x = self.avgpool(x)         # 2048 x 1 x 1
        return torch.flatten(x, 1).float()


# --------------------------------------------------------------------------- loading

def _is_bn_counter(key: str) -> bool:
    return key.endswith("num_batches_tracked")


def _preview(keys: List[str], n: int = 5) -> str:
    shown = ", ".join(repr(k) for k in keys[:n])
    return f"[{shown}{', ...' if len(keys) > n else ''}] ({len(keys)} in all)"


def load_fid_inception(path: Optional[str]) -> FIDInceptionV3:
    """Build :class:`FIDInceptionV3` from the local FID weight file.

    ``path``: ``pt_inception-2015-12-05-6726825d.pth`` (pytorch-fid's
    ``FID_WEIGHTS_URL`` file, also used by torch-fidelity), or any
    ``torch.save``d state dict of the same network. The object may be wrapped
    in ``{"state_dict": ...}``; a ``module.`` prefix is stripped;
    ``num_batches_tracked`` entries are ignored on both sides. Everything else
    must match exactly.

    Raises ``ValueError`` if ``path`` is None (nothing is downloaded),
    ``FileNotFoundError`` if the file does not exist, ``ValueError`` (naming the
    path) if it cannot be read or its keys / shapes do not match.

    The returned network is in eval mode with ``requires_grad=False``.
    """
    if path is None:
        raise ValueError(
            f"FID needs the Inception weights file {FID_WEIGHTS_NAME} (pt_inception-2015-12-05, the one "
            "pytorch-fid / torch-fidelity use); pass its local path. Nothing is downloaded."
        )
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"FID Inception weight file not found: {path!r}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"{path}: could not read FID Inception weights with torch.load: {e}") from e
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj:
        raise ValueError(f"{path}: expected a non-empty state dict (name -> tensor), got {type(obj).__name__}")

    sd: "OrderedDict[str, Tensor]" = OrderedDict()
    for k, v in obj.items():
        if not isinstance(k, str):
            raise ValueError(f"{path}: state dict keys must be strings, got {k!r}")
        if k.startswith("module."):
            k = k[len("module."):]
        if _is_bn_counter(k):
            continue
        if not isinstance(v, Tensor):
            raise ValueError(f"{path}: entry {k!r} is not a tensor ({type(v).__name__})")
        sd[k] = v

    net = FIDInceptionV3()
    own: Dict[str, Tensor] = {k: v for k, v in net.state_dict().items() if not _is_bn_counter(k)}
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys {_preview(missing)}")
        if unexpected:
            parts.append(f"unexpected keys {_preview(unexpected)}")
        raise ValueError(f"{path}: not an FID Inception-v3 state dict ({FID_WEIGHTS_NAME} layout): "
                         + "; ".join(parts))
    mismatched = [f"{k}: file {tuple(sd[k].shape)} vs model {tuple(v.shape)}"
                  for k, v in own.items() if tuple(sd[k].shape) != tuple(v.shape)]
    if mismatched:
        raise ValueError(f"{path}: shape mismatch for {len(mismatched)} tensor(s): "
                         + "; ".join(mismatched[:5]) + (" ..." if len(mismatched) > 5 else ""))

    result = net.load_state_dict(sd, strict=False)
    leftover = [k for k in list(result.missing_keys) + list(result.unexpected_keys) if not _is_bn_counter(k)]
    if leftover:  # cannot happen after the checks above; kept as a guard
        raise ValueError(f"{path}: state dict did not load cleanly: {_preview(leftover)}")
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net
