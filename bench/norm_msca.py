"""pn_modulate / positional_norm and msca_attention: each backend against
the plain torch composition (exsynth.ops.reference), with achieved GB/s
against the bytes each op must move."""
from __future__ import annotations

import itertools

import torch

import exsynth.ops as ops
from exsynth.ops import reference

from . import common


def _run_cases(args, cases, make, impls, bytes_moved, cols):
    """cases: list of dicts; make(case) -> (inputs tuple, grad); impls: name -> fn(*inputs)."""
    device = torch.device(args.device)
    rows, header = [], True
    for case in cases:
        n_rot = 4 if device.type == "cuda" else 1
        sets = [make(case) for _ in range(n_rot)]
        for mode in args.modes:
            fns = {}
            for name, f in impls.items():
                it = itertools.cycle(sets)

                def call(f=f, it=it, mode=mode):
                    inputs, grad = next(it)
                    if mode == "fwd":
                        with torch.no_grad():
                            return f(*inputs)
                    inputs = [t.detach().requires_grad_() if t is not None else None for t in inputs]
                    out = f(*inputs)
                    torch.autograd.backward(out, grad)

                fns[name] = call
            times = common.time_interleaved(fns, device, rounds=args.rounds, budget_s=args.budget)
            nbytes = bytes_moved(case, mode)
            for name, t in times.items():
                row = dict(case, mode=mode, impl=name, ms=t * 1e3, gbps=nbytes / t / 1e9,
                           floor_mib=nbytes / 2**20, vs_torch=times["torch"] / t)
                if not args.no_memory:
                    row["peak_mib"] = common.peak_memory_mib(fns[name], device)
                rows.append(row)
                common.print_table([row], cols, header=header)
                header = False
    return rows


def _fits(nbytes, args):
    return nbytes <= args.max_tensor_mib * 2**20


def run_pn(args):
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    B = args.batch or 8
    chans = args.c or ((64, 256) if args.quick else (64, 256, 1024))
    sides = args.side or ((32, 64) if args.quick else (32, 64, 128, 256))
    esize = torch.finfo(dtype).bits // 8
    cases = [dict(batch=B, c=c, side=s) for c in chans for s in sides
             if _fits(B * c * s * s * esize, args)]

    def make(case):
        shape = (case["batch"], case["c"], case["side"], case["side"])
        ts = [torch.randn(shape, device=device, dtype=dtype) for _ in range(4)]
        return ts[:3], ts[3]

    impls = {"torch": lambda x, g, b: reference.pn_modulate(x, g, b)}
    for name in common.fused_backends(device, dtype):
        impls[name] = (lambda n: lambda x, g, b: ops.pn_modulate(x, g, b, backend=n))(name)

    def bytes_moved(case, mode):
        # fwd: read x, gamma, beta, write out. bwd: read x, gamma, dout, write dx, dgamma, dbeta.
        t = case["batch"] * case["c"] * case["side"] ** 2 * esize
        return 4 * t if mode == "fwd" else 10 * t

    cols = [("batch", "B"), ("c", "C"), ("side", "HxW side"), ("mode", "mode"), ("impl", "impl"),
            ("ms", "ms"), ("gbps", "GB/s"), ("vs_torch", "x torch"), ("peak_mib", "peak MiB")]
    return _run_cases(args, cases, make, impls, bytes_moved, cols), cols


def run_msca(args):
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    B = args.batch or 8
    ns = args.n or ((64, 256) if args.quick else (64, 256, 512))
    ks = args.k or ((8,) if args.quick else (8, 16))
    sides = args.side or ((16, 32) if args.quick else (16, 32, 64, 128))
    esize = torch.finfo(dtype).bits // 8
    cases = [dict(batch=B, n=n, k=k, side=s) for n in ns for k in ks for s in sides
             if _fits(B * n * s * s * esize, args)]

    def make(case):
        b, n, k, s = case["batch"], case["n"], case["k"], case["side"]
        g = torch.Generator(device="cpu").manual_seed(0)
        value = torch.randn(b, n, s, s, generator=g).to(device, dtype)
        sp = torch.randn(b, k, s, s, generator=g).to(device, dtype)
        ch = torch.randn(b, k, s, s, generator=g).to(device, dtype)
        gate = torch.rand(b, k, generator=g).to(device, dtype)
        return (value, sp, ch, gate), torch.randn(b, n, s, s, generator=g).to(device, dtype)

    impls = {"torch": lambda v, s, c, g: reference.msca_attention(v, s, c, g)}
    for name in common.fused_backends(device, dtype):
        impls[name] = (lambda nm: lambda v, s, c, g: ops.msca_attention(v, s, c, g, backend=nm))(name)

    def bytes_moved(case, mode):
        # fwd: read value + both logits, write out; bwd: read value, logits, dout, write their grads.
        L = case["batch"] * case["side"] ** 2 * esize
        n, k = case["n"], case["k"]
        return (2 * n + 2 * k) * L if mode == "fwd" else (2 * n + 2 * k) * L + (3 * n + 4 * k) * L

    cols = [("batch", "B"), ("n", "N"), ("k", "K"), ("side", "HxW side"), ("mode", "mode"),
            ("impl", "impl"), ("ms", "ms"), ("gbps", "GB/s"), ("vs_torch", "x torch"),
            ("peak_mib", "peak MiB")]
    return _run_cases(args, cases, make, impls, bytes_moved, cols), cols
