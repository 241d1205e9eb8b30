import os

import torch

# Without a GPU, Triton kernels run through the interpreter; the variable must
# be set before any @triton.jit kernel is defined, i.e. before exsynth.kernels
# is imported.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

import exsynth.ops as ops  # noqa: E402


def usable_backends(device="cpu"):
    """Fused backends that can serve tensors on `device` here."""
    info = ops.backends()
    names = []
    for name in ("cpu", "triton", "cuda"):
        if not info[name].available:
            continue
        mod = ops._dispatch.implementation(name)
        if mod.supports(torch.device(device), torch.float32) is None:
            names.append(name)
    return names


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
