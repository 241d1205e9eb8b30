"""correlation_warp / cycle_warp / correlation_match: every usable backend
against the plain-PyTorch reference, gradients included."""
import math
import os
import subprocess
import sys
import textwrap

import pytest
import torch

import exsynth.ops as ops
from exsynth.ops import reference

from conftest import usable_backends

BACKENDS = usable_backends("cpu")

# (B, C, (Hq, Wq), (Hk, Wk), Cv, patch_size, alpha). D = C * patch_size**2 is
# never a multiple of a block size; Hq*Wq != Hk*Wk.
CASES = [
    (1, 5, (6, 7), (5, 9), 3, 1, 100.0),
    (2, 13, (9, 8), (7, 7), 1, 1, 1.0),
    (3, 4, (5, 5), (6, 4), 48, 3, 100.0),
    (2, 7, (8, 11), (10, 6), 151, 3, 1.0),
    (1, 9, (7, 5), (9, 8), 151, 3, 100.0),
]
# Larger, to cross the CPU kernel's key blocks (256), query blocks (60) and
# depth chunks (256): too slow for the Triton interpreter.
CASES_CPU = [
    (2, 31, (21, 20), (17, 19), 48, 3, 100.0),  # D = 279, Lq = 420, Lk = 323
    (1, 300, (13, 23), (16, 33), 3, 1, 1.0),  # D = 300, Lk = 528
]
EPS32 = torch.finfo(torch.float32).eps


def _tol(dtype, alpha, D):
    """Max-abs error allowed relative to the reference's max magnitude.

    float64: the algorithms differ only in summation order (~1e-13 observed).
    float32: cosines carry ~sqrt(D) eps rounding and the logits multiply it by
    alpha, which the softmax turns into relative output error of the same size.
    """
    if dtype == torch.float64:
        return 1e-10
    return max(1e-5, 8 * EPS32 * alpha * math.sqrt(D))


def _assert_close(actual, expected, tol, what):
    scale = expected.abs().max().item() + 1e-30
    err = (actual.double() - expected.double()).abs().max().item()
    assert err <= tol * scale, f"{what}: max error {err:.3e} > {tol:.1e} x {scale:.3e}"


def _inputs(case, dtype, value_spatial="key"):
    B, C, sq, sk, Cv, ps, alpha = case
    q = torch.randn(B, C, *sq, dtype=torch.float64)
    k = torch.randn(B, C, *sk, dtype=torch.float64)
    v = torch.randn(B, Cv, *(sk if value_spatial == "key" else sq), dtype=torch.float64)
    return q, k, v


def _dtypes(backend):
    return (torch.float64, torch.float32) if backend == "cpu" else (torch.float32,)


def _cases(backend):
    return CASES + (CASES_CPU if backend == "cpu" else [])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case_index", range(len(CASES) + len(CASES_CPU)))
def test_warp_forward_and_gradients_match_reference(backend, case_index):
    cases = _cases(backend)
    if case_index >= len(cases):
        pytest.skip("size reserved for the cpu backend")
    case = cases[case_index]
    _, C, _, _, _, ps, alpha = case
    q, k, v = _inputs(case, torch.float64)
    qr, kr, vr = (t.clone().requires_grad_() for t in (q, k, v))
    ref, ref_lse = reference.correlation_warp(qr, kr, vr, alpha=alpha, patch_size=ps, return_lse=True)
    g = torch.randn_like(ref)
    g_lse = torch.randn_like(ref_lse)
    ref_grads = torch.autograd.grad((ref * g).sum() + (ref_lse * g_lse).sum(), (qr, kr, vr))
    for dtype in _dtypes(backend):
        tol = _tol(dtype, alpha, C * ps * ps)
        qq, kk, vv = (t.to(dtype).requires_grad_() for t in (q, k, v))
        out, lse = ops.correlation_warp(qq, kk, vv, alpha=alpha, patch_size=ps, backend=backend,
                                        return_lse=True)
        assert out.dtype == dtype and out.shape == ref.shape
        _assert_close(out, ref, tol, f"{backend} {dtype} out")
        _assert_close(lse, ref_lse, tol, f"{backend} {dtype} lse")
        grads = torch.autograd.grad((out * g.to(dtype)).sum() + (lse * g_lse.to(lse.dtype)).sum(),
                                    (qq, kk, vv))
        for name, got, want in zip(("dquery", "dkey", "dvalue"), grads, ref_grads):
            _assert_close(got, want, tol, f"{backend} {dtype} {name}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_warp_without_centering(backend):
    case = (2, 6, (5, 6), (4, 7), 3, 1, 100.0)
    q, k, v = (t.float() for t in _inputs(case, torch.float32))
    out = ops.correlation_warp(q, k, v, center=False, backend=backend)
    ref = reference.correlation_warp(q.double(), k.double(), v.double(), center=False)
    _assert_close(out, ref, _tol(torch.float32, 100.0, 6), "center=False")


def test_cpu_gradcheck_float64():
    if "cpu" not in BACKENDS:
        pytest.skip("cpu backend not built")
    q = torch.randn(2, 3, 3, 4, dtype=torch.float64, requires_grad=True)
    k = torch.randn(2, 3, 4, 3, dtype=torch.float64, requires_grad=True)
    v = torch.randn(2, 2, 4, 3, dtype=torch.float64, requires_grad=True)
    for alpha, ps in ((5.0, 1), (20.0, 3)):
        f = lambda q, k, v: ops.correlation_warp(q, k, v, alpha=alpha, patch_size=ps, backend="cpu")
        assert torch.autograd.gradcheck(f, (q, k, v), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS + ["reference"])
def test_cycle_warp_is_the_column_softmax(backend):
    for case in CASES[:3]:
        B, C, sq, sk, Cw, ps, alpha = case
        q, k, w = _inputs(case, torch.float64, value_spatial="query")
        dtype = torch.float64 if backend in ("cpu", "reference") else torch.float32
        out = ops.cycle_warp(q.to(dtype), k.to(dtype), w.to(dtype), alpha=alpha, patch_size=ps,
                             backend=backend)
        ref = reference.cycle_warp(q, k, w, alpha=alpha, patch_size=ps)
        assert out.shape == (B, Cw, *sk)
        _assert_close(out, ref, _tol(dtype, alpha, C * ps * ps), f"{backend} cycle")


@pytest.mark.parametrize("backend", BACKENDS)
def test_correlation_match_is_the_argmax(backend):
    for case in _cases(backend)[:4]:
        B, C, sq, sk, _, ps, _ = case
        q, k, _ = _inputs(case, torch.float64)
        dtype = torch.float64 if backend == "cpu" else torch.float32
        index, best = ops.correlation_match(q.to(dtype), k.to(dtype), patch_size=ps, backend=backend)
        corr = reference.correlation_matrix(q, k, patch_size=ps)  # (B, Lq, Lk)
        top2 = corr.topk(2, dim=-1).values
        assert index.shape == best.shape == (B, *sq) and index.dtype == torch.int64
        clear = (top2[..., 0] - top2[..., 1]).reshape(B, *sq) > 1e-5  # no near-ties
        want = corr.argmax(-1).reshape(B, *sq)
        assert torch.equal(index[clear], want[clear])
        # where the best two are within rounding, either is right: its cosine is the max
        got_cos = corr.gather(2, index.reshape(B, -1, 1)).reshape(B, *sq)
        tol = 1e-12 if dtype == torch.float64 else 1e-5
        assert (got_cos - top2[..., 0].reshape(B, *sq)).abs().max() <= tol
        assert (best.double() - top2[..., 0].reshape(B, *sq)).abs().max() <= tol


def test_auto_picks_a_fused_backend_on_cpu():
    q, k, v = (t.float() for t in _inputs(CASES[0], torch.float32))
    out = ops.correlation_warp(q, k, v)  # auto
    ref = ops.correlation_warp(q, k, v, backend="reference")
    _assert_close(out, ref.double(), _tol(torch.float32, 100.0, 5), "auto")


def test_half_inputs_on_cpu():
    if "cpu" not in BACKENDS:
        pytest.skip("cpu backend not built")
    q, k, v = _inputs(CASES[0], torch.float64)
    out = ops.correlation_warp(q.bfloat16(), k.bfloat16(), v.bfloat16(), backend="cpu")
    assert out.dtype == torch.bfloat16
    ref = reference.correlation_warp(q.bfloat16().double(), k.bfloat16().double(), v.bfloat16().double())
    _assert_close(out, ref, 2 * torch.finfo(torch.bfloat16).eps, "bfloat16")


def test_cpu_memory_stays_far_below_the_matrix(tmp_path):
    """B=1, HW=16384, D=64: the materialised matrix alone would be 1 GiB.
    Peak RSS growth over forward + backward must stay under 256 MiB."""
    if "cpu" not in BACKENDS:
        pytest.skip("cpu backend not built")
    script = textwrap.dedent("""
        import resource, torch, exsynth.ops as ops
        torch.manual_seed(0)
        q = torch.randn(1, 64, 128, 128, requires_grad=True)
        k = torch.randn(1, 64, 128, 128, requires_grad=True)
        v = torch.randn(1, 3, 128, 128, requires_grad=True)
        g = torch.randn(1, 3, 128, 128)
        # warm the allocator and code paths at a small size first
        ops.correlation_warp(q[..., :8, :8], k[..., :8, :8], v[..., :8, :8], backend="cpu").sum().backward()
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        out = ops.correlation_warp(q, k, v, backend="cpu")
        (out * g).sum().backward()
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print((after - before) / 1024)
    """)
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": "2"}, timeout=600,
                         cwd=tmp_path)  # import the installed exsynth, not the source tree
    assert res.returncode == 0, res.stderr
    grew_mib = float(res.stdout.strip().splitlines()[-1])
    assert grew_mib < 256, f"peak RSS grew by {grew_mib:.0f} MiB"


@pytest.mark.skipif("cpu" not in usable_backends(), reason="cpu backend not built")
def test_cpu_backward_is_bitwise_reproducible():
    # dK / dV are per-thread partial sums; a static split of the query blocks keeps the
    # summation order fixed, so a resumed training run retraces the uninterrupted one.
    g = torch.Generator().manual_seed(0)
    q, k = (torch.randn(2, 48, 20, 20, generator=g).requires_grad_() for _ in range(2))
    v = torch.randn(2, 3, 20, 20, generator=g).requires_grad_()
    w = torch.randn(2, 3, 20, 20, generator=g)

    def grads():
        for t in (q, k, v):
            t.grad = None
        (ops.correlation_warp(q, k, v, backend="cpu") * w).sum().backward()
        return [t.grad.clone() for t in (q, k, v)]

    first = grads()
    for _ in range(4):
        for a, b in zip(first, grads()):
            assert torch.equal(a, b)
