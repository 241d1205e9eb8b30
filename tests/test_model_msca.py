import warnings

import pytest
import torch
import torch.nn.functional as F

from exsynth.models.msca_net import (
    MSCANet,
    MSCANetConfig,
    cross_reconstruction_crops,
    reconstruction_losses,
)

L = 5  # label channels


def tiny_config(**kw):
    base = dict(label_channels=L, width=4, feature_channels=6, label_feature_channels=5,
                spade_hidden=8, use_vgg=False, ks=(3, 4, 4, 4, 4))
    base.update(kw)
    return MSCANetConfig(**base)


def make_model(**kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random-init VGG warning
        return MSCANet(tiny_config(**kw))


def batch(B=2, S=32, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)

    def onehot():
        # blocky layouts so every scale sees structure
        idx = torch.randint(0, L, (B, 1, S // 8, S // 8), generator=g).float()
        idx = F.interpolate(idx, size=(S, S), mode="nearest")[:, 0].long()
        return F.one_hot(idx, L).permute(0, 3, 1, 2).to(dtype)

    label, ex_label = onehot(), onehot()
    exemplar = (torch.rand(B, 3, S, S, generator=g, dtype=torch.float64) * 2 - 1).to(dtype)
    return label, exemplar, ex_label


@pytest.mark.parametrize("use_vgg", [False, True])
@pytest.mark.parametrize("S", [32, 64])
def test_shapes_range_and_attention(use_vgg, S):
    torch.manual_seed(0)
    model = make_model(use_vgg=use_vgg)
    label, exemplar, ex_label = batch(S=S)
    with torch.no_grad():
        out = model(label, exemplar, ex_label, return_attention=True)
    fake = out["fake"]
    assert fake.shape == (2, 3, S, S)
    assert torch.isfinite(fake).all() and fake.abs().max() <= 1
    cfg = model.cfg
    assert len(out["aligned"]) == len(out["attention"]) == 5
    for i, (fx1, (alpha, beta)) in enumerate(zip(out["aligned"], out["attention"])):
        h = S >> i
        assert fx1.shape == (2, cfg.n_feat, h, h)
        assert alpha.shape == beta.shape == (2, cfg.ks[i], h, h)
        torch.testing.assert_close(alpha.sum(dim=(2, 3)), torch.ones(2, cfg.ks[i]))
        torch.testing.assert_close(beta.sum(dim=1), torch.ones(2, h, h))
        assert (alpha >= 0).all() and (beta >= 0).all()
    # without return_attention there is no attention entry
    with torch.no_grad():
        assert "attention" not in model(label, exemplar, ex_label)


def test_paper_default_ks_and_vgg_frozen():
    model = make_model(use_vgg=True, ks=(8, 16, 16, 16, 16))
    assert [m.k for m in model.msca] == [8, 16, 16, 16, 16]
    assert all(m.mask_mlp is not None for m in model.msca)
    vgg = model.image_encoder.vgg
    assert not any(p.requires_grad for p in vgg.parameters())
    model.train()
    assert not vgg.training
    assert all(m.mask_mlp is None for m in make_model(masking=False).msca)


def test_config_validation():
    with pytest.raises(ValueError):
        tiny_config(ks=(8, 16))
    with pytest.raises(ValueError):
        tiny_config(use_vgg=True, image_channels=1)
    model = make_model()
    label, exemplar, ex_label = batch(S=24)  # not divisible by 16
    with pytest.raises(ValueError):
        model(label, exemplar, ex_label)


@pytest.mark.parametrize("use_vgg", [False, True])
def test_gradients_reach_every_trainable_parameter(use_vgg):
    torch.manual_seed(0)
    model = make_model(use_vgg=use_vgg)
    label, exemplar, ex_label = batch(S=32)
    model(label, exemplar, ex_label)["fake"].square().mean().backward()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert trainable
    for n, p in trainable:
        assert p.grad is not None, n
        assert torch.isfinite(p.grad).all(), n
        assert p.grad.abs().sum() > 0, n
    if use_vgg:
        assert all(p.grad is None for p in model.image_encoder.vgg.parameters())


def test_reference_backend_matches_auto_float64():
    torch.manual_seed(0)
    auto = make_model(backend="auto").double()
    ref = make_model(backend="reference").double()
    ref.load_state_dict(auto.state_dict())
    label, exemplar, ex_label = batch(S=32, dtype=torch.float64)
    out_a = auto(label, exemplar, ex_label, return_attention=True)
    out_r = ref(label, exemplar, ex_label, return_attention=True)
    torch.testing.assert_close(out_a["fake"], out_r["fake"], rtol=1e-9, atol=1e-10)
    for (aa, ba), (ar, br) in zip(out_a["attention"], out_r["attention"]):
        torch.testing.assert_close(aa, ar, rtol=1e-9, atol=1e-10)
        torch.testing.assert_close(ba, br, rtol=1e-9, atol=1e-10)
    # gradients too
    ga = torch.autograd.grad(out_a["fake"].sum(), list(auto.parameters()))
    gr = torch.autograd.grad(out_r["fake"].sum(), list(ref.parameters()))
    for a, r in zip(ga, gr):
        torch.testing.assert_close(a, r, rtol=1e-8, atol=1e-10)


def _overlap(a, b):
    ta, la, ha, wa = a.tolist()
    tb, lb, hb, wb = b.tolist()
    return ta < tb + hb and tb < ta + ha and la < lb + wb and lb < la + wa


@pytest.mark.parametrize("S,crop", [(32, 16), (64, 16), (64, 32), (48, 20)])
def test_crops_non_overlapping_and_deterministic(S, crop):
    g = torch.Generator().manual_seed(0)
    image = torch.rand(6, 3, S, S, generator=g)
    label = torch.rand(6, L, S, S, generator=g)
    pairs = [cross_reconstruction_crops(image, label, crop, torch.Generator().manual_seed(123))
             for _ in range(2)]
    for a, b in zip(pairs[0], pairs[1]):
        assert torch.equal(a, b)
    pair = pairs[0]
    assert pair.x_p.shape == pair.x_q.shape == (6, 3, crop, crop)
    assert pair.c_p.shape == pair.c_q.shape == (6, L, crop, crop)
    for b in range(6):
        bp, bq = pair.box_p[b], pair.box_q[b]
        assert not _overlap(bp, bq)
        for box in (bp, bq):
            t, l, h, w = box.tolist()
            assert 0 <= t and t + h <= S and 0 <= l and l + w <= S
        t, l, h, w = bp.tolist()
        assert torch.equal(pair.x_p[b], image[b, :, t:t + h, l:l + w])
        assert torch.equal(pair.c_p[b], label[b, :, t:t + h, l:l + w])
        t, l, h, w = bq.tolist()
        assert torch.equal(pair.x_q[b], image[b, :, t:t + h, l:l + w])
    # a different seed gives different positions (almost surely over 6 samples)
    other = cross_reconstruction_crops(image, label, crop, torch.Generator().manual_seed(7))
    if S > 2 * crop:
        assert not torch.equal(other.box_p, pair.box_p) or not torch.equal(other.box_q, pair.box_q)
    with pytest.raises(ValueError):
        cross_reconstruction_crops(image, label, S // 2 + 1)


def test_reconstruction_losses_and_adam_step_lowers_global_loss():
    torch.manual_seed(0)
    model = make_model()
    label, image, _ = batch(S=32)
    calls = []

    def fake_vgg(a, b):
        calls.append(a.shape)
        return (a - b).square().mean()

    losses = reconstruction_losses(model, image, label, crop=16, generator=torch.Generator().manual_seed(0),
                                   vgg_loss=fake_vgg)
    assert set(losses) == {"patch_l1", "global_l1", "patch_vgg", "global_vgg", "total", "fake"}
    assert all(v.dim() == 0 and torch.isfinite(v) for k, v in losses.items() if k != "fake")
    assert losses["fake"].shape == image.shape
    assert len(calls) == 3
    expected = losses["patch_l1"] + losses["global_l1"] + losses["patch_vgg"] + losses["global_vgg"]
    torch.testing.assert_close(losses["total"], expected)

    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    before = reconstruction_losses(model, image, label, generator=torch.Generator().manual_seed(0))
    opt.zero_grad()
    before["total"].backward()
    opt.step()
    with torch.no_grad():
        after = reconstruction_losses(model, image, label, generator=torch.Generator().manual_seed(0))
    assert after["global_l1"] < before["global_l1"]
