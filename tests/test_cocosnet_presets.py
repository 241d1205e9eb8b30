"""CoCosNet's paper presets (the README training commands of the released code): each one
builds and trains one step at 64 px on its dataset layout; the code's options behave as the
code does (mask warm-up, warp_patch, the generator layout, key pooling, init)."""
import dataclasses
import json
import math
import warnings

import pytest
import torch
import torch.nn.functional as F

from exsynth import cli
from exsynth.models.cocosnet import CODE_ARCHITECTURE, PRESETS, CoCosNet, CoCosNetConfig
from exsynth.registry import data_source
from exsynth.train import TrainConfig
from test_data_ade20k import make_ade
from test_data_celebahq import make_celebahq
from test_data_dense import make_deepfashion

PAPER_PRESETS = ("cocosnet-ade20k", "cocosnet-ade20k-mask", "cocosnet-celebahq", "cocosnet-celebahq-edge",
                 "cocosnet-deepfashion")


def _layout_root(dataset, tmp_path):
    if dataset == "ade20k":
        return make_ade(tmp_path / "ade", n_train=3, n_val=1)
    if dataset == "deepfashion":
        return make_deepfashion(tmp_path / "DeepFashion")[0]
    return make_celebahq(tmp_path / "c")


@pytest.mark.parametrize("preset", PAPER_PRESETS)
def test_paper_preset_trains_one_step_at_64px(tmp_path, capsys, preset):
    # narrower than the presets' width 64 (a step of those, ~100 M parameters with Adam and the
    # checkpoint, takes ~40 s on one core); every other option is the preset's, and the
    # full-width networks are built and run by test_convert.py
    dataset = PRESETS[preset]["dataset"]
    root, out = _layout_root(dataset, tmp_path), tmp_path / "run"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # random-init VGG
        code = cli.main(["train", "--preset", preset, "--data", str(root), "--allow-random-vgg", "--size", "64",
                         "--batch-size", "2", "--steps", "1", "--quiet", "--out", str(out),
                         "--option", "width=16", "--option", "spade_hidden=32", "--disc-width", "16"])
    assert code == 0, capsys.readouterr().err
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["step"] == 1 and math.isfinite(summary["loss"])
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["dataset"] == dataset and cfg["epochs"] is None and cfg["steps"] == 1
    assert cfg["num_classes"] == data_source(dataset).num_classes
    for key, value in CODE_ARCHITECTURE.items():
        if key not in ("adaptor_kernel", "warp_upsample", "width", "spade_hidden"):
            assert cfg["model_options"][key] == value, key


def test_epochs_become_steps_and_warmup_fractions_resolve():
    cfg = TrainConfig.from_dict(dict(PRESETS["cocosnet-ade20k"], data="x"))
    assert cfg.epochs == 200 and cfg.lr_decay_steps == 0.5
    done = cfg.resolve_epochs(20210)            # ADE20k's training set: 631 full batches of 32
    assert done.steps == 200 * 631 and done.epochs is None and done.decay_steps() == 100 * 631
    assert done.mask_warmup_end() == 150 * 631
    # the code lowers the rate after each epoch (update_learning_rate): during epoch k (from 0)
    # the factor is 1 - max(0, k - niter) / niter_decay
    assert done.steps_per_epoch == 631 and done.lr_decay_per == "epoch"
    for k in (0, 99, 100, 101, 150, 199):
        for step in (k * 631, k * 631 + 630):
            assert done.lr_factor(step) == pytest.approx(1 - max(0, k - 100) / 100), (k, step)
    per_step = dataclasses.replace(done, lr_decay_per="step")
    assert per_step.lr_factor(101 * 631 + 630) < done.lr_factor(101 * 631 + 630)
    with pytest.raises(ValueError, match="lr_decay_per must be 'step' or 'epoch', got 'batch'"):
        TrainConfig(lr_decay_per="batch")
    with pytest.raises(ValueError, match="the training set has 20 samples, fewer than one batch of 32"):
        cfg.resolve_epochs(20)
    with pytest.raises(ValueError, match="mask_warmup_steps must be None, a fraction in"):
        TrainConfig(mask_warmup_steps=2.5)


def _onehot(idx, K):
    return F.one_hot(idx, K).permute(0, 3, 1, 2).float().contiguous()


def test_noise_for_mask_warmup_feeds_the_mask_then_noise():
    torch.manual_seed(0)
    K, S = 5, 32
    model = CoCosNet(CoCosNetConfig(label_channels=K, width=8, num_up=3, max_mult=4, spade_hidden=8, maskmix=True,
                                    noise_for_mask=True)).eval()
    g = torch.Generator().manual_seed(1)
    label, ex_label = (_onehot(torch.randint(0, K, (1, S, S), generator=g), K) for _ in range(2))
    exemplar = torch.rand(1, 3, S, S, generator=g) * 2 - 1
    with torch.no_grad():
        warm = [model(label, exemplar, ex_label, mask_warmup=True)["fake"] for _ in range(2)]
        torch.manual_seed(3)
        noisy = model(label, exemplar, ex_label)["fake"]
        torch.manual_seed(3)
        blind = model(label, exemplar)["fake"]          # no exemplar label needed after the warm-up
        other = model(label, exemplar)["fake"]
    assert torch.equal(warm[0], warm[1]) and torch.equal(noisy, blind)
    assert not torch.allclose(noisy, warm[0]) and not torch.allclose(noisy, other)
    with pytest.raises(ValueError, match="maskmix feeds the exemplar's label map"):
        CoCosNet(CoCosNetConfig(label_channels=K, width=8, num_up=3, max_mult=4, spade_hidden=8,
                                maskmix=True))(label, exemplar)


def test_code_mask_loss_matches_the_code_loop():
    from exsynth.models.cocosnet import _code_mask_loss
    g = torch.Generator().manual_seed(0)
    K, S = 6, 16
    gt_idx, ref_idx = torch.randint(0, K, (2, S, S), generator=g), torch.randint(0, 4, (2, S, S), generator=g)
    warp_mask = torch.softmax(torch.randn(2, K, S // 4, S // 4, generator=g), 1)
    # pix2pix_model.compute_generator_loss (warp_mask_losstype direct), weight_mask 1
    ref_label = F.interpolate(ref_idx[:, None].float(), scale_factor=0.25, mode='nearest').long().squeeze(1)
    gt_label = F.interpolate(gt_idx[:, None].float(), scale_factor=0.25, mode='nearest').long().squeeze(1)
    weights = []
    for i in range(ref_label.shape[0]):
        ref_label_uniq, gt_label_uniq = torch.unique(ref_label[i]), torch.unique(gt_label[i])
        zero_label = [it for it in gt_label_uniq if it not in ref_label_uniq]
        weight = torch.ones_like(gt_label[i]).float()
        for j in zero_label:
            weight[gt_label[i] == j] = 0
        weight[gt_label[i] == 0] = 0
        weights.append(weight.unsqueeze(0))
    weights = torch.cat(weights, dim=0)
    want = (F.nll_loss(torch.log(warp_mask + 1e-10), gt_label, reduction="none") * weights).sum() / (weights.sum() + 1e-5)
    got = _code_mask_loss(warp_mask, _onehot(gt_idx, K), _onehot(ref_idx, K))
    assert 0 < weights.sum() < weights.numel()
    torch.testing.assert_close(got, want)


def test_xavier_init_and_pooled_keys():
    from exsynth.nn.blocks import NonLocalBlock
    torch.manual_seed(0)
    model = CoCosNet(CoCosNetConfig(label_channels=4, width=8, num_up=3, max_mult=4, spade_hidden=8, init="xavier",
                                    init_gain=0.02))
    w = model.translation.to_image.weight
    xavier_std = 0.02 * (2 / (w[0].numel() + w.shape[0] * 9)) ** 0.5     # gain * sqrt(2 / (fan_in + fan_out))
    assert abs(w.std().item() - xavier_std) < 0.3 * xavier_std
    assert float(model.translation.to_image.bias.abs().max()) == 0
    block = NonLocalBlock(16, pool_keys=True)
    with torch.no_grad():
        block.gamma.fill_(1.0)
    x = torch.randn(2, 16, 8, 8)
    k, v = F.max_pool2d(block.phi(x), 2).flatten(2), F.max_pool2d(block.g(x), 2).flatten(2)
    attn = torch.softmax(block.theta(x).flatten(2).transpose(1, 2) @ k, -1)          # SAGAN's / the code's
    want = x + block.out((v @ attn.transpose(1, 2)).view(2, 8, 8, 8))
    torch.testing.assert_close(block(x), want)


@pytest.mark.parametrize("d, dv", [(4, 16), (16, 4), (8, 8)])
def test_unscaled_attention_equals_the_materialised_softmax_with_gradients(d, dv):
    from exsynth.nn.blocks import unscaled_attention
    g = torch.Generator().manual_seed(d * 31 + dv)
    q, k = torch.randn(2, 40, d, generator=g, dtype=torch.float64), torch.randn(2, 10, d, generator=g, dtype=torch.float64)
    v = torch.randn(2, 10, dv, generator=g, dtype=torch.float64)
    ins = [t.clone().requires_grad_() for t in (q, k, v)]
    ref = [t.clone().requires_grad_() for t in (q, k, v)]
    got = unscaled_attention(*ins)
    want = torch.softmax(ref[0] @ ref[1].transpose(1, 2), -1) @ ref[2]       # no 1/sqrt(d)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    w = torch.randn(got.shape, generator=g, dtype=torch.float64)
    (got * w).sum().backward()
    (want * w).sum().backward()
    for a, b in zip(ins, ref):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-10, atol=1e-12)


def test_code_discriminator_padding_and_attention():
    from exsynth.nn.blocks import MultiscalePatchDiscriminator, NonLocalBlock
    torch.manual_seed(0)
    label, image = torch.rand(1, 4, 64, 64), torch.rand(1, 3, 64, 64)
    plain = MultiscalePatchDiscriminator(4, width=8, n_layers=4, num_scales=2)
    code = MultiscalePatchDiscriminator(4, width=8, n_layers=4, num_scales=2, padding=1, attention=True)
    # NLayerDiscriminator: padw = int(3 / 2) = 1, so 64 -> 32 -> 16 -> 8 -> 7 -> 6 at the first scale
    assert [f.shape[-1] for f in code(label, image)[0]] == [32, 16, 8, 7, 6]
    assert [f.shape[-1] for f in plain(label, image)[0]] == [33, 17, 9, 10, 11]
    d = code.scales[0]
    assert isinstance(d.attention, NonLocalBlock) and d.attention.pool_keys and d.attention_at == 3
    assert d.attention.theta.weight.shape[:2] == (4, 32) and torch.nn.utils.parametrize.is_parametrized(d.attention.theta)  # SN, C/8
    # the block sits on the stride-1 conv's input: with gamma = 0 it is the identity
    d.eval()   # no power iteration between the two calls
    with torch.no_grad():
        feats = d(torch.cat([label, image], 1))
        d.attention.gamma.fill_(0.5)
        moved = d(torch.cat([label, image], 1))
    assert torch.equal(feats[2], moved[2]) and not torch.allclose(feats[3], moved[3])
    with pytest.raises(ValueError, match="padding must be 1 .* or 2 .*got 3"):
        MultiscalePatchDiscriminator(4, padding=3)
    assert CODE_ARCHITECTURE["disc_attention"] and CODE_ARCHITECTURE["disc_padding"] == 1


def test_generator_adam_eps_follows_the_code(tmp_path):
    from exsynth.train.trainer import Trainer
    cfg = TrainConfig.from_dict(dict(PRESETS["cocosnet-ade20k"], data="synthetic", dataset="synthetic", size=32,
                                     batch_size=1, steps=1, epochs=None, mask_warmup_steps=None, num_classes=6,
                                     allow_random_vgg=True, out=str(tmp_path / "r"), data_options={},
                                     model_options=dict(PRESETS["cocosnet-ade20k"]["model_options"], width=8,
                                                        spade_hidden=8, max_mult=2), disc_width=8))
    assert (cfg.eps_g, cfg.eps_d) == (1e-3, 1e-8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t = Trainer(cfg, quiet=True)
    eps = {k: o.param_groups[0]["eps"] for k, o in t.optimizers.items()}
    assert eps == {"opt_g": 1e-3, "opt_d": 1e-8}
    assert t.discriminators["discriminator"].scales[0].attention is not None
    with pytest.raises(ValueError, match="eps_g must be > 0"):
        TrainConfig(eps_g=0.0)


@pytest.mark.parametrize("warp_patch", [False, True])
def test_warp_self_loss_at_full_resolution_as_the_code(warp_patch):
    from exsynth.models.cocosnet import CoCosNetObjective
    torch.manual_seed(0)
    K, S = 4, 32
    mcfg = CoCosNetConfig(label_channels=K, width=8, num_up=3, max_mult=4, spade_hidden=8, warp_upsample="nearest",
                          warp_patch=warp_patch, warp_loss_at="image")
    model = CoCosNet(mcfg)
    tcfg = TrainConfig(model="cocosnet", num_classes=K, size=S, losses=dict(
        l1=0, feat=0, perc=0, context=0, domain=0, reg=0, warp=1.0, mask=0, adv=0, gan_feat=0))
    obj = CoCosNetObjective(model, tcfg.loss_weights(), "pair", tcfg)
    g = torch.Generator().manual_seed(2)
    label = _onehot(torch.randint(0, K, (2, S, S), generator=g), K)
    image, exemplar = (torch.rand(2, 3, S, S, generator=g) * 2 - 1 for _ in range(2))
    batch = dict(label=label, image=image, exemplar=exemplar, exemplar_label=label)
    _, terms, vis = obj.generator_terms(batch, 0, torch.Generator().manual_seed(0))
    warped = vis["warped"]
    full = warped if warp_patch else F.interpolate(warped, size=(S, S), mode="nearest")  # the code's self.upsampling
    assert full.shape[-1] == S
    torch.testing.assert_close(terms["warp"], F.l1_loss(full, image))


def test_discriminator_loss_times_weight_gan_as_the_code():
    from exsynth.losses.gan import hinge_d_loss
    from exsynth.models.cocosnet import CoCosNetObjective
    torch.manual_seed(0)
    K, S = 4, 32
    model = CoCosNet(CoCosNetConfig(label_channels=K, width=8, num_up=3, max_mult=4, spade_hidden=8,
                                    disc_loss_weight=10.0))
    tcfg = TrainConfig(model="cocosnet", num_classes=K, size=S, disc_width=8, losses=dict(
        l1=0, feat=0, perc=0, context=0, domain=0, reg=0, warp=0, mask=0, adv=10.0, gan_feat=0))
    obj = CoCosNetObjective(model, tcfg.loss_weights(), "pair", tcfg)
    g = torch.Generator().manual_seed(3)
    label = _onehot(torch.randint(0, K, (2, S, S), generator=g), K)
    image, fake = (torch.rand(2, 3, S, S, generator=g) * 2 - 1 for _ in range(2))
    d = obj.discriminators["discriminator"].eval()
    loss, terms = obj.discriminator_terms(dict(label=label, image=image, fake=fake), 0)
    want = hinge_d_loss(d(label, image), d(label, fake))
    torch.testing.assert_close(loss, 10.0 * want)
    torch.testing.assert_close(terms["hinge"], want)
    assert CODE_ARCHITECTURE["disc_loss_weight"] == 10.0
    with pytest.raises(ValueError, match="disc_loss_weight must be > 0, got 0"):
        CoCosNetConfig(label_channels=K, disc_loss_weight=0)
