"""Triton kernels for ``msca_attention``: MSCA's decoupled spatial-channel attention.

Shapes (contiguous; float32 / float16 / bfloat16): value F (B, N, L), spatial logits S (B, K, L),
channel logits G (B, K, L), optional gate (B, K); L = H * W, K small (<= 32), N <= 512.

    alpha[b,k,:] = softmax_l S[b,k,:]        V[b,n,k] = sum_l F[b,n,l] alpha[b,k,l]     (B, N, K)
    Vt = V * gate[b,k]                        beta[b,:,l] = softmax_k G[b,:,l]
    out[b,n,l] = sum_k Vt[b,n,k] beta[b,k,l]

Neither alpha nor beta (B x K x L) is ever written to global memory: alpha is recomputed from
the per-(b, k) statistics (max_l S, sum_l exp(S - max)), beta per position in registers (the
softmax over K is local to a position).  K is padded to K_PAD = max(16, next_pow2(K)) with masks so
that the small contractions run on tensor cores via tl.dot (all operands fp32;
input_precision "tf32x3" for float32 inputs, about fp32 accuracy; "tf32" for 16-bit inputs).

Kernels (grids are 1-D and decoded in the kernel):
* ``_stats_kernel``  (B*K,): online max / sum-exp of each logit row, one read of S.
* ``_v_kernel``      (B * n_blocks * SPLIT,): V = F alpha^T, reduction over l split into SPLIT
  contiguous ranges (enough programs to fill the GPU); every program accumulates its
  [BLOCK_N, K_PAD] slice in registers and writes it once into an fp32 partial buffer
  (SPLIT, B, N, K) that the wrapper sums (race-free, deterministic; SPLIT = 1 writes V directly).
  One read of F; S is re-read once per n-block (K << N).
* ``_out_kernel``    (B * l_blocks,): beta from G in registers, then out = Vt beta for every
  n-block: one read of G, one write of out.
* ``_bwd_a_kernel``  (B * SPLIT,): per position block computes beta, dbeta = Vt^T dout (over all
  n-blocks, in registers), dchannel = beta (dbeta - sum_k beta dbeta), and dVt = dout beta^T
  accumulated over the program's l range: in registers when N fits one n-block (SINGLE_N),
  otherwise by read-modify-write of the program's own fp32 partial slice (L2 resident; the first
  position block stores without reading so launches are idempotent).  One read of dout and G.
* ``_bwd_b_kernel``  (B * l_blocks,): alpha from S and the stats; for every n-block
  dvalue = dV alpha and dalpha += dV^T F; then dspatial = alpha (dalpha - c_k),
  c_k = sum_n dV V.  One read of F and S, one write of dvalue and dspatial.
The tiny (B, N, K) / (B, K) glue between the phases (split sums, gate products) is plain torch.

This module imports only torch and triton (and os from the standard library) and the shared launch helpers in ._common; it is
shipped as exsynth.kernels.msca.
"""

import os

import torch
import triton
import triton.language as tl

from ._common import min_programs, on_device

__all__ = ["msca_forward", "msca_backward"]

_INTERPRET = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")

# Precision of tl.dot for float32 operands from float32 inputs ("ieee" is exact fp32 FMA but
# far slower on tensor-core GPUs; "tf32x3" is about fp32 accurate).
FP32_DOT_PRECISION = "tf32x3"

# ---- knobs (module level so tests can override them) -----------------------------------------
# SPLIT_GRAIN: the l range of a split is a multiple of it (a multiple of every BLOCK_L config).
# BWD_A_GRAIN_BYTES: phase A's split ranges hold >= this many bytes per (n, k) partial element
#   worth of dout, i.e. the fp32 partial buffer is <= 4 / BWD_A_GRAIN_BYTES of dout's size.
# BWD_A_SINGLE_N[float32 inputs?]: phase A keeps dVt in registers when max(16, next_pow2(N)) is
#   at most this; otherwise it uses n-blocks of this size and the read-modify-write partials.
# MIN_PROGRAMS: target grid size of the split reductions (None -> 4 x the number of SMs).
if _INTERPRET:
    STATS_BLOCK = 16
    SPLIT_GRAIN = 16
    BWD_A_GRAIN_BYTES = 0
    BWD_A_SINGLE_N = {True: 16, False: 16}
    MIN_PROGRAMS = 1
else:
    STATS_BLOCK = 1024
    SPLIT_GRAIN = 256
    BWD_A_GRAIN_BYTES = 32
    BWD_A_SINGLE_N = {True: 32, False: 64}
    MIN_PROGRAMS = None


def _configs(gpu_list, interp):
    keys = ("BLOCK_N", "BLOCK_L") if len(interp) == 2 else ("BLOCK_L",)
    if _INTERPRET:
        return [triton.Config(dict(zip(keys, interp)), num_warps=4, num_stages=1)]
    return [triton.Config(dict(zip(keys, c[:-2])), num_warps=c[-2], num_stages=c[-1]) for c in gpu_list]


# Autotuning candidates per class (float32 inputs?, K_PAD >= 32?).  float32 inputs use tf32x3 dots
# (operands split into hi / lo parts), which roughly doubles the registers of the dot operands,
# so their tiles are smaller.  The lists were checked with an ahead-of-time sm_90 compile
# (triton 3.9, cuobjdump --dump-resource-usage): none of these spills registers for K <= 32
# (a few do for 32 < K <= 64, which works but is outside the tuned range).
# V / out / bwd_b: (BLOCK_N, BLOCK_L, num_warps, num_stages)
_V_LISTS = {
    (True, False): [(64, 32, 4, 3), (64, 64, 8, 3), (128, 64, 8, 3)],
    (True, True): [(64, 32, 4, 3), (64, 64, 8, 3), (16, 64, 4, 3)],
    (False, False): [(64, 64, 4, 3), (64, 128, 8, 3), (128, 64, 8, 3), (32, 128, 4, 3)],
    (False, True): [(64, 64, 4, 3), (64, 128, 8, 3), (128, 64, 8, 3), (32, 128, 4, 3)],
}
_OUT_LIST = [(64, 64, 4, 2), (64, 128, 8, 2), (32, 128, 4, 2)]
_BWD_B_LISTS = {
    (True, False): [(16, 64, 4, 2), (32, 64, 8, 2), (32, 32, 4, 2)],
    (True, True): [(16, 64, 4, 2), (32, 64, 8, 2), (32, 32, 4, 2)],
    (False, False): [(64, 64, 4, 2), (64, 128, 8, 2), (32, 128, 4, 2)],
    (False, True): [(64, 64, 4, 2), (64, 128, 8, 2), (32, 128, 4, 2)],
}
# bwd_a: (BLOCK_L, num_warps, num_stages); BLOCK_N is chosen by the wrapper (BWD_A_SINGLE_N)
_BWD_A_LISTS = {
    (True, False): [(32, 4, 2), (32, 8, 2)],
    (True, True): [(32, 4, 2), (32, 8, 2)],
    (False, False): [(64, 8, 2), (64, 4, 2), (128, 8, 2)],
    (False, True): [(64, 8, 2), (32, 4, 2)],
}
# autotune key (N_BUCKET / L_BUCKET are unused in the kernel bodies): next_pow2(N), and next_pow2
# of the positions per launch (+1 when L % 16 != 0), so one tuning result serves similar shapes
_KEY = ["N_BUCKET", "L_BUCKET", "K_PAD"]



# --------------------------------------------------------------------------------------------
# device helpers (row stride L; positions >= lim are masked)
# --------------------------------------------------------------------------------------------


@triton.jit
def _alpha_tile(sb, m, inv_sum, offs_k, offs_l, K, L, lim):
    """alpha[K_PAD, BLOCK_L] = exp(S - max) / sumexp; 0 on padded k and on l >= lim."""
    mask = (offs_k[:, None] < K) & (offs_l[None, :] < lim)
    s = tl.load(sb + offs_k[:, None] * L + offs_l[None, :], mask=mask, other=float("-inf")).to(tl.float32)
    return tl.exp2((s - m[:, None]) * 1.4426950408889634) * inv_sum[:, None]


@triton.jit
def _beta_tile(gb, offs_k, offs_l, K, L):
    """beta[K_PAD, BLOCK_L] = softmax over k of G; 0 on padded k (finite on padded l)."""
    kmask = offs_k[:, None] < K
    g = tl.load(gb + offs_k[:, None] * L + offs_l[None, :], mask=kmask & (offs_l[None, :] < L),
                other=0.0).to(tl.float32)
    g = tl.where(kmask, g, float("-inf"))
    mx = tl.max(g, axis=0)
    e = tl.exp2((g - mx[None, :]) * 1.4426950408889634)
    return e / tl.sum(e, axis=0)[None, :]


@triton.jit
def _load_nk(base, offs_n, offs_k, N, K):
    """fp32 [BLOCK_N, K_PAD] tile of a row-major (N, K) matrix, zero padded."""
    mask = (offs_n[:, None] < N) & (offs_k[None, :] < K)
    return tl.load(base + offs_n[:, None] * K + offs_k[None, :], mask=mask, other=0.0).to(tl.float32)


@triton.jit
def _load_vt(vb, gate, offs_n, offs_k, N, K, HAS_GATE: tl.constexpr):
    v = _load_nk(vb, offs_n, offs_k, N, K)
    if HAS_GATE:
        v = v * gate[None, :]
    return v


@triton.jit
def _load_nl(base, offs_n, offs_l, N, L, lim):
    """fp32 [BLOCK_N, BLOCK_L] tile of a row-major (N, L) matrix, zero on n >= N or l >= lim."""
    mask = (offs_n[:, None] < N) & (offs_l[None, :] < lim)
    return tl.load(base + offs_n[:, None] * L + offs_l[None, :], mask=mask, other=0.0).to(tl.float32)


@triton.jit
def _store_rows(base, offs_r, offs_l, R, L, val):
    mask = (offs_r[:, None] < R) & (offs_l[None, :] < L)
    tl.store(base + offs_r[:, None] * L + offs_l[None, :], val.to(base.dtype.element_ty), mask=mask)


@triton.jit
def _load_softmax_stats(STATS, b, offs_k, K):
    kmask = offs_k < K
    m = tl.load(STATS + (b * K + offs_k) * 2, mask=kmask, other=0.0)
    inv_sum = 1.0 / tl.load(STATS + (b * K + offs_k) * 2 + 1, mask=kmask, other=1.0)
    return m, inv_sum


# --------------------------------------------------------------------------------------------
# forward
# --------------------------------------------------------------------------------------------


@triton.jit
def _stats_kernel(S, STATS, L, BLOCK: tl.constexpr):
    """STATS[row] = (max_l S[row, l], sum_l exp(S[row, l] - max)) for row = b * K + k."""
    row = tl.program_id(0).to(tl.int64)
    sb = S + row * L
    offs = tl.arange(0, BLOCK)
    m = tl.full([BLOCK], float("-inf"), dtype=tl.float32)
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    for l0 in range(0, L, BLOCK):
        x = tl.load(sb + l0 + offs, mask=l0 + offs < L, other=float("-inf")).to(tl.float32)
        m_new = tl.maximum(m, x)
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # lanes that saw no element yet
        acc = acc * tl.exp2((m - m_safe) * 1.4426950408889634) + tl.exp2((x - m_safe) * 1.4426950408889634)
        m = m_new
    mx = tl.max(m, axis=0)
    total = tl.sum(acc * tl.exp2((m - mx) * 1.4426950408889634), axis=0)
    tl.store(STATS + row * 2, mx)
    tl.store(STATS + row * 2 + 1, total)


@triton.jit
def _v_kernel(F, S, STATS, VP, B, N, K, L, L_PER_SPLIT, SPLIT, N_BUCKET, L_BUCKET,
              BLOCK_N: tl.constexpr, BLOCK_L: tl.constexpr, K_PAD: tl.constexpr, PREC: tl.constexpr):
    """VP[split, b, n, k] = sum over the split's l range of F[b, n, l] alpha[b, k, l]."""
    # n-blocks vary fastest: programs sharing an S range (same b, split) run together
    pid = tl.program_id(0)
    n_blocks = tl.cdiv(N, BLOCK_N)
    nb = pid % n_blocks
    rest = pid // n_blocks
    split = rest % SPLIT
    b = (rest // SPLIT).to(tl.int64)
    offs_n = nb * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, K_PAD)
    m, inv_sum = _load_softmax_stats(STATS, b, offs_k, K)
    fb = F + b * N * L
    sb = S + b * K * L
    l_lo = split * L_PER_SPLIT
    l_hi = tl.minimum(l_lo + L_PER_SPLIT, L)
    acc = tl.zeros([BLOCK_N, K_PAD], dtype=tl.float32)
    for l0 in range(l_lo, l_hi, BLOCK_L):
        offs_l = l0 + tl.arange(0, BLOCK_L)
        f = _load_nl(fb, offs_n, offs_l, N, L, l_hi)
        a = _alpha_tile(sb, m, inv_sum, offs_k, offs_l, K, L, l_hi)
        acc = tl.dot(f, tl.trans(a), acc, input_precision=PREC)
    vb = VP + (split * B + b) * N * K
    mask = (offs_n[:, None] < N) & (offs_k[None, :] < K)
    tl.store(vb + offs_n[:, None] * K + offs_k[None, :], acc, mask=mask)


@triton.jit
def _out_kernel(V, GATE, G, OUT, N, K, L, N_BUCKET, L_BUCKET,
                BLOCK_N: tl.constexpr, BLOCK_L: tl.constexpr, K_PAD: tl.constexpr,
                HAS_GATE: tl.constexpr, PREC: tl.constexpr):
    """OUT[b, :, l-block] = (V * gate)[b] @ beta[b, :, l-block], beta = softmax_k G (registers)."""
    pid = tl.program_id(0)
    l_blocks = tl.cdiv(L, BLOCK_L)
    b = (pid // l_blocks).to(tl.int64)
    offs_l = (pid % l_blocks) * BLOCK_L + tl.arange(0, BLOCK_L)
    offs_k = tl.arange(0, K_PAD)
    beta = _beta_tile(G + b * K * L, offs_k, offs_l, K, L)
    gate = tl.zeros([K_PAD], dtype=tl.float32)
    if HAS_GATE:
        gate = tl.load(GATE + b * K + offs_k, mask=offs_k < K, other=0.0).to(tl.float32)
    vb = V + b * N * K
    ob = OUT + b * N * L
    for n0 in range(0, N, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        vt = _load_vt(vb, gate, offs_n, offs_k, N, K, HAS_GATE)
        o = tl.dot(vt, beta, input_precision=PREC)
        _store_rows(ob, offs_n, offs_l, N, L, o)


# --------------------------------------------------------------------------------------------
# backward
# --------------------------------------------------------------------------------------------


@triton.jit
def _bwd_a_kernel(V, GATE, G, DOUT, DCH, DVTP, B, N, K, L, L_PER_SPLIT, SPLIT, N_BUCKET, L_BUCKET,
                  BLOCK_N: tl.constexpr, BLOCK_L: tl.constexpr, K_PAD: tl.constexpr,
                  HAS_GATE: tl.constexpr, SINGLE_N: tl.constexpr, PREC: tl.constexpr):
    """dchannel over the program's l range and DVTP[split, b] = sum_l dout beta^T (its partial)."""
    pid = tl.program_id(0)
    split = pid % SPLIT
    b = (pid // SPLIT).to(tl.int64)
    offs_k = tl.arange(0, K_PAD)
    offs_n0 = tl.arange(0, BLOCK_N)
    gate = tl.zeros([K_PAD], dtype=tl.float32)
    if HAS_GATE:
        gate = tl.load(GATE + b * K + offs_k, mask=offs_k < K, other=0.0).to(tl.float32)
    vb = V + b * N * K
    gb = G + b * K * L
    dob = DOUT + b * N * L
    dcb = DCH + b * K * L
    pb = DVTP + (split * B + b) * N * K
    l_lo = split * L_PER_SPLIT
    l_hi = tl.minimum(l_lo + L_PER_SPLIT, L)
    if SINGLE_N:  # all of N in one block: Vt^T and the dVt accumulator live in registers
        vt_t = tl.trans(_load_vt(vb, gate, offs_n0, offs_k, N, K, HAS_GATE))
        acc = tl.zeros([BLOCK_N, K_PAD], dtype=tl.float32)
    for l0 in range(l_lo, l_hi, BLOCK_L):
        offs_l = l0 + tl.arange(0, BLOCK_L)
        beta = _beta_tile(gb, offs_k, offs_l, K, L)
        if SINGLE_N:
            do = _load_nl(dob, offs_n0, offs_l, N, L, l_hi)
            dbeta = tl.dot(vt_t, do, input_precision=PREC)
            acc = tl.dot(do, tl.trans(beta), acc, input_precision=PREC)
        else:
            dbeta = tl.zeros([K_PAD, BLOCK_L], dtype=tl.float32)
            for n0 in range(0, N, BLOCK_N):
                offs_n = n0 + offs_n0
                do = _load_nl(dob, offs_n, offs_l, N, L, l_hi)
                vt = _load_vt(vb, gate, offs_n, offs_k, N, K, HAS_GATE)
                dbeta = tl.dot(tl.trans(vt), do, dbeta, input_precision=PREC)
                part = tl.dot(do, tl.trans(beta), input_precision=PREC)
                # program-owned fp32 slice: the first position block stores, later ones add
                ptrs = pb + offs_n[:, None] * K + offs_k[None, :]
                mask = (offs_n[:, None] < N) & (offs_k[None, :] < K)
                not_first = (offs_n[:, None] * 0 + l0) > l_lo
                prev = tl.load(ptrs, mask=mask & not_first, other=0.0)
                tl.store(ptrs, prev + part, mask=mask)
            # the next position block re-reads these slices (possibly from other threads)
            tl.debug_barrier()
        dch = beta * (dbeta - tl.sum(beta * dbeta, axis=0)[None, :])
        _store_rows(dcb, offs_k, offs_l, K, L, dch)
    if SINGLE_N:
        mask = (offs_n0[:, None] < N) & (offs_k[None, :] < K)
        tl.store(pb + offs_n0[:, None] * K + offs_k[None, :], acc, mask=mask)


@triton.jit
def _bwd_b_kernel(F, S, STATS, DV, CK, DVAL, DSP, N, K, L, N_BUCKET, L_BUCKET,
                  BLOCK_N: tl.constexpr, BLOCK_L: tl.constexpr, K_PAD: tl.constexpr, PREC: tl.constexpr):
    """dvalue = dV alpha and dspatial = alpha (dV^T F - c) for one block of positions."""
    pid = tl.program_id(0)
    l_blocks = tl.cdiv(L, BLOCK_L)
    b = (pid // l_blocks).to(tl.int64)
    offs_l = (pid % l_blocks) * BLOCK_L + tl.arange(0, BLOCK_L)
    offs_k = tl.arange(0, K_PAD)
    m, inv_sum = _load_softmax_stats(STATS, b, offs_k, K)
    alpha = _alpha_tile(S + b * K * L, m, inv_sum, offs_k, offs_l, K, L, L)
    fb = F + b * N * L
    dvb = DV + b * N * K
    dxb = DVAL + b * N * L
    dalpha = tl.zeros([K_PAD, BLOCK_L], dtype=tl.float32)
    for n0 in range(0, N, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        dv = _load_nk(dvb, offs_n, offs_k, N, K)
        f = _load_nl(fb, offs_n, offs_l, N, L, L)
        _store_rows(dxb, offs_n, offs_l, N, L, tl.dot(dv, alpha, input_precision=PREC))
        dalpha = tl.dot(tl.trans(dv), f, dalpha, input_precision=PREC)
    ck = tl.load(CK + b * K + offs_k, mask=offs_k < K, other=0.0)
    _store_rows(DSP + b * K * L, offs_k, offs_l, K, L, alpha * (dalpha - ck[:, None]))


# --------------------------------------------------------------------------------------------
# autotuned launchers, one per class (float32 inputs?, K_PAD >= 32?)
# --------------------------------------------------------------------------------------------


def _tuned(fn, gpu_list, interp):
    return triton.autotune(configs=_configs(gpu_list, interp), key=_KEY)(fn)


_V_TUNED = {c: _tuned(_v_kernel, lst, (16, 16)) for c, lst in _V_LISTS.items()}
_OUT_TUNED = _tuned(_out_kernel, _OUT_LIST, (16, 16))
_BWD_A_TUNED = {c: _tuned(_bwd_a_kernel, lst, (16,)) for c, lst in _BWD_A_LISTS.items()}
_BWD_B_TUNED = {c: _tuned(_bwd_b_kernel, lst, (16, 16)) for c, lst in _BWD_B_LISTS.items()}


def _cls(dtype, k_pad):
    return dtype == torch.float32, k_pad >= 32


# --------------------------------------------------------------------------------------------
# Python wrappers
# --------------------------------------------------------------------------------------------


def _np2(x):
    return triton.next_power_of_2(max(int(x), 1))


def _lbucket(positions, L):
    # autotune key: next_pow2 of the positions per launch, +1 when L % 16 != 0 (Triton then
    # cannot prove row alignment, loads are not vectorised and register use differs)
    return _np2(positions) + (0 if L % 16 == 0 else 1)


def _prec(dtype):
    return FP32_DOT_PRECISION if dtype == torch.float32 else "tf32"






def _split(L, programs_per_split, grain, device):
    """(SPLIT, L_PER_SPLIT): contiguous l ranges, multiples of ``grain``, enough to reach the
    target number of programs; every range is non-empty."""
    grain = max(SPLIT_GRAIN, triton.cdiv(grain, SPLIT_GRAIN) * SPLIT_GRAIN)
    want = triton.cdiv(min_programs(device, MIN_PROGRAMS), max(1, programs_per_split))
    split = max(1, min(want, triton.cdiv(L, grain)))
    per = triton.cdiv(triton.cdiv(L, split), grain) * grain
    return triton.cdiv(L, per), per


def _check(value, spatial, channel, gate):
    dt = value.dtype
    assert dt in (torch.float32, torch.float16, torch.bfloat16), dt
    assert value.dim() == 3 and spatial.dim() == 3 and channel.dim() == 3
    B, N, L = value.shape
    K = spatial.shape[1]
    assert spatial.shape == (B, K, L) and channel.shape == (B, K, L), "logits must be (B, K, L)"
    assert 1 <= K <= 64, "msca kernels support 1 <= K <= 64"
    for t in (value, spatial, channel, gate):
        if t is not None:
            assert t.is_contiguous() and t.device == value.device, "tensors must be contiguous, on one device"
    if gate is not None:
        assert gate.shape == (B, K), "gate must be (B, K)"
    return B, N, K, L


def msca_forward(value, spatial, channel, gate=None):
    """(out, V, stats): out like value (B, N, L); V (B, N, K) float32 before gating;
    stats (B, K, 2) float32 = [max_l, sum_l exp(S - max)] of the spatial logits."""
    B, N, K, L = _check(value, spatial, channel, gate)
    dev = value.device
    out = torch.empty_like(value)
    stats = torch.empty((B, K, 2), device=dev, dtype=torch.float32)
    if B == 0 or N == 0 or L == 0:
        return out, torch.zeros((B, N, K), device=dev, dtype=torch.float32), stats
    K_PAD = max(16, _np2(K))
    prec = _prec(value.dtype)
    cls = _cls(value.dtype, K_PAD)
    split, per = _split(L, B * triton.cdiv(N, 64), SPLIT_GRAIN, dev)
    V = torch.empty((B, N, K), device=dev, dtype=torch.float32)
    VP = V if split == 1 else torch.empty((split, B, N, K), device=dev, dtype=torch.float32)
    with on_device(value):
        _stats_kernel[(B * K,)](spatial, stats, L, BLOCK=min(STATS_BLOCK, max(16, _np2(L))),
                                num_warps=4 if STATS_BLOCK >= 512 else 1)
        grid_v = lambda meta: (B * triton.cdiv(N, meta["BLOCK_N"]) * split,)
        _V_TUNED[cls][grid_v](value, spatial, stats, VP, B, N, K, L, per, split, _np2(N),
                              _lbucket(per * B, L), K_PAD=K_PAD, PREC=prec)
        if split > 1:
            torch.sum(VP, dim=0, out=V)
        g = gate.contiguous() if gate is not None else stats  # dummy pointer when gate is None
        grid_o = lambda meta: (B * triton.cdiv(L, meta["BLOCK_L"]),)
        _OUT_TUNED[grid_o](V, g, channel, out, N, K, L, _np2(N), _lbucket(B * L, L),
                           K_PAD=K_PAD, HAS_GATE=gate is not None, PREC=prec)
    return out, V, stats


def msca_backward(value, spatial, channel, gate, V, stats, dout):
    """(dvalue, dspatial, dchannel, dgate) of msca_forward (dgate None when gate is None)."""
    B, N, K, L = _check(value, spatial, channel, gate)
    dev = value.device
    assert V.shape == (B, N, K) and V.dtype == torch.float32 and V.is_contiguous()
    assert stats.shape == (B, K, 2) and stats.dtype == torch.float32 and stats.is_contiguous()
    assert dout.shape == (B, N, L)
    dout = dout.to(value.dtype).contiguous()
    dvalue = torch.empty_like(value)
    dspatial = torch.empty_like(spatial)
    dchannel = torch.empty_like(channel)
    if B == 0 or N == 0 or L == 0:
        dgate = None if gate is None else torch.zeros_like(gate)
        return dvalue.zero_(), dspatial.zero_(), dchannel.zero_(), dgate
    K_PAD = max(16, _np2(K))
    prec = _prec(value.dtype)
    cls = _cls(value.dtype, K_PAD)
    n_pad = max(16, _np2(N))
    lim = BWD_A_SINGLE_N[value.dtype == torch.float32]
    single_n = n_pad <= lim
    block_n = n_pad if single_n else lim
    # phase A's fp32 partials (split, B, N, K) stay small next to dout (B, N, L)
    grain = BWD_A_GRAIN_BYTES * K_PAD // value.element_size()
    split, per = _split(L, B, grain, dev)
    dvt = torch.empty((B, N, K), device=dev, dtype=torch.float32)
    dvtp = dvt if split == 1 else torch.empty((split, B, N, K), device=dev, dtype=torch.float32)
    g = gate.contiguous() if gate is not None else V  # dummy pointer when gate is None
    with on_device(value):
        _BWD_A_TUNED[cls][(B * split,)](V, g, channel, dout, dchannel, dvtp, B, N, K, L, per, split,
                                        _np2(N), _lbucket(per * B, L), BLOCK_N=block_n, K_PAD=K_PAD,
                                        HAS_GATE=gate is not None, SINGLE_N=single_n, PREC=prec)
        if split > 1:
            torch.sum(dvtp, dim=0, out=dvt)
        if gate is not None:
            dgate = (dvt * V).sum(1).to(gate.dtype)
            dV = dvt * gate.to(torch.float32)[:, None, :]
        else:
            dgate = None
            dV = dvt
        ck = (dV * V).sum(1).contiguous()
        grid_b = lambda meta: (B * triton.cdiv(L, meta["BLOCK_L"]),)
        _BWD_B_TUNED[cls][grid_b](value, spatial, stats, dV.contiguous(), ck, dvalue, dspatial, N, K, L,
                                  _np2(N), _lbucket(B * L, L), K_PAD=K_PAD, PREC=prec)
    return dvalue, dspatial, dchannel, dgate
