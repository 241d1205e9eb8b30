"""Launch helpers shared by the Triton kernel modules."""
from __future__ import annotations

import contextlib

import torch

_SM_COUNT: dict[int, int] = {}


def on_device(t: torch.Tensor):
    """Triton launches on the current CUDA device; make it the tensor's device."""
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


def min_programs(device: torch.device, override: int | None = None) -> int:
    """Programs needed to fill the GPU (4 per SM); 1 off the GPU. `override`
    (a module's MIN_PROGRAMS, set by tests) wins."""
    if override is not None:
        return override
    if device.type != "cuda":
        return 1
    idx = device.index if device.index is not None else torch.cuda.current_device()
    if idx not in _SM_COUNT:
        _SM_COUNT[idx] = torch.cuda.get_device_properties(idx).multi_processor_count
    return 4 * _SM_COUNT[idx]
