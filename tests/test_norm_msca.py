"""positional_norm, pn_modulate and msca_attention: every usable backend
against the plain-PyTorch reference, outputs and all gradients."""
import pytest
import torch

import exsynth.ops as ops
from exsynth.ops import reference

from conftest import usable_backends

BACKENDS = usable_backends("cpu")

# float64: only the summation order differs from the reference. float32: the
# per-position statistics sum C values, so errors grow like sqrt(C) eps; 64 eps
# covers C up to 512 with margin (1e-6 observed at C = 513).
TOL = {torch.float64: 1e-12, torch.float32: 64 * torch.finfo(torch.float32).eps}


def _err(actual, expected, scale=None):
    scale = expected.abs().max() if scale is None else max(scale, expected.abs().max())
    return ((actual.double() - expected.double()).abs().max() / (scale + 1e-30)).item()


def _check(name, actual, expected, dtype, scale=None):
    """Max error relative to the expected magnitude, or to `scale` where the
    result is a cancellation of larger terms (dx of PONO at small C)."""
    err = _err(actual, expected, scale)
    assert err <= TOL[dtype], f"{name}: relative max error {err:.2e} > {TOL[dtype]:.1e}"


def _dtypes(backend):
    return (torch.float64, torch.float32) if backend == "cpu" else (torch.float32,)


# (B, C, H, W, batch of gamma/beta); C odd and even, H != W.
NORM_CASES = [(2, 3, 5, 7, 2), (1, 37, 6, 9, 1), (3, 2, 4, 4, 3), (2, 64, 3, 11, 1)]
NORM_CASES_CPU = [(2, 513, 3, 50, 1), (1, 128, 16, 17, 1)]


@pytest.mark.parametrize("backend", BACKENDS)
def test_positional_norm_matches_reference(backend):
    cases = NORM_CASES + (NORM_CASES_CPU if backend == "cpu" else [])
    for B, C, H, W, _ in cases:
        for dtype in _dtypes(backend):
            x = torch.randn(B, C, H, W, dtype=dtype, requires_grad=True)
            y, m, s = ops.positional_norm(x, backend=backend)
            yr, mr, sr = reference.positional_norm(x.detach().double().requires_grad_())
            assert y.shape == x.shape and m.shape == s.shape == (B, 1, H, W)
            for n, a, b in (("y", y, yr), ("mean", m, mr), ("std", s, sr)):
                _check(f"{backend} {dtype} C={C} {n}", a, b, dtype)
            gy, gm, gs = (torch.randn_like(t, dtype=torch.float64) for t in (yr, mr, sr))
            (dx,) = torch.autograd.grad((y * gy.to(dtype)).sum() + (m * gm.to(dtype)).sum()
                                        + (s * gs.to(dtype)).sum(), x)
            xr = x.detach().double().requires_grad_()
            yr, mr, sr = reference.positional_norm(xr)
            (dxr,) = torch.autograd.grad((yr * gy).sum() + (mr * gm).sum() + (sr * gs).sum(), xr)
            # dx = (dy - mean(dy) - y mean(dy y)) / std + ...: terms of size |dy|/std cancel
            terms = max((gy / sr).abs().max(), gm.abs().max(), gs.abs().max())
            _check(f"{backend} {dtype} C={C} dx", dx, dxr, dtype, terms)
            # gradient through y alone (mean/std unused) takes the None paths
            (dx_y,) = torch.autograd.grad((ops.positional_norm(x, backend=backend)[0] * gy.to(dtype)).sum(), x)
            (dxr_y,) = torch.autograd.grad((reference.positional_norm(xr)[0] * gy).sum(), xr)
            _check(f"{backend} {dtype} C={C} dx via y", dx_y, dxr_y, dtype, (gy / sr).abs().max())


@pytest.mark.parametrize("backend", BACKENDS)
def test_pn_modulate_matches_reference(backend):
    cases = NORM_CASES + (NORM_CASES_CPU if backend == "cpu" else [])
    for B, C, H, W, Bg in cases:
        for dtype in _dtypes(backend):
            x = torch.randn(B, C, H, W, dtype=dtype, requires_grad=True)
            g = torch.randn(Bg, C, H, W, dtype=dtype, requires_grad=True)
            b = torch.randn(Bg, C, H, W, dtype=dtype, requires_grad=True)
            out = ops.pn_modulate(x, g, b, backend=backend)
            ins_r = [t.detach().double().requires_grad_() for t in (x, g, b)]
            ref = reference.pn_modulate(*ins_r)
            _check(f"{backend} {dtype} pn out", out, ref, dtype)
            go = torch.randn_like(ref)
            grads = torch.autograd.grad((out * go.to(dtype)).sum(), (x, g, b))
            grads_r = torch.autograd.grad((ref * go).sum(), ins_r)
            std = reference.positional_norm(ins_r[0].detach())[2]
            terms = (go * (1 + ins_r[1].detach()) / std).abs().max()  # what dx cancels down from
            for n, a, r in zip(("dx", "dgamma", "dbeta"), grads, grads_r):
                assert a.shape == r.shape
                _check(f"{backend} {dtype} B={B} Bg={Bg} {n}", a, r, dtype, terms if n == "dx" else None)


# (B, N, K, H, W, gated)
MSCA_CASES = [(2, 5, 3, 4, 6, True), (1, 37, 8, 7, 9, False), (2, 1, 1, 3, 5, True),
              (1, 16, 32, 5, 4, True)]
MSCA_CASES_CPU = [(2, 256, 16, 20, 19, True), (1, 64, 8, 33, 35, False)]


@pytest.mark.parametrize("backend", BACKENDS)
def test_msca_attention_matches_reference(backend):
    cases = MSCA_CASES + (MSCA_CASES_CPU if backend == "cpu" else [])
    for B, N, K, H, W, gated in cases:
        for dtype in _dtypes(backend):
            v = torch.randn(B, N, H, W, dtype=dtype, requires_grad=True)
            sp = (3 * torch.randn(B, K, H, W, dtype=dtype)).requires_grad_()
            ch = (3 * torch.randn(B, K, H, W, dtype=dtype)).requires_grad_()
            gate = torch.rand(B, K, dtype=dtype, requires_grad=True) if gated else None
            ins = (v, sp, ch) + ((gate,) if gated else ())
            out, alpha, beta = ops.msca_attention(v, sp, ch, gate, backend=backend, return_attention=True)
            ins_r = [t.detach().double().requires_grad_() for t in ins]
            ref, alpha_r, beta_r = reference.msca_attention(*ins_r[:3], ins_r[3] if gated else None,
                                                            return_attention=True)
            _check(f"{backend} {dtype} msca out", out, ref, dtype)
            _check("alpha", alpha, alpha_r, dtype)
            _check("beta", beta, beta_r, dtype)
            go = torch.randn_like(ref)
            grads = torch.autograd.grad((out * go.to(dtype)).sum(), ins)
            grads_r = torch.autograd.grad((ref * go).sum(), ins_r)
            for n, a, r in zip(("dvalue", "dspatial", "dchannel", "dgate"), grads, grads_r):
                _check(f"{backend} {dtype} N={N} K={K} {n}", a, r, dtype)


def test_gradcheck_float64_cpu():
    if "cpu" not in BACKENDS:
        pytest.skip("cpu backend not built")
    x = torch.randn(2, 5, 3, 4, dtype=torch.float64, requires_grad=True)
    g = torch.randn(1, 5, 3, 4, dtype=torch.float64, requires_grad=True)
    b = torch.randn(1, 5, 3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: ops.positional_norm(x, backend="cpu"), (x,))
    assert torch.autograd.gradcheck(lambda x, g, b: ops.pn_modulate(x, g, b, backend="cpu"), (x, g, b))
    v = torch.randn(2, 4, 3, 5, dtype=torch.float64, requires_grad=True)
    sp = torch.randn(2, 3, 3, 5, dtype=torch.float64, requires_grad=True)
    ch = torch.randn(2, 3, 3, 5, dtype=torch.float64, requires_grad=True)
    gate = torch.rand(2, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *a: ops.msca_attention(*a, backend="cpu"), (v, sp, ch, gate))
    assert torch.autograd.gradcheck(lambda *a: ops.msca_attention(*a, backend="cpu"), (v, sp, ch))


def test_opcheck_and_compile():
    if "cpu" not in BACKENDS:
        pytest.skip("cpu backend not built")
    x = torch.randn(2, 6, 20, requires_grad=True)
    g = torch.randn(1, 6, 20, requires_grad=True)
    b = torch.randn(1, 6, 20, requires_grad=True)
    torch.library.opcheck(torch.ops.exsynth.positional_norm.default, (x, 1e-5, "cpu", False))
    torch.library.opcheck(torch.ops.exsynth.pn_modulate.default, (x, g, b, 1e-5, "cpu", False))
    v = torch.randn(2, 7, 20, requires_grad=True)
    sp = torch.randn(2, 3, 20, requires_grad=True)
    ch = torch.randn(2, 3, 20, requires_grad=True)
    gate = torch.rand(2, 3, requires_grad=True)
    torch.library.opcheck(torch.ops.exsynth.msca_attention.default, (v, sp, ch, gate, "cpu", False))
    torch.library.opcheck(torch.ops.exsynth.msca_attention.default, (v, sp, ch, None, "cpu", False))

    torch._dynamo.reset()

    def block(x, g, b, v, sp, ch, gate):
        y = ops.pn_modulate(x, g, b, backend="cpu")
        z = ops.positional_norm(y, backend="cpu")[0]
        return z.sum() + ops.msca_attention(v, sp, ch, gate, backend="cpu").square().sum()

    args = [t.double().detach().requires_grad_() for t in
            (torch.randn(2, 6, 4, 5), torch.randn(1, 6, 4, 5), torch.randn(1, 6, 4, 5),
             torch.randn(2, 7, 4, 5), torch.randn(2, 3, 4, 5), torch.randn(2, 3, 4, 5), torch.rand(2, 3))]
    eager = block(*args)
    want = torch.autograd.grad(eager, args)
    got_out = torch.compile(block, fullgraph=True)(*args)
    got = torch.autograd.grad(got_out, args)
    torch.testing.assert_close(got_out, eager, rtol=1e-10, atol=1e-10)
    for a, b_ in zip(got, want):
        torch.testing.assert_close(a, b_, rtol=1e-9, atol=1e-9)


def _nan(t):
    t = t.clone()
    t.view(-1)[1] = float("nan")
    return t


x0 = torch.randn(2, 4, 3, 5)
NORM_BAD = [
    (lambda be: ops.positional_norm(x0[0], backend=be), ValueError, "x must have 4 dimensions"),
    (lambda be: ops.positional_norm(x0[:, :1], backend=be), ValueError, "channels \\(dim 1\\) of x must be at least 2"),
    (lambda be: ops.positional_norm(x0.long(), backend=be), TypeError, "floating-point"),
    (lambda be: ops.positional_norm(x0[:, :, :0], backend=be), ValueError, "x must not be empty"),
    (lambda be: ops.positional_norm(_nan(x0), backend=be), ValueError, "x contain\\(s\\) NaN"),
    (lambda be: ops.positional_norm(x0, eps=0.0, backend=be), ValueError, "eps must be a finite number > 0"),
    (lambda be: ops.pn_modulate(x0, x0[:, :3], x0, backend=be), ValueError, "gamma must have shape"),
    (lambda be: ops.pn_modulate(x0, x0, torch.randn(3, 4, 3, 5), backend=be), ValueError, "beta must have shape"),
    (lambda be: ops.pn_modulate(x0, x0[:1], x0, backend=be), ValueError, "same batch size"),
    (lambda be: ops.pn_modulate(x0, x0.double(), x0.double(), backend=be), TypeError, "one dtype"),
    (lambda be: ops.pn_modulate(x0, x0.to("meta"), x0, backend=be), ValueError, "one device"),
    (lambda be: ops.pn_modulate(x0, x0, _nan(x0), backend=be), ValueError, "beta contain"),
    (lambda be: ops.pn_modulate(x0[:, :1], x0[:, :1], x0[:, :1], backend=be), ValueError, "at least 2"),
]
v0, s0 = torch.randn(2, 6, 3, 5), torch.randn(2, 4, 3, 5)
MSCA_BAD = [
    (lambda be: ops.msca_attention(v0[0], s0, s0, backend=be), ValueError, "value must have 4 dimensions"),
    (lambda be: ops.msca_attention(v0, s0[:, :3], s0, backend=be), ValueError, "K \\(dim 1\\) of channel_logits"),
    (lambda be: ops.msca_attention(v0, s0[:1], s0[:1], backend=be), ValueError, "batch size"),
    (lambda be: ops.msca_attention(v0, s0[..., :4], s0[..., :4], backend=be), ValueError, "spatial size of spatial_logits"),
    (lambda be: ops.msca_attention(v0, s0, s0, torch.rand(2, 3), backend=be), ValueError, "gate must have shape \\(B, K\\)"),
    (lambda be: ops.msca_attention(v0, s0, s0, torch.rand(2, 4, 1), backend=be), ValueError, "gate must have shape"),
    (lambda be: ops.msca_attention(v0, s0, s0, [1.0], backend=be), TypeError, "gate must be a torch.Tensor"),
    (lambda be: ops.msca_attention(v0, s0, s0, torch.rand(2, 4).double(), backend=be), TypeError, "one dtype"),
    (lambda be: ops.msca_attention(v0, s0.double(), s0, backend=be), TypeError, "one dtype"),
    (lambda be: ops.msca_attention(v0, s0, _nan(s0), backend=be), ValueError, "channel_logits contain"),
    (lambda be: ops.msca_attention(v0, s0, s0, _nan(torch.rand(2, 4)), backend=be), ValueError, "gate contain"),
    (lambda be: ops.msca_attention(v0[:, :0], s0, s0, backend=be), ValueError, "value must not be empty"),
]


@pytest.mark.parametrize("backend", ["auto", "reference", "cpu"])
@pytest.mark.parametrize("call,exc,msg", NORM_BAD + MSCA_BAD)
def test_bad_inputs_raise(call, exc, msg, backend):
    with pytest.raises(exc, match=msg):
        call(backend)
