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
