"""Every output element is written by the kernels: buffers the backends
allocate are pre-filled with NaN (floats) or a sentinel (ints), and the
results must still match the reference, with no NaN and no sentinel left."""
import importlib
import math

import pytest
import torch

import exsynth.ops as ops
from exsynth.ops import reference

from conftest import usable_backends

SENTINEL = -7


class _PoisonedTorch:
    """Stands in for `torch` inside a backend module: empty* come back poisoned."""

    def __getattr__(self, name):
        return getattr(torch, name)

    @staticmethod
    def _poison(t):
        return t.fill_(math.nan) if t.is_floating_point() else t.fill_(SENTINEL)

    def empty(self, *args, **kwargs):
        return self._poison(torch.empty(*args, **kwargs))

    def empty_like(self, *args, **kwargs):
        return self._poison(torch.empty_like(*args, **kwargs))


def _modules(backend):
    mods = [importlib.import_module(f"exsynth.ops.backends.{backend}")]
    if backend == "triton":
        mods += [importlib.import_module(f"exsynth.kernels.{m}") for m in ("correlation", "pono", "msca")]
    return mods


CASES = [(d, b) for d in ("cpu", "cuda") if d == "cpu" or torch.cuda.is_available()
         for b in usable_backends(d)]


@pytest.fixture
def poisoned(monkeypatch, request):
    device, backend = request.param
    for mod in _modules(backend):
        monkeypatch.setattr(mod, "torch", _PoisonedTorch())
    return device, backend


def _clean(t):
    assert not torch.isnan(t).any(), "an output element was never written (NaN poison left)"
    if not t.is_floating_point():
        assert not (t == SENTINEL).any(), "an index was never written (sentinel left)"


@pytest.mark.parametrize("poisoned", CASES, indirect=True, ids=lambda c: f"{c[0]}-{c[1]}")
def test_all_outputs_written(poisoned):
    device, backend = poisoned
    tol = 1e-4
    q = torch.randn(2, 5, 7, 9, device=device, requires_grad=True)
    k = torch.randn(2, 5, 6, 11, device=device, requires_grad=True)
    v = torch.randn(2, 3, 6, 11, device=device, requires_grad=True)
    out, lse = ops.correlation_warp(q, k, v, backend=backend, return_lse=True)
    grads = torch.autograd.grad(out.sum() + lse.sum(), (q, k, v))
    ref, ref_lse = reference.correlation_warp(q.double(), k.double(), v.double(), return_lse=True)
    for t in (out, lse, *grads):
        _clean(t)
    assert (out.double() - ref).abs().max() < tol * ref.abs().max() * 100
    idx, best = ops.correlation_match(q, k, backend=backend)
    _clean(idx)
    _clean(best)

    x = torch.randn(2, 6, 5, 7, device=device, requires_grad=True)
    g = torch.randn(1, 6, 5, 7, device=device, requires_grad=True)
    b = torch.randn(1, 6, 5, 7, device=device, requires_grad=True)
    y, m, s = ops.positional_norm(x, backend=backend)
    for t in (y, m, s, *torch.autograd.grad(y.sum() + m.sum() + s.sum(), x)):
        _clean(t)
    o = ops.pn_modulate(x, g, b, backend=backend)
    for t in (o, *torch.autograd.grad(o.square().sum(), (x, g, b))):
        _clean(t)
    torch.testing.assert_close(o.double(), reference.pn_modulate(x.double(), g.double(), b.double()),
                               rtol=tol, atol=tol)

    val = torch.randn(2, 4, 5, 7, device=device, requires_grad=True)
    sp = torch.randn(2, 3, 5, 7, device=device, requires_grad=True)
    ch = torch.randn(2, 3, 5, 7, device=device, requires_grad=True)
    gate = torch.rand(2, 3, device=device, requires_grad=True)
    o = ops.msca_attention(val, sp, ch, gate, backend=backend)
    for t in (o, *torch.autograd.grad(o.square().sum(), (val, sp, ch, gate))):
        _clean(t)
