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

# Order tried by backend="auto", per device type, where no measurement says otherwise (below).
# Fused backends first; the reference is the fallback that always works.
_AUTO_ORDER = {
    "cuda": ("cuda", "triton", "reference"),
    "cpu": ("cpu", "reference"),
}


# backend="auto" on a CUDA GPU where it was measured, per op and dtype: the order the first H200
# run gave (2026-11-30, NVIDIA H200, torch 2.11.0+cu130, triton 3.6.0; bench/results/gpu-20261130,
# bench/NOTES.md "First GPU run"). An op and dtype not listed keeps _AUTO_ORDER["cuda"].
#  correlation_warp / cycle_warp (one kernel pair): triton ahead of cuda in every case timed, B=8,
#    HW=4096, D=256: bf16 fwd 1.30 vs 2.35 ms, fwd+bwd 6.07 vs 19.2; fp32 3.08 vs 6.66 and 15.7 vs
#    42.4; D=2304 (3x3 patches) bf16 fwd+bwd 45.5 vs 224; HW=65536 bf16 fwd 65 vs 394 ms. In fp32
#    the reference (cuBLAS on the materialised matrix) was faster fwd+bwd (8.45 ms) but held 2177
#    MiB against 257: auto keeps the fused path, whose memory is what lets the op scale. float16
#    was not timed: it runs the bf16 code path (same tiles, same tensor-core instructions); the
#    pn_modulate and msca kernels below are templated on the element type too, so fp16 (what
#    --amp trains in on a GPU) takes the bf16 entries.
#  pn_modulate bf16: cuda, B=8, C=256, 256x256 fwd 1.07 ms (triton 1.61, reference 1.52), fwd+bwd
#    2.18 (triton 2.63, reference 5.26).
#  msca_attention bf16: the plain-PyTorch reference beat both fused backends at 128x128 and
#    256x256 (B=8, N=256, K=8: fwd+bwd 1.23 ms vs triton 2.42, cuda 7.02; same peak memory);
#    only at 64x64 did cuda win fwd+bwd (1.58 vs reference 1.95).
_GPU_MEASURED = {}
for _dt in (torch.bfloat16, torch.float16, torch.float32):
    for _op in ("correlation_warp", "cycle_warp"):
        _GPU_MEASURED[(_op, _dt)] = ("triton", "cuda", "reference")
for _dt in (torch.bfloat16, torch.float16):
    _GPU_MEASURED[("pn_modulate", _dt)] = ("cuda", "triton", "reference")
    _GPU_MEASURED[("msca_attention", _dt)] = ("reference",)
del _dt, _op


def auto_order(op: str, device: torch.device, dtype: torch.dtype) -> tuple:
    """The backends backend="auto" tries for `op` on `device` with `dtype`, in order."""
    if device.type == "cuda" and (op, dtype) in _GPU_MEASURED:
        return _GPU_MEASURED[(op, dtype)]
    return _AUTO_ORDER.get(device.type, ("reference",))


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
        for name in auto_order(op, device, dtype):
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
