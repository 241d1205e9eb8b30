"""The fused ops under torch.autocast, and the trainer's CUDA device.

On the first GPU run (2026-11-30, H200, bench/results/gpu-20261130) `exsynth train --device cuda
--amp` stopped in its first step: under fp16 autocast PN-SPADE got an fp32 x and fp16 gamma/beta,
and pn_modulate refused the mix. Under autocast the ops now take such inputs as torch would
(pn_modulate: the widest dtype, as x_norm * (1 + gamma) + beta computes; the correlation and MSCA
products: the autocast dtype, as a matmul's). CPU autocast stands in for CUDA's here: the casting
rule is device-independent, and the results are compared with the same op called on inputs
cast by hand, outside autocast.
"""
import types

import pytest
import torch

import exsynth.ops as ops

LOW = [torch.bfloat16, torch.float16]


def _rand(*shape, dtype=torch.float32):
    return torch.randn(*shape).to(dtype)


@pytest.mark.parametrize("low", LOW)
def test_pn_modulate_takes_the_widest_dtype_under_autocast(low):
    x = _rand(2, 8, 5, 6).requires_grad_()
    gamma, beta = (_rand(2, 8, 5, 6, dtype=low).requires_grad_() for _ in range(2))
    with torch.autocast("cpu", dtype=low):
        out = ops.pn_modulate(x, gamma, beta)
    assert out.dtype == torch.float32
    want = ops.pn_modulate(x, gamma.float(), beta.float())
    torch.testing.assert_close(out, want, rtol=0, atol=0)
    go = torch.randn_like(out)
    gx, gg, gb = torch.autograd.grad(out, (x, gamma, beta), go)
    assert (gx.dtype, gg.dtype, gb.dtype) == (torch.float32, low, low)
    wx, wg, wb = torch.autograd.grad(want, (x, gamma, beta), go)
    for a, b in ((gx, wx), (gg, wg), (gb, wb)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("low", LOW)
def test_correlation_ops_take_the_autocast_dtype(low):
    q, k = _rand(1, 6, 4, 5), _rand(1, 6, 5, 4, dtype=low)
    v = _rand(1, 3, 5, 4)
    with torch.autocast("cpu", dtype=low):
        out, lse = ops.correlation_warp(q, k, v, alpha=10.0, return_lse=True)
        cyc = ops.cycle_warp(q, k, out.float(), alpha=10.0)
        idx, cos = ops.correlation_match(q, k)
    assert out.dtype == low and cyc.dtype == low
    want, want_lse = ops.correlation_warp(q.to(low), k, v.to(low), alpha=10.0, return_lse=True)
    torch.testing.assert_close(out, want, rtol=0, atol=0)
    torch.testing.assert_close(lse, want_lse, rtol=0, atol=0)
    torch.testing.assert_close(cyc, ops.cycle_warp(q.to(low), k, out, alpha=10.0), rtol=0, atol=0)
    want_idx, want_cos = ops.correlation_match(q.to(low), k)
    assert torch.equal(idx, want_idx) and torch.equal(cos, want_cos)


@pytest.mark.parametrize("low", LOW)
def test_msca_takes_the_autocast_dtype(low):
    val, sp, ch = _rand(2, 6, 4, 5), _rand(2, 3, 4, 5, dtype=low), _rand(2, 3, 4, 5)
    gate = torch.rand(2, 3)
    with torch.autocast("cpu", dtype=low):
        out = ops.msca_attention(val, sp, ch, gate)
    assert out.dtype == low
    want = ops.msca_attention(val.to(low), sp, ch.to(low), gate.to(low))
    torch.testing.assert_close(out, want, rtol=0, atol=0)


def test_float64_is_left_alone_under_autocast():
    # as torch's autocast leaves float64: all-float64 inputs run in float64
    q, k, v = _rand(1, 4, 3, 3).double(), _rand(1, 4, 3, 3).double(), _rand(1, 2, 3, 3).double()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = ops.correlation_warp(q, k, v, alpha=10.0)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, ops.correlation_warp(q, k, v, alpha=10.0), rtol=0, atol=0)


def test_mixed_dtypes_still_refused_outside_autocast():
    x = _rand(1, 4, 3, 3)
    with pytest.raises(TypeError, match="gamma is torch.bfloat16"):
        ops.pn_modulate(x, x.bfloat16(), x)
    with pytest.raises(TypeError, match="key is torch.bfloat16"):
        ops.correlation_warp(x, x.bfloat16(), x)
    with torch.autocast("cpu", enabled=False):
        with pytest.raises(TypeError, match="one dtype"):
            ops.msca_attention(x, x.bfloat16(), x)


def test_trainer_gives_cuda_an_index(monkeypatch):
    # torch.cuda.set_device refuses an index-less "cuda" (the first GPU run's smoke stopped there)
    from exsynth.train import trainer as T

    seen = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: seen.append(d))
    fake = types.SimpleNamespace(cfg=types.SimpleNamespace(device="cuda"),
                                 ctx=types.SimpleNamespace(enabled=False))
    dev = T.Trainer._device(fake)
    assert dev == torch.device("cuda", 0) and seen == [torch.device("cuda", 0)]


def test_trainer_skips_an_optimiser_without_gradients_under_a_grad_scaler():
    # EGSC-IT's opt_segmenter has no gradients in stage 1; GradScaler.step refuses such an
    # optimiser ("No inf checks were recorded"), which stopped CUDA --amp runs
    from exsynth.train import trainer as T

    used, idle = torch.nn.Linear(2, 1), torch.nn.Linear(2, 1)
    scaler = torch.amp.GradScaler("cpu")
    opts = {"opt_g": torch.optim.Adam(used.parameters()), "opt_segmenter": torch.optim.Adam(idle.parameters())}
    fake = types.SimpleNamespace(optimizers=opts, roles={"opt_g": "g", "opt_segmenter": "g"}, scaler=scaler)
    scaler.scale(used(torch.randn(4, 2)).sum()).backward()
    before = [p.clone() for p in idle.parameters()]
    T.Trainer._step_optimizers(fake, "g")
    scaler.update()
    assert all(torch.equal(a, b) for a, b in zip(idle.parameters(), before))
    assert all(s["step"] == 1 for s in opts["opt_g"].state.values())
