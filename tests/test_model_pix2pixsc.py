"""pix2pixSC: the generator's layout, both discriminators, the adaptive loss against hand-computed
values, the schedule, gradients, one optimiser step, a checkpoint round trip, bad input, the
synthetic-video pairs' rule, and train / synthesize / eval through the CLI on tiny configurations."""
import json
import warnings

import numpy as np
import pytest
import torch

from exsynth import cli
from exsynth.checkpoint import load_generator, save_checkpoint
from exsynth.data.synthetic_video import SyntheticVideoDataset, SyntheticVideoOptions, pair_frames, synthetic_clip
from exsynth.models.pix2pixsc import (GlobalGenerator, Pix2PixSC, Pix2PixSCConfig, Pix2PixSCObjective,
                                      semantic_consistency_loss)
from exsynth.registry import DrawIndex
from exsynth.train import TrainConfig

TINY = dict(label_channels=4, width=4, downsamples=2, blocks=1, disc_layers=2, sc_layers=("relu1_1", "relu2_1"))


@pytest.fixture(autouse=True)
def _quiet_random_vgg():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # random-init VGG19 (no weights are shipped)
        yield


def _batch(B=2, K=4, S=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    lab = torch.randint(0, K, (B, S, S), generator=g)
    oh = torch.nn.functional.one_hot(lab, K).permute(0, 3, 1, 2).float()
    ex_lab = torch.randint(0, K, (B, S, S), generator=g)
    ex_oh = torch.nn.functional.one_hot(ex_lab, K).permute(0, 3, 1, 2).float()
    img = lambda: torch.rand(B, 3, S, S, generator=g) * 2 - 1  # noqa: E731
    return dict(label=oh, image=img(), photo=img(), exemplar=img(), exemplar_label=ex_oh, consistent=img(),
                inconsistent=img(), same_style=torch.tensor([1.0, 0.0])[:B])


def test_generator_is_pix2pixhds_global_generator():
    g = GlobalGenerator(33, 3, 64, 4, 9)
    convs = [m for m in g.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    # c7s1-64, d128, d256, d512, d1024, 9 x R1024 (2 convs each), u512, u256, u128, u64, c7s1-3
    widths = [m.out_channels for m in convs]
    assert widths == [64, 128, 256, 512, 1024] + [1024] * 18 + [512, 256, 128, 64, 3]
    assert convs[0].in_channels == 33 and convs[0].kernel_size == (7, 7) and convs[-1].kernel_size == (7, 7)
    x = torch.rand(1, 33, 32, 32)
    assert GlobalGenerator(33, 3, 4, 4, 1)(x).shape == (1, 3, 32, 32)


def test_adaptive_loss_matches_hand_computation():
    torch.manual_seed(0)
    fake = {"relu1_1": torch.rand(2, 3, 4, 4), "relu2_1": torch.rand(2, 5, 2, 2)}
    real = {k: torch.rand_like(v) for k, v in fake.items()}
    same = torch.tensor([1.0, 0.0])
    d = {k: (fake[k] - real[k]).abs() for k in fake}
    # paper: consistent sample: sums (weight 1 per element); inconsistent: means (1/M_i)
    want = 0.5 * (sum(d[k][0].sum() for k in d) + sum(d[k][1].mean() for k in d))
    torch.testing.assert_close(semantic_consistency_loss(fake, real, same, "paper"), want)
    # code: (w_HD + 2 same) x mean, w_HD = 1/32, 1/16
    w = {"relu1_1": 1 / 32, "relu2_1": 1 / 16}
    want = 0.5 * (sum((w[k] + 2) * d[k][0].mean() for k in d) + sum(w[k] * d[k][1].mean() for k in d))
    torch.testing.assert_close(semantic_consistency_loss(fake, real, same, "code"), want)


def test_schedule_switches_sc_adv_on_after_a_quarter():
    c = Pix2PixSCConfig(label_channels=3)
    assert [c.sc_adv_multiplier(s, 100) for s in (0, 24, 25, 99)] == [0.0, 0.0, 1.0, 1.0]
    ramp = Pix2PixSCConfig(label_channels=3, sc_adv_schedule=((0, 0), (0.5, 0.1), (0.75, 1)))
    assert [ramp.sc_adv_multiplier(s, 100) for s in (10, 50, 80)] == [0.0, 0.1, 1.0]
    with pytest.raises(ValueError, match="sc_adv_schedule must start at fraction 0"):
        Pix2PixSCConfig(label_channels=3, sc_adv_schedule=((0.2, 1.0),))


def _objective(tmp_path=None, steps=8, **model_kw):
    cfg = TrainConfig(model="pix2pixsc", dataset="synthetic-video", size=32, num_classes=4, steps=steps,
                      disc_width=4, allow_random_vgg=True, out=str(tmp_path or "unused"))
    torch.manual_seed(0)
    m = Pix2PixSC(Pix2PixSCConfig(**{**TINY, **model_kw}))
    return m, Pix2PixSCObjective(m, cfg.loss_weights(), "pair", cfg)


def test_gradients_reach_every_parameter_and_each_discriminator():
    m, obj = _objective()
    batch = _batch()
    total, terms, vis = obj.generator_terms(batch, step=7, gen=torch.Generator().manual_seed(0))
    assert set(terms) == {"adv", "sc_adv", "sc"} and all(torch.isfinite(v) for v in terms.values())
    total.backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing, missing
    assert vis["fake"].shape == (2, 3, 32, 32)
    obj.discriminators.zero_grad()
    d_loss, d_terms = obj.discriminator_terms(vis, 7)
    assert set(d_terms) == {"real", "style"}
    d_loss.backward()
    for name, d in obj.discriminators.items():
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in d.parameters()), name
    # in the first quarter G has no L_SCAdv term (D_SC still trains)
    _, early, _ = obj.generator_terms(batch, step=0, gen=torch.Generator().manual_seed(0))
    assert "sc_adv" not in early
    # D_SC with labels: [x, image, F(I), I]
    m2, obj2 = _objective(sc_disc_labels=True)
    assert obj2.discriminators["d_style"].layers[0][0].in_channels == 6 + 2 * 4
    t2, _, v2 = obj2.generator_terms(batch, step=7, gen=torch.Generator().manual_seed(0))
    obj2.discriminator_terms(v2, 7)[0].backward()


def test_one_step_lowers_the_loss_on_a_fixed_batch():
    m, obj = _objective(sc_loss="code")
    batch = _batch()
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    obj.discriminators.requires_grad_(False)
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    before, _, _ = obj.generator_terms(batch, 7, gen())
    opt.zero_grad()
    before.backward()
    opt.step()
    with torch.no_grad():
        after, _, _ = obj.generator_terms(batch, 7, gen())
    assert after < before


def test_without_video_pairs_another_exemplar_is_the_inconsistent_one():
    m, obj = _objective()
    batch = _batch()
    for k in ("photo", "same_style", "consistent", "inconsistent"):
        batch.pop(k)
    _, _, vis = obj.generator_terms(batch, 7, torch.Generator().manual_seed(0))
    assert torch.equal(vis["image"], batch["image"]) and torch.equal(vis["consistent"], batch["exemplar"])
    assert torch.equal(vis["inconsistent"], batch["exemplar"].roll(1, 0))
    one = {k: v[:1] for k, v in batch.items()}
    with pytest.raises(ValueError, match="batch_size must be >= 2"):
        obj.generator_terms(one, 7, torch.Generator().manual_seed(0))


def test_checkpoint_round_trip(tmp_path):
    m = Pix2PixSC(Pix2PixSCConfig(**TINY)).eval()
    b = _batch()
    save_checkpoint(tmp_path / "p.pt", m)
    m2, payload = load_generator(tmp_path / "p.pt")
    assert payload["model"] == "pix2pixsc" and payload["model_config"]["sc_layers"] == ["relu1_1", "relu2_1"]
    args = (b["label"], b["exemplar"], b["exemplar_label"])
    assert torch.equal(m(*args), m2(*args))


def test_bad_input_is_named():
    m = Pix2PixSC(Pix2PixSCConfig(**TINY))
    b = _batch()
    with pytest.raises(ValueError, match=r"label must be \(B, 4, H, W\), got \(2, 3, 32, 32\)"):
        m(b["label"][:, :3], b["exemplar"], b["exemplar_label"])
    with pytest.raises(ValueError, match=r"exemplar must be \(B, 3, 32, 32\) like the label, got \(2, 3, 16, 16\)"):
        m(b["label"], b["exemplar"][..., :16, :16], b["exemplar_label"])
    with pytest.raises(ValueError, match="exemplar_label must be given"):
        m(b["label"], b["exemplar"])
    with pytest.raises(ValueError, match="sc_loss must be 'paper' or 'code', got 'l2'"):
        Pix2PixSCConfig(label_channels=3, sc_loss="l2")
    with pytest.raises(ValueError, match="sc_layers must be a non-empty subset"):
        Pix2PixSCConfig(label_channels=3, sc_layers=("relu9_9",))
    m_blind = Pix2PixSC(Pix2PixSCConfig(**TINY, exemplar_label=False))
    assert m_blind(b["label"], b["exemplar"]).shape == (2, 3, 32, 32)


def test_synthetic_video_pairs_obey_the_rule():
    opts = SyntheticVideoOptions(clips=5, frames=12, window=3, same_clip_probability=0.5)
    ds = SyntheticVideoDataset(32, 4, length=40, split="train", seed=3, options=opts)
    same = 0
    for i in range(40):
        s = ds[DrawIndex(i, 1000 + i)]
        clip = ds.clip(s["clip"])
        # the label is exact: the clip's frame layout; the photo its rendering
        lab = clip.layout(s["frame"])
        assert torch.equal(s["label_index"], torch.from_numpy(lab))
        assert torch.equal(s["photo"], clip.frame(s["frame"]))
        # the consistent frame is a frame of the same clip within the window, not frame t itself
        near = [t for t in range(12) if t != s["frame"] and abs(t - s["frame"]) <= 3]
        assert any(torch.equal(s["consistent"], clip.frame(t)) for t in near)
        # the inconsistent one is no frame of this clip
        assert not any(torch.equal(s["inconsistent"], clip.frame(t)) for t in range(12))
        if float(s["same_style"]):
            same += 1
            assert torch.equal(s["exemplar"], s["consistent"]) and torch.equal(s["image"], s["photo"])
        else:
            assert torch.equal(s["exemplar"], s["inconsistent"]) and not torch.equal(s["image"], s["photo"])
    assert 5 < same < 35
    # the test split always exemplifies with another clip, whose exact rendering is the image
    test = SyntheticVideoDataset(32, 4, length=4, split="test", seed=3, options=opts)
    s = test[0]
    assert float(s["same_style"]) == 0 and torch.equal(s["exemplar"], s["inconsistent"])
    rng = np.random.default_rng(0)
    for _ in range(200):
        c, t, t2, o, u = pair_frames(rng, 3, 5, 2)
        assert c != o and t != t2 and abs(t - t2) <= 2 and 0 <= u < 5
    with pytest.raises(ValueError, match="at least 2 clips"):
        pair_frames(rng, 1, 5, 2)
    with pytest.raises(ValueError, match="clips must be >= 2"):
        SyntheticVideoOptions(clips=1)
    # every class of the clip is visible at frame 0, and shapes move
    clip = synthetic_clip(0, "train", 0, 64, 6)
    assert len(np.unique(clip.layout(0))) == 6 and not np.array_equal(clip.layout(0), clip.layout(10))


def test_train_synthesize_eval_through_the_cli(tmp_path, capsys):
    out = tmp_path / "r"
    args = ["train", "--model", "pix2pixsc", "--dataset", "synthetic-video", "--size", "32", "--batch-size", "2",
            "--steps", "4", "--quiet", "--out", str(out), "--train-length", "8", "--num-classes", "4",
            "--option", "width=4", "--option", "downsamples=2", "--option", "blocks=1",
            "--option", "disc_layers=2", "--disc-width", "4", "--allow-random-vgg",
            "--data-option", "clips=4", "--data-option", "frames=6"]
    assert cli.main(args) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["step"] == 4
    ck = str(out / "checkpoints" / "latest.pt")
    assert cli.main(["eval", "--checkpoint", ck, "--length", "4", "--quiet", "--json", str(tmp_path / "e.json")]) == 0
    rec = json.loads((tmp_path / "e.json").read_text())
    assert rec["dataset"] == "synthetic-video" and {"model", "class_mean"} <= set(rec["results"])
    acc = rec["model_metrics"]
    assert 0 <= acc["style_accuracy"] <= 1 and acc["style_pairs"] == 4
    capsys.readouterr()
    from exsynth.imageio import write_image, write_label
    s = SyntheticVideoDataset(32, 4, length=1, split="test").__getitem__(0)
    write_label(s["label_index"], tmp_path / "x.png")
    write_image(s["exemplar"], tmp_path / "r.png")
    write_label(s["exemplar_label"].argmax(0), tmp_path / "rl.png")
    assert cli.main(["synthesize", "--checkpoint", ck, "--input", str(tmp_path / "x.png"), "--exemplar",
                     str(tmp_path / "r.png"), "--exemplar-label", str(tmp_path / "rl.png"),
                     "--out", str(tmp_path / "o.png")]) == 0
    assert (tmp_path / "o.png").is_file()
    capsys.readouterr()
    # a one-way model refuses --direction, naming it, before reading any file
    assert cli.main(["synthesize", "--checkpoint", ck, "--input", str(tmp_path / "missing.png"), "--exemplar",
                     str(tmp_path / "r.png"), "--direction", "b2a", "--out", str(tmp_path / "b.png")]) == 2
    err = capsys.readouterr().err
    assert "--direction 'b2a': the pix2pixsc model translates one way only (drop --direction)" in err
    assert cli.main(["train", "--out", str(out), "--resume", "--steps", "5", "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["step"] == 5


def _group_folder(root, groups=("sunny", "sunny", "night", "night", "fog", "lonely")):
    from exsynth.imageio import write_image, write_label
    g = torch.Generator().manual_seed(4)
    for i, grp in enumerate(groups):
        write_image(torch.rand(3, 16, 16, generator=g) * 2 - 1, root / "images" / f"{i}.png")
        write_label(torch.randint(0, 3, (16, 16), generator=g), root / "labels" / f"{i}.png")
    (root / "groups.txt").write_text("".join(f"{i}.png {grp}\n" for i, grp in enumerate(groups)) + "# a comment\n")
    return root


def test_style_groups_pair_within_and_across_groups(tmp_path):
    from exsynth.data.folder import FolderOptions, StyleGroupDataset
    from exsynth.imageio import ImageError
    from exsynth.registry import data_source
    root = _group_folder(tmp_path)
    opts = dict(groups=str(root / "groups.txt"), same_group_probability=0.5)
    ds = data_source("folder").make(root, size=16, num_classes=3, options=opts, seed=1)
    assert isinstance(ds, StyleGroupDataset) and data_source("folder").exemplars_for(opts)
    assert len(ds) == 4          # "fog" and "lonely" have no second image: never a sample's own group
    group_of = {str(img): grp for (lab, img), grp in zip(ds.pairs, ds.group)}
    images = [str(img) for (_, img) in ds.pairs]
    from exsynth.imageio import read_image

    def which(t):
        return next(p for p in images if torch.equal(read_image(p, (16, 16), resize=True), t))
    seen_same = 0
    for i in range(20):
        s = ds[DrawIndex(i % len(ds), i)]
        me = which(s["image"])
        assert group_of[which(s["consistent"])] == group_of[me] and which(s["consistent"]) != me
        assert group_of[which(s["inconsistent"])] != group_of[me]
        seen_same += int(float(s["same_style"]))
        assert torch.equal(s["exemplar"], s["consistent"] if float(s["same_style"]) else s["inconsistent"])
    assert 0 < seen_same < 20
    (root / "one.txt").write_text("0.png a\n1.png a\n")
    with pytest.raises(ImageError, match="at least 2 groups"):
        StyleGroupDataset(root, (16, 16), 3, FolderOptions(groups=str(root / "one.txt")))
    with pytest.raises(ValueError, match="not both"):
        FolderOptions(groups="a", pairs="b")
    (root / "bad.txt").write_text("0.png\n")
    with pytest.raises(ImageError, match="bad.txt:1: expected 'name group'"):
        StyleGroupDataset(root, (16, 16), 3, FolderOptions(groups=str(root / "bad.txt")))
    # one training step on the style-group folder
    out = tmp_path / "run"
    assert cli.main(["train", "--model", "pix2pixsc", "--dataset", "folder", "--data", str(root), "--size", "16",
                     "--batch-size", "2", "--steps", "2", "--quiet", "--out", str(out), "--num-classes", "3",
                     "--option", "width=4", "--option", "downsamples=2", "--option", "blocks=1",
                     "--option", "disc_layers=2", "--disc-width", "4", "--allow-random-vgg",
                     "--data-option", f"groups={root / 'groups.txt'}"]) == 0
    assert (out / "checkpoints" / "latest.pt").is_file()


def test_resume_equals_the_uninterrupted_run_and_amp_trains(tmp_path, capsys):
    base = ["train", "--model", "pix2pixsc", "--dataset", "synthetic-video", "--size", "32", "--batch-size", "2",
            "--quiet", "--train-length", "8", "--num-classes", "4", "--allow-random-vgg", "--disc-width", "4",
            "--option", "width=4", "--option", "downsamples=2", "--option", "blocks=1", "--option", "disc_layers=2",
            "--data-option", "clips=4", "--data-option", "frames=6", "--lr-decay-steps", "0.5"]
    assert cli.main(base + ["--steps", "4", "--out", str(tmp_path / "full")]) == 0
    assert cli.main(base + ["--steps", "1", "--out", str(tmp_path / "part")]) == 0   # before L_SCAdv switches on
    assert cli.main(["train", "--out", str(tmp_path / "part"), "--resume", "--steps", "4", "--quiet"]) == 0
    load = lambda run: torch.load(tmp_path / run / "checkpoints" / "latest.pt", weights_only=True)  # noqa: E731
    a, b = load("full"), load("part")
    for key in ("generator", "d_real", "d_style"):
        assert all(torch.equal(a[key][k], b[key][k]) for k in a[key]), key
    # bf16 autocast on the CPU
    assert cli.main(base + ["--steps", "1", "--amp", "--out", str(tmp_path / "amp")]) == 0
    capsys.readouterr()


def test_exemplar_roll_moves_i_and_f_of_i_together_in_training_only(tmp_path):
    from exsynth.models.pix2pixsc import roll_exemplar
    b = _batch(B=3)
    ex, exl = b["exemplar"], b["exemplar_label"]
    r, rl = roll_exemplar(ex, exl, torch.Generator().manual_seed(1))
    assert r.shape == ex.shape and rl.shape == exl.shape
    # exact (no resampling): the same pixels and the same pixel-label pairing, only moved
    for i in range(3):
        pairs = lambda a, l: sorted(map(tuple, torch.cat([a[i], l[i]]).flatten(1).T.tolist()))  # noqa: E731
        assert pairs(r, rl) == pairs(ex, exl)
    assert not torch.equal(r, ex)
    r2, _ = roll_exemplar(ex, exl, torch.Generator().manual_seed(1))
    assert torch.equal(r, r2)                                   # a function of the step's generator
    # off (the default): G sees the exemplar as given, the paper's network and checkpoints unchanged
    assert Pix2PixSCConfig(label_channels=3).exemplar_roll is False
    m0, obj0 = _objective()
    m1, obj1 = _objective(exemplar_roll=True)
    assert [p.shape for p in m0.parameters()] == [p.shape for p in m1.parameters()]
    m1.load_state_dict(m0.state_dict())
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    _, _, v0 = obj0.generator_terms(b := _batch(), 7, gen())
    total, terms, v1 = obj1.generator_terms(b, 7, gen())
    assert not torch.allclose(v0["fake"], v1["fake"])           # G saw a moved exemplar
    assert torch.equal(v1["exemplar"], b["exemplar"])           # D_SC judges (G, I) with I as given
    m1.zero_grad()
    total.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m1.parameters())
    # inference (eval mode) is the plain G(x, I, F(I))
    m1.eval()
    args = (b["label"], b["exemplar"], b["exemplar_label"])
    assert torch.equal(m1(*args), m0.eval()(*args))
    # a checkpoint without the option (saved before it existed) loads with it off
    save_checkpoint(tmp_path / "p.pt", m1)
    payload = torch.load(tmp_path / "p.pt", weights_only=True)
    assert payload["model_config"]["exemplar_roll"] is True
    payload["model_config"].pop("exemplar_roll")
    torch.save(payload, tmp_path / "old.pt")
    old, _ = load_generator(tmp_path / "old.pt")
    assert old.cfg.exemplar_roll is False and torch.equal(old(*args), m1(*args))


def test_exemplar_roll_trains_and_evaluates_through_the_cli(tmp_path, capsys):
    out = tmp_path / "r"
    args = ["train", "--model", "pix2pixsc", "--dataset", "synthetic-video", "--size", "32", "--batch-size", "2",
            "--steps", "3", "--quiet", "--out", str(out), "--train-length", "8", "--num-classes", "4",
            "--option", "width=4", "--option", "downsamples=2", "--option", "blocks=1", "--option", "exemplar_roll=true",
            "--option", "disc_layers=2", "--disc-width", "4", "--allow-random-vgg",
            "--data-option", "clips=4", "--data-option", "frames=6"]
    assert cli.main(args) == 0
    ck = str(out / "checkpoints" / "latest.pt")
    _, payload = load_generator(ck)
    assert payload["model_config"]["exemplar_roll"] is True
    assert cli.main(["eval", "--checkpoint", ck, "--length", "4", "--quiet", "--json", str(tmp_path / "e.json")]) == 0
    assert "model" in json.loads((tmp_path / "e.json").read_text())["results"]


def test_adaptive_l1_is_eq6_on_pixels_and_off_by_default():
    from exsynth.models.pix2pixsc import adaptive_l1_loss
    torch.manual_seed(0)
    fake, photo = torch.rand(2, 3, 4, 4), torch.rand(2, 3, 4, 4)
    d = (fake - photo).abs()
    want = 0.5 * (d[0].sum() + d[1].mean())        # consistent: sum (weight 1); inconsistent: mean (1/M)
    torch.testing.assert_close(adaptive_l1_loss(fake, photo, torch.tensor([1.0, 0.0])), want)
    assert Pix2PixSCObjective.default_weights["l1"] == 0.0            # the paper has no pixel term
    m, obj = _objective()
    _, terms, _ = obj.generator_terms(_batch(), 7, torch.Generator().manual_seed(0))
    assert "l1" not in terms
    cfg = TrainConfig(model="pix2pixsc", dataset="synthetic-video", size=32, num_classes=4, steps=8, disc_width=4,
                      losses=dict(l1=10.0, sc=0.0), out="unused")
    torch.manual_seed(0)
    m = Pix2PixSC(Pix2PixSCConfig(**TINY))
    obj = Pix2PixSCObjective(m, cfg.loss_weights(), "pair", cfg)
    assert obj.vgg is None                                           # no VGG needed without L_SC
    total, terms, _ = obj.generator_terms(_batch(), 7, torch.Generator().manual_seed(0))
    assert set(terms) == {"adv", "sc_adv", "l1"}
    total.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.parameters())


def test_region_style_map_matches_hand_computation():
    from exsynth.models.pix2pixsc import region_style_map
    K, S = 3, 4
    ex_idx = torch.tensor([[0, 0, 1, 1]] * 2 + [[1, 1, 1, 1]] * 2)       # class 2 absent from I
    x_idx = torch.tensor([[2, 2, 0, 0], [1, 1, 0, 0], [1, 1, 1, 1], [0, 2, 1, 0]])
    oh = lambda t: torch.nn.functional.one_hot(t, K).permute(2, 0, 1)[None].float()  # noqa: E731
    g = torch.Generator().manual_seed(3)
    ex = torch.rand(1, 3, S, S, generator=g) * 2 - 1
    got = region_style_map(oh(x_idx), ex, oh(ex_idx), "mean_std")
    assert got.shape == (1, 7, S, S)
    for y in range(S):
        for x in range(S):
            c = int(x_idx[y, x])
            sel = ex[0][:, ex_idx == c]                                      # (3, n) pixels of class c in I
            if sel.shape[1] == 0:
                want = torch.zeros(7)
            else:
                want = torch.cat([sel.mean(1), torch.ones(1), sel.std(1, unbiased=False)])
            torch.testing.assert_close(got[0, :, y, x], want, rtol=1e-5, atol=1e-6)
    mean_only = region_style_map(oh(x_idx), ex, oh(ex_idx), "mean")
    torch.testing.assert_close(mean_only, got[:, :4])
    with pytest.raises(ValueError, match="stats must be 'mean' or 'mean_std', got 'median'"):
        region_style_map(oh(x_idx), ex, oh(ex_idx), "median")
    # gradients reach the exemplar through the pooled colours
    exg = ex.clone().requires_grad_(True)
    region_style_map(oh(x_idx), exg, oh(ex_idx), "mean_std").sum().backward()
    assert torch.isfinite(exg.grad).all() and exg.grad.abs().sum() > 0


def test_region_style_option_feeds_g_and_is_off_by_default():
    assert Pix2PixSCConfig(label_channels=3).region_style == "none"
    for name, extra in (("none", 0), ("mean", 4), ("mean_std", 7)):
        m = Pix2PixSC(Pix2PixSCConfig(region_style=name, **{k: v for k, v in TINY.items() if "layers" not in k}))
        assert m.generator.net[1].in_channels == 2 * 4 + 3 + extra
    with pytest.raises(ValueError, match=r"region_style must be one of .*got 'median'"):
        Pix2PixSCConfig(label_channels=3, region_style="median")
    with pytest.raises(ValueError, match="region_style='mean' .* needs exemplar_label=True, got False"):
        Pix2PixSCConfig(label_channels=3, region_style="mean", exemplar_label=False)
    with pytest.raises(ValueError, match="region_style_skip .* needs region_style 'mean' or 'mean_std', got 'none'"):
        Pix2PixSCConfig(label_channels=3, region_style_skip=True)
    # the skip: the pooled map enters the last conv too, after the last instance norm
    tiny = {k: v for k, v in TINY.items() if "layers" not in k}
    skip = Pix2PixSC(Pix2PixSCConfig(region_style="mean_std", region_style_skip=True, **tiny))
    assert skip.generator.net[1].in_channels == 2 * 4 + 3 + 7 and skip.generator.net[-2].in_channels == 4 + 7
    b = _batch()
    out = skip(b["label"], b["exemplar"], b["exemplar_label"])
    assert out.shape == (2, 3, 32, 32)
    # with every weight of the generator's body zeroed, the output is still a function of the
    # exemplar's pooled colours: they reach the last conv past the instance norms
    with torch.no_grad():
        for p in skip.generator.net[:-3].parameters():
            p.zero_()
    recoloured = b["exemplar"].flip(1)
    a0 = skip(b["label"], b["exemplar"], b["exemplar_label"])
    a1 = skip(b["label"], recoloured, b["exemplar_label"])
    assert not torch.allclose(a0, a1)
    plain = Pix2PixSC(Pix2PixSCConfig(region_style="mean_std", **tiny))
    with torch.no_grad():
        for p in plain.generator.net[:-3].parameters():
            p.zero_()
    torch.testing.assert_close(plain(b["label"], b["exemplar"], b["exemplar_label"]),
                               plain(b["label"], recoloured, b["exemplar_label"]))
    with pytest.raises(ValueError, match="skip must be given exactly when skip_channels > 0"):
        skip.generator(torch.rand(1, 18, 32, 32))
    # a finite output, and every weight of G trains with the pooled channels in its input
    torch.manual_seed(0)
    m = Pix2PixSC(Pix2PixSCConfig(region_style="mean", **{k: v for k, v in TINY.items() if "layers" not in k}))
    b = _batch()
    m.eval()
    with torch.no_grad():
        out = m(b["label"], b["exemplar"], b["exemplar_label"])
    assert out.shape == (2, 3, 32, 32) and torch.isfinite(out).all()
    params = [p for p in m.parameters()]
    m.train()
    m(b["label"], b["exemplar"], b["exemplar_label"]).square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in params if p.dim() > 1)
