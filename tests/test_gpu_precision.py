"""GPU backends in float16/bfloat16/float32 against float64 math on the same
rounded inputs (skipped without a CUDA GPU).

Half precision is tested at the op cores, on the features already rounded to
the compute dtype: with alpha = 100, rounding the features to bf16 (eps 2^-8)
moves logits by ~0.4, which is the dtype's doing, not the kernel's. What the
kernels add is accumulation error, bounded here.
"""
import pytest
import torch

import exsynth.ops as ops

from conftest import usable_backends

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
GPU_BACKENDS = usable_backends("cuda") if torch.cuda.is_available() else []
# Relative max error allowed vs float64 math on the same rounded inputs: a few
# units of the dtype's eps (P and dS are rounded to the dtype before their dots,
# as in flash-attention), and fp32 at the tf32x3 / FFMA level.
TOL = {torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 4e-2}


def _rel(a, b):
    return ((a.double() - b).abs().max() / b.abs().max().clamp_min(1e-6)).item()


@pytest.mark.parametrize("backend", GPU_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("B,Lq,Lk,D,Cv,alpha", [(2, 300, 333, 64, 3, 100.0), (1, 257, 300, 93, 151, 100.0),
                                                (2, 200, 190, 2304, 3, 100.0), (1, 129, 77, 5, 1, 1.0)])
def test_correlation_core(backend, dtype, B, Lq, Lk, D, Cv, alpha):
    g = torch.Generator().manual_seed(D + Cv)
    q = torch.nn.functional.normalize(torch.randn(B, Lq, D, generator=g, dtype=torch.float64), dim=-1)
    k = torch.nn.functional.normalize(torch.randn(B, Lk, D, generator=g, dtype=torch.float64), dim=-1)
    v = torch.randn(B, Lk, Cv, generator=g, dtype=torch.float64)
    dout = torch.randn(B, Lq, Cv, generator=g, dtype=torch.float64)
    qd, kd, vd, dod = (t.to(dtype).cuda().requires_grad_() for t in (q, k, v, dout))
    out, lse = torch.ops.exsynth.corr_attention(qd, kd, vd, alpha, backend, False)
    grads = torch.autograd.grad(out, (qd, kd, vd), dod)
    r = [t.detach().double().cpu().requires_grad_() for t in (qd, kd, vd)]
    s = alpha * r[0] @ r[1].transpose(1, 2)
    r_out = torch.softmax(s, -1) @ r[2]
    r_grads = torch.autograd.grad(r_out, r, dod.detach().double().cpu())
    assert _rel(out.cpu(), r_out.detach()) <= TOL[dtype]
    assert _rel(lse.cpu(), torch.logsumexp(s, -1).detach()) <= TOL[dtype]
    for name, a, b in zip(("dq", "dk", "dv"), grads, r_grads):
        assert _rel(a.cpu(), b) <= TOL[dtype], name


@pytest.mark.parametrize("backend", GPU_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_norm_and_msca(backend, dtype):
    g = torch.Generator().manual_seed(1)
    x, gam, bet = (torch.randn(s, generator=g, dtype=torch.float64) for s in
                   ((8, 257, 33, 31), (1, 257, 33, 31), (1, 257, 33, 31)))
    xd, gd, bd = (t.to(dtype).cuda().requires_grad_() for t in (x, gam, bet))
    out = ops.pn_modulate(xd, gd, bd, backend=backend)
    ref_in = [t.detach().double().cpu().requires_grad_() for t in (xd, gd, bd)]
    ref = ops.reference.pn_modulate(*ref_in)
    go = torch.randn(ref.shape, generator=g, dtype=torch.float64)
    assert _rel(out.cpu(), ref.detach()) <= TOL[dtype]
    for a, b in zip(torch.autograd.grad(out, (xd, gd, bd), go.to(dtype).cuda()),
                    torch.autograd.grad(ref, ref_in, go)):
        assert _rel(a.cpu(), b) <= 4 * TOL[dtype]  # dx cancels terms of size |dy|/std

    val, sp, ch = (torch.randn(s, generator=g, dtype=torch.float64) for s in
                   ((4, 96, 40, 41), (4, 16, 40, 41), (4, 16, 40, 41)))
    gate = torch.rand(4, 16, generator=g, dtype=torch.float64)
    ins = [t.to(dtype).cuda().requires_grad_() for t in (val, sp, ch, gate)]
    out = ops.msca_attention(*ins, backend=backend)
    ref_in = [t.detach().double().cpu().requires_grad_() for t in ins]
    ref = ops.reference.msca_attention(*ref_in)
    assert _rel(out.cpu(), ref.detach()) <= TOL[dtype]
    go = torch.randn(ref.shape, generator=g, dtype=torch.float64)
    for a, b in zip(torch.autograd.grad(out, ins, go.to(dtype).cuda()), torch.autograd.grad(ref, ref_in, go)):
        assert _rel(a.cpu(), b) <= TOL[dtype]
