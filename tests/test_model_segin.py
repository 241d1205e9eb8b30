"""SEGIN: the semantic match against a materialised argmax, the block copy against a loop,
the auxiliary images, gradients, one optimiser step, a checkpoint round trip, bad input, and
train / synthesize / eval through the CLI on tiny configurations."""
import json
import warnings

import pytest
import torch
import torch.nn.functional as F

from exsynth import cli
from exsynth.checkpoint import load_generator, save_checkpoint
from exsynth.losses import tv_loss
from exsynth.models.segin import (SEGIN, SEGINConfig, SEGINDiscriminator, auxiliary_from_photo, auxiliary_from_warp,
                                  block_copy)
from exsynth.nn.blocks import NonLocalBlock2D

TINY = dict(label_channels=1, width=4, downsamples=3, match_layer="relu3_1")


@pytest.fixture(autouse=True)
def _quiet_random_vgg():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # random-init VGG19 (no weights are shipped)
        yield


def _edges(B=2, S=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(B, 1, S, S, generator=g) > 0.85).float(), torch.rand(B, 3, S, S, generator=g) * 2 - 1


def test_semantic_match_is_the_argmax_of_the_materialised_cosine_matrix():
    torch.manual_seed(0)
    m = SEGIN(SEGINConfig(**TINY))
    x, r = _edges()
    got = m.matcher(x, r)
    from exsynth.models.segin import sketch_image
    q = F.normalize(m.matcher.features(sketch_image(x)).flatten(2), dim=1)       # (B, C, Lq)
    k = F.normalize(m.matcher.features(r).flatten(2), dim=1)
    cos = torch.einsum("bcq,bck->bqk", q, k)
    best, index = cos.max(-1)
    # ties (equal cosines) would make any of the tied indices right; random features have none
    assert torch.equal(got["index"].flatten(1), index)
    torch.testing.assert_close(got["cosine"].flatten(1), best, rtol=1e-5, atol=1e-5)
    assert got["block"] == 4 and got["aux"].shape == r.shape


def test_block_copy_equals_a_loop():
    g = torch.Generator().manual_seed(1)
    ref = torch.rand(2, 3, 24, 32, generator=g)
    index = torch.randint(0, 6 * 8, (2, 5, 7), generator=g)
    w = block_copy(ref, index, 4)
    want = torch.zeros(2, 3, 20, 28)
    for b in range(2):
        for i in range(5):
            for j in range(7):
                src = int(index[b, i, j])
                sy, sx = divmod(src, 8)
                want[b, :, 4 * i:4 * i + 4, 4 * j:4 * j + 4] = ref[b, :, 4 * sy:4 * sy + 4, 4 * sx:4 * sx + 4]
    assert torch.equal(w, want)
    with pytest.raises(ValueError, match="not a multiple of the block size 5"):
        block_copy(ref, index, 5)


def test_auxiliary_images_follow_the_codes_recipe():
    g = torch.Generator().manual_seed(2)
    y = torch.rand(3, 3, 64, 64, generator=g) * 1.4 - 0.6         # photos stay below white
    a = auxiliary_from_photo(y, torch.Generator().manual_seed(3))
    b = auxiliary_from_photo(y, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and not torch.equal(a, y)            # deterministic in the generator, changed
    holes = (a == 1).all(1)
    assert holes.any() and holes.float().mean() < 0.5             # white holes, not everything
    assert (a[:, :, :2, :2] == y[:, :, :2, :2]).all()              # patch centres >= 12, half-size <= 8, offsets >= -2
    w = auxiliary_from_warp(y, torch.Generator().manual_seed(4))
    assert (w == 1).all(1).any() and not torch.equal(w, y)


def test_shapes_gradients_and_options():
    torch.manual_seed(0)
    for shared in (True, False):
        m = SEGIN(SEGINConfig(**TINY, shared_weights=shared))
        for mod in m.modules():            # the non-local blocks start as the identity: open them
            if isinstance(mod, NonLocalBlock2D):
                torch.nn.init.ones_(mod.W[1].weight)
        x, r = _edges()
        out = m(x, aux=r)
        assert out["fake"].shape == (2, 3, 64, 64) and out["seg"].shape == (2, 1, 64, 64)
        (out["fake"].square().mean() + out["seg"].square().mean()).backward()
        missing = [n for n, p in m.named_parameters() if p.requires_grad and (p.grad is None or p.grad.abs().sum() == 0)]
        assert not missing, missing
        assert all(p.grad is None for p in m.matcher.parameters())
    shared = sum(p.numel() for p in SEGIN(SEGINConfig(**TINY)).parameters() if p.requires_grad)
    own = sum(p.numel() for p in SEGIN(SEGINConfig(**TINY, shared_weights=False)).parameters() if p.requires_grad)
    assert own > shared
    assert SEGINDiscriminator(8)(torch.rand(2, 3, 64, 64)).shape == (2, 16)          # 8x8 positions / 4
    assert SEGINDiscriminator(4)(torch.rand(1, 3, 256, 256)).shape == (1, 256)      # 256 scores at 256 px


def test_one_step_lowers_the_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    m = SEGIN(SEGINConfig(**TINY, seg_dropout=0.0))
    x, r = _edges()
    y = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(5)) * 2 - 1
    opt = torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=1e-3)

    def loss():
        out = m(x, aux=r)
        return F.l1_loss(out["fake"], y) + tv_loss(out["fake"], "isotropic")

    before = loss()
    opt.zero_grad()
    before.backward()
    opt.step()
    with torch.no_grad():
        after = loss()
    assert after < before


def test_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    m = SEGIN(SEGINConfig(**TINY)).eval()
    x, r = _edges()
    save_checkpoint(tmp_path / "s.pt", m)
    m2, payload = load_generator(tmp_path / "s.pt")
    assert payload["model"] == "segin"
    m2.eval()
    torch.manual_seed(1)
    a = m(x, r)["fake"]
    torch.manual_seed(1)
    b = m2(x, r)["fake"]
    assert torch.equal(a, b)


def test_bad_input_is_named():
    m = SEGIN(SEGINConfig(**TINY))
    x, r = _edges()
    with pytest.raises(ValueError, match="the reference must be the input's size \\(64, 64\\), got \\(32, 32\\)"):
        m(x, r[:, :, :32, :32])
    with pytest.raises(ValueError, match="multiples of 8 \\(downsamples 3\\), got \\(60, 60\\)"):
        m(x[:, :, :60, :60], r[:, :, :60, :60])
    with pytest.raises(ValueError, match="label must be \\(B, 1, H, W\\)"):
        m(torch.zeros(2, 3, 64, 64), r)
    with pytest.raises(ValueError, match="feature_loss must be 'l1' or 'mse'"):
        SEGINConfig(label_channels=1, feature_loss="l2")
    m4 = SEGIN(SEGINConfig(label_channels=1, width=4, downsamples=2, match_layer="relu4_1"))
    with pytest.raises(ValueError, match="multiples of 8 \\(the relu4_1 grid\\), got 36x36"):
        m4.matcher(torch.zeros(1, 1, 36, 36), torch.zeros(1, 3, 36, 36))


def test_train_synthesize_eval_through_the_cli(tmp_path, capsys):
    out = tmp_path / "r"
    args = ["train", "--model", "segin", "--dataset", "synthetic-edges", "--size", "32", "--batch-size", "2",
            "--steps", "4", "--quiet", "--out", str(out), "--train-length", "8", "--option", "width=4",
            "--option", "downsamples=2", "--option", "match_layer=relu3_1", "--disc-width", "4",
            "--loss", "feat=0", "--option", "label_flip_steps=2"]
    assert cli.main(args) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["step"] == 4
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["num_classes"] == 1 and cfg["supervision"] == "auto"
    ck = str(out / "checkpoints" / "latest.pt")
    assert cli.main(["eval", "--checkpoint", ck, "--length", "4", "--quiet", "--json", str(tmp_path / "e.json")]) == 0
    rec = json.loads((tmp_path / "e.json").read_text())
    assert rec["dataset"] == "synthetic-edges" and {"model", "warped", "class_mean"} <= set(rec["results"])
    capsys.readouterr()
    # synthesize from files: an edge map (.npy, 1 channel) and a reference photo
    import numpy as np
    from exsynth.imageio import write_image
    x, r = _edges(1, 32)
    np.save(tmp_path / "x.npy", x[0].numpy())
    write_image(r[0], tmp_path / "r.png")
    assert cli.main(["synthesize", "--checkpoint", ck, "--input", str(tmp_path / "x.npy"), "--exemplar",
                     str(tmp_path / "r.png"), "--out", str(tmp_path / "o.png"), "--warped", "--correspondence"]) == 0
    assert (tmp_path / "o.png").is_file() and (tmp_path / "o_warped.png").is_file()
    # resume continues the same run
    assert cli.main(["train", "--out", str(out), "--resume", "--steps", "5", "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["step"] == 5


def _ab_folder(root, n=3, S=32):
    from exsynth.imageio import write_image
    g = torch.Generator().manual_seed(9)
    for i in range(n):
        a = torch.ones(3, S, S)
        a[:, 8:24, 8] = -1                                  # black lines on white
        a[:, 8, 8:24] = -1
        b = torch.ones(3, S, S)                             # a "shoe" on white
        b[:, 10:22, 10:22] = torch.rand(3, 1, 1, generator=g) * 1.2 - 0.9
        write_image(torch.cat([a, b], -1), root / "train" / f"{i}_AB.jpg")
    write_image(torch.cat([a, b], -1), root / "val" / "9_AB.jpg")
    return root


def test_edges2photos_layout_and_training(tmp_path, capsys):
    from exsynth.data.edges2photos import EdgesToPhotosDataset
    from exsynth.imageio import ImageError
    root = _ab_folder(tmp_path / "shoes")
    ds = EdgesToPhotosDataset(root, 32)
    s = ds[0]
    assert s["label"].shape == (1, 32, 32) and s["image"].shape == (3, 32, 32) and s["mask"].shape == (1, 32, 32)
    assert s["label"][0, 16, 8] > 0.8 and s["label"][0, 2, 2] < 0.2          # the line, the white paper
    assert s["mask"][0, 16, 16] == 1 and s["mask"][0, 2, 2] == -1            # the shoe, the background
    with pytest.raises(ImageError, match="not a pix2pix A\\|B layout: expected train/"):
        EdgesToPhotosDataset(tmp_path, 32)
    assert cli.main(["train", "--model", "segin", "--dataset", "edges2photos", "--data", str(root), "--size", "32",
                     "--batch-size", "2", "--steps", "2", "--quiet", "--out", str(tmp_path / "r"), "--option",
                     "width=4", "--option", "downsamples=2", "--option", "match_layer=relu3_1", "--disc-width", "4",
                     "--loss", "feat=0"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["step"] == 2


def test_tv_forms():
    x = torch.zeros(2, 1, 3, 3)
    x[:, :, 1, 1] = 1.0
    # isotropic: pixels (0,1) and (1,0) differ by 1 in one direction, (1,1) by 1 in both: (1 + 1 + 2**0.5) / 4
    # (the sqrt holds 1e-8 against a NaN gradient at 0: the flat position adds 1e-4 / 4)
    assert tv_loss(x, "isotropic").item() == pytest.approx((2 + 2 ** 0.5 + 1e-4) / 4, rel=1e-6)
    # squared: per image 2 vertical and 2 horizontal unit steps over 6 / 6 differences, x 2 / B
    assert tv_loss(x, "squared").item() == pytest.approx(2 * (2 * 2 / 6 + 2 * 2 / 6) / 2, rel=1e-6)
    assert tv_loss(x).item() == pytest.approx(4 / 12 + 4 / 12, rel=1e-6)


def test_match_cache_stays_within_its_budget():
    from exsynth.models.segin import SEGINObjective
    from exsynth.train import TrainConfig
    one = 3 * 32 * 32 * 4                                    # bytes of one W at 32 px
    cfg = TrainConfig(model="segin", dataset="synthetic-edges", size=32, num_classes=1, disc_width=4)
    torch.manual_seed(0)
    m = SEGIN(SEGINConfig(label_channels=1, width=4, downsamples=2, match_layer="relu3_1",
                          match_cache_mb=2.5 * one / 2 ** 20))    # room for two
    obj = SEGINObjective(m, {**cfg.loss_weights(), "feat": 0.0}, "self", cfg)
    x, r = _edges(4, 32)
    direct = m.matcher(x, r)["aux"]
    for start in range(0, 4, 2):
        got = obj._warp({"index": torch.tensor([start, start + 1])}, x[start:start + 2], r[start:start + 2])
        torch.testing.assert_close(got, direct[start:start + 2])
        assert obj._cache_bytes <= 2.5 * one and len(obj._warp_cache) == 2
    assert list(obj._warp_cache) == [2, 3]                  # the least recently used went first
    # a cached W is what the matcher gives
    torch.testing.assert_close(obj._warp({"index": torch.tensor([3])}, x[3:], r[3:]), direct[3:])
    with pytest.raises(ValueError, match="match_cache_mb must be >= 0"):
        SEGINConfig(label_channels=1, match_cache_mb=-1)
