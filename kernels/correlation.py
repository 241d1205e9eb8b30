"""Triton kernels for ``correlation_warp``: attention with an arbitrary value width.

The op (see docs/design.md, "correlation_warp") on already-normalised features is

    S[b, i, j] = alpha * <q[b, i], k[b, j]>,   P = softmax_j(S),   out[b, i] = sum_j P[b, i, j] v[b, j]

with q: (B, Lq, D), k: (B, Lk, D), v: (B, Lk, Cv).  D can be large (CoCosNet: 256 * 3 * 3 =
2304), so unlike a usual flash-attention kernel the feature dimension is *tiled*: every logit
tile S[BLOCK_M, BLOCK_N] is accumulated over a loop of BLOCK_D-wide slices of q and k.  The value
width Cv (1..256) is padded to a power of two >= 16 inside the kernels and masked.  The
Lq x Lk matrix is never materialised.

Kernels
-------
* ``_attn_fwd_kernel``   grid (cdiv(Lq, BLOCK_M), B): online softmax over key blocks
  (exp2 with log2(e) folded into the scale), fp32 accumulator BLOCK_M x CV_PAD, writes out and
  the natural-log log-sum-exp.
* ``_attn_bwd_dq_kernel`` grid (cdiv(Lq, BLOCK_M), B): with delta = rowsum(dO * O) - dlse (formed
  in the kernel, see _delta_like_dp), for each key block recomputes S, P = exp(S - lse) (lse float64, split in two),
  dP = dO V^T, dS = P (dP - delta), and adds alpha * dS K to the program-owned dQ rows.
* ``_attn_bwd_dkdv_kernel`` grid (cdiv(Lk, BLOCK_N), B): for each query block recomputes
  S^T, P^T, accumulates dV += P^T dO in registers and adds alpha * dS^T Q to the program-owned
  dK rows.
* ``_match_fwd_kernel``  grid (cdiv(Lq, BLOCK_M), B): running max / argmax of q k^T.

When D fits one tile (constexpr ``SINGLE_D``: D <= 128 for fp16 / bf16, D <= 64 for fp32 on
GPU) the q / k tile is loaded once and the dQ / dK accumulator stays in registers.  Otherwise
the dQ (dK) accumulator lives in global memory in fp32 (the output itself for float32 inputs, a
scratch buffer cast at the end otherwise) and every key (query) block does a read-modify-write
of the program's own BLOCK x BLOCK_D slices; each row block is
owned by exactly one program, so there are no races and no atomics.  The first block writes
without reading, so the scratch needs no zero fill and repeated launches (autotuning) are
idempotent.

float32 inputs use ``input_precision="tf32x3"`` on tensor cores (about fp32 accuracy, which
matters because alpha = 100 amplifies logit errors); fp16 / bf16 use the tensor cores directly
with fp32 accumulation (P and dS are rounded to the input dtype for their dots, as in
flash-attention).

Block sizes: autotuned on GPU over a short list per kernel (pruned by a rough shared-memory /
register estimate, always keeping a small fallback), keyed on next_pow2(D), next_pow2(B * L),
BLOCK_D and CV_PAD; under TRITON_INTERPRET a single 16 x 16 config with 32-wide D tiles.

Imports only torch, triton and the standard library (shipped as exsynth.kernels.correlation).
"""

import math
import os

import torch
import triton
import triton.language as tl

from ._common import on_device

__all__ = ["attention_forward", "attention_backward", "match_forward"]

_INTERPRET = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")

_LOG2E = 1.0 / math.log(2.0)

# Feature-dimension tiling: D <= SINGLE_D_MAX -> one tile of next_pow2(D) (>= 16) whose q / k
# tile and dQ / dK accumulator stay on chip; otherwise BLOCK_D-wide tiles, the last one masked.
# float32 uses narrower tiles (tf32x3 splits every operand in two, doubling its footprint).  The
# interpreter uses small tiles so that small tests exercise the tiled paths.
if _INTERPRET:
    _D_TILING = {torch.float32: (32, 32), torch.float16: (32, 32), torch.bfloat16: (32, 32)}
else:
    _D_TILING = {torch.float32: (64, 32), torch.float16: (128, 64), torch.bfloat16: (128, 64)}

# Precision of tl.dot for float32 operands ("ieee" is exact fp32 FMA but much slower on H100;
# "tf32" alone is too coarse: alpha = 100 turns its ~1e-3 relative error into ~0.1 logit error).
FP32_DOT_PRECISION = "tf32x3"


def _configs(gpu_list):
    if _INTERPRET:
        return [triton.Config({"BLOCK_M": 16, "BLOCK_N": 16}, num_warps=4, num_stages=1)]
    return [triton.Config({"BLOCK_M": m, "BLOCK_N": n}, num_warps=w, num_stages=s) for (m, n, w, s) in gpu_list]


# (BLOCK_M, BLOCK_N, num_warps, num_stages).  The last entry of each list is the fallback that
# fits every case (float32, Cv padded to 256) and is always kept by the pruning below.
_FWD_CONFIGS = _configs([(128, 64, 8, 3), (64, 64, 4, 3), (64, 64, 8, 3), (128, 128, 8, 2),
                         (64, 32, 4, 3), (32, 32, 8, 1)])
_DQ_CONFIGS = _configs([(64, 64, 4, 2), (64, 64, 8, 2), (128, 64, 8, 2), (64, 128, 8, 2),
                        (32, 64, 4, 2), (32, 64, 8, 2), (32, 32, 4, 1)])
_DKDV_CONFIGS = _configs([(64, 64, 4, 2), (64, 64, 8, 2), (64, 128, 8, 2), (128, 64, 8, 2),
                          (64, 32, 4, 2), (64, 32, 8, 2), (32, 32, 4, 1)])
_MATCH_CONFIGS = _configs([(128, 64, 8, 3), (64, 64, 4, 3), (128, 128, 8, 2), (64, 64, 4, 1)])

# D_BUCKET / L_BUCKET (unused in the kernel bodies): next_pow2(D) and next_pow2(B * rows owned by
# the grid), so one tuning result serves all sizes of similar shape and grid occupancy.
_KEY = ["D_BUCKET", "L_BUCKET", "BLOCK_D", "CV_PAD"]

_SMEM_BUDGET = 200 * 1024  # H100 / H200: 227 KiB per block
_REG_BUDGET = 120  # fp32 accumulator (and register-operand) words per thread


def _footprint(kind, cfg, es, bd, cvp, single):
    """Rough (shared-memory bytes, accumulator registers per thread) of one config.

    Calibrated on sm_90 compiles (Triton 3.9): only loads in the innermost loop are multi-buffered;
    float32 (tf32x3) needs about 1.25x the operand storage and 2x the registers."""
    m, n, st = cfg.kwargs["BLOCK_M"], cfg.kwargs["BLOCK_N"], max(cfg.num_stages - 1, 1)
    if kind == "dkdv":  # same structure as dq with the roles of the two sides swapped
        m, n = n, m
    if kind == "match":
        piped, once, acc = (n * bd, m * bd, 0) if single else ((m + n) * bd, 0, 0)
        acc += m * n
    elif kind == "fwd":
        piped, once = (n * (bd + cvp), m * bd) if single else ((m + n) * bd, n * cvp)
        once += m * n
        acc = m * cvp + m * n
    else:  # dq / dkdv: S, dP tiles, the value-side operand, the owned-side accumulators
        piped, once = (n * (bd + cvp), m * (bd + cvp)) if single else ((m + 2 * n) * bd, (m + n) * cvp)
        once += m * n
        acc = 2 * m * n + m * cvp // 2 + (m * bd if single else 0) + (m * cvp if kind == "dkdv" else 0)
    smem = int(es * 1.25 if es == 4 else es) * (st * piped + once)
    regs = acc / (32 * cfg.num_warps) * (2 if es == 4 else 1)
    return smem, regs


def _pruner(kind):
    def prune(configs, named_args, **kwargs):
        if _INTERPRET or len(configs) == 1:
            return configs
        es = named_args["Q"].element_size()
        bd, cvp, single = kwargs["BLOCK_D"], kwargs.get("CV_PAD", 16), kwargs["SINGLE_D"]
        keep = []
        for cfg in configs[:-1]:
            smem, regs = _footprint(kind, cfg, es, bd, cvp, single)
            if smem <= _SMEM_BUDGET and regs <= _REG_BUDGET:
                keep.append(cfg)
        return keep + configs[-1:]

    return {"early_config_prune": prune}


# --------------------------------------------------------------------------------------------
# shared device helpers
# --------------------------------------------------------------------------------------------


@triton.jit
def _load_rows(base, offs_r, offs_d, n_rows, D, EVEN_D: tl.constexpr):
    """Load a (len(offs_r), len(offs_d)) tile of a row-major (n_rows, D) matrix, zero padded."""
    ptrs = base + offs_r[:, None] * D + offs_d[None, :]
    if EVEN_D:
        mask = offs_r[:, None] < n_rows
    else:
        mask = (offs_r[:, None] < n_rows) & (offs_d[None, :] < D)
    return tl.load(ptrs, mask=mask, other=0.0)


@triton.jit
def _dot_tiled(a_base, b_base, offs_a, offs_b, n_a, n_b, D,
               BLOCK_A: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_D: tl.constexpr,
               EVEN_D: tl.constexpr, PREC: tl.constexpr):
    """acc[BLOCK_A, BLOCK_B] = A[offs_a, :] @ B[offs_b, :]^T with the D loop tiled by BLOCK_D."""
    acc = tl.zeros((BLOCK_A, BLOCK_B), dtype=tl.float32)
    offs_d = tl.arange(0, BLOCK_D)
    for d0 in range(0, D, BLOCK_D):
        a = _load_rows(a_base, offs_a, d0 + offs_d, n_a, D, EVEN_D)
        b = _load_rows(b_base, offs_b, d0 + offs_d, n_b, D, EVEN_D)
        acc = tl.dot(a, tl.trans(b), acc, input_precision=PREC)
    return acc


@triton.jit
def _acc_rows_rmw(acc_base, mat, ds, offs_r, offs_k, n_rows, n_k, D, alpha, accumulate,
                  BLOCK_D: tl.constexpr, EVEN_D: tl.constexpr, PREC: tl.constexpr):
    """ACC[offs_r, :] (+)= alpha * ds @ MAT[offs_k, :], looping over D tiles (fp32 ACC in global).

    ``accumulate`` False on the program's first contribution -> plain store, the scratch is not read."""
    offs_d = tl.arange(0, BLOCK_D)
    for d0 in range(0, D, BLOCK_D):
        dd = d0 + offs_d
        m = _load_rows(mat, offs_k, dd, n_k, D, EVEN_D)
        part = tl.dot(ds, m, input_precision=PREC) * alpha
        ptrs = acc_base + offs_r[:, None] * D + dd[None, :]
        if EVEN_D:
            mask = offs_r[:, None] < n_rows
        else:
            mask = (offs_r[:, None] < n_rows) & (dd[None, :] < D)
        prev = tl.load(ptrs, mask=mask & accumulate, other=0.0)
        tl.store(ptrs, prev + part, mask=mask)
    # the next call re-reads these slices; make this program's stores visible to all its threads
    # (a no-op for correctness when load and store layouts coincide, cheap otherwise)
    tl.debug_barrier()


@triton.jit
def _copy_rows_cast(src_base, dst_base, offs_r, n_rows, D, BLOCK_D: tl.constexpr, EVEN_D: tl.constexpr):
    """dst[offs_r, :] = src[offs_r, :] cast to dst's dtype (fp32 scratch -> fp16/bf16 output)."""
    offs_d = tl.arange(0, BLOCK_D)
    for d0 in range(0, D, BLOCK_D):
        dd = d0 + offs_d
        x = _load_rows(src_base, offs_r, dd, n_rows, D, EVEN_D)
        if EVEN_D:
            mask = offs_r[:, None] < n_rows
        else:
            mask = (offs_r[:, None] < n_rows) & (dd[None, :] < D)
        tl.store(dst_base + offs_r[:, None] * D + dd[None, :], x.to(dst_base.dtype.element_ty), mask=mask)


# --------------------------------------------------------------------------------------------
# forward
# --------------------------------------------------------------------------------------------


@triton.autotune(configs=_FWD_CONFIGS, key=_KEY, prune_configs_by=_pruner("fwd"))
@triton.jit
def _attn_fwd_kernel(Q, K, V, O, LSE, Lq, Lk, D, Cv, qk_scale, D_BUCKET, L_BUCKET,
                     BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                     CV_PAD: tl.constexpr, SINGLE_D: tl.constexpr, EVEN_D: tl.constexpr,
                     PREC: tl.constexpr):
    pid_m = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    q_base = Q + b * Lq * D
    k_base = K + b * Lk * D
    v_base = V + b * Lk * Cv
    o_base = O + b * Lq * Cv
    lse_base = LSE + b * Lq

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_c = tl.arange(0, CV_PAD)
    offs_d = tl.arange(0, BLOCK_D)
    c_mask = offs_c < Cv

    m_i = tl.full((BLOCK_M,), float("-inf"), dtype=tl.float32)
    l_i = tl.zeros((BLOCK_M,), dtype=tl.float32)
    acc = tl.zeros((BLOCK_M, CV_PAD), dtype=tl.float32)
    if SINGLE_D:
        q = _load_rows(q_base, offs_m, offs_d, Lq, D, EVEN_D)

    for n0 in range(0, Lk, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        if SINGLE_D:
            k = _load_rows(k_base, offs_n, offs_d, Lk, D, EVEN_D)
            s = tl.dot(q, tl.trans(k), input_precision=PREC)
        else:
            s = _dot_tiled(q_base, k_base, offs_m, offs_n, Lq, Lk, D, BLOCK_M, BLOCK_N, BLOCK_D, EVEN_D, PREC)
        # logits in log2 units
        s = tl.where(offs_n[None, :] < Lk, s * qk_scale, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        corr = tl.exp2(m_i - m_new)
        p = tl.exp2(s - m_new[:, None])
        l_i = l_i * corr + tl.sum(p, 1)
        v = tl.load(v_base + offs_n[:, None] * Cv + offs_c[None, :],
                    mask=(offs_n[:, None] < Lk) & c_mask[None, :], other=0.0)
        acc = acc * corr[:, None]
        acc = tl.dot(p.to(v.dtype), v, acc, input_precision=PREC)
        m_i = m_new

    out = acc / l_i[:, None]
    m_mask = offs_m < Lq
    tl.store(o_base + offs_m[:, None] * Cv + offs_c[None, :], out.to(O.dtype.element_ty),
             mask=m_mask[:, None] & c_mask[None, :])
    # float64: |lse| ~ alpha, and the backward rebuilds P from it (see _split_lse2)
    lse = (m_i.to(tl.float64) + tl.log2(l_i).to(tl.float64)) * 0.6931471805599453
    tl.store(lse_base + offs_m, lse, mask=m_mask)


# --------------------------------------------------------------------------------------------
# backward
# --------------------------------------------------------------------------------------------


@triton.jit
def _delta_like_dp(do, o, dlse_ptr, offs_m, m_mask, PREC: tl.constexpr, ROWS_FIRST: tl.constexpr):
    """delta_i = dO_i . out_i - dlse_i, by the same kind of dot as dP (dO v^T in the dq kernel,
    v dO^T in the dk/dv kernel), read off the diagonal: where a row is one-hot (out == v_j)
    dP_ij - delta_i is then exactly 0, as in the oracle's softmax backward."""
    if ROWS_FIRST:
        dd = tl.dot(do, tl.trans(o), input_precision=PREC)   # [i, i'] = dO_i . out_i'
    else:
        dd = tl.dot(o, tl.trans(do), input_precision=PREC)   # [i', i] = out_i' . dO_i
    eye = offs_m[:, None] == offs_m[None, :]
    delta = tl.sum(tl.where(eye, dd, 0.0), 1)
    return delta - tl.load(dlse_ptr + offs_m, mask=m_mask, other=0.0)


@triton.jit
def _split_lse2(lse64):
    """The float64 natural-log lse as hi + lo float32 log2 parts: P = exp2((t - hi) - lo) keeps
    float32 accuracy where exp2(t - lse2) in one float32 would lose log2(|lse2|) bits."""
    lse2 = lse64 * 1.4426950408889634
    hi = lse2.to(tl.float32)
    lo = (lse2 - hi.to(tl.float64)).to(tl.float32)
    return hi, lo


@triton.autotune(configs=_DQ_CONFIGS, key=_KEY, prune_configs_by=_pruner("dq"))
@triton.jit
def _attn_bwd_dq_kernel(Q, K, V, O, DO, LSE, DLSE, DQ, DQ_ACC, Lq, Lk, D, Cv, qk_scale, alpha, D_BUCKET, L_BUCKET,
                        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                        CV_PAD: tl.constexpr, SINGLE_D: tl.constexpr, EVEN_D: tl.constexpr,
                        ACC_IS_OUT: tl.constexpr, PREC: tl.constexpr):
    pid_m = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    q_base = Q + b * Lq * D
    k_base = K + b * Lk * D
    v_base = V + b * Lk * Cv
    do_base = DO + b * Lq * Cv
    dq_base = DQ + b * Lq * D
    dqa_base = DQ_ACC + b * Lq * D

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_c = tl.arange(0, CV_PAD)
    offs_d = tl.arange(0, BLOCK_D)
    m_mask = offs_m < Lq
    c_mask = offs_c < Cv

    mc_mask = m_mask[:, None] & c_mask[None, :]
    do = tl.load(do_base + offs_m[:, None] * Cv + offs_c[None, :], mask=mc_mask, other=0.0)
    o = tl.load(O + b * Lq * Cv + offs_m[:, None] * Cv + offs_c[None, :], mask=mc_mask, other=0.0)
    delta = _delta_like_dp(do, o, DLSE + b * Lq, offs_m, m_mask, PREC, True)
    lse_hi, lse_lo = _split_lse2(tl.load(LSE + b * Lq + offs_m, mask=m_mask, other=0.0))

    if SINGLE_D:
        q = _load_rows(q_base, offs_m, offs_d, Lq, D, EVEN_D)
        dq = tl.zeros((BLOCK_M, BLOCK_D), dtype=tl.float32)

    for n0 in range(0, Lk, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        if SINGLE_D:
            k = _load_rows(k_base, offs_n, offs_d, Lk, D, EVEN_D)
            s = tl.dot(q, tl.trans(k), input_precision=PREC)
        else:
            s = _dot_tiled(q_base, k_base, offs_m, offs_n, Lq, Lk, D, BLOCK_M, BLOCK_N, BLOCK_D, EVEN_D, PREC)
        # the forward's logits, rounded alike (no FMA into the subtraction)
        t = tl.where(offs_n[None, :] < Lk, s * qk_scale, float("-inf"))
        p = tl.exp2((t - lse_hi[:, None]) - lse_lo[:, None])
        v = tl.load(v_base + offs_n[:, None] * Cv + offs_c[None, :],
                    mask=(offs_n[:, None] < Lk) & c_mask[None, :], other=0.0)
        dp = tl.dot(do, tl.trans(v), input_precision=PREC)
        ds = (p * (dp - delta[:, None])).to(Q.dtype.element_ty)
        if SINGLE_D:
            dq = tl.dot(ds, k, dq, input_precision=PREC)
        else:
            _acc_rows_rmw(dqa_base, k_base, ds, offs_m, offs_n, Lq, Lk, D, alpha, n0 > 0,
                          BLOCK_D, EVEN_D, PREC)

    if SINGLE_D:
        dq = dq * alpha
        if EVEN_D:
            st_mask = m_mask[:, None]
        else:
            st_mask = m_mask[:, None] & (offs_d[None, :] < D)
        tl.store(dq_base + offs_m[:, None] * D + offs_d[None, :], dq.to(DQ.dtype.element_ty), mask=st_mask)
    else:
        if not ACC_IS_OUT:
            _copy_rows_cast(dqa_base, dq_base, offs_m, Lq, D, BLOCK_D, EVEN_D)


@triton.autotune(configs=_DKDV_CONFIGS, key=_KEY, prune_configs_by=_pruner("dkdv"))
@triton.jit
def _attn_bwd_dkdv_kernel(Q, K, V, O, DO, LSE, DLSE, DK, DV, DK_ACC, Lq, Lk, D, Cv, qk_scale, alpha,
                          D_BUCKET, L_BUCKET,
                          BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                          CV_PAD: tl.constexpr, SINGLE_D: tl.constexpr, EVEN_D: tl.constexpr,
                          ACC_IS_OUT: tl.constexpr, PREC: tl.constexpr):
    pid_n = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    q_base = Q + b * Lq * D
    k_base = K + b * Lk * D
    v_base = V + b * Lk * Cv
    do_base = DO + b * Lq * Cv
    dk_base = DK + b * Lk * D
    dv_base = DV + b * Lk * Cv
    dka_base = DK_ACC + b * Lk * D
    lse_base = LSE + b * Lq
    o_base = O + b * Lq * Cv

    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_c = tl.arange(0, CV_PAD)
    offs_d = tl.arange(0, BLOCK_D)
    n_mask = offs_n < Lk
    c_mask = offs_c < Cv

    v = tl.load(v_base + offs_n[:, None] * Cv + offs_c[None, :], mask=n_mask[:, None] & c_mask[None, :], other=0.0)
    dv = tl.zeros((BLOCK_N, CV_PAD), dtype=tl.float32)
    if SINGLE_D:
        k = _load_rows(k_base, offs_n, offs_d, Lk, D, EVEN_D)
        dk = tl.zeros((BLOCK_N, BLOCK_D), dtype=tl.float32)

    for m0 in range(0, Lq, BLOCK_M):
        offs_m = m0 + tl.arange(0, BLOCK_M)
        m_mask = offs_m < Lq
        if SINGLE_D:
            q = _load_rows(q_base, offs_m, offs_d, Lq, D, EVEN_D)
            st = tl.dot(k, tl.trans(q), input_precision=PREC)
        else:
            st = _dot_tiled(k_base, q_base, offs_n, offs_m, Lk, Lq, D, BLOCK_N, BLOCK_M, BLOCK_D, EVEN_D, PREC)
        lse_hi, lse_lo = _split_lse2(tl.load(lse_base + offs_m, mask=m_mask, other=0.0))
        tt = tl.where(n_mask[:, None], st * qk_scale, float("-inf"))
        pt = tl.exp2((tt - lse_hi[None, :]) - lse_lo[None, :])
        pt = tl.where(m_mask[None, :], pt, 0.0)
        do = tl.load(do_base + offs_m[:, None] * Cv + offs_c[None, :],
                     mask=m_mask[:, None] & c_mask[None, :], other=0.0)
        o = tl.load(o_base + offs_m[:, None] * Cv + offs_c[None, :],
                    mask=m_mask[:, None] & c_mask[None, :], other=0.0)
        delta = _delta_like_dp(do, o, DLSE + b * Lq, offs_m, m_mask, PREC, False)
        dv = tl.dot(pt.to(do.dtype), do, dv, input_precision=PREC)
        dpt = tl.dot(v, tl.trans(do), input_precision=PREC)
        dst = (pt * (dpt - delta[None, :])).to(Q.dtype.element_ty)
        if SINGLE_D:
            dk = tl.dot(dst, q, dk, input_precision=PREC)
        else:
            _acc_rows_rmw(dka_base, q_base, dst, offs_n, offs_m, Lk, Lq, D, alpha, m0 > 0,
                          BLOCK_D, EVEN_D, PREC)

    tl.store(dv_base + offs_n[:, None] * Cv + offs_c[None, :], dv.to(DV.dtype.element_ty),
             mask=n_mask[:, None] & c_mask[None, :])
    if SINGLE_D:
        dk = dk * alpha
        if EVEN_D:
            st_mask = n_mask[:, None]
        else:
            st_mask = n_mask[:, None] & (offs_d[None, :] < D)
        tl.store(dk_base + offs_n[:, None] * D + offs_d[None, :], dk.to(DK.dtype.element_ty), mask=st_mask)
    else:
        if not ACC_IS_OUT:
            _copy_rows_cast(dka_base, dk_base, offs_n, Lk, D, BLOCK_D, EVEN_D)


# --------------------------------------------------------------------------------------------
# hard match
# --------------------------------------------------------------------------------------------


@triton.autotune(configs=_MATCH_CONFIGS, key=["D_BUCKET", "L_BUCKET", "BLOCK_D"], prune_configs_by=_pruner("match"))
@triton.jit
def _match_fwd_kernel(Q, K, IDX, BEST, Lq, Lk, D, D_BUCKET, L_BUCKET,
                      BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                      SINGLE_D: tl.constexpr, EVEN_D: tl.constexpr, PREC: tl.constexpr):
    pid_m = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    q_base = Q + b * Lq * D
    k_base = K + b * Lk * D

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    best = tl.full((BLOCK_M,), float("-inf"), dtype=tl.float32)
    idx = tl.zeros((BLOCK_M,), dtype=tl.int32)
    if SINGLE_D:
        q = _load_rows(q_base, offs_m, offs_d, Lq, D, EVEN_D)

    for n0 in range(0, Lk, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        if SINGLE_D:
            k = _load_rows(k_base, offs_n, offs_d, Lk, D, EVEN_D)
            s = tl.dot(q, tl.trans(k), input_precision=PREC)
        else:
            s = _dot_tiled(q_base, k_base, offs_m, offs_n, Lq, Lk, D, BLOCK_M, BLOCK_N, BLOCK_D, EVEN_D, PREC)
        s = tl.where(offs_n[None, :] < Lk, s, float("-inf"))
        # torch.max's order: NaN above every number, the first NaN wins (a NaN query or key)
        isnan = s != s
        s_num = tl.where(isnan, float("-inf"), s)
        bmax, barg = tl.max(s_num, 1, return_indices=True, return_indices_tie_break_left=True)
        nan_col = tl.min(tl.where(isnan, tl.arange(0, BLOCK_N)[None, :], BLOCK_N), 1)
        has_nan = nan_col < BLOCK_N
        best_is_nan = best != best
        upd = (bmax > best) & (~best_is_nan)  # strict: keeps the first occurrence across blocks
        take_nan = has_nan & (~best_is_nan)
        best = tl.where(take_nan, float("nan"), tl.where(upd, bmax, best))
        idx = tl.where(take_nan, nan_col.to(tl.int32) + n0, tl.where(upd, barg.to(tl.int32) + n0, idx))

    m_mask = offs_m < Lq
    tl.store(IDX + b * Lq + offs_m, idx.to(tl.int64), mask=m_mask)
    tl.store(BEST + b * Lq + offs_m, best, mask=m_mask)


# --------------------------------------------------------------------------------------------
# Python wrappers
# --------------------------------------------------------------------------------------------


def _np2(x):
    return triton.next_power_of_2(max(int(x), 1))


def _d_tiling(D, dtype):
    single_max, block_d = _D_TILING[dtype]
    p = max(16, triton.next_power_of_2(D))
    if p <= single_max:
        return p, True, D == p
    return block_d, False, D % block_d == 0


def _prec(dtype):
    return FP32_DOT_PRECISION if dtype == torch.float32 else "tf32"




def _check(*ts):
    dt = ts[0].dtype
    assert dt in (torch.float32, torch.float16, torch.bfloat16), dt
    for t in ts:
        assert t.is_contiguous() and t.dtype == dt and t.dim() == 3


def attention_forward(q, k, v, alpha=100.0):
    """out (B, Lq, Cv) in q.dtype and lse (B, Lq) float64 (natural log) of softmax(alpha q k^T) v."""
    _check(q, k, v)
    B, Lq, D = q.shape
    Lk, Cv = k.shape[1], v.shape[2]
    assert k.shape == (B, Lk, D) and v.shape[:2] == (B, Lk) and 1 <= Cv <= 256
    out = torch.empty((B, Lq, Cv), device=q.device, dtype=q.dtype)
    lse = torch.empty((B, Lq), device=q.device, dtype=torch.float64)
    BLOCK_D, single, even = _d_tiling(D, q.dtype)
    CV_PAD = max(16, triton.next_power_of_2(Cv))
    grid = lambda meta: (triton.cdiv(Lq, meta["BLOCK_M"]), B)
    with on_device(q):
        _attn_fwd_kernel[grid](q, k, v, out, lse, Lq, Lk, D, Cv, float(alpha) * _LOG2E,
                               _np2(D), _np2(B * Lq),
                               BLOCK_D=BLOCK_D, CV_PAD=CV_PAD, SINGLE_D=single, EVEN_D=even,
                               PREC=_prec(q.dtype))
    return out, lse


def attention_backward(q, k, v, out, lse, dlse, dout, alpha=100.0):
    """(dq, dk, dv) of attention_forward, flash-attention-2 style (recomputes P, no Lq x Lk).

    out, lse (B, Lq) float64: attention_forward's outputs; dlse (B, Lq) float32: the gradient
    arriving on lse (zeros when only out is differentiated). The kernels form delta =
    rowsum(dout * out) - dlse themselves (d lse_i / d s_ij = P_ij enters at the same place).
    """
    _check(q, k, v, dout, out)
    lse = lse.to(torch.float64).contiguous()
    dlse = dlse.to(torch.float32).contiguous()
    B, Lq, D = q.shape
    Lk, Cv = k.shape[1], v.shape[2]
    BLOCK_D, single, even = _d_tiling(D, q.dtype)
    CV_PAD = max(16, triton.next_power_of_2(Cv))
    prec = _prec(q.dtype)
    alpha = float(alpha)
    qk_scale = alpha * _LOG2E

    dq = torch.empty_like(q)
    dk = torch.empty_like(k)
    dv = torch.empty_like(v)
    acc_is_out = single or q.dtype == torch.float32
    if acc_is_out:
        dq_acc, dk_acc = dq, dk  # fp32 outputs double as accumulators (unused when single)
    else:
        dq_acc = torch.empty(q.shape, device=q.device, dtype=torch.float32)
        dk_acc = torch.empty(k.shape, device=k.device, dtype=torch.float32)

    grid_q = lambda meta: (triton.cdiv(Lq, meta["BLOCK_M"]), B)
    grid_k = lambda meta: (triton.cdiv(Lk, meta["BLOCK_N"]), B)
    with on_device(q):
        _attn_bwd_dq_kernel[grid_q](q, k, v, out, dout, lse, dlse, dq, dq_acc, Lq, Lk, D, Cv, qk_scale, alpha,
                                    _np2(D), _np2(B * Lq),
                                    BLOCK_D=BLOCK_D, CV_PAD=CV_PAD, SINGLE_D=single, EVEN_D=even,
                                    ACC_IS_OUT=acc_is_out, PREC=prec)
        _attn_bwd_dkdv_kernel[grid_k](q, k, v, out, dout, lse, dlse, dk, dv, dk_acc, Lq, Lk, D, Cv, qk_scale, alpha,
                                      _np2(D), _np2(B * Lk),
                                      BLOCK_D=BLOCK_D, CV_PAD=CV_PAD, SINGLE_D=single, EVEN_D=even,
                                      ACC_IS_OUT=acc_is_out, PREC=prec)
    return dq, dk, dv


def match_forward(q, k):
    """index (B, Lq) int64 = argmax_j <q_i, k_j> and best (B, Lq) float32 = that maximum."""
    _check(q, k)
    B, Lq, D = q.shape
    Lk = k.shape[1]
    assert k.shape == (B, Lk, D)
    index = torch.empty((B, Lq), device=q.device, dtype=torch.int64)
    best = torch.empty((B, Lq), device=q.device, dtype=torch.float32)
    BLOCK_D, single, even = _d_tiling(D, q.dtype)
    grid = lambda meta: (triton.cdiv(Lq, meta["BLOCK_M"]), B)
    with on_device(q):
        _match_fwd_kernel[grid](q, k, index, best, Lq, Lk, D, _np2(D), _np2(B * Lq),
                                BLOCK_D=BLOCK_D, SINGLE_D=single, EVEN_D=even, PREC=_prec(q.dtype))
    return index, best
