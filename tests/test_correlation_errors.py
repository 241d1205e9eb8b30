"""Bad input to the correlation ops raises a clear error naming the argument."""
import pytest
import torch

import exsynth.ops as ops
from exsynth.ops import BackendUnavailableError


def _good():
    return torch.randn(2, 4, 5, 6), torch.randn(2, 4, 3, 7), torch.randn(2, 3, 3, 7)


def _nan(t, value=float("nan")):
    t = t.clone()
    t.view(-1)[3] = value
    return t


q0, k0, v0 = _good()
BAD = [
    # (query, key, value, kwargs, exception, message fragment)
    (q0[0], k0, v0, {}, ValueError, "query must have 4 dimensions"),
    (q0, k0[None], v0, {}, ValueError, "key must have 4 dimensions"),
    (q0, k0, v0[:, :, 0], {}, ValueError, "value must have 4 dimensions"),
    (q0[:1], k0, v0, {}, ValueError, "batch size"),
    (q0, k0, v0[:1], {}, ValueError, "batch size"),
    (q0[:, :3], k0, v0, {}, ValueError, "channels"),
    (q0, k0, v0[..., :5], {}, ValueError, "spatial size of value"),
    (q0.long(), k0.long(), v0.long(), {}, TypeError, "floating-point"),
    (q0, k0.double(), v0, {}, TypeError, "one dtype"),
    (q0, k0, v0.double(), {}, TypeError, "one dtype"),
    (q0, k0, v0.to("meta"), {}, ValueError, "one device"),
    (q0, k0, v0, {"patch_size": 2}, ValueError, "patch_size must be an odd integer"),
    (q0, k0, v0, {"patch_size": 0}, ValueError, "patch_size must be an odd integer"),
    (q0, k0, v0, {"patch_size": 1.0}, TypeError, "patch_size must be an int"),
    (q0, k0, v0, {"alpha": 0.0}, ValueError, "alpha must be a finite number > 0"),
    (q0, k0, v0, {"alpha": -3.0}, ValueError, "alpha must be a finite number > 0"),
    (q0, k0, v0, {"alpha": float("inf")}, ValueError, "alpha must be a finite number > 0"),
    (q0, k0, v0, {"alpha": float("nan")}, ValueError, "alpha must be a finite number > 0"),
    (_nan(q0), k0, v0, {}, ValueError, "query contain(s) NaN or Inf"),
    (q0, _nan(k0, float("inf")), v0, {}, ValueError, "key contain(s) NaN or Inf"),
    (q0, k0, _nan(v0), {}, ValueError, "value contain(s) NaN or Inf"),
    (q0[:, :, :0], k0, v0, {}, ValueError, "query must not be empty"),
    (q0, k0[:0], v0[:0], {}, ValueError, "must not be empty"),
    (q0, k0, v0[:, :0], {}, ValueError, "value must not be empty"),
    ([1.0], k0, v0, {}, TypeError, "query must be a torch.Tensor"),
    (q0, k0, v0, {"backend": "cuda-fast"}, ValueError, "backend must be 'auto' or one of"),
]


@pytest.mark.parametrize("backend", ["auto", "reference", "cpu"])
@pytest.mark.parametrize("q,k,v,kwargs,exc,msg", BAD)
def test_correlation_warp_rejects(backend, q, k, v, kwargs, exc, msg):
    kwargs = {"backend": backend, **kwargs}
    with pytest.raises(exc, match=msg.replace("(", r"\(").replace(")", r"\)")):
        ops.correlation_warp(q, k, v, **kwargs)


def test_cycle_warp_names_its_arguments():
    q, k, _ = _good()
    with pytest.raises(ValueError, match=r"spatial size of warped \(3, 7\) must equal that of query \(5, 6\)"):
        ops.cycle_warp(q, k, torch.randn(2, 3, 3, 7))  # must live on the query grid
    with pytest.raises(ValueError, match=r"key must have 4 dimensions"):
        ops.cycle_warp(q, k[0], torch.randn(2, 3, 5, 6))
    with pytest.raises(ValueError, match=r"warped contain"):
        ops.cycle_warp(q, k, _nan(torch.randn(2, 3, 5, 6)))


def test_correlation_match_rejects():
    q, k, _ = _good()
    with pytest.raises(ValueError, match="channels"):
        ops.correlation_match(q, k[:, :2])
    with pytest.raises(ValueError, match="patch_size"):
        ops.correlation_match(q, k, patch_size=4)
    with pytest.raises(ValueError, match="key contain"):
        ops.correlation_match(q, _nan(k))


def test_unavailable_backend_named_explicitly_raises():
    q, k, v = _good()
    info = ops.backends()
    for name in ("triton", "cuda"):
        if not info[name].available:
            with pytest.raises(BackendUnavailableError, match=f"backend '{name}' is not available"):
                ops.correlation_warp(q, k, v, backend=name)
    if info["cuda"].available is False:
        # auto falls back cleanly
        assert ops.correlation_warp(q, k, v).shape == (2, 3, 5, 6)


def test_finite_checks_can_be_turned_off():
    q, k, v = _good()
    ops.set_finite_checks(False)
    try:
        out = ops.correlation_warp(q, k, _nan(v), backend="reference")
        assert torch.isnan(out).any()
    finally:
        ops.set_finite_checks(True)
