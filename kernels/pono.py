"""Triton kernels for ``positional_norm`` (PONO) and ``pn_modulate`` (PN-SPADE).

Layout: x is (B, C, L) contiguous (NCHW with L = H * W), so the normalisation of one position
(b, l) over its C channels is a reduction strided by L.  Every program owns a block of BLOCK_L
contiguous positions (coalesced along L) and all C channels of them:

    mean = sum_c x / C,   var = sum_c (x - mean)^2 / (C - 1)  (unbiased),   std = sqrt(var + eps)
    y = (x - mean) / std,           pn_modulate: out = y * (1 + gamma) + beta

Two tile strategies, chosen per call (constexpr ``SINGLE``):

* register-resident (``SINGLE``): the whole [next_pow2(C), BLOCK_L] tile of x (and of dy / dout,
  gamma, ... in the backward kernels) is loaded once into registers; the mean and the centred
  variance are two exact passes over registers; outputs are written once.  HBM traffic is the
  minimum: each input byte read once, each output byte written once.
* chunked (large C): loops over channel chunks of BLOCK_C.  Pass 1 computes per-chunk mean and
  centred M2 and merges them (Chan et al.'s parallel variance update, numerically sound); pass 2
  re-reads the chunks and writes the outputs.  The re-read is of the program's own
  C x BLOCK_L x elt tile that it has just streamed (64-256 KiB for C = 1024), normally an L2
  hit; with very many resident programs it can spill out of L2, costing at most one extra read
  of x (gamma / dout are read once per pass as well in the backward kernels).

Batch loops: pn_modulate with gamma / beta of batch size 1 (broadcast over the batch) runs a 1-D
grid over (position block, batch group) and loops over the group's batches inside the program,
so gamma and beta are read from HBM once (held in registers across the loop on the SINGLE path)
and, in the backward, dgamma / dbeta = sum_b (...) are accumulated without atomics: in registers
(SINGLE) or by a read-modify-write of the program's own fp32 slice (chunked; first batch stores
without reading, so launches are idempotent).  With several batch groups (only when there are too
few position blocks to fill the GPU) each group writes an fp32 partial that the wrapper sums.

Everything is accumulated in fp32; inputs / outputs may be float32, float16 or bfloat16; mean and
std are float32 (B, L).  This module imports only torch and triton (plus os from the
standard library); it is shipped as exsynth.kernels.pono.
"""

import os

import torch
import triton
import triton.language as tl

from ._common import min_programs, on_device

__all__ = ["positional_norm_forward", "positional_norm_backward", "pn_modulate_forward",
           "pn_modulate_backward"]

_INTERPRET = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")

# ---- tiling knobs (module level so tests can override them) ---------------------------------
# SINGLE path iff next_pow2(C) * live_tiles * min_block_l <= SINGLE_MAX_ELEMS.
# min_block_l = MIN_ROW_BYTES / element size (rows of >= 64 contiguous bytes per channel).
# SINGLE tiles hold about TILE_ELEMS elements in total (all live tiles together).
# Chunked path: rows of CHUNK_ROW_BYTES, channel chunks of <= CHUNK_C_MAX channels, about
# CHUNK_ELEMS elements per chunk (all live tiles together).
# UNALIGNED_DIV: when L % 16 != 0 Triton cannot prove row alignment, loads are not vectorised and
# every element keeps its own 64-bit address, so the SINGLE tiles are this many times smaller
# (measured with an sm_90 compile: 16K-element tiles spill without the alignment, not with it).
# MIN_PROGRAMS: block sizes shrink (down to min_block_l), then batch groups grow, until the grid
# has at least this many programs (None -> 4 x the number of SMs of the device).
if _INTERPRET:
    SINGLE_MAX_ELEMS = 32 * 16  # C = 2, 3 take the SINGLE path, C = 37, 70 the chunked one
    TILE_ELEMS = 256
    MIN_ROW_BYTES = 64          # 16 float32
    MAX_BLOCK_L = 16
    CHUNK_ROW_BYTES = 64
    CHUNK_C_MAX = 16            # small chunks, so the chunk loops run several times
    CHUNK_ELEMS = 1 << 20
    UNALIGNED_DIV = 1
    MIN_PROGRAMS = 1
else:
    SINGLE_MAX_ELEMS = 16384
    TILE_ELEMS = 8192
    MIN_ROW_BYTES = 64
    MAX_BLOCK_L = 1024
    CHUNK_ROW_BYTES = 128
    CHUNK_C_MAX = 128
    CHUNK_ELEMS = 4096
    UNALIGNED_DIV = 2
    MIN_PROGRAMS = None


# --------------------------------------------------------------------------------------------
# device helpers
# --------------------------------------------------------------------------------------------


@triton.jit
def _tile_ptrs(base, offs_c, offs_l, C, L):
    ptrs = base + offs_c[:, None] * L + offs_l[None, :]
    mask = (offs_c[:, None] < C) & (offs_l[None, :] < L)
    return ptrs, mask


@triton.jit
def _load_f32(base, offs_c, offs_l, C, L):
    ptrs, mask = _tile_ptrs(base, offs_c, offs_l, C, L)
    return tl.load(ptrs, mask=mask, other=0.0).to(tl.float32)


@triton.jit
def _store(base, offs_c, offs_l, C, L, val):
    ptrs, mask = _tile_ptrs(base, offs_c, offs_l, C, L)
    tl.store(ptrs, val.to(base.dtype.element_ty), mask=mask)


@triton.jit
def _single_stats(x, offs_c, offs_l, C, L, eps):
    """x: fp32 [BLOCK_C >= C, BLOCK_L] (zero padded) -> (x - mean masked to 0, mean, std)."""
    mask = (offs_c[:, None] < C) & (offs_l[None, :] < L)
    mean = tl.sum(x, axis=0) / C
    d = tl.where(mask, x - mean[None, :], 0.0)
    var = tl.sum(d * d, axis=0) / (C - 1)
    return d, mean, tl.sqrt_rn(var + eps)


@triton.jit
def _chunked_stats(xb, offs_l, C, L, eps, BLOCK_C: tl.constexpr, BLOCK_L: tl.constexpr):
    """(mean, std) over all C channels, chunk by chunk (Chan's parallel mean / M2 merge)."""
    offs_c0 = tl.arange(0, BLOCK_C)
    mean = tl.zeros([BLOCK_L], dtype=tl.float32)
    m2 = tl.zeros([BLOCK_L], dtype=tl.float32)
    zero = tl.zeros([BLOCK_L], dtype=tl.float32)
    for c0 in range(0, C, BLOCK_C):
        offs_c = c0 + offs_c0
        ptrs, mask = _tile_ptrs(xb, offs_c, offs_l, C, L)
        x = tl.load(ptrs, mask=mask, other=0.0).to(tl.float32)
        n_old = zero + c0                                  # channels merged so far
        n_c = zero + tl.minimum(C - c0, BLOCK_C)           # channels in this chunk (>= 1)
        n_new = n_old + n_c
        cmean = tl.sum(x, axis=0) / n_c
        d = tl.where(mask, x - cmean[None, :], 0.0)
        cm2 = tl.sum(d * d, axis=0)
        delta = cmean - mean
        mean = mean + delta * (n_c / n_new)
        m2 = m2 + cm2 + delta * delta * (n_old * n_c / n_new)
    return mean, tl.sqrt_rn(m2 / (C - 1) + eps)


# --------------------------------------------------------------------------------------------
# forward: positional_norm (MODULATE=False) and pn_modulate (MODULATE=True)
# --------------------------------------------------------------------------------------------


@triton.jit
def _pono_fwd_kernel(X, GAMMA, BETA, Y, MEAN, STD, B, C, L, eps, NB_PER, GROUPS,
                     MODULATE: tl.constexpr, GAMMA_PER_BATCH: tl.constexpr, SINGLE: tl.constexpr,
                     BLOCK_C: tl.constexpr, BLOCK_L: tl.constexpr):
    # 1-D grid: pid = l_block * GROUPS + group (the groups of one position block run together,
    # so a shared gamma / beta tile is fetched from HBM once even when GROUPS > 1)
    pid = tl.program_id(0)
    grp = pid % GROUPS
    offs_l = (pid // GROUPS) * BLOCK_L + tl.arange(0, BLOCK_L)
    lmask = offs_l < L
    offs_c = tl.arange(0, BLOCK_C)
    z64 = tl.program_id(0).to(tl.int64) * 0
    CL = C * L
    b_lo = grp * NB_PER
    b_hi = tl.minimum(b_lo + NB_PER, B)
    if MODULATE:
        if SINGLE:
            if not GAMMA_PER_BATCH:  # broadcast gamma / beta: load once, reuse for every batch
                g_t = _load_f32(GAMMA, offs_c, offs_l, C, L) + 1.0
                be_t = _load_f32(BETA, offs_c, offs_l, C, L)
    for b in range(b_lo, b_hi):
        boff = (b + z64) * CL
        xb = X + boff
        yb = Y + boff
        if GAMMA_PER_BATCH:
            gb = GAMMA + boff
            beb = BETA + boff
        else:
            gb = GAMMA
            beb = BETA
        if SINGLE:
            x = _load_f32(xb, offs_c, offs_l, C, L)
            d, mean, std = _single_stats(x, offs_c, offs_l, C, L, eps)
            y = d * (1.0 / std)[None, :]
            if MODULATE:
                if GAMMA_PER_BATCH:
                    y = y * (_load_f32(gb, offs_c, offs_l, C, L) + 1.0) + _load_f32(beb, offs_c, offs_l, C, L)
                else:
                    y = y * g_t + be_t
            _store(yb, offs_c, offs_l, C, L, y)
        else:
            mean, std = _chunked_stats(xb, offs_l, C, L, eps, BLOCK_C, BLOCK_L)
            rstd = 1.0 / std
            for c0 in range(0, C, BLOCK_C):
                oc = c0 + offs_c
                y = (_load_f32(xb, oc, offs_l, C, L) - mean[None, :]) * rstd[None, :]
                if MODULATE:
                    y = y * (_load_f32(gb, oc, offs_l, C, L) + 1.0) + _load_f32(beb, oc, offs_l, C, L)
                _store(yb, oc, offs_l, C, L, y)
        soff = (b + z64) * L + offs_l
        tl.store(MEAN + soff, mean, mask=lmask)
        tl.store(STD + soff, std, mask=lmask)


# --------------------------------------------------------------------------------------------
# backward of positional_norm
# --------------------------------------------------------------------------------------------


@triton.jit
def _pono_dx(x, dy, mean, rstd, s1, s2, dmean, dstd, inv_n, inv_n1,
             HAS_DY: tl.constexpr, HAS_DMEAN: tl.constexpr, HAS_DSTD: tl.constexpr):
    """dx = dy/std - s1/(n std) - y s2/((n-1) std) + dmean/n + dstd y/(n-1), s1 = sum dy, s2 = sum dy y."""
    y = (x - mean[None, :]) * rstd[None, :]
    dx = tl.zeros_like(x)
    if HAS_DY:
        dx = (dy - (s1 * inv_n)[None, :] - y * (s2 * inv_n1)[None, :]) * rstd[None, :]
    if HAS_DMEAN:
        dx = dx + (dmean * inv_n)[None, :]
    if HAS_DSTD:
        dx = dx + y * (dstd * inv_n1)[None, :]
    return dx


@triton.jit
def _pono_bwd_kernel(X, MEAN, STD, DY, DMEAN, DSTD, DX, B, C, L,
                     HAS_DY: tl.constexpr, HAS_DMEAN: tl.constexpr, HAS_DSTD: tl.constexpr,
                     SINGLE: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_L: tl.constexpr):
    pid = tl.program_id(0)
    b = (pid % B).to(tl.int64)
    offs_l = (pid // B) * BLOCK_L + tl.arange(0, BLOCK_L)
    lmask = offs_l < L
    offs_c = tl.arange(0, BLOCK_C)
    boff = b * C * L
    xb = X + boff
    dyb = DY + boff
    dxb = DX + boff
    soff = b * L + offs_l
    mean = tl.load(MEAN + soff, mask=lmask, other=0.0)
    rstd = 1.0 / tl.load(STD + soff, mask=lmask, other=1.0)
    inv_n = 1.0 / C
    inv_n1 = 1.0 / (C - 1)
    dmean = mean  # placeholders when absent (unused)
    dstd = mean
    if HAS_DMEAN:
        dmean = tl.load(DMEAN + soff, mask=lmask, other=0.0)
    if HAS_DSTD:
        dstd = tl.load(DSTD + soff, mask=lmask, other=0.0)
    s1 = tl.zeros([BLOCK_L], dtype=tl.float32)
    s2 = tl.zeros([BLOCK_L], dtype=tl.float32)
    if SINGLE:
        x = _load_f32(xb, offs_c, offs_l, C, L)
        dy = x  # placeholder when HAS_DY is False (unused)
        if HAS_DY:
            dy = _load_f32(dyb, offs_c, offs_l, C, L)
            y = (x - mean[None, :]) * rstd[None, :]
            s1 = tl.sum(dy, axis=0)
            s2 = tl.sum(dy * y, axis=0)  # padded channels have dy = 0
        dx = _pono_dx(x, dy, mean, rstd, s1, s2, dmean, dstd, inv_n, inv_n1, HAS_DY, HAS_DMEAN, HAS_DSTD)
        _store(dxb, offs_c, offs_l, C, L, dx)
    else:
        if HAS_DY:
            for c0 in range(0, C, BLOCK_C):
                oc = c0 + offs_c
                x = _load_f32(xb, oc, offs_l, C, L)
                dy = _load_f32(dyb, oc, offs_l, C, L)
                s1 += tl.sum(dy, axis=0)
                s2 += tl.sum(dy * ((x - mean[None, :]) * rstd[None, :]), axis=0)
        for c0 in range(0, C, BLOCK_C):
            oc = c0 + offs_c
            x = _load_f32(xb, oc, offs_l, C, L)
            dy = x
            if HAS_DY:
                dy = _load_f32(dyb, oc, offs_l, C, L)
            dx = _pono_dx(x, dy, mean, rstd, s1, s2, dmean, dstd, inv_n, inv_n1, HAS_DY, HAS_DMEAN, HAS_DSTD)
            _store(dxb, oc, offs_l, C, L, dx)


# --------------------------------------------------------------------------------------------
# backward of pn_modulate
# --------------------------------------------------------------------------------------------


@triton.jit
def _pnmod_bwd_kernel(X, GAMMA, MEAN, STD, DOUT, DX, DG, DB, B, C, L, NB_PER, GROUPS,
                      GAMMA_PER_BATCH: tl.constexpr, SINGLE: tl.constexpr,
                      BLOCK_C: tl.constexpr, BLOCK_L: tl.constexpr):
    # dy = dout (1 + gamma); dx = (dy - s1/n - y s2/(n-1)) / std; dgamma = dout y; dbeta = dout.
    # DG / DB: (GROUPS, C, L); with GAMMA_PER_BATCH, GROUPS = B and group = batch.
    pid = tl.program_id(0)
    grp = pid % GROUPS
    offs_l = (pid // GROUPS) * BLOCK_L + tl.arange(0, BLOCK_L)
    lmask = offs_l < L
    offs_c = tl.arange(0, BLOCK_C)
    z64 = tl.program_id(0).to(tl.int64) * 0
    CL = C * L
    b_lo = grp * NB_PER
    b_hi = tl.minimum(b_lo + NB_PER, B)
    inv_n = 1.0 / C
    inv_n1 = 1.0 / (C - 1)
    dgb = DG + (grp + z64) * CL
    dbb = DB + (grp + z64) * CL
    if SINGLE:
        if not GAMMA_PER_BATCH:
            g1 = _load_f32(GAMMA, offs_c, offs_l, C, L) + 1.0
            acc_g = tl.zeros([BLOCK_C, BLOCK_L], dtype=tl.float32)
            acc_b = tl.zeros([BLOCK_C, BLOCK_L], dtype=tl.float32)
    for b in range(b_lo, b_hi):
        boff = (b + z64) * CL
        xb = X + boff
        dob = DOUT + boff
        dxb = DX + boff
        if GAMMA_PER_BATCH:
            gb = GAMMA + boff
        else:
            gb = GAMMA
        soff = (b + z64) * L + offs_l
        mean = tl.load(MEAN + soff, mask=lmask, other=0.0)
        rstd = 1.0 / tl.load(STD + soff, mask=lmask, other=1.0)
        if SINGLE:
            x = _load_f32(xb, offs_c, offs_l, C, L)
            do = _load_f32(dob, offs_c, offs_l, C, L)
            if GAMMA_PER_BATCH:
                g1 = _load_f32(gb, offs_c, offs_l, C, L) + 1.0
            y = (x - mean[None, :]) * rstd[None, :]
            dy = do * g1
            s1 = tl.sum(dy, axis=0)
            s2 = tl.sum(dy * y, axis=0)
            dx = (dy - (s1 * inv_n)[None, :] - y * (s2 * inv_n1)[None, :]) * rstd[None, :]
            _store(dxb, offs_c, offs_l, C, L, dx)
            if GAMMA_PER_BATCH:
                _store(dgb, offs_c, offs_l, C, L, do * y)
                _store(dbb, offs_c, offs_l, C, L, do)
            else:
                acc_g += do * y
                acc_b += do
        else:
            s1 = tl.zeros([BLOCK_L], dtype=tl.float32)
            s2 = tl.zeros([BLOCK_L], dtype=tl.float32)
            for c0 in range(0, C, BLOCK_C):
                oc = c0 + offs_c
                x = _load_f32(xb, oc, offs_l, C, L)
                dy = _load_f32(dob, oc, offs_l, C, L) * (_load_f32(gb, oc, offs_l, C, L) + 1.0)
                s1 += tl.sum(dy, axis=0)
                s2 += tl.sum(dy * ((x - mean[None, :]) * rstd[None, :]), axis=0)
            for c0 in range(0, C, BLOCK_C):
                oc = c0 + offs_c
                x = _load_f32(xb, oc, offs_l, C, L)
                do = _load_f32(dob, oc, offs_l, C, L)
                y = (x - mean[None, :]) * rstd[None, :]
                dy = do * (_load_f32(gb, oc, offs_l, C, L) + 1.0)
                dx = (dy - (s1 * inv_n)[None, :] - y * (s2 * inv_n1)[None, :]) * rstd[None, :]
                _store(dxb, oc, offs_l, C, L, dx)
                if GAMMA_PER_BATCH:
                    _store(dgb, oc, offs_l, C, L, do * y)
                    _store(dbb, oc, offs_l, C, L, do)
                else:
                    # program-owned fp32 slice: the group's first batch stores, later ones add
                    ptrs_g, mask = _tile_ptrs(dgb, oc, offs_l, C, L)
                    ptrs_b, _ = _tile_ptrs(dbb, oc, offs_l, C, L)
                    acc_mask = mask & ((oc[:, None] * 0 + b) > b_lo)
                    tl.store(ptrs_g, tl.load(ptrs_g, mask=acc_mask, other=0.0) + do * y, mask=mask)
                    tl.store(ptrs_b, tl.load(ptrs_b, mask=acc_mask, other=0.0) + do, mask=mask)
    if SINGLE:
        if not GAMMA_PER_BATCH:
            _store(dgb, offs_c, offs_l, C, L, acc_g)
            _store(dbb, offs_c, offs_l, C, L, acc_b)


# --------------------------------------------------------------------------------------------
# Python wrappers
# --------------------------------------------------------------------------------------------


def _np2(x):
    return triton.next_power_of_2(max(int(x), 1))


def _floor_pow2(x):
    x = max(int(x), 1)
    return 1 << (x.bit_length() - 1)






def _tiling(C, L, es, nt_single, nt_chunk, rows, device):
    """(SINGLE, BLOCK_C, BLOCK_L, num_warps) for C channels, L positions, element size es, with
    nt_single (SINGLE path) or nt_chunk (chunked path) live [BLOCK_C, BLOCK_L] tiles per program
    and ``rows`` programs per position block."""
    c_pad = _np2(C)
    min_bl = max(1, MIN_ROW_BYTES // es)
    div = 1 if L % 16 == 0 else UNALIGNED_DIV
    single = c_pad * nt_single * min_bl <= SINGLE_MAX_ELEMS // div
    if single:
        ntiles = nt_single
        bc = c_pad
        bl = max(min_bl, _floor_pow2(TILE_ELEMS // div // (c_pad * ntiles)))
        bl = min(bl, MAX_BLOCK_L)
    else:
        ntiles = nt_chunk
        bl = max(1, CHUNK_ROW_BYTES // es)
        bc = min(CHUNK_C_MAX, c_pad, _floor_pow2(max(1, CHUNK_ELEMS // (bl * ntiles))))
    # never wider than the data; narrower blocks (down to min_bl) when the grid would be small
    bl = min(bl, max(min_bl, _np2(L)))
    want = min_programs(device, MIN_PROGRAMS)
    while bl > min_bl and triton.cdiv(L, bl) * rows < want:
        bl //= 2
    elems = bc * bl * ntiles
    warps = min(8, max(2, _np2(elems * div // 1024)))  # <= 32 (aligned) / 16 elements per thread
    return single, bc, bl, warps


def _check(x, *others):
    assert x.dtype in (torch.float32, torch.float16, torch.bfloat16), x.dtype
    assert x.dim() == 3 and x.is_contiguous(), "x must be a contiguous (B, C, L) tensor"
    assert x.shape[1] >= 2, "positional_norm needs C >= 2 (unbiased variance)"
    for t in others:
        if t is not None:
            assert t.is_contiguous() and t.device == x.device, "all tensors must be contiguous, on one device"


def _check_stats(x, mean, std):
    B, _, L = x.shape
    for t in (mean, std):
        assert t.shape == (B, L) and t.dtype == torch.float32 and t.is_contiguous()


def _groups(B, L, bl, device):
    """Batch groups for a broadcast gamma: 1 unless the position blocks alone underfill the GPU."""
    nlb = triton.cdiv(L, bl)
    g = min(B, max(1, triton.cdiv(min_programs(device, MIN_PROGRAMS), nlb)))
    nb_per = triton.cdiv(B, g)
    return triton.cdiv(B, nb_per), nb_per


def positional_norm_forward(x, eps=1e-5):
    """(y, mean, std): y like x (B, C, L); mean, std float32 (B, L); std = sqrt(unbiased var + eps)."""
    _check(x)
    B, C, L = x.shape
    y = torch.empty_like(x)
    mean = torch.empty((B, L), device=x.device, dtype=torch.float32)
    std = torch.empty((B, L), device=x.device, dtype=torch.float32)
    if x.numel() == 0:
        return y, mean, std
    single, bc, bl, warps = _tiling(C, L, x.element_size(), 1, 1, B, x.device)
    grid = (triton.cdiv(L, bl) * B,)
    with on_device(x):
        _pono_fwd_kernel[grid](x, x, x, y, mean, std, B, C, L, float(eps), 1, B,
                               MODULATE=False, GAMMA_PER_BATCH=True, SINGLE=single,
                               BLOCK_C=bc, BLOCK_L=bl, num_warps=warps)
    return y, mean, std


def positional_norm_backward(x, mean, std, dy=None, dmean=None, dstd=None):
    """dx of positional_norm_forward given any of dy (B, C, L), dmean, dstd (B, L) (None = zero)."""
    _check(x, dy, dmean, dstd)
    _check_stats(x, mean, std)
    B, C, L = x.shape
    dx = torch.empty_like(x)
    if x.numel() == 0:
        return dx
    if dy is None and dmean is None and dstd is None:
        return dx.zero_()
    if dy is not None:
        assert dy.shape == x.shape
        dy = dy.to(x.dtype)
    dmean = None if dmean is None else dmean.to(torch.float32).contiguous()
    dstd = None if dstd is None else dstd.to(torch.float32).contiguous()
    single, bc, bl, warps = _tiling(C, L, x.element_size(), 2, 2, B, x.device)
    grid = (triton.cdiv(L, bl) * B,)
    with on_device(x):
        _pono_bwd_kernel[grid](x, mean, std, x if dy is None else dy,
                               mean if dmean is None else dmean, std if dstd is None else dstd,
                               dx, B, C, L,
                               HAS_DY=dy is not None, HAS_DMEAN=dmean is not None, HAS_DSTD=dstd is not None,
                               SINGLE=single, BLOCK_C=bc, BLOCK_L=bl, num_warps=warps)
    return dx


def _check_gamma(x, gamma, beta=None):
    B, C, L = x.shape
    for t in (gamma,) if beta is None else (gamma, beta):
        assert t.dim() == 3 and t.shape[1:] == (C, L) and t.shape[0] in (1, B), \
            f"gamma / beta must be (1 or B, C, L), got {tuple(t.shape)}"
    if beta is not None:
        assert gamma.shape == beta.shape, "gamma and beta must have the same shape"
    return gamma.shape[0] == B and B != 1 or B == 1


def pn_modulate_forward(x, gamma, beta, eps=1e-5):
    """(out, mean, std) with out = positional_norm(x) * (1 + gamma) + beta; gamma, beta (1|B, C, L)."""
    _check(x, gamma, beta)
    per_batch = _check_gamma(x, gamma, beta)
    B, C, L = x.shape
    gamma, beta = gamma.to(x.dtype), beta.to(x.dtype)
    out = torch.empty_like(x)
    mean = torch.empty((B, L), device=x.device, dtype=torch.float32)
    std = torch.empty((B, L), device=x.device, dtype=torch.float32)
    if x.numel() == 0:
        return out, mean, std
    es = x.element_size()
    if per_batch:
        single, bc, bl, warps = _tiling(C, L, es, 3, 3, B, x.device)
        groups, nb_per = B, 1
    else:
        single, bc, bl, warps = _tiling(C, L, es, 3, 3, 1, x.device)
        groups, nb_per = _groups(B, L, bl, x.device)
    grid = (triton.cdiv(L, bl) * groups,)
    with on_device(x):
        _pono_fwd_kernel[grid](x, gamma, beta, out, mean, std, B, C, L, float(eps), nb_per, groups,
                               MODULATE=True, GAMMA_PER_BATCH=per_batch, SINGLE=single,
                               BLOCK_C=bc, BLOCK_L=bl, num_warps=warps)
    return out, mean, std


def pn_modulate_backward(x, gamma, mean, std, dout):
    """(dx, dgamma, dbeta) of pn_modulate_forward; dgamma, dbeta have gamma's shape (summed over
    the batch when gamma's batch size is 1)."""
    _check(x, gamma, dout)
    _check_stats(x, mean, std)
    per_batch = _check_gamma(x, gamma)
    assert dout.shape == x.shape
    B, C, L = x.shape
    gdtype = gamma.dtype
    gamma, dout = gamma.to(x.dtype), dout.to(x.dtype)
    dx = torch.empty_like(x)
    es = x.element_size()
    if x.numel() == 0:
        z = torch.zeros(gamma.shape, device=x.device, dtype=gdtype)
        return dx, z, z.clone()
    if per_batch:
        single, bc, bl, warps = _tiling(C, L, es, 3, 3, B, x.device)
        groups, nb_per = B, 1
    else:
        single, bc, bl, warps = _tiling(C, L, es, 5, 3, 1, x.device)
        groups, nb_per = _groups(B, L, bl, x.device)
    # fp32 scratch for partial sums over batch groups or for read-modify-write accumulation
    scratch = not per_batch and (groups > 1 or (not single and x.dtype != torch.float32))
    if scratch:
        dg = torch.empty((groups, C, L), device=x.device, dtype=torch.float32)
        db = torch.empty((groups, C, L), device=x.device, dtype=torch.float32)
    else:
        dg = torch.empty(gamma.shape, device=x.device, dtype=x.dtype)
        db = torch.empty(gamma.shape, device=x.device, dtype=x.dtype)
    grid = (triton.cdiv(L, bl) * groups,)
    with on_device(x):
        _pnmod_bwd_kernel[grid](x, gamma, mean, std, dout, dx, dg, db, B, C, L, nb_per, groups,
                                GAMMA_PER_BATCH=per_batch, SINGLE=single,
                                BLOCK_C=bc, BLOCK_L=bl, num_warps=warps)
    if scratch:
        dg = dg.sum(0, keepdim=True)
        db = db.sum(0, keepdim=True)
    return dx, dg.to(gdtype), db.to(gdtype)
