"""Streamed FID: memory stays flat in the number of images.

    python bench/fid_stream.py [--n 10000] [--inception pt_inception.pth] [--out bench/results/cpu/fid_stream.json]

Feeds N generated 64x64 images (smooth random colour fields, seeded) in batches through
`MetricSuite` as the fake set and the same number, differently seeded, as the real set, and
records the process's peak RSS (ru_maxrss) after each tenth of the run, with images/s. Without
--inception a random-init network in the pt_inception layout stands in (the cost and the memory
are the same; the FID value then means nothing and is not reported).
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from exsynth.metrics import MetricSuite
from exsynth.nn.inception import FIDInceptionV3, load_fid_inception


def batch(seed: int, n: int, size: int = 64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 4, 4, generator=g) * 2 - 1
    return F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False).clamp(-1, 1)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--batch-size", type=int, default=50)
    ap.add_argument("--inception")
    ap.add_argument("--threads", type=int)
    ap.add_argument("--out")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    net = load_fid_inception(args.inception) if args.inception else FIDInceptionV3().eval().requires_grad_(False)
    suite = MetricSuite(inception=net, swd=False)
    rows, t0 = [], time.perf_counter()
    done, marks = 0, {args.n * k // 10 for k in range(1, 11)}
    rss_start = peak_rss_mib()
    while done < args.n:
        b = min(args.batch_size, args.n - done)
        suite.add(fake=batch(2 * done, b), real=batch(2 * done + 1, b))
        done += b
        if done in marks or done == args.n:
            el = time.perf_counter() - t0
            rows.append(dict(images_per_set=done, seconds=round(el, 1), images_per_s=round(2 * done / el, 2),
                             rss_mib=round(rss_mib(), 1), peak_rss_mib=round(peak_rss_mib(), 1)))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    scores = suite.compute()
    res = dict(command="python bench/fid_stream.py " + " ".join(sys.argv[1:]), n_per_set=args.n,
               batch_size=args.batch_size, weights=args.inception or "random-init (pt_inception layout)",
               fid=scores["fid"] if args.inception else None, peak_rss_before_mib=round(rss_start, 1), rows=rows,
               env=dict(torch=torch.__version__, threads=torch.get_num_threads(), python=platform.python_version(),
                        cpu=platform.processor() or platform.machine()))
    text = json.dumps(res, indent=2)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
