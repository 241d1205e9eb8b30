"""Defects an adversarial probe found (meta tensors, NaN in the hard match, numpy alphas,
oversized images, DataLoader worker tracebacks, bad files in a training set), kept fixed."""
import warnings

import numpy as np
import pytest
import torch

from exsynth import cli, ops
from exsynth.data import SyntheticExemplarDataset
from exsynth.data.folder import PairedFolderDataset
from exsynth.imageio import ImageError, read_image, write_image, write_label

K, S = 4, 32


def _meta(*shape):
    return torch.randn(*shape, device="meta")


def test_meta_tensors_give_shapes():
    q, k, v = _meta(2, 8, 6, 7), _meta(2, 8, 5, 9), _meta(2, 3, 5, 9)
    assert ops.correlation_warp(q, k, v).shape == (2, 3, 6, 7)
    out, lse = ops.correlation_warp(q, k, v, patch_size=3, return_lse=True)
    assert out.device.type == "meta" and lse.shape == (2, 6, 7)
    assert ops.cycle_warp(q, k, _meta(2, 3, 6, 7)).shape == (2, 3, 5, 9)
    assert [t.shape for t in ops.correlation_match(q, k)] == [(2, 6, 7)] * 2
    assert [t.shape for t in ops.positional_norm(_meta(2, 8, 4, 4))] == [(2, 8, 4, 4), (2, 1, 4, 4), (2, 1, 4, 4)]
    assert ops.pn_modulate(_meta(2, 8, 4, 4), _meta(2, 8, 4, 4), _meta(2, 8, 4, 4)).shape == (2, 8, 4, 4)
    assert ops.msca_attention(_meta(2, 6, 4, 4), _meta(2, 3, 4, 4), _meta(2, 3, 4, 4), gate=_meta(2, 3)).shape \
        == (2, 6, 4, 4)
    qg = _meta(2, 8, 6, 7).requires_grad_()
    ops.correlation_warp(qg, k, v).sum().backward()
    assert qg.grad.shape == qg.shape and qg.grad.device.type == "meta"


def test_meta_tensors_with_a_named_fused_backend_name_the_device():
    q = _meta(1, 4, 3, 3)
    with pytest.raises(ops.BackendUnavailableError, match="meta"):
        ops.correlation_warp(q, q, q, backend="cpu")


@pytest.mark.parametrize("where", ["query", "key"])
def test_hard_match_propagates_nan_like_the_reference(where, monkeypatch):
    from conftest import usable_backends
    monkeypatch.setattr("exsynth.ops._validate._FINITE_CHECKS", False)
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 8, 6, 7, generator=g), torch.randn(2, 8, 5, 9, generator=g)
    if where == "query":
        q[1, :, 2, 3] = float("nan")
    else:
        k[0, 3, 1, 4] = float("nan")
    ref_i, ref_v = ops.correlation_match(q, k, backend="reference")
    assert torch.isnan(ref_v).any()
    for be in usable_backends():
        i, v = ops.correlation_match(q, k, backend=be)
        assert torch.equal(i, ref_i), be
        assert torch.equal(torch.isnan(v), torch.isnan(ref_v)), be
        torch.testing.assert_close(v.nan_to_num(), ref_v.nan_to_num(), rtol=0, atol=1e-5)


def test_numpy_scalars_are_numbers():
    q = torch.randn(1, 4, 3, 3)
    a = ops.correlation_warp(q, q, q, alpha=np.float32(10))
    torch.testing.assert_close(a, ops.correlation_warp(q, q, q, alpha=10.0))
    for bad in (True, np.bool_(True), torch.tensor(1.0), "1"):
        with pytest.raises(TypeError, match="alpha must be a number"):
            ops.correlation_warp(q, q, q, alpha=bad)


def _big_png(path, side=10000):
    from PIL import Image
    Image.new("L", (side, side)).save(path)  # ~100 KB on disk, 100 M pixels
    return path


def test_oversized_images_are_refused_from_the_header(tmp_path, capsys):
    big = _big_png(tmp_path / "big.png")
    with pytest.raises(ImageError, match="10000x10000 = 100,000,000 pixels, above the limit"):
        read_image(big)
    from exsynth.demo import DEMO_CHECKPOINT
    s = SyntheticExemplarDataset(64, num_classes=6, length=1, split="test")[0]
    write_label(s["label_index"], tmp_path / "in.png")
    write_image(s["exemplar"], tmp_path / "ex.png")
    write_label(s["exemplar_label_index"], tmp_path / "exl.png")
    base = ["synthesize", "--checkpoint", str(DEMO_CHECKPOINT), "--out", str(tmp_path / "o.png")]
    for args in (["--input", str(big), "--exemplar", str(tmp_path / "ex.png"), "--exemplar-label", str(big)],
                 ["--input", str(tmp_path / "in.png"), "--exemplar", str(big), "--exemplar-label",
                  str(tmp_path / "exl.png")]):
        assert cli.main(base + args) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "big.png: image is 10000x10000" in err[0] and "--max-pixels" in err[0], err
    assert not (tmp_path / "o.png").exists()
    # a limit below a small image refuses it too; a raised one lets it through
    assert cli.main(base + ["--input", str(tmp_path / "in.png"), "--exemplar", str(tmp_path / "ex.png"),
                            "--exemplar-label", str(tmp_path / "exl.png"), "--max-pixels", "100"]) == 2
    assert "above the limit of 100" in capsys.readouterr().err
    assert cli.main(base + ["--input", str(tmp_path / "in.png"), "--exemplar", str(tmp_path / "ex.png"),
                            "--exemplar-label", str(tmp_path / "exl.png"), "--max-pixels", "0"]) == 0


def _folder(root, n=4, size=40):
    ds = SyntheticExemplarDataset(size, num_classes=K, length=n, split="val")
    for i in range(n):
        write_image(ds[i]["image"], root / "images" / f"{i}.png")
        write_label(ds[i]["label_index"], root / "labels" / f"{i}.png")
    return root


@pytest.mark.parametrize("workers", [0, 1])
def test_a_label_beyond_the_classes_is_one_line_with_workers(tmp_path, capsys, workers):
    root = _folder(tmp_path / "d", n=2)
    write_label(torch.full((40, 40), 9), root / "labels" / "0.png")
    write_label(torch.full((40, 40), 9), root / "labels" / "1.png")
    code = cli.main(["train", "--allow-random-vgg", "--data", str(root), "--num-classes", str(K), "--size", str(S), "--steps", "1",
                     "--batch-size", "1", "--workers", str(workers), "--out", str(tmp_path / "r"), "--quiet",
                     "--option", "width=4", "--option", "num_up=2", "--option", "max_mult=2"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("exsynth train: error: stopped at step 0: ") and "expected 0..3" in err[0], err
    assert "Traceback" not in err[0] and "worker" not in err[0]


def test_bad_files_in_a_training_set_are_skipped_with_one_warning_each(tmp_path):
    root = _folder(tmp_path / "d", n=4)
    (root / "images" / "1.png").write_bytes(b"not an image")           # unreadable header
    _big_png(root / "images" / "2.png", side=7000)                       # oversized
    good = (root / "images" / "3.png").read_bytes()
    (root / "images" / "3.png").write_bytes(good[: len(good) // 2])     # header fine, data truncated
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        ds = PairedFolderDataset(root, (S, S), K)
    msgs = [str(x.message) for x in w]
    assert len(ds) == 2 and len(msgs) == 2
    assert any("1.png" in m and "not a readable image" in m for m in msgs)
    assert any("2.png" in m and "pixels, above the limit" in m for m in msgs)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        a, b, again = ds[1], ds[0], ds[1]   # the truncated file: warned once, replaced by the next pair
    assert len(w) == 1 and "3.png" in str(w[0].message), [str(x.message) for x in w]
    assert torch.equal(a["image"], b["image"]) and torch.equal(again["image"], b["image"])
