"""CoCosNet's released checkpoints as exsynth checkpoints (`exsynth convert --from cocosnet`).

CoCosNet (github:microsoft/CoCosNet): its test script loads `CKPT_DIR/{epoch}_net_Corr.pth` (the
cross-domain correspondence network, `NoVGGCorrespondence`) and `CKPT_DIR/{epoch}_net_G.pth` (the
translation network, `SPADEGenerator`), both plain state dicts. A preset names the options the
released model was trained and is tested with (`cocosnet-ade20k`, `cocosnet-celebahq`, ...); its
CoCosNet is built, every one of its weights is taken from the key the code gives the same weight
(module names translated one by one below, the old-style spectral norm's weight_orig / weight_u /
weight_v to the parametrisation's original / _u / _v, which compute the same sigma = u.(W v) in
evaluation), and the result is written as an exsynth checkpoint that `exsynth synthesize` runs on
the fused ops. A file that does not hold exactly those keys with those shapes is refused, naming
the first key that does not fit.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Dict, List, Tuple, Union

import torch

from ..checkpoint import build_model, save_checkpoint
from ..convert import ConversionError, Converter, register_converter
from ..registry import data_source, model_spec

__all__ = ["cocosnet_key_map", "convert_cocosnet", "convert_cocosnet_file", "COCOSNET_FILES"]

PathLike = Union[str, os.PathLike]

# the two networks' files (the code's util.save_network: {epoch}_net_{label}.pth) and the
# prefix their keys get here
COCOSNET_FILES = (("Corr", "correspondence"), ("G", "translation"))

# parameter names: the code's (old-style spectral norm) for exsynth's (parametrised)
_PARAMS = (("parametrizations.weight.original", "weight_orig"), ("parametrizations.weight.0._u", "weight_u"),
           ("parametrizations.weight.0._v", "weight_v"), ("weight", "weight"), ("bias", "bias"), ("gamma", "gamma"))

# what the code's network is, as CoCosNetConfig options (the rest may vary by dataset)
_CODE_NETWORK = dict(adaptor="spade", feature_block="prelu", separate_theta_phi=True, generator_layout="spade",
                     normalize_adaptor_features=True, adaptor_downsample=2, feature_size=None, exemplar_label_input=False)


def _spade_block(ours: str, theirs: str) -> List[Tuple[str, str]]:
    """A PN-SPADE resblock: exsynth's SPADEResBlock against the code's SPADEResnetBlock."""
    pairs = [(ours, theirs)]
    for a, b in (("0", "_0"), ("1", "_1"), ("_s", "_s")):
        pairs += [(f"{ours}.conv{a}", f"{theirs}.conv{b}"),
                  (f"{ours}.norm{a}.shared.0", f"{theirs}.norm{b}.mlp_shared.1"),
                  (f"{ours}.norm{a}.to_gamma", f"{theirs}.norm{b}.mlp_gamma"),
                  (f"{ours}.norm{a}.to_beta", f"{theirs}.norm{b}.mlp_beta")]
    return pairs


def _module_pairs() -> List[Tuple[str, str]]:
    """(exsynth module path, the code's module path) for the code's CoCosNet; a module inside a
    listed one keeps its name unless listed itself."""
    pairs: List[Tuple[str, str]] = []
    for side, theirs in (("label_adaptor", "adaptive_model_seg"), ("exemplar_adaptor", "adaptive_model_img")):
        ours = f"correspondence.{side}"
        pairs += [(f"{ours}.convs.{i}", f"Corr.{theirs}.layer{i + 1}") for i in range(5)]
        for i, block in enumerate(("head_0", "G_middle_0", "G_middle_1")):
            pairs += _spade_block(f"{ours}.blocks.{i}", f"Corr.{theirs}.{block}")
    pairs += [("correspondence.adaptive_block", "Corr.layer"), ("correspondence.theta", "Corr.theta"),
              ("correspondence.phi", "Corr.phi")]
    pairs += [("translation.head_conv", "G.fc"), ("translation.to_image", "G.conv_img")]
    pairs += _spade_block("translation.head", "G.head_0")
    for i, block in enumerate(("G_middle_0", "G_middle_1", "up_0", "up_1", "up_2", "up_3")):
        pairs += _spade_block(f"translation.ups.{i}", f"G.{block}")
    pairs += [("translation.nonlocal_block", "G.attn"), ("translation.nonlocal_block.out", "G.attn.o")]
    return pairs


def _translate_module(path: str, pairs: Dict[str, str]) -> str:
    head, rest = path, ""
    while head:
        if head in pairs:
            return pairs[head] + rest
        head, _, last = head.rpartition(".")
        rest = f".{last}{rest}"
    raise KeyError(path)


def cocosnet_key_map(model: torch.nn.Module) -> Dict[str, str]:
    """The code's key ("Corr." / "G." + its state-dict key) -> exsynth's, for every weight of
    `model`, a CoCosNet with the code's network (ConversionError for another one)."""
    other = {k: getattr(model.cfg, k) for k, v in _CODE_NETWORK.items() if getattr(model.cfg, k) != v}
    if other:
        raise ConversionError(f"this CoCosNet is not the released code's network: {other} (the code's: "
                              f"{ {k: _CODE_NETWORK[k] for k in other} })")
    pairs = dict(_module_pairs())
    out: Dict[str, str] = {}
    for key in model.state_dict():
        for ours, theirs in _PARAMS:
            if key.endswith("." + ours):
                out[f"{_translate_module(key[:-len(ours) - 1], pairs)}.{theirs}"] = key
                break
        else:
            raise ConversionError(f"exsynth CoCosNet weight {key!r} has no counterpart in the code's networks")
    return out


def _read_state(path: Path) -> Dict[str, torch.Tensor]:
    if not path.is_file():
        raise ConversionError(f"{path}: no such file (CoCosNet's test script reads it from checkpoints/NAME)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ConversionError(f"{path}: not a readable PyTorch file (torch.load failed: {type(e).__name__})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConversionError(f"{path}: not a state dict (a mapping of names to tensors), got {type(state).__name__}")
    return state


def convert_cocosnet(ckpt_dir: PathLike, preset: str, *, epoch: str = "latest",
                     ignore_unexpected: bool = False) -> torch.nn.Module:
    """The CoCosNet of `preset` (a registered CoCosNet preset) with the weights of
    CKPT_DIR/{epoch}_net_Corr.pth and {epoch}_net_G.pth, in evaluation mode.
    ignore_unexpected: keys with no place in the network are dropped with one warning per
    file (the code's util.load_network retries with strict=False when its strict load
    fails); without it the first one is an error. Missing keys and wrong shapes always are."""
    spec = model_spec("cocosnet")
    if preset not in spec.presets:
        raise ConversionError(f"--preset {preset!r}: expected a CoCosNet preset ({', '.join(sorted(spec.presets))})")
    recipe = spec.presets[preset]
    channels = data_source(recipe["dataset"]).num_classes if recipe.get("dataset") else None
    if channels is None:
        raise ConversionError(f"--preset {preset!r} names no data layout, so its label channels are unknown; "
                              f"use a paper preset ({', '.join(k for k in sorted(spec.presets) if 'cpu' not in k)})")
    model = build_model("cocosnet", dict(recipe.get("model_options", {}), label_channels=channels))
    key_map = cocosnet_key_map(model)
    expected = model.state_dict()
    state: Dict[str, torch.Tensor] = {}
    for label, _ in COCOSNET_FILES:
        path = Path(ckpt_dir) / f"{epoch}_net_{label}.pth"
        dropped = []
        for key, tensor in _read_state(path).items():   # in the file's order: the first misfit is named
            ours = key_map.get(f"{label}.{key}")
            if ours is None and ignore_unexpected:
                dropped.append(key)
                continue
            if ours is None:
                raise ConversionError(f"{path}: key {key!r} has no place in the {preset} network (the first key that "
                                      f"does not fit; is this checkpoint of another preset?)")
            if tuple(tensor.shape) != tuple(expected[ours].shape):
                raise ConversionError(f"{path}: key {key!r} has shape {tuple(tensor.shape)}, the {preset} network "
                                      f"expects {tuple(expected[ours].shape)} (the first key that does not fit; is "
                                      f"this checkpoint of another preset?)")
            state[ours] = tensor
        if dropped:
            warnings.warn(f"{path}: {len(dropped)} key(s) with no place in the {preset} network dropped "
                          f"(--ignore-unexpected-keys): {', '.join(dropped[:5])}{' ...' if len(dropped) > 5 else ''}")
        missing = [k for k, ours in key_map.items() if k.startswith(label + ".") and ours not in state]
        if missing:
            raise ConversionError(f"{path}: no key {missing[0].split('.', 1)[1]!r}, which the {preset} network needs "
                                  f"(the first key that does not fit; is this checkpoint of another preset?)")
    model.load_state_dict(state, strict=True)
    return model.eval()


def convert_cocosnet_file(ckpt_dir: PathLike, preset: str, out: PathLike, *, epoch: str = "latest",
                          ignore_unexpected: bool = False) -> Path:
    """convert_cocosnet, written as an exsynth checkpoint at `out`."""
    model = convert_cocosnet(ckpt_dir, preset, epoch=epoch, ignore_unexpected=ignore_unexpected)
    recipe = model_spec("cocosnet").presets[preset]
    save_checkpoint(out, model,
                    train_config=dict(size=recipe.get("size", 256), dataset=recipe["dataset"], preset=preset),
                    converted_from=dict(code="github:microsoft/CoCosNet", directory=str(Path(ckpt_dir).resolve()),
                                        epoch=epoch, preset=preset))
    return Path(out)


register_converter(Converter(
    name="cocosnet", convert=convert_cocosnet_file,
    description="github:microsoft/CoCosNet's CKPT_DIR/{epoch}_net_Corr.pth + {epoch}_net_G.pth",
))
