"""MSCA-Net as the paper trains it (Zheng et al. 2020, Eq. 9-11, Sec. 4): every departure of
exsynth's defaults is a named option, and the msca-cocostuff preset sets the paper's values."""
import json
import warnings

import pytest
import torch
import torch.nn.functional as F

from exsynth.models.msca_net import (
    CrossReconstruction,
    adversarial_d_loss,
    adversarial_g_loss,
    cross_reconstruction_crops,
    self_supervised_passes,
)
from exsynth.nn.blocks import SPADE
from exsynth.nn.normalization import PNSPADE
from exsynth.train import PRESETS, TrainConfig, Trainer
from exsynth.train.trainer import _collate
from exsynth.registry import DrawIndex
from test_data_cocostuff import make_coco
from test_model_msca import L, batch, make_model, tiny_config

K = 6  # the synthetic source's classes


def tiny_cfg(tmp_path, model_options=(), losses=(), **kw):
    """msca on the synthetic set at 32 px, self-supervised, with a small GAN."""
    opts = dict(width=4, use_vgg=False, spade_hidden=8, num_scales=3, ks=(2, 2, 2))
    opts.update(model_options)
    weights = dict(l1=1.0, feat=0.0, perc=0.0, adv=1.0, gan_feat=1.0)
    weights.update(losses)
    d = dict(model="msca", size=32, batch_size=2, steps=4, train_length=8, out=str(tmp_path / "run"),
             supervision="self", disc_width=8, disc_layers=2, model_options=opts, losses=weights,
             log_every=1)
    d.update(kw)
    return TrainConfig(**d)


def first_batch(trainer, n=2):
    return _collate([trainer.dataset[DrawIndex(i, i)] for i in range(n)])


def snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items() if v.is_floating_point()}


def changed(before, module):
    now = module.state_dict()
    return any(not torch.equal(v, now[k]) for k, v in before.items())


def test_preset_is_the_papers_setting():
    p = PRESETS["msca-cocostuff"]
    assert p["dataset"] == "cocostuff" and p["supervision"] == "self"
    assert p["size"] == 512 and p["data_options"]["load_size"] == 512 and p["epochs"] == 40
    assert p["lr_g"] == p["lr_d"] == 2e-4
    m = p["model_options"]
    assert (m["crop"], m["late_crop"], m["late_crop_start"]) == (0.5, 0.75, 0.5)   # 256 -> 384 of 512 after 20/40
    assert m["d_steps_per_g"] == 5 and m["patch_gan"] and m["exemplar_discriminator"]
    assert m["synthesis_norm"] == "batch" and m["synthesis_spectral_norm"] and m["gan_mode"] == "original"
    assert m["ks"] == (8, 16, 16, 16, 16) and m["use_vgg"]
    assert m["vgg_loss_layers"] == "spade" and m["gan_feat_sum_layers"]   # SPADE's L_spade
    assert p["losses"]["l1"] == 0 and p["losses"]["feat"] == 10 and p["losses"]["gan_feat"] == 10
    cfg = tiny_config(**{k: v for k, v in m.items() if k != "use_vgg"})
    assert [cfg.patch_side(512, 512, cfg.crop_fraction(s, 40)) for s in (0, 19, 20, 39)] == [256, 256, 384, 384]


def test_preset_trains_one_step_at_64px_on_cocostuff(tmp_path):
    root = make_coco(tmp_path / "coco")
    d = PRESETS["msca-cocostuff"]
    d.update(data=str(root), size=64, batch_size=2, epochs=None, steps=1, allow_random_vgg=True,
             data_options=dict(load_size=64), out=str(tmp_path / "run"), log_every=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # random VGG, no pair list
        tr = Trainer(TrainConfig(**d), quiet=True)
        d_first = tr.discriminator.scales[0].layers[0][0]
        assert d_first.in_channels == 2 * 183 + 2 * 3          # [c, c_exemplar] + [x, x_exemplar]
        synthesis = list(tr.model.synthesis.modules())
        assert any(isinstance(m, SPADE) and isinstance(m.norm, torch.nn.BatchNorm2d) for m in synthesis)
        assert any("parametrizations" in k for k in tr.model.synthesis.state_dict())
        g0, d0 = snapshot(tr.model), snapshot(tr.discriminator)
        assert tr.run()["step"] == 1
    assert changed(g0, tr.model) and changed(d0, tr.discriminator)   # step 0 updates both
    logs = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert "G/l1" not in logs and {"G/feat", "G/adv", "G/gan_feat", "D/original", "D/patch_original"} <= set(logs)


def test_update_ratio_counts_discriminator_steps(tmp_path):
    tr = Trainer(tiny_cfg(tmp_path, model_options=dict(d_steps_per_g=3), steps=7), quiet=True)
    assert [tr.objective.generator_step(s) for s in range(7)] == [True, False, False, True, False, False, True]
    tr.run()
    steps_taken = {key: max(int(st["step"]) for st in opt.state.values()) for key, opt in tr.optimizers.items()}
    assert steps_taken == {"opt_g": 3, "opt_d": 7}
    # generator steps restart their cycle after attention pre-training, which updates G every step
    pre = Trainer(tiny_cfg(tmp_path, model_options=dict(d_steps_per_g=3, attention_decoder=True), steps=8,
                           attn_pretrain_steps=2, out=str(tmp_path / "pre")), quiet=True)
    assert [pre.objective.generator_step(s) for s in range(8)] == [True, True, True, False, False, True, False, False]


def test_generator_rests_between_its_steps(tmp_path):
    tr = Trainer(tiny_cfg(tmp_path, model_options=dict(d_steps_per_g=2)), quiet=True)
    b = first_batch(tr)
    tr.train_step(b)
    tr.step = 1
    g, d = snapshot(tr.model), snapshot(tr.discriminator)
    logs = tr.train_step(b)
    assert not changed(g, tr.model) and changed(d, tr.discriminator)
    assert "G/l1" in logs and "D/hinge" in logs   # the terms still run for the logs and the fakes


def test_ratio_needs_a_discriminator(tmp_path):
    with pytest.raises(ValueError, match="d_steps_per_g=5 trains the discriminator between generator steps, but no "
                                         "GAN term is on"):
        Trainer(tiny_cfg(tmp_path, model_options=dict(d_steps_per_g=5), losses=dict(adv=0.0, gan_feat=0.0)),
                quiet=True)


@pytest.mark.parametrize("conditioned", [False, True])
def test_exemplar_discriminator_sees_the_exemplar(tmp_path, conditioned):
    tr = Trainer(tiny_cfg(tmp_path, model_options=dict(exemplar_discriminator=conditioned)), quiet=True)
    first = tr.discriminator.scales[0].layers[0][0]
    assert first.in_channels == (2 if conditioned else 1) * (K + 3)
    b = first_batch(tr)
    _, _, visuals = tr.objective.generator_terms(b, 0, torch.Generator().manual_seed(0))
    whole = visuals["global_pass"]
    assert whole.exemplar is whole.target and whole.exemplar_label is whole.label   # D(x, c, x, c) of Eq. 11
    loss, _ = tr.objective.discriminator_terms(visuals, 0)
    other = whole._replace(exemplar=torch.flip(whole.exemplar, dims=[0]), exemplar_label=torch.flip(whole.label, [0]))
    loss_other, _ = tr.objective.discriminator_terms(dict(visuals, global_pass=other), 0)
    assert (not torch.equal(loss, loss_other)) == conditioned


@pytest.mark.parametrize("patch_gan", [False, True])
def test_patch_gan_judges_the_cross_reconstruction(tmp_path, patch_gan):
    tr = Trainer(tiny_cfg(tmp_path, model_options=dict(patch_gan=patch_gan, exemplar_discriminator=True)),
                 quiet=True)
    seen = []
    tr.discriminator.register_forward_pre_hook(lambda m, args: seen.append(tuple(args[1].shape[-2:])))
    b = first_batch(tr)
    _, terms, visuals = tr.objective.generator_terms(b, 0, torch.Generator().manual_seed(0))
    tr.objective.discriminator_terms(visuals, 0)
    patch_calls = [s for s in seen if s == (16, 16)]
    # G terms: fake and real per pass; D terms: real and fake per pass; two patch directions
    assert len(patch_calls) == (8 if patch_gan else 0) and seen.count((32, 32)) == 4
    if patch_gan:
        p = visuals["patch_passes"][0]
        assert p.exemplar.shape == p.target.shape and not torch.equal(p.exemplar, p.target)   # x_q judges x_p


def test_adversarial_losses_by_mode():
    g = torch.Generator().manual_seed(0)
    real = [[torch.randn(2, 4, 3, 3, generator=g), torch.randn(2, 1, 3, 3, generator=g)],
            [torch.randn(2, 1, 2, 2, generator=g)]]
    fake = [[torch.randn(2, 4, 3, 3, generator=g), torch.randn(2, 1, 3, 3, generator=g)],
            [torch.randn(2, 1, 2, 2, generator=g)]]
    logits_r, logits_f = [real[0][1], real[1][0]], [fake[0][1], fake[1][0]]
    expect_g = sum(-torch.log(torch.sigmoid(x)).mean() for x in logits_f) / 2
    expect_d = (sum(-torch.log(torch.sigmoid(x)).mean() for x in logits_r) / 2
                + sum(-torch.log(1 - torch.sigmoid(x)).mean() for x in logits_f) / 2)
    torch.testing.assert_close(adversarial_g_loss(fake, "original"), expect_g)
    torch.testing.assert_close(adversarial_d_loss(real, fake, "original"), expect_d)
    hinge_d = sum(F.relu(1 - r).mean() + F.relu(1 + f).mean() for r, f in zip(logits_r, logits_f)) / 2
    torch.testing.assert_close(adversarial_d_loss(real, fake, "hinge"), hinge_d)
    torch.testing.assert_close(adversarial_g_loss(fake, "hinge"), -sum(f.mean() for f in logits_f) / 2)
    with pytest.raises(ValueError, match="mode must be one of \\('hinge', 'original'\\), got 'wgan'"):
        adversarial_g_loss(fake, "wgan")


def test_synthesis_norm_options_and_default_layout():
    paper = make_model(synthesis_norm="batch", synthesis_spectral_norm=True)
    blocks = list(paper.synthesis.blocks)
    assert all(isinstance(b.norm0, SPADE) and isinstance(b.norm0.norm, torch.nn.BatchNorm2d) for b in blocks)
    assert all(hasattr(b.conv0, "parametrizations") and hasattr(b.conv1, "parametrizations") for b in blocks)
    default = make_model()
    assert all(isinstance(b.norm0, PNSPADE) and not hasattr(b.conv0, "parametrizations")
               for b in default.synthesis.blocks)
    assert not any("parametrizations" in k or "running_mean" in k for k in default.state_dict())
    label, exemplar, ex_label = batch(S=32)
    out = paper(label, exemplar, ex_label)["fake"]
    assert out.shape == (2, 3, 32, 32) and torch.isfinite(out).all()


def test_crop_schedule_and_overlapping_patches(tmp_path):
    cfg = tiny_config(late_crop=0.75, late_crop_start=0.5)
    assert [cfg.crop_fraction(s, 10) for s in (0, 4, 5, 9)] == [0.5, 0.5, 0.75, 0.75]
    assert tiny_config(late_crop=0.75, late_crop_start=3).crop_fraction(3, 100) == 0.75
    assert tiny_config().crop_fraction(99, 100) == 0.5 and cfg.patch_side(64, 80, 0.75) == 48
    tr = Trainer(tiny_cfg(tmp_path, model_options=dict(patch_gan=True, late_crop=0.75, late_crop_start=2)),
                 quiet=True)
    b = first_batch(tr)
    sides = [tr.objective.generator_terms(b, s, torch.Generator().manual_seed(0))[2]["patch_passes"][0].fake.shape[-1]
             for s in (1, 2)]
    assert sides == [16, 24]
    image, label = torch.rand(3, 3, 32, 32), torch.rand(3, L, 32, 32)
    pair = cross_reconstruction_crops(image, label, 24, torch.Generator().manual_seed(1), allow_overlap=True)
    for i in range(3):
        for x, box in ((pair.x_p, pair.box_p), (pair.x_q, pair.box_q)):
            t, l, h, w = box[i].tolist()
            assert h == w == 24 and t + h <= 32 and l + w <= 32
            assert torch.equal(x[i], image[i, :, t:t + h, l:l + w])
    with pytest.raises(ValueError, match="two non-overlapping 24x24 crops do not fit in a 32x32 image "
                                         "\\(allow_overlap=True lets them overlap\\)"):
        cross_reconstruction_crops(image, label, 24)


def test_one_direction_is_eq9():
    model = make_model()
    label, image, _ = batch(S=32)
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    both, whole = self_supervised_passes(model, image, label, 16, g())
    one, _ = self_supervised_passes(model, image, label, 16, g(), both_directions=False)
    assert len(both) == 2 and len(one) == 1
    torch.testing.assert_close(one[0].fake, both[0].fake)
    assert torch.equal(one[0].exemplar, both[1].target) and torch.equal(one[0].target, both[1].exemplar)
    assert isinstance(whole, CrossReconstruction) and whole.fake.shape == image.shape


@pytest.mark.parametrize("option,value,message", [
    ("crop", 0.0, "crop must be a fraction of the shorter side in \\(0, 1\\], got 0.0"),
    ("late_crop", 1.5, "late_crop must be a fraction of the shorter side in \\(0, 1\\], got 1.5"),
    ("late_crop_start", 2.5, "late_crop_start must be a fraction of the run in \\(0, 1\\) or a whole step "
                             "number >= 1, got 2.5"),
    ("gan_mode", "wgan", "gan_mode must be one of \\('hinge', 'original'\\), got 'wgan'"),
    ("d_steps_per_g", 0, "d_steps_per_g must be a whole number >= 1, got 0"),
    ("synthesis_norm", "group", "synthesis_norm must be one of \\('pono', 'batch', 'instance'\\), got 'group'"),
    ("vgg_loss_layers", "pix2pixhd", "vgg_loss_layers must be 'cocosnet' or 'spade', got 'pix2pixhd'"),
])
def test_bad_options_name_themselves(option, value, message):
    with pytest.raises(ValueError, match="MSCANetConfig: " + message):
        tiny_config(**{option: value})


def test_epochs_become_steps(tmp_path):
    tr = Trainer(tiny_cfg(tmp_path, epochs=2, steps=1000), quiet=True)
    assert tr.cfg.steps == 2 * 8 // 2 and tr.cfg.epochs is None   # train_length 8, batch 2


def test_ddp_paper_options_keep_ranks_identical(tmp_path):
    """Under torchrun the discriminator-only steps (no generator autograd) and the conditioned
    patch discriminator train the same on every process."""
    from test_ddp import _run, _summary, _torchrun
    args = ["--preset", "msca-cpu64", "--size", "32", "--num-classes", "4", "--batch-size", "2",
            "--supervision", "self", "--option", "num_scales=3", "--option", "ks=[2,2,2]",
            "--option", "d_steps_per_g=2", "--option", "patch_gan=true", "--option", "exemplar_discriminator=true",
            "--option", "gan_mode=original", "--option", "late_crop=0.75", "--option", "late_crop_start=2",
            "--loss", "adv=1", "--loss", "gan_feat=1", "--disc-layers", "2", "--steps", "3", "--threads", "1",
            "--out", str(tmp_path / "r"), "--quiet"]
    s = _summary(_run(_torchrun() + args))
    assert s["step"] == 3 and s["ranks_identical"] is True


@pytest.mark.parametrize("spade", [False, True])
def test_l_spade_layers_and_gan_feature_sum(tmp_path, spade):
    from exsynth.losses.gan import gan_feature_matching_loss
    from exsynth.losses.perceptual import FEATURE_MATCHING_LAYERS, STYLE_LAYERS
    opts = dict(vgg_loss_layers="spade", gan_feat_sum_layers=True) if spade else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tr = Trainer(tiny_cfg(tmp_path, model_options=opts, losses=dict(feat=1.0), allow_random_vgg=True,
                              disc_layers=3), quiet=True)
    obj = tr.objective
    # SPADE's VGGLoss: relu1_1..relu5_1, weights 1/32..1; exsynth's shared one relu*_2
    assert obj.vgg.fm_layers == (STYLE_LAYERS if spade else FEATURE_MATCHING_LAYERS)
    assert obj.vgg.fm_weights == (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0)
    assert obj.gan_feat_sum_layers is spade
    g = torch.Generator().manual_seed(0)
    fake = [[torch.randn(1, 2, 4, 4, generator=g) for _ in range(4)] for _ in range(2)]
    real = [[torch.randn(1, 2, 4, 4, generator=g) for _ in range(4)] for _ in range(2)]
    per_layer = sum(F.l1_loss(f, r) for sf, sr in zip(fake, real) for f, r in zip(sf[:-1], sr[:-1])) / 2
    want = per_layer if spade else per_layer / 3
    torch.testing.assert_close(gan_feature_matching_loss(fake, real, sum_layers=obj.gan_feat_sum_layers), want)


def test_training_the_vgg_encoder_without_weights_is_refused(tmp_path):
    cfg = tiny_cfg(tmp_path, model_options=dict(use_vgg=True, num_scales=2, ks=(2, 2)))
    with pytest.raises(ValueError, match="image encoder is a frozen ImageNet VGG19 \\(use_vgg\\): pass --vgg FILE"):
        Trainer(cfg, quiet=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        Trainer(tiny_cfg(tmp_path, model_options=dict(use_vgg=True, num_scales=2, ks=(2, 2)), allow_random_vgg=True,
                         out=str(tmp_path / "ok")), quiet=True)
