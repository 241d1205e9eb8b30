"""k x k patches through the pixel Gram matrix (the cpu backend's patch path,
csrc/cpu/patch_correlation_kernel.h) against the unfolding reference: tiles crossed in both
grids, Hq*Wq != Hk*Wk, odd and tiny images (the halo larger than the image), k = 3 and 5,
batch > 1 on both value paths (small Cv and the GEMM one), every SIMD build, gradients of
query, key, value and the log-sum-exp, and the unfolded path as a second witness."""
import math

import pytest
import torch

from conftest import usable_backends
from exsynth import ops
from exsynth.ops import correlation as corr
from exsynth.ops import reference

pytestmark = pytest.mark.skipif("cpu" not in usable_backends("cpu"), reason="cpu backend not built")

EPS32 = torch.finfo(torch.float32).eps

# (B, C, (Hq, Wq), (Hk, Wk), Cv, patch_size, alpha): the tiles are at most 16 columns and 256
# cells, so 37 x 41 / 29 x 35 cross several in each direction with ragged last tiles
CASES = [
    (2, 6, (37, 41), (29, 35), 3, 3, 100.0),
    (2, 5, (19, 23), (21, 17), 20, 3, 10.0),
    (3, 4, (4, 6), (3, 7), 3, 3, 10.0),     # key tile narrower than a vector, batch > 1
    (1, 3, (20, 37), (33, 18), 3, 5, 20.0),
    (2, 7, (1, 1), (2, 3), 2, 5, 10.0),      # halo larger than both images
    (1, 9, (2, 1), (1, 2), 12, 3, 1.0),
]


def _inputs(case, seed=0):
    B, C, sq, sk, Cv, _, _ = case
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, C, *sq, generator=g, dtype=torch.float64)
    k = torch.randn(B, C, *sk, generator=g, dtype=torch.float64)
    v = torch.randn(B, Cv, *sk, generator=g, dtype=torch.float64)
    return q, k, v


def _tol(dtype, alpha, D):
    """float64: summation order only. float32: the cosine carries ~sqrt(D) eps and the Gram
    path's P - D m n subtracts the part of the dot product the patch means explain (at most
    ~2x for standard-normal features), times alpha in the logits (as test_correlation)."""
    return 1e-10 if dtype == torch.float64 else max(1e-5, 16 * EPS32 * alpha * math.sqrt(D))


def _close(got, want, tol, what):
    scale = want.abs().max().item() + 1e-30
    err = (got.double() - want.double()).abs().max().item()
    assert err <= tol * scale, f"{what}: max error {err:.3e} > {tol:.1e} x {scale:.3e}"


def _warp_and_grads(fn, q, k, v, g, g_lse, dtype):
    qq, kk, vv = (t.to(dtype).requires_grad_() for t in (q, k, v))
    out, lse = fn(qq, kk, vv)
    grads = torch.autograd.grad((out * g.to(dtype)).sum() + (lse * g_lse.to(lse.dtype)).sum(), (qq, kk, vv))
    return (out, lse) + grads


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[2]}x{c[3]}k{c[5]}cv{c[4]}b{c[0]}")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
def test_gram_path_matches_reference(case, dtype):
    _, C, _, _, _, ps, alpha = case
    q, k, v = _inputs(case)
    g = torch.randn(case[0], case[4], *case[2], generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    g_lse = torch.randn(case[0], *case[2], generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ref = _warp_and_grads(lambda a, b, c: reference.correlation_warp(a, b, c, alpha=alpha, patch_size=ps,
                                                                     return_lse=True), q, k, v, g, g_lse,
                          torch.float64)
    with corr.patch_method("gram"):
        got = _warp_and_grads(lambda a, b, c: ops.correlation_warp(a, b, c, alpha=alpha, patch_size=ps,
                                                                   backend="cpu", return_lse=True),
                              q, k, v, g, g_lse, dtype)
    tol = _tol(dtype, alpha, C * ps * ps)
    for name, a, b in zip(("out", "lse", "dquery", "dkey", "dvalue"), got, ref):
        assert a.dtype == (dtype if name != "lse" else a.dtype) and a.shape == b.shape
        _close(a, b, tol, f"{name} {dtype}")


@pytest.mark.parametrize("isa", ["base", "avx2", "avx512"])
def test_every_simd_build(isa):
    import exsynth._C as _C
    order = ["base", "avx2", "avx512"]
    if order.index(isa) > order.index(_C.best_isa()):
        pytest.skip(f"this CPU has no {isa}")
    before = _C.active_isa()
    try:
        _C.set_isa(isa)
        for case in (CASES[0], CASES[2], CASES[3]):
            q, k, v = _inputs(case, seed=3)
            _, C, _, _, _, ps, alpha = case
            for dtype in (torch.float64, torch.float32):
                qq, kk, vv = (t.to(dtype).requires_grad_() for t in (q, k, v))
                out = ops.correlation_warp(qq, kk, vv, alpha=alpha, patch_size=ps, backend="cpu")
                gq, gk, gv = torch.autograd.grad(out.square().sum(), (qq, kk, vv))
                qr, kr, vr = (t.clone().requires_grad_() for t in (q, k, v))
                ref = reference.correlation_warp(qr, kr, vr, alpha=alpha, patch_size=ps)
                rq, rk, rv = torch.autograd.grad(ref.square().sum(), (qr, kr, vr))
                tol = _tol(dtype, alpha, C * ps * ps)
                for name, a, b in (("out", out, ref), ("dq", gq, rq), ("dk", gk, rk), ("dv", gv, rv)):
                    _close(a, b, tol, f"{isa} {dtype} {name}")
    finally:
        _C.set_isa(before)


def test_gram_and_unfold_paths_agree_and_cycle_warp():
    case = CASES[1]
    q, k, v = (t.float() for t in _inputs(case, seed=5))
    w = torch.randn(case[0], 4, *case[2])
    outs = {}
    for method in ("gram", "unfold"):
        with corr.patch_method(method):
            outs[method] = (ops.correlation_warp(q, k, v, alpha=10.0, patch_size=3, backend="cpu"),
                            ops.cycle_warp(q, k, w, alpha=10.0, patch_size=3, backend="cpu"))
    ref_cycle = reference.cycle_warp(q.double(), k.double(), w.double(), alpha=10.0, patch_size=3)
    tol = _tol(torch.float32, 10.0, case[1] * 9)
    _close(outs["gram"][0], outs["unfold"][0], tol, "warp gram vs unfold")
    _close(outs["gram"][1], ref_cycle, tol, "cycle_warp gram")


@pytest.mark.parametrize("ps", [3, 5])
def test_match_is_the_argmax(ps):
    for case in CASES[:4]:
        B, C, sq, sk, _, _, _ = case
        q, k, _ = _inputs(case, seed=7)
        index, best = ops.correlation_match(q, k, patch_size=ps, backend="cpu")
        corr_m = reference.correlation_matrix(q, k, patch_size=ps)
        top2 = corr_m.topk(2, dim=-1).values
        clear = (top2[..., 0] - top2[..., 1]).reshape(B, *sq) > 1e-9
        assert torch.equal(index[clear], corr_m.argmax(-1).reshape(B, *sq)[clear])
        assert (best - top2[..., 0].reshape(B, *sq)).abs().max() <= 1e-12


def test_ties_pick_the_first_key_in_image_order():
    # identical keys everywhere: every key ties; the reference (torch.max) takes index 0
    q = torch.randn(1, 3, 5, 6, dtype=torch.float64)
    k = torch.ones(1, 3, 20, 20, dtype=torch.float64)
    k[:, 1] = 2.0
    index, _ = ops.correlation_match(q, k, patch_size=3, center=False, backend="cpu")
    ri, _ = reference.correlation_match(q, k, patch_size=3, center=False)
    # interior keys all have the same patch; the first of them in image order is (1, 1)
    ref_cos = reference.correlation_matrix(q, k, patch_size=3, center=False)
    got_cos = ref_cos.gather(2, index.reshape(1, -1, 1)).reshape(ri.shape)
    want_cos = ref_cos.max(-1).values.reshape(ri.shape)
    assert torch.allclose(got_cos, want_cos, atol=1e-12)
    assert torch.equal(index, ri)


def test_zero_features_and_constant_patches():
    """Positions whose patch is all zero (ReLU features) or constant: the reference's cosine
    is 0 there (the centred vector is 0); outputs and gradients stay finite."""
    q, k, v = _inputs((1, 4, (9, 10), (8, 11), 3, 3, 10.0), seed=9)
    q[:, :, :4, :5] = 0.0
    k[:, :, 3:, 4:] = 0.0
    for center in (True, False):
        qq, kk, vv = (t.clone().requires_grad_() for t in (q, k, v))
        out = ops.correlation_warp(qq, kk, vv, alpha=10.0, patch_size=3, center=center, backend="cpu")
        ref = reference.correlation_warp(q, k, v, alpha=10.0, patch_size=3, center=center)
        _close(out, ref, 1e-10, f"zero patches center={center}")
        grads = torch.autograd.grad(out.sum(), (qq, kk, vv))
        assert all(torch.isfinite(g).all() for g in grads)


def test_gradcheck_float64_k5():
    q = torch.randn(2, 2, 3, 4, dtype=torch.float64, requires_grad=True)
    k = torch.randn(2, 2, 4, 3, dtype=torch.float64, requires_grad=True)
    v = torch.randn(2, 2, 4, 3, dtype=torch.float64, requires_grad=True)
    with corr.patch_method("gram"):
        assert torch.autograd.gradcheck(
            lambda q, k, v: ops.correlation_warp(q, k, v, alpha=5.0, patch_size=5, backend="cpu",
                                                 return_lse=True), (q, k, v), eps=1e-6, atol=1e-6)


def test_patch_method_errors():
    with pytest.raises(ValueError, match="method must be one of"):
        with corr.patch_method("im2col"):
            pass
    with corr.patch_method("gram"), pytest.raises(ValueError, match="no Gram path"):
        corr._uses_gram("triton", 3)   # Triton keeps the unfolded rows (docs/design.md)


def test_kernels_leave_the_callers_subnormals_alone():
    """The correlation kernels flush subnormals while they run (a sharp softmax's backward
    makes them, and each costs ~100 cycles on x86) and restore every thread's mode after."""
    tiny = torch.full((1 << 16,), 1e-39)  # a float32 subnormal, large enough for torch to thread
    assert (tiny * 1.0)[0].item() > 0
    q, k, v = _inputs(CASES[1])
    for ps in (1, 3):
        qq, kk, vv = (t.float().requires_grad_() for t in (q, k, v))
        ops.correlation_warp(qq, kk, vv, patch_size=ps, backend="cpu").sum().backward()
        ops.correlation_match(q.float(), k.float(), patch_size=ps, backend="cpu")
    assert (tiny * 1.0).min().item() > 0
