"""The fused core is a torch custom op: opcheck passes and torch.compile
traces a module calling correlation_warp with fullgraph=True."""
import pytest
import torch

import exsynth.ops as ops
from exsynth.ops import reference

from conftest import usable_backends

CPU = "cpu" in usable_backends("cpu")
pytestmark = pytest.mark.skipif(not CPU, reason="cpu backend not built")


def _features(B, L, D, dtype=torch.float32):
    x = torch.randn(B, L, D, dtype=dtype)
    return torch.nn.functional.normalize(x, dim=-1)


def test_opcheck_attention():
    q, k = _features(2, 13, 7), _features(2, 9, 7)
    v = torch.randn(2, 9, 3)
    for args in [(q, k, v, 100.0, "cpu", False), (q.requires_grad_(), k.requires_grad_(),
                                                  v.requires_grad_(), 3.0, "cpu", True)]:
        torch.library.opcheck(torch.ops.exsynth.corr_attention.default, args)


def test_opcheck_attention_backward_and_match():
    q, k = _features(1, 11, 5), _features(1, 8, 5)
    v = torch.randn(1, 8, 2)
    out, lse = torch.ops.exsynth.corr_attention(q, k, v, 10.0, "cpu", False)
    dout = torch.randn_like(out)
    dlse = torch.randn(lse.shape)
    torch.library.opcheck(torch.ops.exsynth.corr_attention_backward.default,
                          (q, k, v, out, lse, dlse, dout, 10.0, "cpu"))
    torch.library.opcheck(torch.ops.exsynth.corr_match.default, (q, k, "cpu", False))


def test_opcheck_patch_ops():
    """The Gram path's custom ops (k x k patches on the cpu backend)."""
    from exsynth.ops.correlation import _patch_operands
    xq, aq, mq = _patch_operands(torch.randn(2, 5, 4, 6, dtype=torch.float64), 3, True, torch.float64)
    xk, ak, mk = _patch_operands(torch.randn(2, 5, 3, 7, dtype=torch.float64), 3, True, torch.float64)
    v = torch.randn(2, 21, 3, dtype=torch.float64)
    torch.library.opcheck(torch.ops.exsynth.corr_patch_attention.default,
                          (xq, xk, v, aq, mq, ak, mk, 3, 10.0, "cpu", True))
    grad_args = tuple(t.clone().requires_grad_() for t in (xq, xk, v, aq, mq, ak, mk))
    torch.library.opcheck(torch.ops.exsynth.corr_patch_attention.default,
                          grad_args + (3, 10.0, "cpu", False))
    out, lse = torch.ops.exsynth.corr_patch_attention(xq, xk, v, aq, mq, ak, mk, 3, 10.0, "cpu", False)
    torch.library.opcheck(torch.ops.exsynth.corr_patch_attention_backward.default,
                          (xq, xk, v, aq, mq, ak, mk, out, lse, torch.randn(lse.shape, dtype=torch.float64),
                           torch.randn_like(out), 3, 10.0, "cpu"))
    torch.library.opcheck(torch.ops.exsynth.corr_patch_match.default, (xq, xk, aq, mq, ak, mk, 3, "cpu", True))


def test_torch_compile_catches_nan_in_the_patch_match():
    torch._dynamo.reset()
    f = torch.compile(lambda q, k: ops.correlation_match(q, k, patch_size=3, backend="cpu"), fullgraph=True)
    q, k = torch.randn(1, 4, 5, 5), torch.randn(1, 4, 6, 4)
    f(q, k)
    k[0, 1, 2, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN or Inf"):
        f(q, k)


class _Warp(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.adapt_q = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.adapt_k = torch.nn.Conv2d(3, 8, 3, padding=1)

    def forward(self, label, exemplar):
        return ops.correlation_warp(self.adapt_q(label), self.adapt_k(exemplar), exemplar,
                                    patch_size=3, backend="cpu")


def test_torch_compile_fullgraph_forward_and_backward():
    # float64, so compiled and eager agree to rounding of a different summation
    # order; float32 differences get multiplied by alpha = 100 in the gradients.
    torch._dynamo.reset()
    model = _Warp().double()
    label = torch.randn(2, 3, 6, 7, dtype=torch.float64)
    exemplar = torch.randn(2, 3, 5, 6, dtype=torch.float64)
    eager = model(label, exemplar)
    eager.square().sum().backward()
    want = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    compiled = torch.compile(model, fullgraph=True)
    out = compiled(label, exemplar)
    torch.testing.assert_close(out, eager, rtol=1e-10, atol=1e-10)
    out.square().sum().backward()
    for p, g in zip(model.parameters(), want):
        torch.testing.assert_close(p.grad, g, rtol=1e-9, atol=1e-9)
    ref = reference.correlation_warp(model.adapt_q(label), model.adapt_k(exemplar), exemplar,
                                     patch_size=3)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)


def test_torch_compile_catches_nan_inside_the_graph():
    torch._dynamo.reset()
    f = torch.compile(lambda q, k, v: ops.correlation_warp(q, k, v, backend="cpu"), fullgraph=True)
    q, k, v = torch.randn(1, 4, 3, 3), torch.randn(1, 4, 3, 3), torch.randn(1, 2, 3, 3)
    f(q, k, v)
    v[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or Inf"):
        f(q, k, v)
