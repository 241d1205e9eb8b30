"""Backend registry: which backends exist here, and which one serves a call.

Each backend module in ``exsynth.ops.backends`` exposes ``status()`` ->
(usable: bool, reason: str) and ``supports(device, dtype)`` -> None or a
reason it cannot serve that call. ``reference`` (plain PyTorch) serves
everything and is the oracle the others are tested against.
"""
from __future__ import annotations

import dataclasses

import torch

from .backends import cpu as _cpu
from .backends import cuda as _cuda
from .backends import triton as _triton

BACKENDS = ("reference", "cpu", "triton", "cuda")

# Order tried by backend="auto", per device type. Fused backends first; the
# reference is the fallback that always works.
_AUTO_ORDER = {
    "cuda": ("cuda", "triton", "reference"),
    "cpu": ("cpu", "reference"),
}


class BackendUnavailableError(RuntimeError):
    """A backend was asked for by name but cannot serve this call."""


@dataclasses.dataclass(frozen=True)
class BackendInfo:
    name: str
    available: bool
    reason: str


_MODULES = {"cpu": _cpu, "triton": _triton, "cuda": _cuda}


def _module(name: str):
    return _MODULES[name]


def backends() -> dict[str, BackendInfo]:
    """Which backends are usable on this machine, and why the others are not."""
    out = {"reference": BackendInfo("reference", True, "plain PyTorch, always available")}
    for name in BACKENDS[1:]:
        ok, reason = _module(name).status()
        out[name] = BackendInfo(name, ok, reason)
    return out


def resolve(op: str, backend: str, device: torch.device, dtype: torch.dtype) -> str:
    """The backend that runs `op` for tensors on `device` of `dtype`."""
    if not isinstance(backend, str) or (backend != "auto" and backend not in BACKENDS):
        raise ValueError(f"{op}: backend must be 'auto' or one of {BACKENDS}, got {backend!r}")
    if backend == "reference":
        return backend
    if backend == "auto":
        for name in _AUTO_ORDER.get(device.type, ("reference",)):
            if name == "reference":
                return name
            mod = _module(name)
            if mod.status()[0] and mod.supports(device, dtype) is None:
                return name
        return "reference"
    mod = _module(backend)
    ok, reason = mod.status()
    if not ok:
        raise BackendUnavailableError(f"{op}: backend {backend!r} is not available here: {reason}")
    why = mod.supports(device, dtype)
    if why is not None:
        raise BackendUnavailableError(
            f"{op}: backend {backend!r} cannot serve {dtype} tensors on {device}: {why}"
        )
    return backend


def implementation(name: str):
    """The backend module with the kernels' Python glue."""
    return _module(name)
