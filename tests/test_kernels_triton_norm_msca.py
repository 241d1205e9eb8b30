"""Triton kernels of positional_norm / pn_modulate (kernels/pono.py) and msca_attention
(kernels/msca.py) under the Triton interpreter (CPU).

Oracle: plain float64 torch on the same random float32 inputs; gradients by autograd through a
straightforward torch composition.  Under TRITON_INTERPRET the modules use tiny tiles: pono takes
the register-resident path for C = 2, 3 and the chunked path (16-channel chunks, so 37 = 16+16+5
and 70 = 4*16+6 run several chunk iterations with a ragged last one) for C = 37, 70; the
"single" variant forces the register path for every C, "groups" forces several batch groups
(fp32 partial sums) for a broadcast gamma.  msca uses 16-wide n / l blocks (N = 37 -> 3 n-blocks,
L = 35 / 54 -> ragged l-blocks), K padded to 16; "split" forces the split reductions over l
(fp32 partials summed by the wrapper; phase A's read-modify-write path for N = 37).

Tolerance (float32): every output is a short fp32 reduction (<= 70 channels, <= 54 positions,
<= 37 value channels) evaluated in numpy float32 by the interpreter, so results agree with float64
to a few ulp times sqrt(terms), ~1e-6 relative to the tensor's magnitude (observed <= ~1e-6);
1e-5 leaves margin without hiding a wrong term (errors of a missing / wrong term are O(1)).  The
PONO input gradient is a difference of terms of size |dy| / std that cancel almost exactly when
C = 2 (y = +-1/sqrt(2) up to eps), so its error is measured relative to that term scale.
"""

# conftest.py sets TRITON_INTERPRET=1 when there is no GPU, before any kernel is defined.
import pytest
import torch

triton = pytest.importorskip("triton")

from exsynth.kernels import msca, pono  # noqa: E402

TOL = 1e-5
EPS = 1e-5


def _close(name, got, ref, tol=TOL, scale=None):
    assert got.shape == ref.shape, f"{name}: shape {tuple(got.shape)} != {tuple(ref.shape)}"
    assert torch.isfinite(got).all(), f"{name}: non-finite values"
    if scale is None:
        scale = ref.abs().max().item()
    scale = max(float(scale), 1e-6)
    err = (got.double() - ref).abs().max().item() / scale
    assert err <= tol, f"{name}: max error {err:.3g} (relative to {scale:.3g}) > {tol}"


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _randn(g, *shape, scale=1.0, shift=0.0):
    return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale + shift).float()


# --------------------------------------------------------------------------------------------
# positional_norm / pn_modulate
# --------------------------------------------------------------------------------------------


def _pono_ref(x, eps=EPS):
    mean = x.mean(1)
    std = (x.var(1, unbiased=True) + eps).sqrt()
    return (x - mean[:, None]) / std[:, None], mean, std


SHAPES = [(1, 5, 7), (2, 6, 9)]  # (B, H, W): H != W, L = 35 / 54 (not multiples of the block)


def _variant(monkeypatch, variant):
    if variant == "single":  # register-resident path for every C
        monkeypatch.setattr(pono, "SINGLE_MAX_ELEMS", 1 << 20)
    elif variant == "groups":  # one batch group per batch for a broadcast gamma (fp32 partials)
        monkeypatch.setattr(pono, "MIN_PROGRAMS", 1 << 12)


# C <= 3 takes the register path anyway, so "single" only matters for C = 37, 70
NORM_CASES = [(C, shape, v) for C in (2, 3, 37, 70) for shape in SHAPES
              for v in (("auto",) if C <= 3 else ("auto", "single"))]
MOD_CASES = [(C, shape, bg, v) for C in (2, 3, 37, 70) for shape in SHAPES for bg in ("1", "B")
             for v in ("auto", "single", "groups")
             if not (v == "single" and C <= 3) and not (v == "groups" and (bg == "B" or shape[0] == 1))]


@pytest.mark.parametrize("C,shape,variant", NORM_CASES)
def test_positional_norm(C, shape, variant, monkeypatch):
    _variant(monkeypatch, variant)
    B, H, W = shape
    g = _gen(C * 100 + B)
    L = H * W
    x = _randn(g, B, C, L, scale=2.0, shift=0.5)
    y, mean, std = pono.positional_norm_forward(x, EPS)
    assert y.dtype == x.dtype and mean.dtype == std.dtype == torch.float32
    xd = x.double().requires_grad_(True)
    yr, mr, sr = _pono_ref(xd)
    _close("y", y, yr.detach())
    _close("mean", mean, mr.detach())
    _close("std", std, sr.detach())

    dy = _randn(g, B, C, L)
    dmean = _randn(g, B, L)
    dstd = _randn(g, B, L)
    term = (dy.double().abs() / sr.detach()[:, None]).max().item()  # scale of the cancelling terms
    for with_dy, with_dmean, with_dstd in [(True, True, True), (True, False, False), (False, True, True)]:
        loss = 0.0
        if with_dy:
            loss = loss + (yr * dy.double()).sum()
        if with_dmean:
            loss = loss + (mr * dmean.double()).sum()
        if with_dstd:
            loss = loss + (sr * dstd.double()).sum()
        (dx_ref,) = torch.autograd.grad(loss, xd, retain_graph=True)
        dx = pono.positional_norm_backward(x, mean, std, dy if with_dy else None,
                                           dmean if with_dmean else None, dstd if with_dstd else None)
        _close(f"dx(dy={with_dy}, dmean={with_dmean}, dstd={with_dstd})", dx, dx_ref,
               scale=max(dx_ref.abs().max().item(), term if with_dy else 0.0))


@pytest.mark.parametrize("C,variant", [(37, "auto"), (70, "auto"), (70, "single")])
def test_positional_norm_large_offset(C, variant, monkeypatch):
    _variant(monkeypatch, variant)
    # mean 1e3, std 1: E[x^2] - E[x]^2 in fp32 would lose ~6 digits; two-pass / Chan must not
    g = _gen(C)
    x = _randn(g, 2, C, 54, shift=1000.0)
    y, mean, std = pono.positional_norm_forward(x, EPS)
    yr, mr, sr = _pono_ref(x.double())
    _close("std", std, sr, tol=1e-4)  # x itself is rounded to fp32 at 1e3: ~6e-5 absolute
    _close("y", y, yr, tol=1e-4)
    _close("mean", mean, mr)


@pytest.mark.parametrize("C,shape,bg,variant", MOD_CASES)
def test_pn_modulate(C, shape, bg, variant, monkeypatch):
    _variant(monkeypatch, variant)
    B, H, W = shape
    Bg = B if bg == "B" else 1
    g = _gen(C * 1000 + B * 10 + Bg)
    L = H * W
    x = _randn(g, B, C, L, scale=2.0, shift=-0.5)
    gamma = _randn(g, Bg, C, L, scale=0.5)
    beta = _randn(g, Bg, C, L)
    dout = _randn(g, B, C, L)

    out, mean, std = pono.pn_modulate_forward(x, gamma, beta, EPS)
    xd, gd, bd = (t.double().requires_grad_(True) for t in (x, gamma, beta))
    yr, mr, sr = _pono_ref(xd)
    outr = yr * (1 + gd) + bd
    _close("out", out, outr.detach())
    _close("mean", mean, mr.detach())
    _close("std", std, sr.detach())

    dx_ref, dg_ref, db_ref = torch.autograd.grad((outr * dout.double()).sum(), (xd, gd, bd))
    dx, dgamma, dbeta = pono.pn_modulate_backward(x, gamma, mean, std, dout)
    assert dgamma.shape == gamma.shape and dbeta.shape == beta.shape
    term = ((dout.double() * (1 + gamma.double())).abs() / sr.detach()[:, None]).max().item()
    _close("dx", dx, dx_ref, scale=max(dx_ref.abs().max().item(), term))
    _close("dgamma", dgamma, dg_ref)
    _close("dbeta", dbeta, db_ref)


# --------------------------------------------------------------------------------------------
# msca_attention
# --------------------------------------------------------------------------------------------


def _msca_ref(F, S, G, gate):
    alpha = torch.softmax(S, dim=-1)
    V = F @ alpha.transpose(1, 2)  # (B, N, K)
    Vt = V if gate is None else V * gate[:, None, :]
    return Vt @ torch.softmax(G, dim=1), V


def _check_msca(B, N, K, H, W, with_gate, seed):
    g = _gen(seed)
    L = H * W
    F = _randn(g, B, N, L)
    S = _randn(g, B, K, L, scale=2.0)
    G = _randn(g, B, K, L, scale=2.0)
    gate = _randn(g, B, K, shift=0.5) if with_gate else None
    dout = _randn(g, B, N, L)

    out, V, stats = msca.msca_forward(F, S, G, gate)
    assert out.dtype == F.dtype and V.dtype == stats.dtype == torch.float32
    leaves = [t.double().requires_grad_(True) for t in (F, S, G)]
    gd = gate.double().requires_grad_(True) if with_gate else None
    outr, Vr = _msca_ref(*leaves, gd)
    _close("out", out, outr.detach())
    _close("V", V, Vr.detach())
    Sd = S.double()
    smax = Sd.max(-1).values
    _close("stats.max", stats[..., 0], smax)
    _close("stats.sumexp", stats[..., 1], (Sd - smax[..., None]).exp().sum(-1))

    wrt = leaves + ([gd] if with_gate else [])
    refs = torch.autograd.grad((outr * dout.double()).sum(), wrt)
    dvalue, dspatial, dchannel, dgate = msca.msca_backward(F, S, G, gate, V, stats, dout)
    _close("dvalue", dvalue, refs[0])
    _close("dspatial", dspatial, refs[1])
    if K == 1:  # softmax over a single logit: constant 1, zero gradient
        assert dchannel.abs().max().item() <= 1e-6
    else:
        _close("dchannel", dchannel, refs[2])
    if with_gate:
        _close("dgate", dgate, refs[3])
    else:
        assert dgate is None


@pytest.mark.parametrize("K", [1, 3, 8])
@pytest.mark.parametrize("N", [1, 5, 37])
@pytest.mark.parametrize("with_gate", [False, True])
def test_msca(K, N, with_gate):
    _check_msca(2, N, K, 6, 9, with_gate, seed=K * 100 + N * 2 + with_gate)


@pytest.mark.parametrize("K,N", [(3, 5), (8, 37), (1, 37)])
def test_msca_split(K, N, monkeypatch):
    monkeypatch.setattr(msca, "MIN_PROGRAMS", 64)  # split the l reductions into 16-wide ranges
    assert msca._split(35, 1, 16, torch.device("cpu"))[0] == 3
    _check_msca(1, N, K, 5, 7, True, seed=K + N)


def test_pn_modulate_batch_groups_accumulate(monkeypatch):
    # B = 3 broadcast gamma split into 2 batch groups of <= 2 batches: fp32 partials per group,
    # and inside a group the chunked path's read-modify-write accumulation over batches
    monkeypatch.setattr(pono, "MIN_PROGRAMS", 8)
    assert pono._groups(3, 54, 16, torch.device("cpu")) == (2, 2)
    for C in (3, 37):
        g = _gen(C)
        x = _randn(g, 3, C, 54)
        gamma = _randn(g, 1, C, 54, scale=0.5)
        beta = _randn(g, 1, C, 54)
        dout = _randn(g, 3, C, 54)
        out, mean, std = pono.pn_modulate_forward(x, gamma, beta, EPS)
        xd, gd, bd = (t.double().requires_grad_(True) for t in (x, gamma, beta))
        outr = _pono_ref(xd)[0] * (1 + gd) + bd
        _close("out", out, outr.detach())
        dx_ref, dg_ref, db_ref = torch.autograd.grad((outr * dout.double()).sum(), (xd, gd, bd))
        dx, dgamma, dbeta = pono.pn_modulate_backward(x, gamma, mean, std, dout)
        _close("dx", dx, dx_ref)
        _close("dgamma", dgamma, dg_ref)
        _close("dbeta", dbeta, db_ref)


# 16-bit inputs (no tensor-core dots are involved in the interpreter: all dot operands are fp32).
# Outputs are rounded to the storage type: fp16 2^-11, bf16 2^-8 relative -> 2e-3 / 1.6e-2.
_HALF_TOL = {torch.float16: 2e-3, torch.bfloat16: 1.6e-2}


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("C", [3, 37])
def test_pn_modulate_half(dtype, C):
    tol = _HALF_TOL[dtype]
    g = _gen(C)
    x, gamma, beta, dout = (_randn(g, *s).to(dtype) for s in
                            [(2, C, 54), (1, C, 54), (1, C, 54), (2, C, 54)])
    y, mean, std = pono.positional_norm_forward(x, EPS)
    out, mean2, std2 = pono.pn_modulate_forward(x, gamma, beta, EPS)
    xd, gd, bd = (t.double().requires_grad_(True) for t in (x, gamma, beta))
    yr, mr, sr = _pono_ref(xd)
    outr = yr * (1 + gd) + bd
    _close("y", y, yr.detach(), tol)
    _close("out", out, outr.detach(), tol)
    _close("std", std2, sr.detach(), 1e-5)  # fp32 statistics of the (exact) 16-bit inputs
    dx_ref, dg_ref, db_ref = torch.autograd.grad((outr * dout.double()).sum(), (xd, gd, bd))
    dx, dgamma, dbeta = pono.pn_modulate_backward(x, gamma, mean2, std2, dout)
    assert dx.dtype == dgamma.dtype == dbeta.dtype == dtype
    _close("dx", dx, dx_ref, tol)
    _close("dgamma", dgamma, dg_ref, tol)
    _close("dbeta", dbeta, db_ref, tol)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_msca_half(dtype):
    tol = _HALF_TOL[dtype]
    g = _gen(7)
    F, S, G = (_randn(g, 2, n, 54).to(dtype) for n in (37, 3, 3))
    gate = _randn(g, 2, 3, shift=0.5).to(dtype)
    dout = _randn(g, 2, 37, 54).to(dtype)
    out, V, stats = msca.msca_forward(F, S, G, gate)
    leaves = [t.double().requires_grad_(True) for t in (F, S, G, gate)]
    outr, Vr = _msca_ref(*leaves)
    _close("out", out, outr.detach(), tol)
    _close("V", V, Vr.detach(), 1e-5)  # fp32 result from the (exact) 16-bit inputs
    refs = torch.autograd.grad((outr * dout.double()).sum(), leaves)
    got = msca.msca_backward(F, S, G, gate, V, stats, dout)
    for name, a, r in zip(("dvalue", "dspatial", "dchannel", "dgate"), got, refs):
        assert a.dtype == dtype
        _close(name, a, r, tol)


def test_interpreter_paths(monkeypatch):
    # the cases above exercise the code paths they claim to (interpreter tiling knobs)
    cpu = torch.device("cpu")
    for C, single in ((2, True), (3, True), (37, False), (70, False)):
        for nts, ntc in ((1, 1), (2, 2), (3, 3), (5, 3)):
            s, bc, bl, _ = pono._tiling(C, 54, 4, nts, ntc, 2, cpu)
            assert s == single and bl == 16 and (bc >= C if s else bc == 16)
    monkeypatch.setattr(pono, "SINGLE_MAX_ELEMS", 1 << 20)
    assert pono._tiling(70, 54, 4, 5, 3, 1, cpu)[:2] == (True, 128)
    monkeypatch.setattr(pono, "MIN_PROGRAMS", 1 << 12)
    assert pono._groups(2, 54, 16, cpu) == (2, 1)
    assert msca._split(54, 2, 16, cpu) == (1, 64)  # msca.MIN_PROGRAMS = 1: no split by default
