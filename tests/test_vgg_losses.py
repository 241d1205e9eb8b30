import math
import sys
import warnings

import pytest
import torch

import exsynth.nn.vgg as vgg_mod
from exsynth.losses import (
    VGGLoss, contextual_loss, contextual_loss_layers, gan_feature_matching_loss, gram_matrix,
    hinge_d_loss, hinge_d_loss_fake, hinge_d_loss_real, hinge_g_loss, lsgan_d_loss, lsgan_g_loss,
    style_loss, tv_loss, weighted_l1,
)
from exsynth.nn.vgg import VGG19Features, load_vgg19

CONV_IDX = [0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34]


@pytest.fixture(scope="module")
def vgg():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_vgg19()


@pytest.fixture(scope="module")
def vgg_loss(vgg):
    return VGGLoss(vgg=vgg)


def _coco_name(i):
    names, b, k = {}, 1, 1
    prev = None
    for idx in CONV_IDX:
        if prev is not None and idx - prev == 3:  # a pool in between
            b, k = b + 1, 1
        names[idx] = f"conv{b}_{k}"
        k += 1
        prev = idx
    return names[i]


def _assert_same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


# ----------------------------------------------------------------------------- VGG

def test_layout_and_names():
    net = VGG19Features()
    keys = [k for k in net.state_dict()]
    assert keys == [f"features.{i}.{p}" for i in CONV_IDX for p in ("weight", "bias")]
    assert len(net.features) == 37
    assert _coco_name(34) == "conv5_4" and _coco_name(5) == "conv2_1"


def test_torchvision_roundtrip(tmp_path, vgg):
    sd = {f"features.{k}" if not k.startswith("features.") else k: v.clone() for k, v in vgg.state_dict().items()}
    sd["classifier.0.weight"] = torch.zeros(4, 4)
    sd["classifier.0.bias"] = torch.zeros(4)
    p = tmp_path / "tv.pth"
    torch.save(sd, p)
    net = load_vgg19(p)
    _assert_same_weights(net, vgg)
    assert not net.training and all(not q.requires_grad for q in net.parameters())


def test_cocosnet_roundtrip(tmp_path, vgg):
    sd = {}
    for k, v in vgg.state_dict().items():
        _, idx, param = k.split(".")
        sd[f"{_coco_name(int(idx))}.{param}"] = v.clone()
    assert "conv5_4.weight" in sd and "conv1_1.bias" in sd
    p = tmp_path / "vgg19_conv.pth"
    torch.save(sd, p)
    _assert_same_weights(load_vgg19(str(p)), vgg)


def test_bad_files(tmp_path, vgg):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_vgg19(tmp_path / "nope.pth")
    good = dict(vgg.state_dict())

    def save(sd, name):
        p = tmp_path / name
        torch.save(sd, p)
        return p

    with pytest.raises(ValueError, match="unrecognised"):
        load_vgg19(save({"foo.weight": torch.zeros(1)}, "a.pth"))
    missing = {k: v for k, v in good.items() if not k.startswith("features.34.")}
    with pytest.raises(ValueError, match="missing keys"):
        load_vgg19(save(missing, "b.pth"))
    bad_shape = dict(good)
    bad_shape["features.0.weight"] = torch.zeros(64, 3, 5, 5)
    with pytest.raises(ValueError, match="shape mismatch"):
        load_vgg19(save(bad_shape, "c.pth"))
    with pytest.raises(ValueError, match="unexpected keys"):
        load_vgg19(save({**good, "features.99.weight": torch.zeros(1)}, "d.pth"))
    with pytest.raises(ValueError):
        load_vgg19(save([1, 2, 3], "e.pth"))
    (tmp_path / "garbage.pth").write_bytes(b"not a torch file")
    with pytest.raises(ValueError):
        load_vgg19(tmp_path / "garbage.pth")
    # non-strict: missing tensors tolerated (with a warning)
    with pytest.warns(UserWarning, match="missing"):
        net = load_vgg19(save(missing, "b.pth"), strict=False)
    assert torch.equal(net.features[0].weight, good["features.0.weight"])


def test_random_init_warns_once(monkeypatch):
    monkeypatch.setattr(vgg_mod, "_RANDOM_INIT_WARNED", False)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        load_vgg19()
        load_vgg19()
    msgs = [str(w.message) for w in rec if "random-init" in str(w.message).lower()]
    assert len(msgs) == 1 and "load_vgg19(path)" in msgs[0]


def test_forward_shapes_and_early_stop(vgg):
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    out = vgg(x)
    assert list(out) == ["relu1_2", "relu2_2", "relu3_2", "relu4_2", "relu5_2"]
    expect = {"relu1_2": (64, 64), "relu2_2": (128, 32), "relu3_2": (256, 16),
              "relu4_2": (512, 8), "relu5_2": (512, 4)}
    for name, (c, s) in expect.items():
        assert out[name].shape == (2, c, s, s)
        assert (out[name] >= 0).all()
    all_layers = vgg(x, vgg_mod.VGG19_LAYER_NAMES)
    assert all_layers["relu5_4"].shape == (2, 512, 4, 4)
    assert torch.equal(all_layers["relu3_2"], out["relu3_2"])

    called = []
    hooks = [m.register_forward_hook(lambda m, i, o, j=j: called.append(j)) for j, m in enumerate(vgg.features)]
    try:
        vgg(x[:1, :, :16, :16], layers=("relu2_1",))
    finally:
        for h in hooks:
            h.remove()
    assert max(called) == 6  # conv2_1 is 5, its ReLU is 6
    with pytest.raises(ValueError):
        vgg(x, layers=("relu6_1",))


def test_normalisation(vgg):
    x = torch.zeros(1, 3, 4, 4)
    n = vgg.normalize(x)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    assert torch.allclose(n, (0.5 - mean) / std)


# ----------------------------------------------------------------------------- perceptual losses

def test_vgg_losses_zero_positive_grad(vgg_loss):
    real = torch.rand(1, 3, 32, 32) * 2 - 1
    fake = (real + 0.3 * torch.randn_like(real)).clamp(-1, 1).requires_grad_(True)
    for fn in (vgg_loss.feature_matching, vgg_loss.perceptual, vgg_loss.style):
        assert fn(real, real).item() == 0.0
        loss = fn(fake, real)
        assert loss.item() > 0
        if fn is vgg_loss.feature_matching:  # one backward through VGG is enough (CPU time)
            (g,) = torch.autograd.grad(loss, fake)
            assert torch.isfinite(g).all() and g.abs().sum() > 0
    assert torch.equal(vgg_loss(fake, real), vgg_loss.feature_matching(fake, real))
    cx_self = vgg_loss.contextual(real, real)
    cx = vgg_loss.contextual(fake, real)
    assert cx.item() > cx_self.item() >= 0
    (g,) = torch.autograd.grad(cx, fake)
    assert torch.isfinite(g).all() and g.abs().sum() > 0
    assert vgg_loss.training and not vgg_loss.vgg.training


def test_feature_matching_weights():
    a = {"x": torch.zeros(1, 2, 2, 2), "y": torch.zeros(1, 2, 2, 2)}
    b = {"x": torch.ones(1, 2, 2, 2), "y": torch.full((1, 2, 2, 2), 2.0)}
    assert weighted_l1(a, b, ["x", "y"], [0.5, 0.25]).item() == pytest.approx(0.5 + 0.5)
    with pytest.raises(ValueError):
        weighted_l1(a, b, ["x", "y"], [1.0])


def test_gram_and_style():
    f = torch.randn(2, 3, 4, 5)
    g = gram_matrix(f)
    ref = torch.einsum("nchw,ndhw->ncd", f, f) / (3 * 4 * 5)
    assert torch.allclose(g, ref, atol=1e-6)
    # Gram is invariant to spatial permutation -> style loss zero
    perm = f.flatten(2)[:, :, torch.randperm(20)].reshape_as(f)
    assert style_loss({"a": perm}, {"a": f}, ["a"]).item() == pytest.approx(0.0, abs=1e-10)
    assert style_loss({"a": f * 2}, {"a": f}, ["a"]).item() > 0


def _cx_reference(x, y, h, eps, center):
    """CoCosNet's ContextualLoss_forward, written out with Python loops (float64)."""
    n, c = x.shape[:2]
    out = []
    for b in range(n):
        P = [(i, j) for i in range(x.shape[2]) for j in range(x.shape[3])]
        Q = [(i, j) for i in range(y.shape[2]) for j in range(y.shape[3])]
        if center == "position":      # --PONO: the exemplar's per-position channel mean, both maps
            X = [x[b, :, i, j] - y[b, :, i, j].mean() for i, j in P]
            Y = [y[b, :, i, j] - y[b, :, i, j].mean() for i, j in Q]
        else:                          # the exemplar's per-channel spatial mean
            mu = y[b].reshape(c, -1).mean(1)
            X = [x[b, :, i, j] - mu for i, j in P]
            Y = [y[b, :, i, j] - mu for i, j in Q]
        X = [v / (float(v.norm()) + sys.float_info.epsilon) for v in X]
        Y = [v / (float(v.norm()) + sys.float_info.epsilon) for v in Y]
        d = [[1 - float(xi @ yj) for yj in Y] for xi in X]
        A = []
        for row in d:
            m = min(row)
            w = [math.exp((1 - dij / (m + eps)) / h) for dij in row]
            s = sum(w)
            A.append([wi / s for wi in w])
        cx = sum(max(A[i]) for i in range(len(X))) / len(X)    # mean over generated of max over exemplar
        out.append(-math.log(cx))
    return out


def test_contextual_matches_cocosnets_forward_definition():
    torch.manual_seed(1)
    x = torch.randn(2, 4, 2, 3, dtype=torch.float64)
    y = torch.randn(2, 4, 2, 3, dtype=torch.float64)
    z = torch.randn(2, 4, 3, 2, dtype=torch.float64)
    for h in (0.1, 0.5):
        got = contextual_loss(x, y, bandwidth=h)
        ref = _cx_reference(x, y, h, 1e-3, "position")
        assert torch.allclose(got, torch.tensor(ref, dtype=torch.float64), rtol=1e-9, atol=1e-12), (got, ref)
        got = contextual_loss(x, z, bandwidth=h, center="spatial")    # other sizes: spatial centring
        ref = _cx_reference(x, z, h, 1e-3, "spatial")
        assert torch.allclose(got, torch.tensor(ref, dtype=torch.float64), rtol=1e-9, atol=1e-12), (got, ref)
    # the direction: a generated map made of one exemplar vector matches it well (the exemplar's other
    # vectors do not count), the reverse does not
    y1 = torch.randn(1, 8, 4, 4, dtype=torch.float64)
    one = y1[:, :, :1, :1].expand(-1, -1, 4, 4).clone()
    assert contextual_loss(one, y1, center=None) < contextual_loss(y1, one, center=None)
    with pytest.raises(ValueError, match="center='position' needs maps of one size"):
        contextual_loss(x, z)


def test_contextual_layers_pooling_and_weights():
    f = {"a": torch.randn(2, 8, 8, 8), "b": torch.randn(2, 8, 4, 4)}
    r = {"a": torch.randn(2, 8, 8, 8), "b": torch.randn(2, 8, 4, 4)}
    tot = contextual_loss_layers(f, r, ["a", "b"], [2.0, 4.0], [2, 1])
    pool = torch.nn.functional.avg_pool2d
    want = 2 * contextual_loss(pool(f["a"], 2), pool(r["a"], 2)).mean() + 4 * contextual_loss(f["b"], r["b"]).mean()
    assert tot.item() == pytest.approx(want.item(), rel=1e-6)
    small = contextual_loss_layers(f, r, ["a"], [1.0], None, max_positions=16)
    assert small.item() == pytest.approx(contextual_loss(pool(f["a"], 2), pool(r["a"], 2)).mean().item(), rel=1e-6)


def test_vgg_input_follows_the_weight_format(tmp_path):
    """torchvision weights take ImageNet mean/std RGB; CoCosNet's vgg19_conv.pth takes its
    vgg_preprocess (BGR x 255 minus the mean) - the same convolutions then give the features the
    original code gives."""
    from exsynth.nn.vgg import VGG19_CONV_INDICES, _CONV_NAMES, VGG19Features
    torch.manual_seed(3)
    net = VGG19Features()
    sd = net.features.state_dict()
    torch.save({f"features.{k}": v for k, v in sd.items()}, tmp_path / "tv.pth")
    torch.save({f"{_CONV_NAMES[i]}.{p}": sd[f"{i}.{p}"] for i in VGG19_CONV_INDICES for p in ("weight", "bias")},
               tmp_path / "vgg19_conv.pth")
    tv, coco = load_vgg19(tmp_path / "tv.pth"), load_vgg19(tmp_path / "vgg19_conv.pth")
    assert (tv.input_format, coco.input_format) == ("torchvision", "caffe")
    x = torch.rand(1, 3, 16, 16) * 2 - 1

    def run(inp):   # the conv stack on an already-preprocessed input, up to relu2_2
        h = inp
        for layer in list(net.features)[:9]:
            h = layer(h)
        return h

    # CoCosNet util.vgg_preprocess(x, vgg_normal_correct=True), written out
    t = (x + 1) / 2
    bgr = torch.cat((t[:, 2:3], t[:, 1:2], t[:, 0:1]), dim=1)
    caffe = (bgr - torch.tensor([0.40760392, 0.45795686, 0.48501961]).view(1, 3, 1, 1)) * 255
    torch.testing.assert_close(coco(x, ("relu2_2",))["relu2_2"], run(caffe))
    imnet = ((x + 1) / 2 - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor(
        [0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    torch.testing.assert_close(tv(x, ("relu2_2",))["relu2_2"], run(imnet))
    torch.save({"fc.weight": torch.zeros(2, 2)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="unrecognised VGG19 weight format"):
        load_vgg19(tmp_path / "other.pth")


# ----------------------------------------------------------------------------- GAN losses

def test_hinge_known_values():
    real = torch.tensor([2.0, 0.5, -1.0])   # relu(1-p) = 0, .5, 2 -> mean 5/6
    fake = torch.tensor([-2.0, 0.0, 1.0])   # relu(1+p) = 0, 1, 2 -> mean 1
    assert hinge_d_loss_real(real).item() == pytest.approx(5 / 6)
    assert hinge_d_loss_fake(fake).item() == pytest.approx(1.0)
    assert hinge_d_loss(real, fake).item() == pytest.approx(5 / 6 + 1)
    assert hinge_g_loss(fake).item() == pytest.approx(1 / 3)
    # multi-scale nested lists: last tensor of each scale, averaged over scales
    ms = [[torch.randn(3), fake], [torch.randn(5), torch.tensor([3.0])]]
    assert hinge_g_loss(ms).item() == pytest.approx((1 / 3 + -3.0) / 2)
    assert hinge_d_loss_fake([fake, torch.tensor([-5.0])]).item() == pytest.approx(0.5)


def test_lsgan_known_values():
    real = torch.tensor([1.0, 0.0])   # (p-1)^2 = 0, 1 -> .5
    fake = torch.tensor([0.5, -1.0])  # p^2 = .25, 1 -> .625
    assert lsgan_d_loss(real, fake).item() == pytest.approx(0.5 + 0.625)
    assert lsgan_g_loss(fake).item() == pytest.approx((0.25 + 4.0) / 2)
    assert lsgan_g_loss([[torch.zeros(2), fake], [torch.ones(2)]]).item() == pytest.approx(2.125 / 2)


def test_gan_feature_matching_nested():
    f = [[torch.zeros(2, 2), torch.zeros(3), torch.tensor([9.0])],
         [torch.zeros(4), torch.tensor([5.0])]]
    r = [[torch.ones(2, 2), torch.full((3,), 3.0), torch.tensor([-9.0])],
         [torch.full((4,), 2.0), torch.tensor([0.0])]]
    # scale 0: (1 + 3)/2 = 2 ; scale 1: 2 -> mean 2
    assert gan_feature_matching_loss(f, r).item() == pytest.approx(2.0)
    assert gan_feature_matching_loss(f, r, include_last=True).item() == pytest.approx(((1 + 3 + 18) / 3 + (2 + 5) / 2) / 2)
    assert gan_feature_matching_loss(r, r).item() == 0.0
    x = torch.zeros(3, requires_grad=True)
    loss = gan_feature_matching_loss([[x, torch.zeros(1)]], [[torch.ones(3, requires_grad=True), torch.zeros(1)]])
    loss.backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    with pytest.raises(ValueError):
        gan_feature_matching_loss([[torch.zeros(1)]], [[torch.zeros(1)]])
    with pytest.raises(ValueError):
        gan_feature_matching_loss(f, r[:1])


def test_tv_loss():
    assert tv_loss(torch.full((1, 3, 5, 5), 0.7)).item() == 0.0
    x = torch.tensor([[[[0.0, 1.0], [2.0, 3.0]]]], requires_grad=True)
    # vertical diffs: 2, 2 -> 2 ; horizontal: 1, 1 -> 1
    loss = tv_loss(x)
    assert loss.item() == pytest.approx(3.0)
    loss.backward()
    assert x.grad.abs().sum() > 0
