"""Backend discovery and `exsynth doctor`."""
import subprocess
import sys

import exsynth.ops as ops


def test_cpu_extension_is_built_and_usable():
    # `pip install .` always builds exsynth._C: a missing one is an install bug,
    # not a reason to skip the cpu tests silently.
    info = ops.backends()
    assert info["cpu"].available, info["cpu"].reason
    assert set(info) == {"reference", "cpu", "triton", "cuda"}
    for name, entry in info.items():
        assert entry.reason, f"{name} gives no reason"


def test_every_simd_build_of_the_cpu_kernels_agrees():
    import torch

    from exsynth import _C

    order = ["base", "avx2", "avx512"]
    best = _C.best_isa()
    q, k, v = torch.randn(2, 6, 9, 10), torch.randn(2, 6, 11, 12), torch.randn(2, 5, 11, 12)
    want = ops.reference.correlation_warp(q.double(), k.double(), v.double())
    try:
        for isa in order[: order.index(best) + 1]:
            _C.set_isa(isa)
            out = ops.correlation_warp(q, k, v, backend="cpu")
            assert (out.double() - want).abs().max() < 1e-4, isa
    finally:
        _C.set_isa(best)


def test_doctor_cli_lists_backends(tmp_path):
    res = subprocess.run([sys.executable, "-m", "exsynth.cli", "doctor"], capture_output=True,
                         text=True, timeout=300, cwd=tmp_path)  # the installed exsynth
    assert res.returncode == 0, res.stderr
    for name in ("reference", "cpu", "triton", "cuda"):
        assert name in res.stdout
    assert "cpu        yes" in res.stdout, res.stdout


def test_auto_follows_the_gpu_measurements(monkeypatch):
    # backend="auto" on CUDA takes the per-op, per-dtype order of the first H200 run
    # (_dispatch._GPU_MEASURED); other ops keep the default order. Both GPU backends are made to
    # look usable here, so the order alone decides.
    import torch

    from exsynth.ops import _dispatch as D

    for mod in (D._triton, D._cuda):
        monkeypatch.setattr(mod, "status", lambda: (True, "test"))
        monkeypatch.setattr(mod, "supports", lambda device, dtype: None)
    gpu = torch.device("cuda", 0)
    assert D.resolve("correlation_warp", "auto", gpu, torch.bfloat16) == "triton"
    assert D.resolve("cycle_warp", "auto", gpu, torch.float32) == "triton"
    assert D.resolve("pn_modulate", "auto", gpu, torch.bfloat16) == "cuda"
    assert D.resolve("msca_attention", "auto", gpu, torch.bfloat16) == "reference"
    # fp16 (what --amp trains in on a GPU) runs the bf16 code paths: same entries
    assert D.resolve("msca_attention", "auto", gpu, torch.float16) == "reference"
    assert D.resolve("pn_modulate", "auto", gpu, torch.float16) == "cuda"
    # not measured: the default order
    assert D.resolve("pn_modulate", "auto", gpu, torch.float32) == D._AUTO_ORDER["cuda"][0]
    assert D.resolve("correlation_match", "auto", gpu, torch.bfloat16) == D._AUTO_ORDER["cuda"][0]
    # the CPU is untouched by the GPU table
    assert D.auto_order("correlation_warp", torch.device("cpu"), torch.float32) == D._AUTO_ORDER["cpu"]
    for (op, dtype), order in D._GPU_MEASURED.items():
        assert set(order) <= set(D.BACKENDS) and order[-1] == "reference", (op, dtype, order)
    # a listed backend that cannot serve the call is passed over
    monkeypatch.setattr(D._triton, "supports", lambda device, dtype: "not here")
    assert D.resolve("correlation_warp", "auto", gpu, torch.bfloat16) == "cuda"
