"""VGG19 convolutional feature extractor (torchvision-compatible layout).

torchvision is not a dependency, so the network is defined here with exactly
torchvision's ``vgg19().features`` indexing: a torchvision ``vgg19`` state dict
(``features.N.weight`` / ``features.N.bias``) loads directly, and so does
CoCosNet's ``vgg19_conv.pth`` (``conv1_1.weight`` ... ``conv5_4.bias``).

The two formats expect different input, and `load_vgg19` sets the one its file
needs (`VGG19Features.input_format`): torchvision weights take RGB in [0, 1]
normalised by the ImageNet mean / std; CoCosNet's (caffe-converted) weights
take BGR x 255 minus the BGR mean, CoCosNet's `util.vgg_preprocess` with
`--vgg_normal_correct` ([-1, 1] mapped to [0, 1] first).

Weights are never downloaded. Pass a local file to :func:`load_vgg19`; without
one a random-init network is returned and a warning is issued (once).
"""
from __future__ import annotations

import os
import warnings
from collections import OrderedDict
from typing import Dict, Iterable, List, Optional, Tuple

import torch
from torch import nn

__all__ = ["VGG19Features", "load_vgg19", "VGG19_LAYER_NAMES", "VGG19_CONV_INDICES"]

# torchvision "E" configuration.
_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
        512, 512, 512, 512, "M", 512, 512, 512, 512, "M"]

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
# CoCosNet's util.vgg_preprocess: BGR channel means in [0, 1] (103.939, 116.779, 123.68 / 255)
_CAFFE_BGR_MEAN = (0.40760392, 0.45795686, 0.48501961)


def _layout() -> Tuple[List[int], Dict[str, int], Dict[int, str]]:
    """Conv indices, relu name -> Sequential index, conv index -> 'conv{b}_{i}'."""
    conv_idx, relu_idx, conv_names = [], {}, {}
    idx, block, i = 0, 1, 1
    for v in _CFG:
        if v == "M":
            idx += 1
            block, i = block + 1, 1
        else:
            conv_idx.append(idx)
            conv_names[idx] = f"conv{block}_{i}"
            relu_idx[f"relu{block}_{i}"] = idx + 1
            idx += 2
            i += 1
    return conv_idx, relu_idx, conv_names


VGG19_CONV_INDICES, _RELU_INDEX, _CONV_NAMES = _layout()
VGG19_LAYER_NAMES: Tuple[str, ...] = tuple(_RELU_INDEX)

DEFAULT_LAYERS = ("relu1_2", "relu2_2", "relu3_2", "relu4_2", "relu5_2")


class VGG19Features(nn.Module):
    """VGG19 conv stack returning named ReLU activations.

    Input: images in ``[-1, 1]`` (the range of the generators' ``tanh``
    output), shape ``(N, 3, H, W)``. They are mapped to what the loaded weights
    expect (`input_format`, set by `load_vgg19`): ``[0, 1]`` with the ImageNet
    mean/std for torchvision's weights, caffe's BGR x 255 minus the mean for
    CoCosNet's ``vgg19_conv.pth``.

    ``forward(x, layers)`` returns ``{name: activation}`` for the requested
    ReLU names (``relu1_1`` ... ``relu5_4``) and stops after the deepest one.
    """

    def __init__(self) -> None:
        super().__init__()
        mods: List[nn.Module] = []
        in_c = 3
        for v in _CFG:
            if v == "M":
                mods.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                mods.append(nn.Conv2d(in_c, v, kernel_size=3, padding=1))
                mods.append(nn.ReLU(inplace=False))
                in_c = v
        self.features = nn.Sequential(*mods)
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("caffe_bgr_mean", torch.tensor(_CAFFE_BGR_MEAN).view(1, 3, 1, 1), persistent=False)
        self.input_format = "torchvision"   # load_vgg19 sets "caffe" for CoCosNet's vgg19_conv.pth

    @staticmethod
    def layer_index(name: str) -> int:
        try:
            return _RELU_INDEX[name]
        except KeyError:
            raise ValueError(
                f"unknown VGG19 layer {name!r}; expected one of {', '.join(VGG19_LAYER_NAMES)}"
            ) from None

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``[-1, 1]`` images to the input the loaded weights expect (`input_format`):
        "torchvision": RGB in [0, 1] normalised by the ImageNet mean / std; "caffe": CoCosNet's
        vgg_preprocess, (BGR in [0, 1] - BGR mean) x 255."""
        x01 = (x + 1.0) * 0.5
        if self.input_format == "caffe":
            return (x01.flip(1) - self.caffe_bgr_mean.to(x.dtype)) * 255.0
        return (x01 - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def forward(self, x: torch.Tensor, layers: Iterable[str] = DEFAULT_LAYERS) -> Dict[str, torch.Tensor]:
        if isinstance(layers, str):
            layers = (layers,)
        layers = tuple(layers)
        if not layers:
            return {}
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"VGG19Features expects (N, 3, H, W) input, got {tuple(x.shape)}")
        wanted = {self.layer_index(n): n for n in layers}
        last = max(wanted)
        out: Dict[str, torch.Tensor] = {}
        h = self.normalize(x)
        for idx, layer in enumerate(self.features):
            h = layer(h)
            if idx in wanted:
                out[wanted[idx]] = h
            if idx == last:
                break
        return {n: out[n] for n in layers}


# --------------------------------------------------------------------------- loading

_RANDOM_INIT_WARNED = False


def _warn_random_init() -> None:
    global _RANDOM_INIT_WARNED
    if _RANDOM_INIT_WARNED:
        return
    _RANDOM_INIT_WARNED = True
    warnings.warn(
        "exsynth: no VGG19 weights given, so VGG-based losses use a RANDOM-INIT VGG19 "
        "(fine for tests, meaningless for training). Pass a local torchvision vgg19 "
        "state dict or CoCosNet's vgg19_conv.pth via load_vgg19(path) / "
        "VGGLoss(vgg=load_vgg19(path)); nothing is downloaded.",
        UserWarning,
        stacklevel=3,
    )


def _convert_state_dict(sd: Dict[str, torch.Tensor], *, strict: bool, source: str
                        ) -> Tuple["OrderedDict[str, torch.Tensor]", str]:
    """(a ``features.N.*`` state dict, the input format "torchvision" | "caffe") from a
    torchvision or CoCosNet one."""
    if not isinstance(sd, dict) or not sd:
        raise ValueError(f"{source}: expected a non-empty state dict (mapping of name -> tensor), "
                         f"got {type(sd).__name__}")
    keys = [k[len("module."):] if isinstance(k, str) and k.startswith("module.") else k for k in sd]
    sd = dict(zip(keys, sd.values()))
    if any(not isinstance(k, str) for k in sd):
        raise ValueError(f"{source}: state dict keys must be strings")

    expected = [f"features.{i}.{p}" for i in VGG19_CONV_INDICES for p in ("weight", "bias")]
    coco = {f"{_CONV_NAMES[i]}.{p}": f"features.{i}.{p}" for i in VGG19_CONV_INDICES for p in ("weight", "bias")}

    if any(k.startswith("features.") for k in sd):
        fmt = "torchvision"
        mapped = {k: v for k, v in sd.items() if k.startswith("features.")}
        unexpected = [k for k in sd if not k.startswith("features.") and not k.startswith("classifier.")]
        unexpected += [k for k in mapped if k not in expected]
    elif any(k in coco for k in sd):
        fmt = "CoCosNet vgg19_conv"
        mapped = {coco[k]: v for k, v in sd.items() if k in coco}
        unexpected = [k for k in sd if k not in coco]
    else:
        raise ValueError(
            f"{source}: unrecognised VGG19 weight format (keys such as {sorted(sd)[:4]}); expected a "
            "torchvision vgg19 state dict ('features.N.weight') or CoCosNet's vgg19_conv.pth "
            "('conv1_1.weight' ... 'conv5_4.bias')"
        )
    missing = [k for k in expected if k not in mapped]
    if strict and (missing or unexpected):
        raise ValueError(f"{source} ({fmt} format): missing keys {missing[:8]}"
                         f"{' ...' if len(missing) > 8 else ''}, unexpected keys {unexpected[:8]}"
                         f"{' ...' if len(unexpected) > 8 else ''}")
    out = OrderedDict((k, mapped[k]) for k in expected if k in mapped)
    if not out:
        raise ValueError(f"{source} ({fmt} format): no VGG19 conv weights found")
    if missing:
        warnings.warn(f"{source}: {len(missing)} VGG19 tensors missing, left random-init: {missing[:4]}")
    return out, ("caffe" if fmt.startswith("CoCosNet") else "torchvision")


def load_vgg19(path: Optional[str] = None, *, strict: bool = True) -> VGG19Features:
    """Build a frozen :class:`VGG19Features` (eval mode, ``requires_grad=False``).

    ``path``: a local ``torch.save``d state dict, either torchvision's ``vgg19``
    (``features.N.*``; ``classifier.*`` keys are ignored) or CoCosNet's
    ``vgg19_conv.pth`` (``conv{b}_{i}.weight/bias``), each with its own input
    preprocessing (``input_format``: ImageNet mean/std for torchvision's, caffe BGR x 255
    for CoCosNet's). A ``module.`` prefix is stripped. With ``strict=True`` missing or unexpected (non-classifier) keys
    raise ``ValueError``; with ``strict=False`` they are tolerated (missing
    tensors stay random-init, with a warning). Shape mismatches and unknown
    formats always raise ``ValueError``; a missing file raises
    ``FileNotFoundError``.

    Without ``path`` the network is random-init and a warning is issued once
    per process.
    """
    net = VGG19Features()
    if path is None:
        _warn_random_init()
    else:
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"VGG19 weight file not found: {path!r}")
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001
            raise ValueError(f"{path}: could not read VGG19 weights with torch.load: {e}") from e
        if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
            sd = sd["state_dict"]
        sd, net.input_format = _convert_state_dict(sd, strict=strict, source=path)
        own = net.state_dict()
        for k, v in sd.items():
            if not isinstance(v, torch.Tensor):
                raise ValueError(f"{path}: {k} is not a tensor")
            if tuple(v.shape) != tuple(own[k].shape):
                raise ValueError(f"{path}: shape mismatch for {k}: file has {tuple(v.shape)}, "
                                 f"VGG19 expects {tuple(own[k].shape)}")
        net.load_state_dict(sd, strict=False)
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net
