"""Argument checks shared by every op: clear errors before any kernel runs."""
from __future__ import annotations

import math
import numbers

import numpy as np
import torch

_FINITE_CHECKS = True


def set_finite_checks(enabled: bool) -> None:
    """Turn the NaN/Inf scan of op inputs on (default) or off.

    The scan costs one read of each input and, on a GPU, one host sync per
    call; turn it off in tight loops whose inputs are known to be finite.
    """
    global _FINITE_CHECKS
    _FINITE_CHECKS = bool(enabled)


def finite_checks_enabled() -> bool:
    return _FINITE_CHECKS


def _desc(t: torch.Tensor) -> str:
    return f"shape {tuple(t.shape)}, dtype {t.dtype}, device {t.device}"


def tensor(op: str, name: str, t, ndim: int) -> None:
    """`t` is a non-empty floating tensor with `ndim` dimensions."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() != ndim:
        raise ValueError(f"{op}: {name} must have {ndim} dimensions, got {_desc(t)}")
    if not t.is_floating_point():
        raise TypeError(f"{op}: {name} must be a floating-point tensor, got {_desc(t)}")
    if t.numel() == 0:
        raise ValueError(f"{op}: {name} must not be empty, got {_desc(t)}")


def _autocast_dtype(tensors) -> "torch.dtype | None":
    """The autocast dtype where torch.autocast is on for the first tensor's device, else None."""
    first = next((t for t in tensors if isinstance(t, torch.Tensor)), None)
    if first is None:
        return None
    try:
        if not torch.is_autocast_enabled(first.device.type):
            return None
    except RuntimeError:    # a device type autocast does not know (meta, ...)
        return None
    return torch.get_autocast_dtype(first.device.type)


def _cast_floats(tensors, dtype, keep_float64=False):
    return tuple(t.to(dtype) if isinstance(t, torch.Tensor) and t.is_floating_point()
                 and not (keep_float64 and t.dtype == torch.float64) else t for t in tensors)


def autocast_lower(*tensors):
    """Under torch.autocast: floating inputs in the autocast dtype, as torch casts a matmul's
    (float64 stays, as autocast leaves it; the correlation and MSCA ops are products, their kernels
    accumulate in float32). Outside autocast the inputs come back unchanged and one dtype is
    required of them."""
    dtype = _autocast_dtype(tensors)
    return tensors if dtype is None else _cast_floats(tensors, dtype, keep_float64=True)


def autocast_promote(*tensors):
    """Under torch.autocast: floating inputs in their widest dtype, as torch's own
    x_norm * (1 + gamma) + beta would compute (an fp32 residual stream modulated by fp16 conv
    outputs stays fp32). Outside autocast the inputs come back unchanged."""
    if _autocast_dtype(tensors) is None:
        return tensors
    floats = [t.dtype for t in tensors if isinstance(t, torch.Tensor) and t.is_floating_point()]
    if not floats:
        return tensors
    widest = floats[0]
    for d in floats[1:]:
        widest = torch.promote_types(widest, d)
    return _cast_floats(tensors, widest)


def same_device_dtype(op: str, **tensors: torch.Tensor) -> None:
    items = list(tensors.items())
    first_name, first = items[0]
    for name, t in items[1:]:
        if t.device != first.device:
            raise ValueError(
                f"{op}: all inputs must be on one device; {first_name} is on {first.device}, "
                f"{name} is on {t.device}"
            )
        if t.dtype != first.dtype:
            raise TypeError(
                f"{op}: all inputs must have one dtype; {first_name} is {first.dtype}, "
                f"{name} is {t.dtype}"
            )


def dim_equal(op: str, what: str, name_a: str, a: int, name_b: str, b: int) -> None:
    if a != b:
        raise ValueError(f"{op}: {what} of {name_a} ({a}) must equal that of {name_b} ({b})")


def positive_finite(op: str, name: str, x) -> float:
    # numbers.Real takes numpy scalars (np.float32 is not a float) but not bools or tensors
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, numbers.Real):
        raise TypeError(f"{op}: {name} must be a number, got {type(x).__name__}")
    x = float(x)
    if not math.isfinite(x) or x <= 0:
        raise ValueError(f"{op}: {name} must be a finite number > 0, got {x}")
    return x


def finite(op: str, **tensors: torch.Tensor) -> None:
    """Raise naming every input that holds NaN or Inf (one host sync).

    min and max of a tensor are finite exactly when all its elements are
    (NaN propagates through both); aminmax reads each input once without the
    bool temporary of isfinite(t).all(), which costs ~25x more on the CPU.
    """
    if not _FINITE_CHECKS or torch.compiler.is_compiling():
        return
    # meta (and fake) tensors hold no values: nothing to scan, their shapes flow on
    tensors = {n: t for n, t in tensors.items() if t.device.type != "meta"}
    if not tensors:
        return
    names = list(tensors)
    extremes = torch.stack([torch.stack(torch.aminmax(t.detach())).to(torch.float64)
                            for t in tensors.values()])
    ok = torch.isfinite(extremes).all(dim=1)
    if bool(ok.all()):
        return
    bad = [n for n, good in zip(names, ok.tolist()) if not good]
    raise ValueError(f"{op}: {', '.join(bad)} contain(s) NaN or Inf values")


def accum_dtype(dtype: torch.dtype) -> torch.dtype:
    """dtype of the statistics the kernels save (lse, mean/std, ...)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def positive_int_dim(op: str, what: str, name: str, size: int, minimum: int) -> None:
    if size < minimum:
        raise ValueError(f"{op}: {what} of {name} must be at least {minimum}, got {size}")


def in_op_checks() -> bool:
    """Whether a custom op scans its own inputs for NaN/Inf at run time.

    Eager calls scan the raw inputs up front (clear names); a compiled graph
    skips that Python check, so the op does it instead.
    """
    return torch.compiler.is_compiling() and _FINITE_CHECKS
