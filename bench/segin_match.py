"""SEGIN's semantic match: correlation_match vs the materialising argmax, same run.

    python bench/segin_match.py [--device cpu] [--out bench/results/cpu/segin_match.json]

VGG19 relu3_1 features (C = 256) of a sketch and a reference at 64x64 and 128x128 positions
(256 and 512 px images; the features are computed once, outside the timing); per case the
median time of `exsynth.ops.correlation_match` (the fused backend chosen by "auto") and of
the reference (L2-normalise, the full (HW)^2 cosine matrix, max), interleaved, and the peak
extra memory of one call of each. The argmax indices are compared (equal but for ties).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import warnings

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench import common  # noqa: E402
from exsynth.nn import load_vgg19  # noqa: E402
from exsynth.ops import correlation_match  # noqa: E402
from exsynth.ops import reference  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--sides", type=int, nargs="*", default=[256, 512], help="image sides (positions = side/4)^2")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--out")
    args = ap.parse_args()
    device = torch.device(args.device)
    env = common.environment(device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        vgg = load_vgg19().to(device)
    rows = []
    for side in args.sides:
        g = torch.Generator().manual_seed(side)
        x = ((torch.rand(args.batch, 1, side, side, generator=g) > 0.9).float() * -2 + 1).expand(-1, 3, -1, -1)
        r = torch.rand(args.batch, 3, side, side, generator=g) * 2 - 1
        with torch.no_grad():
            q = vgg(x.to(device), ("relu3_1",))["relu3_1"].contiguous()
            k = vgg(r.to(device), ("relu3_1",))["relu3_1"].contiguous()
        fns = {"correlation_match": lambda: correlation_match(q, k, center=False),
               "reference": lambda: reference.correlation_match(q, k, center=False)}
        t = common.time_interleaved(fns, device, rounds=5, budget_s=30)
        a, b = fns["correlation_match"](), fns["reference"]()
        agree = float((a[0] == b[0]).float().mean())
        hw = q.shape[-1] * q.shape[-2]
        for name in fns:
            rows.append(dict(side=side, positions=hw, channels=q.shape[1], batch=args.batch, impl=name,
                             ms=t[name] * 1e3, vs_reference=t["reference"] / t[name],
                             peak_mib=common.peak_memory_mib(fns[name], device), index_agreement=agree))
            print(json.dumps(rows[-1]), flush=True)
    res = dict(command="python bench/segin_match.py " + " ".join(sys.argv[1:]), environment=env, results=rows)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(res, f, indent=1)
        print(f"# wrote {args.out}")


if __name__ == "__main__":
    main()
