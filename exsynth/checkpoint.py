"""Checkpoints: one file holding a generator's config and weights, and (for training)
the step, the training config and the objective's states (discriminators, optimisers) under
the keys it names; nothing random needs storing (every draw is a function of (seed, step)).

Writes are atomic (temporary file in the same folder, fsync, rename): a crash or a full
disk mid-write leaves the previous checkpoint intact and no partial file under the name.
Frozen pretrained weights (a model's `ModelSpec.unstored_prefixes`) are not stored when they
come from a file named in the model config (they load from it again); a random-init backbone is
stored. The model is found in `exsynth.registry` by the name the checkpoint records.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import torch
from torch import nn

from .registry import model_spec, models, spec_of

__all__ = ["CheckpointError", "build_model", "model_name", "save_checkpoint", "load_checkpoint",
           "load_generator", "load_weights", "generator_state", "size_multiple", "FORMAT", "VERSION"]

FORMAT = "exsynth-checkpoint"
VERSION = 1
PathLike = Union[str, os.PathLike]


class CheckpointError(ValueError):
    """A checkpoint that is missing, not an exsynth checkpoint, or of another model."""


def build_model(name: str, config: Dict[str, Any]) -> nn.Module:
    """The generator of registered model `name` from a dict of its config fields."""
    return model_spec(name).build(config)


def model_name(model: nn.Module) -> str:
    return spec_of(model).name


def generator_state(model: nn.Module) -> Dict[str, torch.Tensor]:
    """state_dict, without what the model's spec says need not be stored (a frozen pretrained
    backbone that loads from a file named in its config); a random-init backbone is stored."""
    sd = model.state_dict()
    skip = tuple(spec_of(model).unstored_prefixes(model.cfg))
    if skip:
        sd = {k: v for k, v in sd.items() if not k.startswith(skip)}
    return dict(sd)


def load_weights(model: nn.Module, state: Dict[str, torch.Tensor], source) -> None:
    """Load a generator state written by save_checkpoint (float16 copies are cast by the
    copy into the parameters); only a backbone that loads from its own file may be absent."""
    missing, unexpected = model.load_state_dict(state, strict=False)
    stored = generator_state(model)  # what a checkpoint of this model must hold
    missing = [k for k in missing if k in stored]
    if missing or unexpected:
        raise CheckpointError(f"{source}: weights do not fit the model (missing {missing[:3]}, "
                              f"unexpected {unexpected[:3]})")


def size_multiple(model: nn.Module) -> int:
    """Image sides a generator accepts must be multiples of this."""
    return int(spec_of(model).size_multiple(model.cfg))


def _config_dict(model: nn.Module) -> Dict[str, Any]:
    d = dataclasses.asdict(model.cfg)
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}


def save_checkpoint(path: PathLike, model: nn.Module, *, half: bool = False,
                    **extra: Any) -> None:
    """Atomically write `model` (+ `extra` entries such as step, optimizer states) to `path`.
    half=True stores floating weights as float16 (a smaller file for shipping; loads back
    to float32)."""
    state = generator_state(model)
    if half:
        state = {k: (v.half() if v.is_floating_point() else v) for k, v in state.items()}
    payload = dict(format=FORMAT, version=VERSION, model=model_name(model), model_config=_config_dict(model),
                   generator=state, **extra)
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    finally:
        if tmp.exists():
            tmp.unlink()


def load_checkpoint(path: PathLike, expect_model: Optional[str] = None) -> Dict[str, Any]:
    """Read and check a checkpoint file (on the CPU)."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: no such checkpoint file")
    try:
        payload = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{p}: not a readable checkpoint (torch.load failed: {type(e).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{p}: not an exsynth checkpoint (no '{FORMAT}' header)")
    if payload.get("version", 0) > VERSION:
        raise CheckpointError(f"{p}: checkpoint version {payload.get('version')} is newer than this exsynth "
                              f"reads ({VERSION})")
    if expect_model is not None and payload.get("model") != expect_model:
        raise CheckpointError(f"{p}: checkpoint holds a {payload.get('model')!r} model, expected {expect_model!r}")
    if payload.get("model") not in models():
        raise CheckpointError(f"{p}: checkpoint holds a {payload.get('model')!r} model, which is not registered "
                              f"here (registered: {', '.join(models())}); import the module that registers it")
    return payload


def load_generator(path: PathLike, *, expect_model: Optional[str] = None, device="cpu",
                   overrides: Optional[Dict[str, Any]] = None) -> Tuple[nn.Module, Dict[str, Any]]:
    """(model in eval mode on `device`, payload). overrides replace model-config entries
    (e.g. backend, vgg_path) before the model is built."""
    payload = load_checkpoint(path, expect_model)
    config = dict(payload["model_config"])
    config.update(overrides or {})
    try:
        model = build_model(payload["model"], config)
    except (TypeError, ValueError, OSError) as e:
        raise CheckpointError(f"{path}: cannot build its {payload['model']} model: {e}") from None
    load_weights(model, payload["generator"], path)
    return model.to(device).eval(), payload
