"""`exsynth convert --from cocosnet`: the released code's networks (tests/official_cocosnet, copied
unmodified from github:microsoft/CoCosNet) built with random weights for each released model's
test options, saved as the code saves them, converted, and run through `exsynth.inference.synthesize`
on the fused ops: the same output as the code's test path for the same label, exemplar and
exemplar label. Files of another network are refused naming the first key that does not fit."""
import argparse
import sys
import types
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from exsynth import cli
from exsynth.checkpoint import load_generator
from exsynth.inference import synthesize

sys.path.insert(0, str(Path(__file__).parent / "official_cocosnet"))
from load import load_networks  # noqa: E402

OFFICIAL = load_networks()
SIZE = 64   # the code builds its networks for --crop_size; 64 keeps the full-width networks quick

# the README's test.py commands, as the option values the networks read (base_options.py defaults
# otherwise; SPADEGenerator sets norm_G spectralspadesyncbatch3x3 for both networks)
TEST_COMMANDS = {
    # --use_attention --maskmix --noise_for_mask --warp_mask_losstype direct --PONO --PONO_C --which_epoch 90
    "cocosnet-ade20k": dict(semantic_nc=151, maskmix=True, noise_for_mask=True, warp_mask_losstype="direct"),
    # --use_attention --maskmix --warp_mask_losstype direct --PONO --PONO_C
    "cocosnet-ade20k-mask": dict(semantic_nc=151, maskmix=True, warp_mask_losstype="direct"),
    # --use_attention --maskmix --warp_mask_losstype direct --PONO --PONO_C --warp_bilinear --adaptor_kernel 4
    "cocosnet-celebahq": dict(semantic_nc=19, maskmix=True, warp_mask_losstype="direct", warp_bilinear=True,
                              adaptor_kernel=4),
    # --use_attention --maskmix --PONO --PONO_C --warp_bilinear --adaptor_kernel 4
    "cocosnet-celebahq-edge": dict(semantic_nc=15, maskmix=True, warp_bilinear=True, adaptor_kernel=4),
    # --use_attention --PONO --PONO_C --warp_bilinear --no_flip --warp_patch --video_like --adaptor_kernel 4
    "cocosnet-deepfashion": dict(semantic_nc=20, warp_bilinear=True, warp_patch=True, adaptor_kernel=4),
}
DENSE = ("cocosnet-celebahq-edge", "cocosnet-deepfashion")


def official_options(**changes) -> argparse.Namespace:
    opt = dict(ngf=64, norm_G="spectralspadesyncbatch3x3", norm_E="spectralinstance", eqlr_sn=False, PONO=True,
               PONO_C=True, apex=False, adaptor_kernel=3, warp_stride=4, adaptor_se=False, adaptor_nonlocal=False,
               adaptor_res_deeper=False, dilation_conv=False, weight_domainC=0.0, domain_rela=False,
               use_coordconv=False, maskmix=False, match_kernel=3, warp_bilinear=False, mask_noise=False,
               isTrain=False, novgg_featpair=10.0, noise_for_mask=False, warp_patch=False, show_corr=False,
               warp_mask_losstype="none", show_warpmask=False, warp_cycle_w=0.0, two_cycle=False, crop_size=SIZE,
               aspect_ratio=1.0, CBN_intype="warp_mask", use_attention=True, mask_epoch=-1, epoch=0)
    opt.update(changes)
    return argparse.Namespace(**opt)


def _randomize(net: torch.nn.Module, seed: int) -> None:
    """Random weights of a useful scale (the code's xavier 0.02 init leaves every output near
    constant), the attention gain and PReLU slopes away from their inits."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith("gamma"):
                p.fill_(0.7)
            elif name.endswith("prelu.weight"):
                p.fill_(0.1 + 0.2 * torch.rand((), generator=g).item())
            elif p.dim() > 1:
                p.copy_(torch.randn(p.shape, generator=g) / p[0].numel() ** 0.5)
            else:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)


def _official_networks(opt, inputs, seed=0):
    corr = OFFICIAL.correspondence.NoVGGCorrespondence(opt)
    G = OFFICIAL.generator.SPADEGenerator(opt)
    _randomize(corr, seed)
    _randomize(G, seed + 1)
    corr.train(), G.train()
    with torch.no_grad():      # one step of spectral norm's power iteration: u, v fit the weights
        official_output(corr, G, *inputs)
    return corr.eval(), G.eval()


def official_output(corr, G, label, exemplar, exemplar_label):
    """Pix2PixModel.inference (CBN_intype warp_mask, the default)."""
    coor_out = corr(exemplar, None, label, exemplar_label, alpha=1)
    CBN_in = torch.cat((coor_out['warp_out'], label), dim=1)
    return G(label, warp_out=CBN_in)


def _inputs(preset, seed=0):
    g = torch.Generator().manual_seed(seed)
    K = TEST_COMMANDS[preset]["semantic_nc"]
    if preset in DENSE:  # edge / pose maps in [0, 1]
        maps = [(torch.rand(1, K, SIZE // 4, SIZE // 4, generator=g) > 0.7).float() for _ in range(2)]
        maps = [F.interpolate(m, size=(SIZE, SIZE), mode="nearest") for m in maps]
    else:  # class maps of 8x8 blocks, one-hot; contiguous as the code's scatter_ makes them (its
        # noise_for_mask draws randn_like(exemplar mask), whose values follow the memory layout)
        maps = [F.one_hot(F.interpolate(torch.randint(0, K, (1, 1, SIZE // 8, SIZE // 8), generator=g).float(),
                                        size=(SIZE, SIZE), mode="nearest").long()[:, 0], K).permute(0, 3, 1, 2)
                .float().contiguous() for _ in range(2)]
    exemplar = torch.rand(1, 3, SIZE, SIZE, generator=g) * 2 - 1
    return maps[0], exemplar, maps[1]


@pytest.fixture
def fold_at_test_size(monkeypatch):
    """--warp_patch folds the warped patches to a hard-coded 256 x 256 (correspondence.py); at the
    test's size the same fold goes to SIZE x SIZE."""
    def fold(x, output_size, *args, **kwargs):
        assert output_size == 256
        return F.fold(x, SIZE, *args, **kwargs)
    patched = types.SimpleNamespace(**{k: getattr(F, k) for k in dir(F) if not k.startswith("__")})
    patched.fold = fold
    monkeypatch.setattr(OFFICIAL.correspondence, "F", patched)


def _save_official(corr, G, folder: Path, epoch="latest"):
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(corr.state_dict(), folder / f"{epoch}_net_Corr.pth")   # the code's util.save_network
    torch.save(G.state_dict(), folder / f"{epoch}_net_G.pth")


@pytest.mark.parametrize("preset", sorted(TEST_COMMANDS))
def test_converted_checkpoint_gives_the_code_output(tmp_path, capsys, fold_at_test_size, preset):
    torch.manual_seed(0)
    opt = official_options(**TEST_COMMANDS[preset])
    inputs = _inputs(preset)
    corr, G = _official_networks(opt, inputs)
    epoch = "90" if preset == "cocosnet-ade20k" else "latest"
    _save_official(corr, G, tmp_path / "ckpt", epoch)
    out = tmp_path / "converted.pt"
    assert cli.main(["convert", "--from", "cocosnet", str(tmp_path / "ckpt"), "--preset", preset,
                     "--epoch", epoch, "--out", str(out)]) == 0, capsys.readouterr().err
    model, payload = load_generator(out)
    assert payload["converted_from"]["preset"] == preset
    label, exemplar, exemplar_label = inputs
    with torch.no_grad():
        torch.manual_seed(7)   # --noise_for_mask draws its noise in the same place in both
        want = official_output(corr, G, label, exemplar, exemplar_label)
    torch.manual_seed(7)
    got = synthesize(model, label, exemplar, exemplar_label, warped=False)["fake"]
    assert want.std() > 0.05   # a test that can tell outputs apart
    torch.testing.assert_close(got, want, atol=2e-4, rtol=0)
    if TEST_COMMANDS[preset].get("noise_for_mask"):
        # the exemplar's mask is not needed, and replaced by noise: another draw, another output
        torch.manual_seed(7)
        torch.testing.assert_close(synthesize(model, label, exemplar, None, warped=False)["fake"], want,
                                   atol=2e-4, rtol=0)
        assert not torch.allclose(synthesize(model, label, exemplar, None, warped=False)["fake"], want, atol=1e-3)


def _official_files(tmp_path, preset, seed=0):
    opt = official_options(**TEST_COMMANDS[preset])
    corr = OFFICIAL.correspondence.NoVGGCorrespondence(opt)
    G = OFFICIAL.generator.SPADEGenerator(opt)
    return corr.state_dict(), G.state_dict()


def _convert(tmp_path, preset, corr_state, g_state, *flags):
    folder = tmp_path / "ckpt"
    folder.mkdir(exist_ok=True)
    torch.save(corr_state, folder / "latest_net_Corr.pth")
    torch.save(g_state, folder / "latest_net_G.pth")
    return cli.main(["convert", "--from", "cocosnet", str(folder), "--preset", preset, "--out",
                     str(tmp_path / "x.pt"), "--overwrite", *flags])


def test_files_of_another_network_name_the_first_misfit(tmp_path, capsys):
    corr, G = _official_files(tmp_path, "cocosnet-celebahq-edge")
    # another preset's files: 15 edge channels where CelebA-HQ's masks have 19
    assert _convert(tmp_path, "cocosnet-celebahq", corr, G) == 2
    err = capsys.readouterr().err
    assert "latest_net_Corr.pth: key 'adaptive_model_seg.layer1.0.weight_orig' has shape (64, 15, 3, 3), the " \
           "cocosnet-celebahq network expects (64, 19, 3, 3)" in err and err.count("\n") == 1
    # a key the network does not have, and one it lacks
    assert _convert(tmp_path, "cocosnet-celebahq-edge", {**corr, "domain_classifier.feature.0.weight": torch.zeros(1)},
                    G) == 2
    assert "key 'domain_classifier.feature.0.weight' has no place in the cocosnet-celebahq-edge network" in \
        capsys.readouterr().err
    # as the code's loader falls back to strict=False: dropped, with a warning naming it
    with pytest.warns(UserWarning, match="1 key\\(s\\) with no place in the cocosnet-celebahq-edge network dropped "
                                         "\\(--ignore-unexpected-keys\\): domain_classifier.feature.0.weight"):
        assert _convert(tmp_path, "cocosnet-celebahq-edge", {**corr, "domain_classifier.feature.0.weight":
                                                             torch.zeros(1)}, G, "--ignore-unexpected-keys") == 0
    (tmp_path / "x.pt").unlink()
    del G["attn.gamma"]
    assert _convert(tmp_path, "cocosnet-celebahq-edge", corr, G) == 2
    assert "latest_net_G.pth: no key 'attn.gamma', which the cocosnet-celebahq-edge network needs" in \
        capsys.readouterr().err
    assert not (tmp_path / "x.pt").exists()


def test_bad_arguments(tmp_path, capsys):
    assert cli.main(["convert", "--from", "spade", str(tmp_path), "--preset", "cocosnet-celebahq",
                     "--out", str(tmp_path / "x.pt")]) == 2
    assert "--from 'spade': expected one of cocosnet" in capsys.readouterr().err
    assert cli.main(["convert", "--from", "cocosnet", str(tmp_path), "--preset", "cocosnet-celebahq",
                     "--out", str(tmp_path / "x.pt")]) == 2
    assert f"{tmp_path / 'latest_net_Corr.pth'}: no such file" in capsys.readouterr().err
    assert cli.main(["convert", "--from", "cocosnet", str(tmp_path), "--preset", "cocosnet-cpu64",
                     "--out", str(tmp_path / "x.pt")]) == 2
    assert "--preset 'cocosnet-cpu64' names no data layout" in capsys.readouterr().err
    assert cli.main(["convert", "--from", "cocosnet", str(tmp_path), "--preset", "msca-cpu64",
                     "--out", str(tmp_path / "x.pt")]) == 2
    assert "--preset 'msca-cpu64': expected a CoCosNet preset" in capsys.readouterr().err
    (tmp_path / "latest_net_Corr.pth").write_text("not a checkpoint")
    assert cli.main(["convert", "--from", "cocosnet", str(tmp_path), "--preset", "cocosnet-celebahq",
                     "--out", str(tmp_path / "x.pt")]) == 2
    assert "latest_net_Corr.pth: not a readable PyTorch file" in capsys.readouterr().err
