"""`exsynth convert`: checkpoints written by published code, as exsynth checkpoints.

A model module registers a `Converter` under the name of the code whose checkpoints it reads
(`exsynth.models.cocosnet_release`: "cocosnet"); `exsynth convert --from NAME CKPT_DIR --preset
PRESET --out FILE` finds it here, so the command names no model.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict

__all__ = ["ConversionError", "Converter", "register_converter", "converters"]


class ConversionError(ValueError):
    """Files that are not the network a preset describes, or a preset the converter cannot build."""


@dataclass(frozen=True)
class Converter:
    """name: the `--from` value (the code whose checkpoints are read).
    convert(ckpt_dir, preset, out, *, epoch, ignore_unexpected) -> the written exsynth
        checkpoint's path; raises ConversionError (one line naming the file and what does not
        fit). ignore_unexpected: keys the network has no place for are dropped with a warning
        (the code's own loader falls back to strict=False), instead of refused.
    description: what it reads, for `exsynth convert -h` and messages."""

    name: str
    convert: Callable[..., Path]
    description: str = ""


_CONVERTERS: Dict[str, Converter] = {}


def register_converter(converter: Converter) -> Converter:
    old = _CONVERTERS.get(converter.name)
    if old is not None and old != converter:
        raise ValueError(f"a converter named {converter.name!r} is already registered ({old!r})")
    _CONVERTERS[converter.name] = converter
    return converter


def converters() -> Dict[str, Converter]:
    """Registered converters by name (the model modules, which register them, imported first)."""
    from .registry import models
    models()
    return dict(sorted(_CONVERTERS.items()))
