"""Peak memory of one correlation_warp forward+backward with k x k patches, each variant in a
fresh process (in one process the allocator keeps freed pages mapped, and a later variant's
peak reads as no growth). `python -m bench.patch_memory [--hw 16384] [--c 256] [--k 3]
[--only gram k1 unfold] [--out FILE.json]`.

Reports the RSS growth over the inputs (VmHWM after the call minus VmRSS before it, after a
small warm-up call of the same path) and, for
comparison, what the unfolded (B, L, C k^2) rows of query and key alone would take."""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys

CHILD = r"""
import sys, torch
from exsynth import ops
from exsynth.ops import correlation as corr
method, B, hw, c, k, cv = sys.argv[1], *map(int, sys.argv[2:7])
side = int(hw ** 0.5)
g = torch.Generator().manual_seed(0)
q, key, v = (torch.randn(B, ch, side, side, generator=g).requires_grad_() for ch in (c, c, cv))
grad = torch.randn(B, cv, side, side, generator=g)
def call(q, key, v, grad):
    with corr.patch_method("unfold" if method == "unfold" else "gram"):
        out = ops.correlation_warp(q, key, v, patch_size=1 if method == "k1" else k, backend="cpu")
    torch.autograd.backward(out, grad)
# a small call of the same path first: the one-time costs (kernels' first use, thread pools,
# allocator arenas) are not the op's memory
call(*(torch.randn(B, ch, 8, 8).requires_grad_() for ch in (c, c, cv)), torch.randn(B, cv, 8, 8))
def rss(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
open("/proc/self/clear_refs", "w").write("5")
base = rss("VmRSS")
call(q, key, v, grad)
print((rss("VmHWM") - base) / 1024)
"""


def measure(method: str, B: int, hw: int, c: int, k: int, cv: int) -> float:
    res = subprocess.run([sys.executable, "-c", CHILD, method, str(B), str(hw), str(c), str(k), str(cv)],
                         capture_output=True, text=True, check=True)
    return float(res.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.patch_memory", description=__doc__)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--hw", type=int, default=16384)
    p.add_argument("--c", type=int, default=256)
    p.add_argument("--k", type=int, default=3)
    p.add_argument("--cv", type=int, default=3)
    p.add_argument("--only", nargs="*", default=["gram", "k1"], choices=("gram", "k1", "unfold"))
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    if math.isqrt(args.hw) ** 2 != args.hw:
        p.error(f"--hw must be a square, got {args.hw}")
    unfold_rows_mib = 2 * args.batch * args.hw * args.c * args.k ** 2 * 4 / 2 ** 20
    rows = []
    for method in args.only:
        mib = measure(method, args.batch, args.hw, args.c, args.k, args.cv)
        rows.append(dict(impl=method, batch=args.batch, hw=args.hw, c=args.c,
                         patch_size=1 if method == "k1" else args.k, peak_growth_mib=round(mib, 1)))
        print(f"{method:>7}: peak RSS growth {mib:8.1f} MiB (unfolded q, k rows alone: {unfold_rows_mib:.0f} MiB)",
              flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(dict(command=" ".join(["python -m bench.patch_memory"] + (argv or sys.argv[1:])),
                           unfolded_rows_mib=unfold_rows_mib, rows=rows), f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
