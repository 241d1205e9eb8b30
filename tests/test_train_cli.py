"""Trainer, checkpoints, metrics and the CLI on tiny configurations."""
import json
import re
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from exsynth import cli
from exsynth.checkpoint import CheckpointError, load_checkpoint, load_generator, save_checkpoint
from exsynth.data import SyntheticExemplarDataset
from exsynth.imageio import read_image, read_label, write_image, write_label
from exsynth.metrics import psnr, ssim
from exsynth.train import TrainConfig, Trainer

TINY = {
    "cocosnet": dict(width=4, num_up=2, max_mult=2, spade_hidden=8, adaptor_downsample=1,
                     exemplar_label_input=True, use_nonlocal=True),
    "msca": dict(width=4, use_vgg=False, num_scales=3, ks=[2, 2, 2], spade_hidden=8),
}
K, S = 4, 32


def tiny_cfg(tmp_path, model="cocosnet", **kw):
    d = dict(model=model, out=str(tmp_path / f"run_{model}"), size=S, num_classes=K, batch_size=2, steps=3,
             train_length=16, checkpoint_every=2, log_every=1, image_every=2, model_options=dict(TINY[model]),
             disc_width=8, disc_layers=2, disc_scales=1)
    if model == "cocosnet":
        d["losses"] = dict(l1=1.0, feat=0.0, perc=0.0, context=0.0, domain=1.0, reg=1.0, warp=1.0, mask=1.0,
                           adv=0.1, gan_feat=1.0)
    else:
        d["losses"] = dict(l1=1.0, feat=0.0, adv=0.1, gan_feat=1.0)
    d.update(kw)
    return TrainConfig(**d)


# ---- trainer -------------------------------------------------------------------------------------

@pytest.mark.parametrize("model,supervision", [("cocosnet", "pair"), ("cocosnet", "pseudo"),
                                               ("msca", "pair"), ("msca", "self")])
def test_train_writes_run(tmp_path, model, supervision):
    cfg = tiny_cfg(tmp_path, model, supervision=supervision)
    summary = Trainer(cfg, quiet=True).run()
    out = Path(cfg.out)
    assert summary["step"] == 3 and summary["stopped"] == "steps" and math.isfinite(summary["loss"])
    lines = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert [l["step"] for l in lines] == [1, 2, 3]
    assert all(math.isfinite(v) for l in lines for k, v in l.items() if k.startswith(("G/", "D/")))
    assert "D/hinge" in lines[0]
    assert sorted(p.name for p in (out / "samples").iterdir()) == ["step_000002.png", "step_000003.png"]
    grid = read_image(out / "samples" / "step_000002.png")
    n_cols = 4 if supervision == "self" else 5  # input | exemplar | warped | output | truth
    assert grid.shape == (3, 2 * S, n_cols * S)
    payload = load_checkpoint(out / "checkpoints" / "latest.pt", expect_model=model)
    assert payload["step"] == 3 and "opt_g" in payload and "opt_d" in payload
    assert json.loads((out / "config.json").read_text())["model"] == model
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return
    events = list((out / "tb").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0


def _params(trainer):
    return {k: v.clone() for k, v in trainer.model.state_dict().items()}


@pytest.mark.parametrize("model", ["cocosnet", "msca"])
def test_resume_continues_the_same_run(tmp_path, model):
    straight = Trainer(tiny_cfg(tmp_path / "a", model, steps=4, supervision="pseudo" if model == "cocosnet" else "self"),
                       quiet=True)
    straight.run()
    cfg = tiny_cfg(tmp_path / "b", model, steps=2, supervision="pseudo" if model == "cocosnet" else "self")
    Trainer(cfg, quiet=True).run()
    cfg4 = TrainConfig(**{**cfg.to_dict(), "steps": 4})
    resumed = Trainer(cfg4, resume_from=Path(cfg.out) / "checkpoints" / "latest.pt", quiet=True)
    assert resumed.step == 2
    resumed.run()
    a, b = _params(straight), _params(resumed)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)
    # the discriminator's state also continued
    for (k, x), (_, y) in zip(straight.discriminator.state_dict().items(), resumed.discriminator.state_dict().items()):
        torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-5, msg=k)


def test_resume_refuses_other_settings(tmp_path):
    cfg = tiny_cfg(tmp_path, steps=1)
    Trainer(cfg, quiet=True).run()
    other = TrainConfig(**{**cfg.to_dict(), "lr_g": 1.0, "steps": 2})
    with pytest.raises(ValueError, match="lr_g"):
        Trainer(other, resume_from=Path(cfg.out) / "checkpoints" / "latest.pt", quiet=True)


def test_max_minutes_stops_and_checkpoints(tmp_path):
    cfg = tiny_cfg(tmp_path, steps=1000, max_minutes=1e-6)
    summary = Trainer(cfg, quiet=True).run()
    assert summary["stopped"] == "time" and summary["step"] == 1
    assert load_checkpoint(Path(cfg.out) / "checkpoints" / "latest.pt")["step"] == 1


def test_one_trainer_step_lowers_the_loss(tmp_path):
    cfg = tiny_cfg(tmp_path, losses=dict(l1=1.0, feat=0.0, perc=0.0, context=0.0, domain=1.0, reg=1.0,
                                         warp=1.0, mask=1.0, adv=0.0, gan_feat=0.0), lr_g=1e-3)
    tr = Trainer(cfg, quiet=True)
    ds = SyntheticExemplarDataset(S, num_classes=K, length=2, seed=3)
    batch = {k: torch.stack([ds[i][k] for i in range(2)]) for k in ("label", "image", "exemplar", "exemplar_label")}
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    before = tr.objective.generator_terms(batch, 0, gen())[0].item()
    tr.train_step(batch)
    after = tr.objective.generator_terms(batch, 0, gen())[0].item()
    assert after < before


def test_config_validation():
    with pytest.raises(ValueError, match="unknown cocosnet loss"):
        TrainConfig(losses=dict(bogus=1.0))
    with pytest.raises(ValueError, match="supervision"):
        TrainConfig(supervision="magic")
    with pytest.raises(ValueError, match="batch_size"):
        TrainConfig(batch_size=0)


# ---- checkpoints ---------------------------------------------------------------------------------

@pytest.mark.parametrize("model", ["cocosnet", "msca"])
def test_checkpoint_round_trip(tmp_path, model):
    tr = Trainer(tiny_cfg(tmp_path, model, steps=1), quiet=True)
    tr.run()
    ds = SyntheticExemplarDataset(S, num_classes=K, length=2, split="test")
    b = {k: torch.stack([ds[i][k] for i in range(2)]) for k in ("label", "exemplar", "exemplar_label")}
    tr.model.eval()
    with torch.no_grad():
        ref = tr.model(b["label"], b["exemplar"], b["exemplar_label"])["fake"]
    loaded, payload = load_generator(tr.checkpoint_path(), expect_model=model)
    with torch.no_grad():
        got = loaded(b["label"], b["exemplar"], b["exemplar_label"])["fake"]
    torch.testing.assert_close(got, ref, rtol=0, atol=0)
    # half-precision shipping copy: small and close
    save_checkpoint(tmp_path / "half.pt", tr.model, half=True)
    half, _ = load_generator(tmp_path / "half.pt")
    with torch.no_grad():
        torch.testing.assert_close(half(b["label"], b["exemplar"], b["exemplar_label"])["fake"], ref, rtol=0, atol=2e-2)
    other = "msca" if model == "cocosnet" else "cocosnet"
    with pytest.raises(CheckpointError, match=f"holds a '{model}' model, expected '{other}'"):
        load_checkpoint(tr.checkpoint_path(), expect_model=other)


def test_checkpoint_bad_files(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "nope.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")
    torch.save({"weights": torch.ones(1)}, tmp_path / "plain.pt")
    with pytest.raises(CheckpointError, match="not an exsynth checkpoint"):
        load_checkpoint(tmp_path / "plain.pt")


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    tr = Trainer(tiny_cfg(tmp_path, steps=1), quiet=True)
    path = tmp_path / "ck.pt"
    save_checkpoint(path, tr.model, step=1)
    before = path.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, tr.model, step=2)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


# ---- metrics -------------------------------------------------------------------------------------

def test_ssim_matches_windowed_definition():
    # SSIM written out window by window (valid positions, Gaussian weights), in numpy float64
    import numpy as np
    g = torch.Generator().manual_seed(2)
    x = torch.rand(1, 2, 14, 15, generator=g) * 2 - 1
    y = (x + 0.2 * torch.randn(x.shape, generator=g)).clamp(-1, 1)
    a, b = (x.double().numpy() + 1) / 2, (y.double().numpy() + 1) / 2
    t = np.arange(11) - 5.0
    w1 = np.exp(-t ** 2 / (2 * 1.5 ** 2))
    w = np.outer(w1, w1) / w1.sum() ** 2
    vals = []
    for c in range(2):
        for i in range(14 - 10):
            for j in range(15 - 10):
                pa, pb = a[0, c, i:i + 11, j:j + 11], b[0, c, i:i + 11, j:j + 11]
                ma, mb = (w * pa).sum(), (w * pb).sum()
                va, vb = (w * pa * pa).sum() - ma ** 2, (w * pb * pb).sum() - mb ** 2
                cov = (w * pa * pb).sum() - ma * mb
                c1, c2 = 0.01 ** 2, 0.03 ** 2
                vals.append((2 * ma * mb + c1) * (2 * cov + c2) / ((ma ** 2 + mb ** 2 + c1) * (va + vb + c2)))
    torch.testing.assert_close(ssim(x, y), torch.tensor([float(np.mean(vals))]), rtol=1e-5, atol=1e-6)


def test_msca_random_vgg_checkpoint_round_trip(tmp_path):
    # without a VGG file the frozen encoder is random: the checkpoint must carry it
    import warnings
    from exsynth.checkpoint import build_model
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_model("msca", dict(label_channels=K, width=4, use_vgg=True, num_scales=2, ks=[2, 2],
                                         spade_hidden=8)).eval()
        save_checkpoint(tmp_path / "m.pt", model)
        loaded, _ = load_generator(tmp_path / "m.pt")
    ds = SyntheticExemplarDataset(S, num_classes=K, length=1, split="test")
    s = ds[0]
    args = (s["label"][None], s["exemplar"][None], s["exemplar_label"][None])
    with torch.no_grad():
        torch.testing.assert_close(loaded(*args)["fake"], model(*args)["fake"], rtol=0, atol=0)


def test_psnr_ssim_values():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 3, 24, 24, generator=g) * 2 - 1
    noise = 0.1 * torch.randn(3, 3, 24, 24, generator=g)
    y = x + noise
    mse01 = (noise / 2).pow(2).flatten(1).mean(1)
    torch.testing.assert_close(psnr(y, x), (10 * torch.log10(1 / mse01)).float(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ssim(x, x), torch.ones(3), rtol=0, atol=1e-6)
    s = ssim(y, x)
    assert ((s > 0) & (s < 1)).all()
    torch.testing.assert_close(ssim(x, y), s)                       # symmetric
    assert (ssim(x + 0.3 * torch.randn(x.shape, generator=g), x) < s).all()  # more noise, lower
    with pytest.raises(ValueError, match="one shape"):
        psnr(x, x[:, :2])


# ---- CLI -----------------------------------------------------------------------------------------

def _tiny_checkpoint(tmp_path, model="cocosnet"):
    tr = Trainer(tiny_cfg(tmp_path, model, steps=1), quiet=True)
    tr.run()
    return tr.checkpoint_path()


def _write_sample(folder, name="a", index=0, size=S):
    ds = SyntheticExemplarDataset(size, num_classes=K, length=index + 1, split="test")
    s = ds[index]
    folder.mkdir(parents=True, exist_ok=True)
    write_label(s["label_index"], folder / f"{name}_label.png")
    write_image(s["exemplar"], folder / f"{name}_exemplar.png")
    write_label(s["exemplar_label_index"], folder / f"{name}_exlabel.png")
    return folder / f"{name}_label.png", folder / f"{name}_exemplar.png", folder / f"{name}_exlabel.png"


def test_cli_train_and_resume(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--model", "msca", "--size", str(S), "--num-classes", str(K), "--batch-size", "2",
            "--steps", "2", "--train-length", "8", "--out", str(out), "--quiet", "--option", "width=4",
            "--option", "use_vgg=false", "--option", "num_scales=3", "--option", "ks=[2,2,2]",
            "--option", "spade_hidden=8", "--loss", "feat=0", "--loss", "adv=0", "--loss", "gan_feat=0"]
    assert cli.main(args) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["step"] == 2
    assert cli.main(["train", "--out", str(out), "--resume", "--steps", "3", "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["step"] == 3
    assert cli.main(["train", "--out", str(out), "--resume", "--lr-g", "0.5", "--quiet"]) == 2
    assert "lr_g" in capsys.readouterr().err


def test_cli_synthesize_file_and_folder(tmp_path, capsys):
    ck = _tiny_checkpoint(tmp_path)
    lab, ex, exl = _write_sample(tmp_path / "in")
    out = tmp_path / "o" / "out.png"
    assert cli.main(["synthesize", "--checkpoint", str(ck), "--input", str(lab), "--exemplar", str(ex),
                     "--exemplar-label", str(exl), "--out", str(out), "--warped", "--correspondence"]) == 0
    assert read_image(out).shape == (3, S, S)
    assert read_image(tmp_path / "o" / "out_warped.png").shape == (3, S, S)
    assert read_image(tmp_path / "o" / "out_correspondence.png").shape == (3, S, 4 * S)
    # folders matched by name; the exemplar may have another size (it is resized)
    for i, name in enumerate(("x", "y")):
        l, e, el = _write_sample(tmp_path / "tmp", name, index=i)
        (tmp_path / "labels").mkdir(exist_ok=True)
        (tmp_path / "ex").mkdir(exist_ok=True)
        (tmp_path / "exl").mkdir(exist_ok=True)
        os.replace(l, tmp_path / "labels" / f"{name}.png")
        write_image(torch.nn.functional.interpolate(read_image(e)[None], size=(48, 48))[0], tmp_path / "ex" / f"{name}.jpg")
        write_label(torch.nn.functional.interpolate(read_label(el, K)[None, None].float(), size=(48, 48))[0, 0].long(),
                    tmp_path / "exl" / f"{name}.png")
    assert cli.main(["synthesize", "--checkpoint", str(ck), "--input", str(tmp_path / "labels"),
                     "--exemplar", str(tmp_path / "ex"), "--exemplar-label", str(tmp_path / "exl"),
                     "--out", str(tmp_path / "outdir")]) == 0
    assert sorted(p.name for p in (tmp_path / "outdir").iterdir()) == ["x.png", "y.png"]


def _run_bad(capsys, argv, out_path=None):
    code = cli.main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert len(err) == 1 and err[0].startswith(f"exsynth {argv[0]}: error: "), err
    if out_path is not None:
        assert not Path(out_path).exists()
    return err[0]


def test_cli_bad_inputs(tmp_path, capsys):
    ck = _tiny_checkpoint(tmp_path)
    msca_ck = _tiny_checkpoint(tmp_path, "msca")
    lab, ex, exl = _write_sample(tmp_path / "in")
    out = tmp_path / "out.png"
    base = ["synthesize", "--checkpoint", str(ck), "--exemplar", str(ex), "--exemplar-label", str(exl),
            "--out", str(out)]
    assert "no such file" in _run_bad(capsys, base + ["--input", str(tmp_path / "missing.png")], out)
    assert "no such checkpoint" in _run_bad(capsys, ["synthesize", "--checkpoint", str(tmp_path / "none.pt"),
                                                     "--input", str(lab), "--exemplar", str(ex), "--out", str(out)], out)
    # an RGB picture where a class-index label map belongs
    assert "mode 'RGB'" in _run_bad(capsys, base + ["--input", str(ex)], out)
    # class ids beyond the model's classes
    write_label(torch.full((S, S), K + 3), tmp_path / "toomany.png")
    assert "expected 0..3" in _run_bad(capsys, base + ["--input", str(tmp_path / "toomany.png")], out)
    # a size the model cannot take
    write_label(torch.zeros(30, 30, dtype=torch.long), tmp_path / "odd.png")
    assert "divisible by" in _run_bad(capsys, base + ["--input", str(tmp_path / "odd.png")], out)
    # not an image at all
    (tmp_path / "text.png").write_text("hello")
    assert "not a readable image" in _run_bad(capsys, base + ["--input", str(tmp_path / "text.png")], out)
    # the exemplar's label must match the exemplar
    write_label(torch.zeros(16, 16, dtype=torch.long), tmp_path / "small_exl.png")
    bad = ["synthesize", "--checkpoint", str(ck), "--input", str(lab), "--exemplar", str(ex),
           "--exemplar-label", str(tmp_path / "small_exl.png"), "--out", str(out)]
    assert "exemplar label map is 16x16" in _run_bad(capsys, bad, out)
    # missing exemplar label for a model that needs it
    assert "--exemplar-label" in _run_bad(capsys, ["synthesize", "--checkpoint", str(ck), "--input", str(lab),
                                                   "--exemplar", str(ex), "--out", str(out)], out)
    # a checkpoint of another model where a CoCosNet one is needed
    assert "expected 'cocosnet'" in _run_bad(capsys, ["demo", "--checkpoint", str(msca_ck), "--out",
                                                      str(tmp_path / "demo")], tmp_path / "demo" / "grid.png")
    # a file that is not a checkpoint
    assert "not a readable checkpoint" in _run_bad(capsys, ["eval", "--checkpoint", str(lab)])
    # training options
    assert "known presets" in _run_bad(capsys, ["train", "--preset", "nope", "--out", str(tmp_path / "r")])
    assert "KEY=VALUE" in _run_bad(capsys, ["train", "--option", "width", "--out", str(tmp_path / "r")])
    assert "unknown cocosnet option" in _run_bad(capsys, ["train", "--option", "wdth=3", "--steps", "1",
                                                          "--out", str(tmp_path / "r")])
    assert "no such config" in _run_bad(capsys, ["train", "--config", str(tmp_path / "c.toml"), "--out",
                                                 str(tmp_path / "r")])
    assert "images/ and labels/" in _run_bad(capsys, ["train", "--data", str(tmp_path), "--out", str(tmp_path / "r")])
    assert "needs a multiple of" in _run_bad(capsys, ["train", "--size", "36", "--out", str(tmp_path / "r")])
    assert "width=" not in _run_bad(capsys, ["train", "--option", "width=\"abc\"", "--steps", "1",
                                             "--out", str(tmp_path / "r")])
    # folder data with a class id beyond --num-classes: found on the first batch, nothing written
    root = tmp_path / "baddata"
    write_image(torch.zeros(3, S, S), root / "images" / "0.png")
    write_label(torch.full((S, S), 9), root / "labels" / "0.png")
    msg = _run_bad(capsys, ["train", "--allow-random-vgg", "--data", str(root), "--num-classes", str(K), "--size", str(S), "--steps", "1",
                            "--batch-size", "1", "--out", str(tmp_path / "r"), "--quiet"])
    assert "stopped at step 0" in msg and "expected 0..3" in msg
    assert not (tmp_path / "r").exists()
    # an output folder that already holds a run, and --resume with a new configuration
    run = ck.parent.parent
    assert "already holds a run" in _run_bad(capsys, ["train", "--out", str(run), "--steps", "1"])
    assert "drop --preset" in _run_bad(capsys, ["train", "--out", str(run), "--resume", "--preset", "msca-cpu64"])
    # eval and demo arguments
    assert "needs a multiple of" in _run_bad(capsys, ["eval", "--checkpoint", str(ck), "--size", "30"])
    assert "--length must be >= 1" in _run_bad(capsys, ["eval", "--checkpoint", str(ck), "--length", "0"])
    assert "not a device" in _run_bad(capsys, ["eval", "--checkpoint", str(ck), "--device", "bogus"])
    if not torch.cuda.is_available():
        assert "CUDA is not available" in _run_bad(capsys, ["eval", "--checkpoint", str(ck), "--device", "cuda"])
    assert ">= 1" in _run_bad(capsys, ["demo", "--checkpoint", str(ck), "--inputs", "0", "--out", str(tmp_path / "d")])
    assert "unknown image format" in _run_bad(capsys, base + ["--input", str(lab), "--out", str(tmp_path / "o.xyz")],
                                              tmp_path / "o.xyz")


def test_cli_eval_and_demo(tmp_path, capsys):
    ck = _tiny_checkpoint(tmp_path)
    js = tmp_path / "e.json"
    assert cli.main(["eval", "--checkpoint", str(ck), "--length", "4", "--class-mean-samples", "8",
                     "--baseline-checkpoint", str(ck), "--json", str(js)]) == 0
    printed = capsys.readouterr().out
    assert "warped exemplar" in printed and "best exemplar-blind" in printed
    res = json.loads(js.read_text())["results"]
    assert set(res) == {"model", "warped", "const_exemplar", "class_mean", "baseline"}
    assert all(math.isfinite(v) for m in res.values() for v in m.values())
    assert cli.main(["demo", "--checkpoint", str(ck), "--out", str(tmp_path / "demo"), "--inputs", "2",
                     "--exemplars", "3"]) == 0
    assert "PSNR" in capsys.readouterr().out
    g = read_image(tmp_path / "demo" / "grid.png")
    assert g.shape == (3, 3 * (S + 2) + 2, 4 * (S + 2) + 2)
    assert read_image(tmp_path / "demo" / "correspondence.png").shape == (3, 2 * S, 4 * S)


def test_cli_folder_training(tmp_path, capsys):
    root = tmp_path / "data"
    for i in range(3):
        ds = SyntheticExemplarDataset(40, num_classes=K, length=3, split="val")
        s = ds[i]
        write_image(s["image"], root / "images" / f"{i}.jpg")
        write_label(s["label_index"], root / "labels" / f"{i}.png")
    assert cli.main(["train", "--data", str(root), "--size", str(S), "--num-classes", str(K), "--steps", "1",
                     "--batch-size", "2", "--out", str(tmp_path / "r"), "--quiet", "--option", "width=4",
                     "--option", "num_up=2", "--option", "max_mult=2", "--option", "spade_hidden=8",
                     "--option", "adaptor_downsample=1", "--loss", "feat=0", "--loss", "perc=0",
                     "--loss", "context=0", "--loss", "adv=0", "--loss", "gan_feat=0"]) == 0
    assert json.loads((tmp_path / "r" / "config.json").read_text())["data"] == str(root)


def test_cli_entry_point_exit_status(tmp_path):
    # the installed console script: one error line, status 2
    exe = Path(sys.executable).with_name("exsynth")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "exsynth.cli"]
    r = subprocess.run(cmd + ["synthesize", "--checkpoint", str(tmp_path / "x.pt"), "--input", "a.png",
                              "--exemplar", "b.png", "--out", str(tmp_path / "o.png")],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [f"exsynth synthesize: error: {tmp_path / 'x.pt'}: no such checkpoint file"]


def _lpips_files(tmp_path):
    from exsynth.metrics import LPIPS
    torch.manual_seed(0)
    m = LPIPS()
    for p in m.parameters():
        torch.nn.init.normal_(p, std=0.05)
    backbone = {f"features.{k}": v for k, v in m.features.state_dict().items()}
    backbone["classifier.0.weight"] = torch.zeros(2, 2)  # torchvision files carry the classifier too
    lins = {f"lin{i}.model.1.weight": l.weight.abs() for i, l in enumerate(m.lins)}
    torch.save(backbone, tmp_path / "vgg16.pth")
    torch.save(lins, tmp_path / "lin.pth")
    slices = {0: 1, 4: 2, 9: 3, 16: 4, 23: 5}  # lpips' slice numbering keeps torchvision indices
    full = dict(lins)
    for k, v in m.features.state_dict().items():
        idx = int(k.split(".")[0])
        s = max(b for b in slices if b <= idx)
        full[f"net.slice{slices[s]}.{k}"] = v
    torch.save(full, tmp_path / "lpips_full.pth")
    return tmp_path / "vgg16.pth", tmp_path / "lin.pth", tmp_path / "lpips_full.pth"


def test_lpips_loading_and_properties(tmp_path):
    from exsynth.metrics import LPIPS
    vgg, lin, full = _lpips_files(tmp_path)
    a, b = LPIPS.from_files(vgg, lin), LPIPS.from_files(None, full)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(2, 3, 32, 32, generator=g) * 2 - 1
    y = (x + 0.2 * torch.randn(x.shape, generator=g)).clamp(-1, 1)
    d = a(x, y)
    torch.testing.assert_close(d, b(x, y))
    torch.testing.assert_close(a(x, x), torch.zeros(2), rtol=0, atol=1e-7)
    assert (d > 0).all()
    # the definition, written out: unit-normalise relu1_2..relu5_3, weight squared differences
    def taps(img):
        h, out = (img - a.shift) / a.scale, []
        for i, layer in enumerate(a.features):
            h = layer(h)
            if i in (3, 8, 15, 22, 29):
                out.append(h / (h.norm(dim=1, keepdim=True) + 1e-10))
        return out
    want = sum(((fx - fy) ** 2 * l.weight.view(1, -1, 1, 1)).sum(1).mean(dim=(1, 2))
               for l, fx, fy in zip(a.lins, taps(x), taps(y)))
    torch.testing.assert_close(d, want, rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="do not fit"):
        LPIPS.from_files(None, lin)
    with pytest.raises(FileNotFoundError, match="no such LPIPS"):
        LPIPS.from_files(tmp_path / "none.pth", lin)


def test_cli_eval_lpips(tmp_path, capsys):
    ck = _tiny_checkpoint(tmp_path)
    vgg, lin, _ = _lpips_files(tmp_path)
    assert cli.main(["eval", "--checkpoint", str(ck), "--length", "2", "--class-mean-samples", "4",
                     "--lpips-vgg16", str(vgg), "--lpips-lin", str(lin)]) == 0
    assert "LPIPS" in capsys.readouterr().out
    assert "no such LPIPS" in _run_bad(capsys, ["eval", "--checkpoint", str(ck), "--lpips-lin",
                                                str(tmp_path / "x.pth")])


def test_shipped_demo_checkpoint(tmp_path, capsys):
    import re

    from exsynth.demo import DEMO_CHECKPOINT
    assert DEMO_CHECKPOINT.is_file(), "the demo checkpoint ships inside the package"
    assert DEMO_CHECKPOINT.stat().st_size <= 5 * 2 ** 20
    payload = load_checkpoint(DEMO_CHECKPOINT, expect_model="cocosnet")
    assert payload["train_config"]["data"] == "synthetic" and "opt_g" not in payload
    assert cli.main(["demo", "--out", str(tmp_path / "demo")]) == 0
    out = capsys.readouterr().out
    m = re.search(r"output ([0-9.]+) dB, warped exemplar ([0-9.]+) dB", out)
    # exemplar-blind colours score ~13.6 dB on this data; a working checkpoint is far above
    assert m and float(m.group(1)) > 18 and float(m.group(2)) > 18, out
    for name in ("grid.png", "truth.png", "correspondence.png"):
        assert (tmp_path / "demo" / name).is_file()


@pytest.mark.parametrize("model", ["cocosnet", "msca"])
def test_amp_step(tmp_path, model):
    # bf16 autocast on the CPU: features come out in bf16 and must meet the fused ops in one dtype
    summary = Trainer(tiny_cfg(tmp_path, model, amp=True, steps=1), quiet=True).run()
    assert summary["step"] == 1 and math.isfinite(summary["loss"])


@pytest.mark.parametrize("supervision", ["pair", "self"])
def test_msca_attention_pretraining(tmp_path, supervision):
    # Sec. 4: the first steps optimise only the attention decoders' feature reconstruction;
    # the synthesis decoder and the discriminator do not move then
    opts = dict(TINY["msca"], attention_decoder=True)
    cfg = tiny_cfg(tmp_path, "msca", steps=1, attn_pretrain_steps=1, supervision=supervision,
                   model_options=opts, losses=dict(l1=1.0, feat=0.0, adv=0.1, gan_feat=1.0, attn=1.0))
    tr = Trainer(cfg, quiet=True)
    synth = {k: v.clone() for k, v in tr.model.synthesis.state_dict().items()}
    att = {k: v.clone() for k, v in tr.model.msca.state_dict().items()}
    disc = {k: v.clone() for k, v in tr.discriminator.state_dict().items()}
    tr.run()
    first = json.loads((Path(cfg.out) / "metrics.jsonl").read_text().splitlines()[0])
    assert set(k for k in first if k.startswith(("G/", "D/"))) == {"G/attn", "G/total"}
    assert all(torch.equal(v, tr.model.synthesis.state_dict()[k]) for k, v in synth.items())
    assert all(torch.equal(v, tr.discriminator.state_dict()[k]) for k, v in disc.items())
    assert any(not torch.equal(v, tr.model.msca.state_dict()[k]) for k, v in att.items())
    # afterwards attn joins the other terms
    tr2 = Trainer(TrainConfig(**{**cfg.to_dict(), "steps": 2}), resume_from=tr.checkpoint_path(), quiet=True)
    tr2.run()
    second = json.loads((Path(cfg.out) / "metrics.jsonl").read_text().splitlines()[-1])
    assert {"G/attn", "G/l1", "G/adv", "D/hinge"} <= set(second)


def test_attn_loss_needs_the_decoder(tmp_path):
    with pytest.raises(ValueError, match="attention_decoder"):
        Trainer(tiny_cfg(tmp_path, "msca", losses=dict(l1=1.0, feat=0.0, adv=0.0, gan_feat=0.0, attn=1.0)),
                quiet=True)


def test_resize_image_matches_read_with_resize(tmp_path):
    # synthesize decodes an exemplar once and resizes afterwards: same pixels as resizing on read
    from exsynth.imageio import resize_image
    g = torch.Generator().manual_seed(0)
    write_image(torch.rand(3, 40, 52, generator=g) * 2 - 1, tmp_path / "a.png")
    for size in [(32, 32), (64, 48), (40, 52)]:
        assert torch.equal(resize_image(read_image(tmp_path / "a.png"), size),
                           read_image(tmp_path / "a.png", size, resize=True))


def test_linear_lr_decay_over_the_last_steps_and_on_resume(tmp_path):
    """lr_decay_steps: constant, then linear to 0 over the run's last steps (the papers' code's
    niter / niter_decay); the rate is a function of the step, so a resumed run continues it."""
    cfg = tiny_cfg(tmp_path, steps=4, lr_decay_steps=2)
    assert [cfg.lr_factor(s) for s in range(4)] == [1.0, 1.0, 1.0, 0.5]
    tr = Trainer(cfg, quiet=True)
    tr.run()
    for key, opt in tr.optimizers.items():
        base = cfg.lr_g if tr.roles[key] == "g" else cfg.lr_d
        assert opt.param_groups[0]["lr"] == pytest.approx(base * 0.5)     # the rate of the last step (3)
    with pytest.raises(ValueError, match="lr_decay_steps must be None, a fraction in \\(0, 1\\) or a whole number of "
                                         "steps 1..steps \\(4\\), got 5"):
        tiny_cfg(tmp_path, steps=4, lr_decay_steps=5)
    with pytest.raises(ValueError, match="got 2.5"):
        tiny_cfg(tmp_path, steps=4, lr_decay_steps=2.5)
    # a fraction of the run: the schedule follows --steps
    half = tiny_cfg(tmp_path, steps=8, lr_decay_steps=0.5)
    assert half.decay_steps() == 4 and [half.lr_factor(s) for s in (3, 4, 7)] == [1.0, 1.0, 0.25]


def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    base = ["train", "--model", "cocosnet", "--num-classes", str(K), "--batch-size", "2", "--train-length", "4",
            "--out", str(out), "--dry-run", "--allow-random-vgg"] + [a for k, v in TINY["cocosnet"].items()
                                                for a in ("--option", f"{k}={str(v).lower()}")]
    sizes = {}
    for size in (32, 64):
        assert cli.main(base + ["--size", str(size)]) == 0
        captured = capsys.readouterr()
        cfg = json.loads(captured.out)
        assert cfg["size"] == size and cfg["model"] == "cocosnet"
        assert "trainable parameters" in captured.err
        sizes[size] = float(re.search(r"activations saved for one training step \(the larger of its generator and "
                                      r"discriminator passes\): ([0-9.]+) MiB", captured.err).group(1))
    assert not out.exists()
    # activations grow with the pixels, 4x from 32 to 64 px, over a part that does not: the
    # discriminator's spectral-normalised weights its convs save (width 64 beside this width-4
    # generator: ~5 MiB), so the whole grows ~2.8x
    assert 2.5 < sizes[64] / sizes[32] < 5.0, sizes
