"""FID Inception-v3 (pytorch-fid variant): layout, loading and features."""
from collections import OrderedDict

import pytest
import torch

from exsynth.nn.inception import FIDInceptionV3, load_fid_inception

# BasicConv2d names per block, as in torchvision/models/inception.py
# (Inception3 with aux_logits=False, num_classes=1008 -- the layout of
# pt_inception-2015-12-05-6726825d.pth).
_STEM = ["Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "Conv2d_3b_1x1", "Conv2d_4a_3x3"]
_A = ["branch1x1", "branch5x5_1", "branch5x5_2", "branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3",
      "branch_pool"]
_B = ["branch3x3", "branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3"]
_C = ["branch1x1", "branch7x7_1", "branch7x7_2", "branch7x7_3", "branch7x7dbl_1", "branch7x7dbl_2",
      "branch7x7dbl_3", "branch7x7dbl_4", "branch7x7dbl_5", "branch_pool"]
_D = ["branch3x3_1", "branch3x3_2", "branch7x7x3_1", "branch7x7x3_2", "branch7x7x3_3", "branch7x7x3_4"]
_E = ["branch1x1", "branch3x3_1", "branch3x3_2a", "branch3x3_2b", "branch3x3dbl_1", "branch3x3dbl_2",
      "branch3x3dbl_3a", "branch3x3dbl_3b", "branch_pool"]
_BLOCKS = {"Mixed_5b": _A, "Mixed_5c": _A, "Mixed_5d": _A, "Mixed_6a": _B, "Mixed_6b": _C, "Mixed_6c": _C,
           "Mixed_6d": _C, "Mixed_6e": _C, "Mixed_7a": _D, "Mixed_7b": _E, "Mixed_7c": _E}
_CONV_KEYS = ["conv.weight", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var"]


def _expected_keys():
    convs = list(_STEM) + [f"{blk}.{br}" for blk, brs in _BLOCKS.items() for br in brs]
    return {f"{c}.{k}" for c in convs for k in _CONV_KEYS} | {"fc.weight", "fc.bias"}


def _strip_counters(sd):
    return OrderedDict((k, v) for k, v in sd.items() if not k.endswith("num_batches_tracked"))


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(1234)
    return FIDInceptionV3().eval()


@pytest.fixture(scope="module")
def weights_file(net, tmp_path_factory):
    path = tmp_path_factory.mktemp("fid") / "inception.pth"
    torch.save(net.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def images():
    g = torch.Generator().manual_seed(7)
    return torch.rand(2, 3, 64, 64, generator=g) * 2 - 1


@pytest.fixture(scope="module")
def feats(net, images):
    with torch.no_grad():
        return net(images)


def test_state_dict_layout_matches_torchvision_inception3(net):
    sd = _strip_counters(net.state_dict())
    assert set(sd) == _expected_keys()
    # 94 BasicConv2d x 5 tensors + fc.weight + fc.bias
    assert len(sd) == 472
    assert sum(1 for _ in net.parameters()) == 94 * 3 + 2
    for key in ("Conv2d_1a_3x3.conv.weight", "Mixed_5b.branch_pool.conv.weight",
                "Mixed_7c.branch3x3dbl_3b.bn.running_var", "Mixed_6e.branch7x7dbl_5.conv.weight",
                "Mixed_7a.branch7x7x3_4.conv.weight", "fc.weight", "fc.bias"):
        assert key in sd, key
    assert sd["Conv2d_1a_3x3.conv.weight"].shape == (32, 3, 3, 3)
    assert sd["Mixed_5b.branch_pool.conv.weight"].shape == (32, 192, 1, 1)
    assert sd["Mixed_5c.branch_pool.conv.weight"].shape == (64, 256, 1, 1)
    assert sd["Mixed_6b.branch7x7_2.conv.weight"].shape == (128, 128, 1, 7)
    assert sd["Mixed_6e.branch7x7dbl_5.conv.weight"].shape == (192, 192, 1, 7)
    assert sd["Mixed_7a.branch3x3_2.conv.weight"].shape == (320, 192, 3, 3)
    assert sd["Mixed_7b.branch1x1.conv.weight"].shape == (320, 1280, 1, 1)
    assert sd["Mixed_7c.branch3x3dbl_3b.conv.weight"].shape == (384, 384, 3, 1)
    assert sd["Mixed_7c.branch3x3dbl_3b.bn.running_var"].shape == (384,)
    assert sd["fc.weight"].shape == (1008, 2048)
    assert sd["fc.bias"].shape == (1008,)
    assert "AuxLogits.fc.weight" not in sd
    # conv without bias, BatchNorm eps=1e-3 (torchvision BasicConv2d)
    assert net.Conv2d_1a_3x3.conv.bias is None
    assert net.Mixed_7c.branch_pool.bn.eps == pytest.approx(1e-3)


def test_features_shape_finite_nonnegative_and_input_dependent(net, images, feats):
    assert feats.shape == (2, 2048)
    assert feats.dtype == torch.float32
    assert torch.isfinite(feats).all()
    assert (feats >= 0).all()
    assert feats.abs().sum() > 0
    # the two images differ, so do their features
    assert not torch.allclose(feats[0], feats[1])
    # and the features track the input, not just the batch position
    with torch.no_grad():
        swapped = net(images.flip(0))
    torch.testing.assert_close(swapped, feats.flip(0))


def test_roundtrip_through_load_fid_inception(net, weights_file, images, feats):
    loaded = load_fid_inception(weights_file)
    assert isinstance(loaded, FIDInceptionV3)
    assert not loaded.training
    assert all(not p.requires_grad for p in loaded.parameters())
    ref = net.state_dict()
    for k, v in loaded.state_dict().items():
        if not k.endswith("num_batches_tracked"):
            assert torch.equal(v, ref[k]), k
    with torch.no_grad():
        out = loaded(images)
    assert torch.equal(out, feats)


def test_load_accepts_wrapped_prefixed_and_counterless_dict(net, tmp_path, images, feats):
    sd = {f"module.{k}": v for k, v in _strip_counters(net.state_dict()).items()}
    path = tmp_path / "wrapped.pth"
    torch.save({"state_dict": sd}, path)
    loaded = load_fid_inception(str(path))
    with torch.no_grad():
        assert torch.equal(loaded(images), feats)


def test_load_none_explains_weights_file():
    with pytest.raises(ValueError, match="pt_inception-2015-12-05") as ei:
        load_fid_inception(None)
    assert "download" in str(ei.value)


def test_load_missing_file(tmp_path):
    path = tmp_path / "nope.pth"
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_fid_inception(path)


def test_load_unreadable_file(tmp_path):
    path = tmp_path / "garbage.pth"
    path.write_bytes(b"this is not a torch file")
    with pytest.raises(ValueError) as ei:
        load_fid_inception(path)
    assert str(path) in str(ei.value)


def test_load_wrong_key(net, tmp_path):
    sd = _strip_counters(net.state_dict())
    sd["Mixed_6c.branch7x7_9.conv.weight"] = sd.pop("Mixed_6c.branch7x7_2.conv.weight")
    path = tmp_path / "wrong_key.pth"
    torch.save(sd, path)
    with pytest.raises(ValueError) as ei:
        load_fid_inception(path)
    msg = str(ei.value)
    assert str(path) in msg
    assert "Mixed_6c.branch7x7_2.conv.weight" in msg  # missing
    assert "Mixed_6c.branch7x7_9.conv.weight" in msg  # unexpected


def test_load_wrong_shape(net, tmp_path):
    sd = _strip_counters(net.state_dict())
    sd["fc.weight"] = torch.zeros(1000, 2048)
    sd["fc.bias"] = torch.zeros(1000)
    path = tmp_path / "wrong_shape.pth"
    torch.save(sd, path)
    with pytest.raises(ValueError) as ei:
        load_fid_inception(path)
    msg = str(ei.value)
    assert str(path) in msg
    assert "fc.weight" in msg and "(1000, 2048)" in msg and "(1008, 2048)" in msg


@pytest.mark.parametrize("shape", [(2, 1, 32, 32), (3, 32, 32), (2, 4, 32, 32), (1, 2, 3, 32, 32)])
def test_wrong_input_shape(net, shape):
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)") as ei:
        net(torch.zeros(shape))
    assert str(tuple(shape)) in str(ei.value)


def test_fid_pool_branches(net):
    """The pytorch-fid patches: avg pool without padded zeros in A, C, E_1; max pool in E_2."""
    F = torch.nn.functional
    g = torch.Generator().manual_seed(3)
    cases = [("Mixed_5b", 192, 32, "avg"), ("Mixed_6b", 768, 192, "avg"),
             ("Mixed_7b", 1280, 192, "avg"), ("Mixed_7c", 2048, 192, "max")]
    for name, cin, cpool, kind in cases:
        block = getattr(net, name)
        x = torch.rand(1, cin, 5, 5, generator=g)
        with torch.no_grad():
            out = block(x)
            if kind == "avg":
                pooled = F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)
                wrong = F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=True)
            else:
                pooled = F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
                wrong = F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)
            ref = block.branch_pool(pooled)
            bad = block.branch_pool(wrong)
        assert out.shape[1] == {"Mixed_5b": 256, "Mixed_6b": 768, "Mixed_7b": 2048, "Mixed_7c": 2048}[name]
        torch.testing.assert_close(out[:, -cpool:], ref)
        assert not torch.allclose(out[:, -cpool:], bad)
