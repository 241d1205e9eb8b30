"""pytest-benchmark entry points for the ops (small CPU sizes; the runner in
`python -m bench` does the sweeps). Run: pytest bench --benchmark-only"""
import pytest
import torch

import exsynth.ops as ops

pytest.importorskip("pytest_benchmark")

BACKENDS = ["reference"] + [n for n in ("cpu",) if ops.backends()[n].available]


@pytest.mark.parametrize("backend", BACKENDS)
def test_correlation_warp_fwd(benchmark, backend):
    q, k, v = torch.randn(1, 64, 32, 32), torch.randn(1, 64, 32, 32), torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        benchmark(ops.correlation_warp, q, k, v, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_pn_modulate_fwdbwd(benchmark, backend):
    x, g, b = (torch.randn(8, 64, 32, 32, requires_grad=True) for _ in range(3))

    def step():
        ops.pn_modulate(x, g, b, backend=backend).sum().backward()

    benchmark(step)


@pytest.mark.parametrize("backend", BACKENDS)
def test_msca_attention_fwdbwd(benchmark, backend):
    v = torch.randn(8, 64, 32, 32, requires_grad=True)
    s, c = (torch.randn(8, 8, 32, 32, requires_grad=True) for _ in range(2))
    gate = torch.rand(8, 8, requires_grad=True)

    def step():
        ops.msca_attention(v, s, c, gate, backend=backend).sum().backward()

    benchmark(step)
