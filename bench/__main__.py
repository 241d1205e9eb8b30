"""Benchmark runner: `python -m bench correlation [--quick] [--device cuda]`.

Prints a table (speed ratios against the anchors measured in the same run,
peak memory) and writes JSON with the environment and command, and a PNG of it
beside (matplotlib, the `bench` extra). `python -m bench plot FILE.json ...`
redraws committed results; `python -m bench models --runs DIR ...` compares
trained models (bench/models.py); `python -m bench patch` times k x k patches
(the Gram path against the unfolded rows, bench/patch_correlation.py); `python -m bench video` times the DALI video
reader against PyAV (bench/video.py).
"""
from __future__ import annotations

import argparse
import os
import re
import sys

import torch

from . import common

OPS = ("correlation", "patch", "pn_modulate", "msca", "ptxas", "plot", "models", "video")


PTXAS_REPORT = os.path.join(os.path.dirname(__file__), "results", "ptxas.txt")


def show_ptxas() -> int:
    """Print the committed ptxas resource report of the CUDA kernels
    (bench/cuda_resources.sh writes it; no GPU needed)."""
    if not os.path.exists(PTXAS_REPORT):
        print(f"no report at {PTXAS_REPORT}; run: bash bench/cuda_resources.sh", file=sys.stderr)
        return 1
    with open(PTXAS_REPORT) as f:
        text = f.read()
    print(text)
    spills = [line for line in text.splitlines() if re.search(r"\b[1-9][0-9]* bytes spill", line)]
    print(f"# {len(spills)} kernel(s) with spills" if spills else "# no kernel spills registers")
    return 0


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "plot":
        from . import plots
        return plots.main(argv[1:])
    if argv and argv[0] == "models":
        from . import models
        return models.main(argv[1:])
    if argv and argv[0] == "video":
        from . import video
        return video.main(argv[1:])
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("op", choices=OPS)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="float32", choices=("float32", "float16", "bfloat16"))
    p.add_argument("--quick", action="store_true", help="a small sweep that runs in about a minute")
    p.add_argument("--hw", type=int, nargs="*", help="sizes H*W (squares)")
    p.add_argument("--d", type=int, nargs="*", help="feature dims D (2304 means 256 ch x 3x3 patches)")
    p.add_argument("--cv", type=int, nargs="*", help="value channels")
    p.add_argument("--c", type=int, nargs="*", help="pn_modulate / patch channels")
    p.add_argument("--n", type=int, nargs="*", help="msca value channels N")
    p.add_argument("--k", type=int, nargs="*", help="msca attention maps K")
    p.add_argument("--side", type=int, nargs="*", help="pn_modulate/msca spatial side (H = W)")
    p.add_argument("--max-tensor-mib", type=float, default=512.0,
                   help="skip pn_modulate/msca sizes whose main tensor is larger")
    p.add_argument("--batch", type=int, default=None,
                   help="default: correlation 1 on CPU, 8 on GPU; pn_modulate/msca 8")
    p.add_argument("--modes", nargs="*", default=["fwd", "fwdbwd"], choices=("fwd", "fwdbwd"))
    p.add_argument("--only", nargs="*", help="only these implementations")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--budget", type=float, default=20.0, help="seconds of timing per case")
    p.add_argument("--no-memory", action="store_true")
    p.add_argument("--no-finite-checks", action="store_true",
                   help="time the ops without their NaN/Inf input scan (exsynth.ops.set_finite_checks): "
                        "one aminmax per input and a host sync per call, which the plain-torch anchors "
                        "of pn_modulate and msca never pay")
    p.add_argument("--out", default=None, help="JSON path (default bench/results/<op>-<device>.json)")
    args = p.parse_args(argv)
    if args.op == "ptxas":
        return show_ptxas()

    from . import correlation, norm_msca, patch_correlation

    run = {"correlation": correlation.run, "patch": patch_correlation.run, "pn_modulate": norm_msca.run_pn,
           "msca": norm_msca.run_msca}[args.op]
    device = torch.device(args.device)
    env = common.environment(device)
    if args.no_finite_checks:
        import exsynth.ops
        exsynth.ops.set_finite_checks(False)
    env["finite_checks"] = not args.no_finite_checks
    print(f"# {args.op} on {env.get('gpu') or env['cpu']} ({env['device']}, {env['threads']} threads, "
          f"torch {env['torch']}, isa {env['cpu_isa']})", flush=True)
    env["ceilings"] = common.ceilings(device, getattr(torch, args.dtype))
    print(f"# ceilings: matmul {env['ceilings']['matmul_gflops']:.0f} GFLOP/s ({args.dtype}), "
          f"copy {env['ceilings']['copy_gbps']:.1f} GB/s", flush=True)
    rows, _ = run(args)
    out = args.out or os.path.join("bench", "results", f"{args.op}-{device.type}.json")
    common.write_json(out, env, rows)
    print(f"# wrote {out}")
    from .plots import plot_op
    png = plot_op(out)
    if png:
        print(f"# wrote {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
