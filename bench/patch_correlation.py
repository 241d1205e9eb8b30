"""correlation_warp with k x k patches: the cpu backend's Gram path against its unfolded
rows, the materialising reference, and the same call with patch_size 1 (same C), all timed
interleaved in one run. `python -m bench patch [--quick]`.

Ratios per case: unfold / gram (the speed-up over the previous cpu path), reference / gram,
gram / k1 (what the patches cost over single pixels). Peak memory is the RSS growth of one
call (fwd+bwd keeps the saved tensors and the gradients)."""
from __future__ import annotations

import itertools
import math

import torch

import exsynth.ops as ops
from exsynth.ops import correlation as corr

from . import common

FULL = dict(batch=(1, 8), hw=(1024, 4096, 16384), c=(64, 256), k=(3,))
QUICK = dict(batch=(1,), hw=(1024, 4096), c=(64, 256), k=(3,))


def _impl(method: str, patch_size: int | None = None, backend: str = "cpu"):
    def call(q, k, v, ps):
        with corr.patch_method(method):
            return ops.correlation_warp(q, k, v, patch_size=patch_size or ps, backend=backend)
    return call


IMPLS = {
    "gram": _impl("gram"),
    "unfold": _impl("unfold"),
    "reference": _impl("auto", backend="reference"),
    "k1": _impl("auto", patch_size=1),
}


def _skip(name: str, B: int, hw: int, c: int, k: int, mem_limit: float) -> bool:
    """Cases that cannot run in a CPU session's time or memory: the reference writes ~4
    (B, L, L) float32 matrices; the anchors on unfolded rows stop at B L^2 C k^2 = 2^36
    (about a minute per call on 2 cores); every variant stops at B L^2 C = 2^37."""
    if B * hw * hw * c > 2 ** 37:
        return True
    if name == "reference":
        return B * hw * hw * 4 * 4 > mem_limit or B * hw * hw * c * k * k > 2 ** 36
    if name == "unfold":
        return B * hw * hw * c * k * k > 2 ** 36
    return False


def run(args) -> list[dict]:
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    grid = QUICK if args.quick else FULL
    batches = [args.batch] if args.batch else grid["batch"]
    hws = args.hw or grid["hw"]
    cs = args.c or grid["c"]
    cv = (args.cv or [3])[0]
    mem_limit = 8 * 2 ** 30
    impls = {n: f for n, f in IMPLS.items() if not args.only or n in args.only}
    rows = []
    cols = [("batch", "B"), ("hw", "HW"), ("c", "C"), ("mode", "mode"), ("impl", "impl"), ("ms", "ms"),
            ("unfold_over_gram", "unfold/gram"), ("reference_over_gram", "ref/gram"),
            ("gram_over_k1", "gram/k1"), ("peak_mib", "peak MiB")]
    printed = False
    for B, hw, c, k in itertools.product(batches, hws, cs, grid["k"]):
        side = math.isqrt(hw)
        gen = torch.Generator().manual_seed(0)
        q, key, v = (torch.randn(B, ch, side, side, generator=gen, dtype=dtype) for ch in (c, c, cv))
        grad = torch.randn(B, cv, side, side, generator=gen, dtype=dtype)
        case = {n: f for n, f in impls.items() if not _skip(n, B, hw, c, k, mem_limit)}
        for mode in args.modes:
            fns = {name: common.warp_call(f, itertools.repeat((q, key, v)), grad, mode, k)
                   for name, f in case.items()}
            times = common.time_interleaved(fns, device, rounds=args.rounds, budget_s=args.budget)
            g = times.get("gram")
            for name, t in times.items():
                row = dict(batch=B, hw=hw, c=c, patch_size=k, cv=cv, dtype=args.dtype, mode=mode, impl=name,
                           ms=t * 1e3,
                           unfold_over_gram=times["unfold"] / g if g and "unfold" in times and name == "gram" else None,
                           reference_over_gram=times["reference"] / g if g and "reference" in times and name == "gram" else None,
                           gram_over_k1=g / times["k1"] if g and "k1" in times and name == "gram" else None)
                if not args.no_memory:
                    row["peak_mib"] = common.peak_memory_mib(fns[name], device)
                rows.append(row)
                common.print_table([row], cols, header=not printed)
                printed = True
    return rows, cols
