"""The papers' metrics: FID / KID (Fréchet distance against closed forms and a plain numpy
computation), SWD (PGGAN's pyramid, zero on identical sets, growing with noise), CoCosNet's
semantic consistency and style relevance, and `exsynth eval` with weights, without them, on
folders, with saved outputs."""
import json

import numpy as np
import pytest
import torch

from exsynth import cli
from exsynth.imageio import read_image, write_image
from exsynth.metrics import (GaussianStats, MetricSuite, SlicedWasserstein, frechet_distance, kernel_inception_distance,
                             laplacian_pyramid, semantic_consistency, style_relevance)
from exsynth.nn import load_vgg19
from exsynth.nn.inception import FIDInceptionV3, load_fid_inception

DEMO = "exsynth/assets/demo_synthetic64.pt"


@pytest.fixture(scope="module")
def inception_file(tmp_path_factory):
    """A random-init Inception saved in the pt_inception layout (the real file is not shipped)."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("w") / "pt_inception.pth"
    torch.save(FIDInceptionV3().state_dict(), path)
    return path


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory):
    from exsynth.nn.vgg import VGG19Features
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("w") / "vgg19.pth"
    torch.save({f"features.{k}": v for k, v in VGG19Features().features.state_dict().items()}, path)
    return path


# ---- Fréchet distance and FID ------------------------------------------------------------------

def test_frechet_distance_of_diagonal_gaussians_is_the_closed_form():
    rng = np.random.default_rng(0)
    d = 16
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    v1, v2 = rng.uniform(0.1, 3, d), rng.uniform(0.1, 3, d)
    want = ((mu1 - mu2) ** 2).sum() + (v1 + v2 - 2 * np.sqrt(v1 * v2)).sum()
    assert frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(want, rel=1e-10, abs=1e-10)
    # a rotated pair: the distance does not depend on the basis
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    got = frechet_distance(q @ mu1, q @ np.diag(v1) @ q.T, q @ mu2, q @ np.diag(v2) @ q.T)
    assert got == pytest.approx(want, rel=1e-9)


def test_frechet_distance_is_zero_on_itself_and_symmetric():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(300, 24)), rng.normal(size=(200, 24)) * 1.5 + 0.3
    sa, sb = GaussianStats(), GaussianStats()
    sa.add(a)
    sb.add(b)
    (ma, ca), (mb, cb) = sa.mean_cov(), sb.mean_cov()
    assert abs(frechet_distance(ma, ca, ma, ca)) < 1e-9
    assert frechet_distance(ma, ca, mb, cb) == pytest.approx(frechet_distance(mb, cb, ma, ca), rel=1e-10)
    assert frechet_distance(ma, ca, mb, cb) > 1


def test_streamed_statistics_equal_the_batch_computation():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(257, 9)) * rng.uniform(0.5, 4, 9) + 100.0   # a large mean: the streaming form must hold
    s = GaussianStats()
    for part in np.array_split(x, 7):
        s.add(torch.from_numpy(part))
    mu, cov = s.mean_cov()
    np.testing.assert_allclose(mu, x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(cov, np.cov(x, rowvar=False), rtol=1e-9, atol=1e-9)
    with pytest.raises(ValueError, match="at least 2 images"):
        GaussianStats().mean_cov()


def _numpy_fid(fa, fb):
    """pytorch-fid's formula on the features, in plain numpy (scipy's sqrtm when it is installed)."""
    mu1, mu2 = fa.mean(0), fb.mean(0)
    s1, s2 = np.cov(fa, rowvar=False), np.cov(fb, rowvar=False)
    try:
        from scipy import linalg
        covmean = linalg.sqrtm(s1 @ s2).real
        tr = np.trace(covmean)
    except ImportError:
        tr = np.sqrt(np.clip(np.linalg.eigvals(s1 @ s2).real, 0, None)).sum()
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * tr)


def test_fid_with_inception_weights_from_a_file_equals_numpy_on_its_features(inception_file):
    net = load_fid_inception(inception_file)
    g = torch.Generator().manual_seed(3)
    a = torch.rand(24, 3, 32, 32, generator=g) * 2 - 1
    b = (torch.rand(20, 3, 32, 32, generator=g) * 2 - 1) * 0.5
    suite = MetricSuite(inception=net, swd=False)
    for i in range(0, 24, 8):
        suite.add(real=a[i:i + 8])
    for i in range(0, 20, 8):
        suite.add(fake=b[i:i + 8])
    with torch.no_grad():
        fa, fb = net(a).double().numpy(), net(b).double().numpy()
    # fewer samples than dimensions: both covariances are singular, the hard case for the square root
    assert suite.compute()["fid"] == pytest.approx(_numpy_fid(fb, fa), rel=1e-5)


def test_kid_is_near_zero_on_one_distribution_and_positive_across_two():
    g = torch.Generator().manual_seed(4)
    x, y = torch.randn(400, 32, generator=g), torch.randn(400, 32, generator=g)
    same, _ = kernel_inception_distance(x, y, subsets=20, subset_size=100)
    diff, _ = kernel_inception_distance(x, y + 0.5, subsets=20, subset_size=100)
    assert abs(same) < 0.02 and diff > 0.1


# ---- SWD -------------------------------------------------------------------------------------------

def test_laplacian_pyramid_matches_pggans_scipy_construction():
    nd = pytest.importorskip("scipy.ndimage")
    g = np.float64([[1, 4, 6, 4, 1], [4, 16, 24, 16, 4], [6, 24, 36, 24, 6], [4, 16, 24, 16, 4], [1, 4, 6, 4, 1]]) / 256

    def down(m):
        return nd.convolve(m, g[None, None], mode="mirror")[:, :, ::2, ::2]

    def up(m):
        r = np.zeros((m.shape[0], m.shape[1], m.shape[2] * 2, m.shape[3] * 2), m.dtype)
        r[:, :, ::2, ::2] = m
        return nd.convolve(r, g[None, None] * 4.0, mode="mirror")

    x = np.random.default_rng(5).random((2, 3, 64, 64)).astype(np.float32)
    ref = [x.copy()]
    for _ in range(1, 3):
        ref.append(down(ref[-1]))
        ref[-2] -= up(ref[-1])
    for a, b in zip(ref, laplacian_pyramid(torch.from_numpy(x.copy()), 3)):
        np.testing.assert_allclose(b.numpy(), a, atol=1e-6)   # float32 arithmetic on values in [0, 1]


def test_swd_is_zero_on_identical_sets_and_grows_with_noise():
    g = torch.Generator().manual_seed(6)
    x = torch.rand(6, 3, 64, 64, generator=g) * 2 - 1
    s = SlicedWasserstein(seed=0)
    s.add_real(x)
    s.add_fake(x.clone())
    out = s.compute()
    assert set(out) == {"swd/64px", "swd/32px", "swd/16px", "swd"} and all(v == 0 for v in out.values())
    prev = 0.0
    for sigma in (0.05, 0.1, 0.2, 0.4):
        s = SlicedWasserstein(seed=0)
        s.add_real(x)
        s.add_fake((x + sigma * torch.randn(x.shape, generator=g)).clamp(-1, 1))
        v = s.compute()["swd"]
        assert v > prev
        prev = v
    with pytest.raises(ValueError, match="at least 16x16"):
        SlicedWasserstein().add_real(torch.zeros(1, 3, 8, 8))


# ---- semantic consistency, style relevance ---------------------------------------------------------

def test_semantic_consistency_and_style_relevance(vgg_file):
    vgg = load_vgg19(vgg_file)
    g = torch.Generator().manual_seed(7)
    x = torch.rand(2, 3, 32, 32, generator=g) * 2 - 1
    y = torch.rand(2, 3, 32, 32, generator=g) * 2 - 1
    assert torch.allclose(semantic_consistency(vgg, x, x), torch.ones(2), atol=1e-6)
    assert (semantic_consistency(vgg, x, y) < 0.999).all()
    lab = torch.zeros(2, 3, 32, 32)
    lab[:, 0, :, :16], lab[:, 1, :, 16:] = 1, 1
    same = style_relevance(vgg, x, x, lab, lab)
    assert torch.allclose(same["color"], torch.ones(2), atol=1e-6) and torch.allclose(same["texture"], torch.ones(2),
                                                                                      atol=1e-6)
    # the regions are paired by class: the exemplar's classes swapped pair the wrong halves
    x = 0.1 * x + torch.tensor([0.8, -0.8, -0.5]).view(1, 3, 1, 1)   # a red left half ...
    x[:, :, :, 16:] = x[:, :, :, 16:].flip(1)                          # ... and a blue right one
    swapped = style_relevance(vgg, x, x, lab, lab[:, [1, 0, 2]])
    assert (swapped["color"] < 0.99).all() and torch.allclose(style_relevance(vgg, x, x, lab, lab)["color"],
                                                               torch.ones(2), atol=1e-6)
    # no class in common: NaN (left out by the suite)
    other = torch.zeros_like(lab)
    other[:, 2] = 1
    assert torch.isnan(style_relevance(vgg, x, y, lab, other)["color"]).all()
    dense = style_relevance(vgg, x, y, dense=True)
    assert dense["color"].shape == (2,) and torch.isfinite(dense["color"]).all()


# ---- exsynth eval --------------------------------------------------------------------------------------

def test_eval_without_weights_skips_with_one_line_each(capsys):
    assert cli.main(["eval", "--checkpoint", DEMO, "--length", "8", "--batch-size", "8"]) == 0
    cap = capsys.readouterr()
    out = cap.out
    assert "SWD (x1e3, mean of levels)" in out and "64px" in out
    assert "skipped: no --inception FILE" in out and "skipped: no --vgg FILE" in out and "skipped: no --lpips-lin" in out
    assert "  FID  " not in out and "evaluating: 8/8 images" in cap.err
    assert cli.main(["eval", "--checkpoint", DEMO, "--length", "8", "--inception", "/nonexistent/pt.pth"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--inception" in err[0] and "/nonexistent/pt.pth" in err[0]


def test_eval_with_weights_saved_outputs_and_json(tmp_path, capsys, inception_file, vgg_file):
    args = ["eval", "--checkpoint", DEMO, "--length", "8", "--batch-size", "4", "--inception", str(inception_file),
            "--vgg", str(vgg_file), "--quiet"]
    assert cli.main(args + ["--save", str(tmp_path / "png"), "--json", str(tmp_path / "png.json")]) == 0
    assert cli.main(args + ["--save", str(tmp_path / "jpg"), "--format", "jpg", "--json", str(tmp_path / "jpg.json")]) == 0
    out = capsys.readouterr().out
    assert "FID" in out and "semantic consistency" in out and "style relevance: colour" in out
    png, jpg = (json.loads((tmp_path / f"{f}.json").read_text()) for f in ("png", "jpg"))
    assert len(list((tmp_path / "png").glob("*.png"))) == 8 and len(list((tmp_path / "jpg").glob("*.jpg"))) == 8
    for rec in (png, jpg):
        assert {"fid", "swd", "semantic_consistency", "style_color", "style_texture"} <= set(rec["scores"])
        assert rec["command"][:2] == ["exsynth", "eval"] or rec["command"][0] == "exsynth"
        assert len(rec["weights"]["inception"]["sha256"]) == 64 and "torch" in rec["versions"]
    assert png["scores"]["fid"] != jpg["scores"]["fid"]          # JPEG's loss is what gets scored
    # the saved PNGs are the scored outputs: 8-bit round trip of the generator's images
    assert read_image(next((tmp_path / "png").glob("*.png"))).shape == (3, 64, 64)


def test_eval_two_folders(tmp_path, capsys, inception_file):
    g = torch.Generator().manual_seed(8)
    for i in range(6):
        img = torch.rand(3, 32, 32, generator=g) * 2 - 1
        write_image(img, tmp_path / "real" / f"{i}.png")
        write_image(img, tmp_path / "same" / f"{i}.png")
        write_image((img + 0.3 * torch.randn(img.shape, generator=g)).clamp(-1, 1), tmp_path / "noisy" / f"{i}.png")
    base = ["eval", "--real", str(tmp_path / "real"), "--inception", str(inception_file), "--quiet"]
    assert cli.main(base + ["--fake", str(tmp_path / "same"), "--json", str(tmp_path / "a.json")]) == 0
    assert cli.main(base + ["--fake", str(tmp_path / "noisy"), "--json", str(tmp_path / "b.json")]) == 0
    a, b = (json.loads((tmp_path / f).read_text())["scores"] for f in ("a.json", "b.json"))
    assert abs(a["fid"]) < 1e-3 and a["swd"] == 0 and a["psnr"] > 100
    assert b["fid"] > a["fid"] + 1e-3 and b["swd"] > 1 and b["psnr"] < 30
    capsys.readouterr()
    assert cli.main(["eval", "--real", str(tmp_path / "real")]) == 2
    assert "--real and --fake go together" in capsys.readouterr().err


def test_bench_models_table_reads_checkpoints(tmp_path):
    """`python -m bench models` scores checkpoints on one synthetic split and writes the table,
    its JSON and a grid of outputs (the PNG of the table needs matplotlib, the bench extra)."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    out = tmp_path / "models.json"
    # the repo's bench package after the installed exsynth on the path (not the source tree's exsynth first)
    code = (f"import sys; sys.path.append({str(root)!r}); from bench.__main__ import main; "
            f"sys.exit(main(['models', '--runs', {str(root / DEMO)!r}, {str(root / DEMO)!r}, '--length', '4', "
            f"'--grid', '2', '--out', {str(out)!r}]))")
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    rec = json.loads(out.read_text())
    a, b = rec["results"]
    assert a["model"] == "cocosnet" and a["steps"] == 700 and a["params_m"] > 0 and a["s_per_step"] > 0
    assert a["psnr"] == b["psnr"] and a["swd"] == b["swd"]          # one split, one seed: the same numbers
    assert "FID: no --inception" in rec["skipped"][0]
    grid = read_image(tmp_path / "models_outputs.png")
    assert grid.shape == (3, 2 * 64, 5 * 64)                        # input, exemplar, two models, the answer
