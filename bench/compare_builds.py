"""correlation_warp fwd+bwd time (cpu backend, B=1, 64x64 positions, D=256, alpha 100) of the
exsynth found under a source tree, for comparing two builds in one interleaved session:

    for i in 1 2; do python bench/compare_builds.py OLD_TREE; python bench/compare_builds.py .; done

Each tree must hold a built exsynth/_C*.so. Prints one JSON line per run (median of 4).
"""
import sys, time, json, torch
sys.path.insert(0, sys.argv[1])
import exsynth
from exsynth.ops import correlation_warp
torch.set_num_threads(2)
res = {}
for Cv in (3, 64):
    g = torch.Generator().manual_seed(0)
    q = torch.randn(1, 256, 64, 64, generator=g).requires_grad_()
    k = torch.randn(1, 256, 64, 64, generator=g).requires_grad_()
    v = torch.randn(1, Cv, 64, 64, generator=g).requires_grad_()
    ts = []
    for rep in range(4):
        t0 = time.perf_counter()
        out = correlation_warp(q, k, v, alpha=100.0, backend="cpu")
        out.sum().backward()
        ts.append(time.perf_counter() - t0)
    res[Cv] = sorted(ts)[len(ts) // 2]
print(json.dumps({"src": exsynth.__file__, **{f"cv{k}": round(v, 3) for k, v in res.items()}}))
