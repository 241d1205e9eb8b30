"""Triton correlation kernels (kernels/correlation.py) under the Triton interpreter (CPU).

Compared with plain float64 torch math on random inputs whose q / k rows are L2-normalised as in
correlation_warp.  Under TRITON_INTERPRET the module uses 16x16 query/key blocks and 32-wide D
tiles, so D = 37, 70, 150 exercise the tiled-D paths (read-modify-write dQ / dK accumulators)
and D = 5, 20 the single-tile register paths; Lq, Lk are not multiples of the block size.
"""

# conftest.py sets TRITON_INTERPRET=1 when there is no GPU, before any kernel is defined.
import os

import pytest
import torch

triton = pytest.importorskip("triton")

import exsynth.kernels.correlation as corr  # noqa: E402

# Tolerances.  fp32: every dot is accumulated in fp32 over D <= 150 terms and the softmax over
# Lk <= 70 keys in fp32, so out / lse / dv agree with float64 to ~1e-6 relative; dq and dk carry
# the factor alpha = 100 (and the logits alpha * cos span +-100, which amplifies the relative
# error of exp(S - lse) by up to ~|S| * eps), hence errors are measured relative to each
# tensor's max magnitude with 1e-4 (observed <= 5e-6).  fp16: P and dS are rounded to fp16 for the
# tensor-core dots and the outputs to an 11-bit mantissa -> 1e-2 (observed <= 3e-3).
_TOL = {torch.float32: 1e-4, torch.float16: 1e-2}


def _no_dlse(lse):
    """No gradient arriving on lse (the kernels form delta = rowsum(dout * out) - dlse)."""
    return torch.zeros(lse.shape, dtype=torch.float32, device=lse.device)


def _inputs(B, Lq, Lk, D, Cv, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    q = torch.nn.functional.normalize(torch.randn(B, Lq, D, generator=g, dtype=torch.float64), dim=-1)
    k = torch.nn.functional.normalize(torch.randn(B, Lk, D, generator=g, dtype=torch.float64), dim=-1)
    v = torch.randn(B, Lk, Cv, generator=g, dtype=torch.float64)
    dout = torch.randn(B, Lq, Cv, generator=g, dtype=torch.float64)
    cast = lambda t: t.to(dtype).contiguous()
    return cast(q), cast(k), cast(v), cast(dout)


def _reference(q, k, v, dout, alpha):
    q, k, v, dout = (t.detach().double().requires_grad_(True) for t in (q, k, v, dout))
    s = alpha * q @ k.transpose(1, 2)
    lse = torch.logsumexp(s, dim=-1)
    out = torch.softmax(s, dim=-1) @ v
    dq, dk, dv = torch.autograd.grad(out, (q, k, v), dout.detach())
    return out.detach(), lse.detach(), dq, dk, dv


def _close(name, got, ref, tol):
    got = got.double()
    scale = ref.abs().max().clamp_min(1e-6)
    err = ((got - ref).abs().max() / scale).item()
    assert err <= tol, f"{name}: max error {err:.3g} (relative to max |ref| {scale.item():.3g}) > {tol}"


# (B, Lq, Lk, D, Cv, alpha): D 5/20 single tile, 37/70/150 tiled (last tile partial);
# Cv 1/3/48 (padded to 16/16/64 inside the kernel).
CASES = [
    (1, 37, 70, 5, 3, 100.0),
    (2, 37, 70, 37, 1, 100.0),
    (1, 37, 70, 70, 48, 1.0),
    (2, 21, 45, 150, 3, 100.0),
    (1, 70, 19, 20, 48, 100.0),
    (1, 16, 32, 64, 3, 1.0),  # exact multiples: EVEN_D, full blocks
    (1, 30, 40, 150, 151, 100.0),  # Cv 151 -> padded to 256
    (2, 9, 50, 93, 200, 100.0),
    (1, 5, 17, 2304, 3, 100.0),  # CoCosNet's D = 256 * 3 * 3: 72 D tiles
]


@pytest.mark.parametrize("B,Lq,Lk,D,Cv,alpha", CASES)
def test_attention_fp32(B, Lq, Lk, D, Cv, alpha):
    q, k, v, dout = _inputs(B, Lq, Lk, D, Cv, torch.float32, seed=D * 1000 + Cv)
    out, lse = corr.attention_forward(q, k, v, alpha)
    assert out.shape == (B, Lq, Cv) and out.dtype == torch.float32
    assert lse.shape == (B, Lq) and lse.dtype == torch.float64
    dq, dk, dv = corr.attention_backward(q, k, v, out, lse, _no_dlse(lse), dout, alpha)
    assert dq.shape == q.shape and dk.shape == k.shape and dv.shape == v.shape
    r_out, r_lse, r_dq, r_dk, r_dv = _reference(q, k, v, dout, alpha)
    tol = _TOL[torch.float32]
    _close("out", out, r_out, tol)
    _close("lse", lse, r_lse, tol)
    _close("dv", dv, r_dv, tol)
    _close("dq", dq, r_dq, tol)
    _close("dk", dk, r_dk, tol)


@pytest.mark.parametrize("D,Cv", [(20, 3), (70, 3), (150, 48)])
def test_attention_fp16(D, Cv):
    B, Lq, Lk, alpha = 1, 37, 40, 100.0
    q, k, v, dout = _inputs(B, Lq, Lk, D, Cv, torch.float16, seed=7 + D)
    out, lse = corr.attention_forward(q, k, v, alpha)
    assert out.dtype == torch.float16 and lse.dtype == torch.float64
    dq, dk, dv = corr.attention_backward(q, k, v, out, lse, _no_dlse(lse), dout, alpha)
    assert dq.dtype == dk.dtype == dv.dtype == torch.float16
    r_out, r_lse, r_dq, r_dk, r_dv = _reference(q, k, v, dout, alpha)
    tol = _TOL[torch.float16]
    for name, got, ref in (("out", out, r_out), ("lse", lse, r_lse), ("dv", dv, r_dv),
                           ("dq", dq, r_dq), ("dk", dk, r_dk)):
        _close(name, got, ref, tol)


def test_attention_backward_repeatable():
    # the tiled dQ/dK accumulators are written (not accumulated) on the first block, so repeated
    # launches (e.g. autotuning benchmarks) must give identical results
    q, k, v, dout = _inputs(1, 20, 33, 40, 3, torch.float32, seed=3)
    out, lse = corr.attention_forward(q, k, v, 100.0)
    g1 = corr.attention_backward(q, k, v, out, lse, _no_dlse(lse), dout, 100.0)
    g2 = corr.attention_backward(q, k, v, out, lse, _no_dlse(lse), dout, 100.0)
    for a, b in zip(g1, g2):
        assert torch.equal(a, b)


@pytest.mark.parametrize("B,Lq,Lk,D", [(2, 37, 70, 5), (1, 37, 70, 150), (1, 20, 45, 37)])
def test_match_fp32(B, Lq, Lk, D):
    g = torch.Generator().manual_seed(B * 100 + D)
    q = torch.nn.functional.normalize(torch.randn(B, Lq, D, generator=g), dim=-1)
    k = torch.nn.functional.normalize(torch.randn(B, Lk, D, generator=g), dim=-1)
    index, best = corr.match_forward(q, k)
    assert index.dtype == torch.int64 and index.shape == (B, Lq)
    assert best.dtype == torch.float32 and best.shape == (B, Lq)
    s = q.double() @ k.double().transpose(1, 2)
    r_best, r_index = s.max(dim=-1)
    torch.testing.assert_close(best.double(), r_best, rtol=0, atol=1e-5)
    # random inputs: the top-2 gap is far above fp32 rounding, so indices must agree exactly
    top2 = s.topk(2, dim=-1).values
    assert (top2[..., 0] - top2[..., 1]).min() > 1e-5
    assert torch.equal(index, r_index)


def test_match_ties_first_occurrence():
    # zero query rows (constant vectors normalise to zero) tie with every key -> index 0; a key
    # duplicated in a later block must not replace its first occurrence
    D, Lk = 37, 50
    g = torch.Generator().manual_seed(11)
    k = torch.nn.functional.normalize(torch.randn(1, Lk, D, generator=g), dim=-1)
    k[0, 40] = k[0, 3]
    q = torch.zeros(1, 4, D)
    q[0, 1] = k[0, 3]
    q[0, 2] = k[0, 40]
    index, best = corr.match_forward(q.contiguous(), k.contiguous())
    assert index[0, 0].item() == 0 and index[0, 3].item() == 0
    assert best[0, 0].item() == 0.0
    assert index[0, 1].item() == 3 and index[0, 2].item() == 3


# --------------------------------------------------------------------------------------------
# Compiled kernels on a real GPU (skipped without CUDA).  This file forces the interpreter for
# everything above, so the GPU check runs in a subprocess without TRITON_INTERPRET.
# --------------------------------------------------------------------------------------------

_GPU_SCRIPT = r"""
import sys, torch
import exsynth.kernels.correlation as corr
dev = sys.argv[1]
small = dev == "cpu"  # harness self-check under the interpreter
cases = [(1, 20, 40, 37, 3, 100.0), (1, 18, 17, 300, 48, 100.0)] if small else [
    (2, 300, 333, 64, 3, 100.0), (1, 257, 300, 93, 151, 100.0), (2, 200, 190, 2304, 3, 100.0),
    (1, 1024, 1024, 256, 200, 100.0), (1, 129, 77, 5, 1, 1.0)]
dtypes = [torch.float32, torch.float16] + ([] if small else [torch.bfloat16])
tol = {torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 4e-2}
fails = []
for (B, Lq, Lk, D, Cv, alpha) in cases:
    for dt in dtypes:
        g = torch.Generator().manual_seed(Lq + D)
        q = torch.nn.functional.normalize(torch.randn(B, Lq, D, generator=g, dtype=torch.float64), dim=-1)
        k = torch.nn.functional.normalize(torch.randn(B, Lk, D, generator=g, dtype=torch.float64), dim=-1)
        v = torch.randn(B, Lk, Cv, generator=g, dtype=torch.float64)
        do = torch.randn(B, Lq, Cv, generator=g, dtype=torch.float64)
        qd, kd, vd, dod = (t.to(dt).to(dev).contiguous() for t in (q, k, v, do))
        out, lse = corr.attention_forward(qd, kd, vd, alpha)
        grads = corr.attention_backward(qd, kd, vd, out, lse, torch.zeros(lse.shape, device=lse.device), dod, alpha)
        idx, best = corr.match_forward(qd, kd)
        r = [t.double().cpu().requires_grad_(True) for t in (qd, kd, vd)]
        s = alpha * r[0] @ r[1].transpose(1, 2)
        r_out = torch.softmax(s, -1) @ r[2]
        r_grads = torch.autograd.grad(r_out, r, dod.double().cpu())
        r_best = (r[0] @ r[1].transpose(1, 2)).max(-1).values
        got = [out, lse] + list(grads) + [best]
        ref = [r_out, torch.logsumexp(s, -1)] + list(r_grads) + [r_best]
        for name, a, b in zip(["out", "lse", "dq", "dk", "dv", "best"], got, ref):
            err = ((a.double().cpu() - b.detach()).abs().max() / b.detach().abs().max().clamp_min(1e-6)).item()
            if not err <= tol[dt]:
                fails.append(f"{(B, Lq, Lk, D, Cv, alpha)} {dt} {name}: {err:.3g}")
        # the matched key must attain the max (up to rounding of the input dtype)
        sd = (r[0] @ r[1].transpose(1, 2)).detach()
        at_idx = sd.gather(-1, idx.cpu()[..., None])[..., 0]
        if not (r_best.detach() - at_idx).max().item() <= 4 * tol[dt]:
            fails.append(f"{(B, Lq, Lk, D, Cv, alpha)} {dt} match index")
print("\n".join(fails) if fails else "OK")
sys.exit(1 if fails else 0)
"""


def _run_gpu_script(device, interpret):
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    if interpret:
        env["TRITON_INTERPRET"] = "1"
    res = subprocess.run([sys.executable, "-c", _GPU_SCRIPT, device], env=env,
                         capture_output=True, text=True, timeout=1800,
                         cwd=os.path.dirname(__file__))  # the installed exsynth, not the source tree
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]


def test_gpu_script_harness_under_interpreter():
    # keeps the GPU check below honest on CPU-only machines: same script, interpreter, tiny sizes
    _run_gpu_script("cpu", interpret=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_compiled_kernels_on_gpu():
    _run_gpu_script("cuda", interpret=False)
