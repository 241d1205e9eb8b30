"""exsynth.nn layers equal their plain-torch composition."""
import torch
import torch.nn.functional as F

from exsynth import nn as xnn
from exsynth.ops import reference


def _close(a, b):
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_positional_norm2d():
    x = torch.randn(2, 7, 5, 6, dtype=torch.float64)
    y, m, s = xnn.PositionalNorm2d(return_stats=True)(x)
    mean = x.mean(1, keepdim=True)
    std = (x.var(1, keepdim=True) + 1e-5).sqrt()
    _close(y, (x - mean) / std)
    _close(m, mean)
    _close(s, std)
    _close(xnn.PositionalNorm2d()(x), y)


def test_pnspade_is_conv_gamma_beta_then_modulation():
    torch.manual_seed(0)
    layer = xnn.PNSPADE(channels=6, cond_channels=3, hidden=8).double()
    x = torch.randn(2, 6, 8, 10, dtype=torch.float64, requires_grad=True)
    cond = torch.randn(2, 3, 4, 5, dtype=torch.float64)  # coarser: resized to x's grid
    out = layer(x, cond)
    c = F.interpolate(cond, size=(8, 10), mode="nearest")
    h = F.relu(F.conv2d(c, layer.shared[0].weight, layer.shared[0].bias, padding=1))
    gamma = F.conv2d(h, layer.to_gamma.weight, layer.to_gamma.bias, padding=1)
    beta = F.conv2d(h, layer.to_beta.weight, layer.to_beta.bias, padding=1)
    mean, std = x.mean(1, keepdim=True), (x.var(1, keepdim=True) + 1e-5).sqrt()
    want = (x - mean) / std * (1 + gamma) + beta
    _close(out, want)
    g = torch.randn_like(out)
    got = torch.autograd.grad((out * g).sum(), [x] + list(layer.parameters()))
    ref = torch.autograd.grad((want * g).sum(), [x] + list(layer.parameters()))
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


def test_msca_module_is_the_papers_equations():
    torch.manual_seed(0)
    N, M1, M2, K = 12, 5, 7, 8
    layer = xnn.MSCAModule(N, M1, M2, k=K).double()
    f_x2 = torch.randn(2, N, 6, 9, dtype=torch.float64)
    f_c1 = torch.randn(2, M1, 6, 9, dtype=torch.float64)
    f_c2 = torch.randn(2, M2, 6, 9, dtype=torch.float64)
    out, alpha, beta = layer(f_x2, f_c1, f_c2, return_attention=True)
    # Eq. 4-8 written out
    a = torch.softmax(F.conv2d(torch.cat([f_x2, f_c2], 1), layer.phi.weight, layer.phi.bias).flatten(2), -1)
    V = f_x2.flatten(2) @ a.transpose(1, 2)
    pooled = torch.cat([f_c1.mean((2, 3)), f_c2.mean((2, 3))], 1)
    gate = torch.sigmoid(layer.mask_mlp(pooled))
    b = torch.softmax(F.conv2d(f_c1, layer.psi.weight, layer.psi.bias), 1)
    want = ((V * gate[:, None]) @ b.flatten(2)).reshape(2, N, 6, 9)
    _close(out, want)
    _close(alpha, a.reshape(2, K, 6, 9))
    _close(beta, b)
    # without masking the gate is absent
    plain = xnn.MSCAModule(N, M1, M2, k=K, masking=False).double()
    sp, ch, gate = plain.logits_and_gate(f_x2, f_c1, f_c2)
    assert gate is None
    _close(plain(f_x2, f_c1, f_c2), reference.msca_attention(f_x2, sp, ch))


def test_non_local_blocks_keep_no_position_by_key_matrix():
    # the fused attention: no (N, N/4) tensor forward or backward (a transposed q or a head size
    # that differs from the values' sends SDPA to its materialising math path)
    from torch.utils._python_dispatch import TorchDispatchMode
    from exsynth.nn.blocks import NonLocalBlock, NonLocalBlock2D

    class Biggest(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.bytes = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in (out if isinstance(out, (tuple, list)) else [out]):
                if isinstance(t, torch.Tensor):
                    self.bytes = max(self.bytes, t.numel() * t.element_size())
            return out

    torch.manual_seed(0)
    x = torch.randn(1, 64, 64, 64, requires_grad=True)        # N = 4096 positions, 1024 pooled keys
    matrix = 4096 * 1024 * 4
    for block in (NonLocalBlock(64, spectral_norm=True, pool_keys=True), NonLocalBlock2D(64)):
        with Biggest() as seen:
            block(x).sum().backward()
        assert seen.bytes < matrix / 4, (type(block).__name__, seen.bytes)
