"""correlation_warp: each backend against CoCosNet's naive path (the
reference) and F.scaled_dot_product_attention on the same features."""
from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F

import exsynth.ops as ops
from exsynth.ops import correlation as corr

from . import common

FULL = dict(hw=(1024, 4096, 16384), d=(64, 256, 2304), cv=(3, 151))
QUICK = dict(hw=(1024, 4096), d=(64, 256), cv=(3,))


def _shape(hw: int, d: int):
    side = int(math.isqrt(hw))
    assert side * side == hw, "HW must be a square"
    # D = 2304 is CoCosNet's default: 256 channels unfolded over 3x3 patches.
    return (side, d // 9, 3) if d == 2304 else (side, d, 1)


def _sdpa(query, key, value, patch_size, pad_v_to_d):
    """Same math on the same normalised features; alpha folded into q."""
    B, _, Hq, Wq = query.shape
    q = corr._features(query, patch_size, True, query.dtype) * 100.0
    k = corr._features(key, patch_size, True, key.dtype)
    v = value.flatten(2).transpose(1, 2)
    cv = v.shape[-1]
    if pad_v_to_d:
        # Flash/efficient SDPA kernels want one head dim: pad v (or q and k,
        # where Cv > D; zero features leave the dot products unchanged).
        e = max(cv, q.shape[-1])
        q, k, v = (F.pad(t, (0, e - t.shape[-1])) for t in (q, k, v))
    out = F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None], scale=1.0)[:, 0]
    return out[..., :cv].transpose(1, 2).reshape(B, cv, Hq, Wq)


def variants(device, dtype):
    out = {"reference": lambda q, k, v, p: ops.correlation_warp(q, k, v, patch_size=p, backend="reference"),
           "sdpa": lambda q, k, v, p: _sdpa(q, k, v, p, False),
           "sdpa_pad": lambda q, k, v, p: _sdpa(q, k, v, p, True)}
    for name in common.fused_backends(device, dtype):
        out[name] = (lambda n: lambda q, k, v, p: ops.correlation_warp(q, k, v, patch_size=p, backend=n))(name)
    return out


def run(args) -> list[dict]:
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    grid = QUICK if args.quick else FULL
    hws = args.hw or grid["hw"]
    ds = args.d or grid["d"]
    cvs = args.cv or grid["cv"]
    modes = args.modes
    B = args.batch or (8 if device.type == "cuda" else 1)
    all_impls = variants(device, dtype)
    if args.only:
        all_impls = {k: v for k, v in all_impls.items() if k in args.only}
    if device.type == "cuda":
        mem_limit = torch.cuda.get_device_properties(device).total_memory / 2
    else:
        mem_limit = 8 * 2**30
    esize = torch.finfo(dtype).bits // 8
    rows = []
    cols = [("hw", "HW"), ("d", "D"), ("cv", "Cv"), ("mode", "mode"), ("impl", "impl"),
            ("ms", "ms"), ("gflops", "GFLOP/s"), ("vs_reference", "x ref"), ("vs_sdpa", "x sdpa"),
            ("vs_best_anchor", "x anchors"), ("peak_mib", "peak MiB")]
    printed_header = False
    for hw, d, cv in itertools.product(hws, ds, cvs):
        side, c, patch = _shape(hw, d)
        # Anchors that materialise the matrix (logits, softmax, their grads) are
        # skipped where it cannot fit.
        matrix = B * hw * hw * esize * 4
        impls = {n: f for n, f in all_impls.items()
                 if n not in ("reference", "sdpa") or matrix <= mem_limit}
        n_rot = 4 if device.type == "cuda" else 1  # rotate inputs beyond L2 on GPU
        gen = torch.Generator(device="cpu").manual_seed(0)
        sets = [tuple(torch.randn(B, ch, side, side, generator=gen).to(device, dtype)
                      for ch in (c, c, cv)) for _ in range(n_rot)]
        grad = torch.randn(B, cv, side, side, generator=gen).to(device, dtype)
        for mode in modes:
            fns = {}
            for name, f in impls.items():
                fns[name] = common.warp_call(f, itertools.cycle(sets), grad, mode, patch)
            times = common.time_interleaved(fns, device, rounds=args.rounds, budget_s=args.budget)
            flops = B * hw * hw * (2.0 * (d + cv) if mode == "fwd" else 8.0 * d + 6.0 * cv)
            anchors = {n: times[n] for n in ("reference", "sdpa", "sdpa_pad") if n in times}
            best_anchor = min(anchors.values()) if anchors else None
            sdpa_best = min([times[n] for n in ("sdpa", "sdpa_pad") if n in times], default=None)
            for name, t in times.items():
                row = dict(hw=hw, d=d, cv=cv, batch=B, patch_size=patch, dtype=args.dtype, mode=mode,
                           impl=name, ms=t * 1e3, gflops=flops / t / 1e9,
                           vs_reference=times["reference"] / t if "reference" in times else None,
                           vs_sdpa=sdpa_best / t if sdpa_best else None,
                           vs_best_anchor=best_anchor / t if best_anchor else None)
                if not args.no_memory:
                    row["peak_mib"] = common.peak_memory_mib(fns[name], device)
                rows.append(row)
                common.print_table([row], cols, header=not printed_header)
                printed_header = True
    return rows, cols
