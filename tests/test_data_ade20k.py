"""ADE20k layouts (canonical and CoCosNet's flat one), CoCosNet pair lists and their sampling,
and `exsynth pairs` retrieval, on tiny generated fixtures."""
import json
import math
import warnings

import numpy as np
import pytest
import torch

from exsynth import cli
from exsynth.data.ade20k import NUM_CLASSES, ADE20kDataset, ADE20kOptions, read_pair_list
from exsynth.imageio import ImageError, LabelRangeError, write_image, write_label
from exsynth.registry import DrawIndex, draw_rng


def _scene(rng, h=48, w=56):
    """A photo-like image and a label map with a few rectangles of ADE classes, 0 = other."""
    lab = np.zeros((h, w), dtype=np.int64)
    img = np.zeros((3, h, w), dtype=np.float32)
    for _ in range(4):
        c = int(rng.integers(1, NUM_CLASSES))
        y, x = int(rng.integers(0, h - 8)), int(rng.integers(0, w - 8))
        lab[y:y + int(rng.integers(6, 24)), x:x + int(rng.integers(6, 24))] = c
    for c in np.unique(lab):
        img[:, lab == c] = rng.uniform(-1, 1, size=(3, 1))
    img += rng.normal(0, 0.05, size=img.shape).astype(np.float32)
    return torch.from_numpy(img.clip(-1, 1)), torch.from_numpy(lab)


def make_ade(root, n_train=6, n_val=2, layout="canonical", seed=0, pairs=True):
    rng = np.random.default_rng(seed)
    for split, n, tag in (("training", n_train, "train"), ("validation", n_val, "val")):
        for i in range(n):
            img, lab = _scene(rng)
            name = f"ADE_{tag}_{i + 1:08d}"
            if layout == "canonical":
                write_image(img, root / "ADEChallengeData2016" / "images" / split / f"{name}.jpg")
                write_label(lab, root / "ADEChallengeData2016" / "annotations" / split / f"{name}.png")
            else:
                write_image(img, root / split / f"{name}.jpg")
                write_label(lab, root / split / f"{name}.png")
    if pairs:
        names = [f"ADE_train_{i + 1:08d}.jpg" for i in range(n_train)]
        lines = [",".join([n, names[(i + 1) % n_train], names[(i + 2) % n_train]]) for i, n in enumerate(names)]
        (root / "ade20k_ref.txt").write_text("\n".join(lines) + "\n")
        vnames = [f"ADE_val_{i + 1:08d}.jpg" for i in range(n_val)]
        (root / "ade20k_ref_test.txt").write_text("\n".join(f"{v},{names[0]},{names[-1]}" for v in vnames) + "\n")
    return root


@pytest.mark.parametrize("layout", ["canonical", "flat"])
def test_layouts_load(tmp_path, layout):
    root = make_ade(tmp_path / "ade", layout=layout)
    ds = ADE20kDataset(root, 32, split="train", seed=1)
    assert len(ds) == 6
    s = ds[DrawIndex(0, 17)]
    assert s["label"].shape == (NUM_CLASSES, 32, 32) and s["image"].shape == (3, 32, 32)
    assert s["exemplar"].shape == (3, 32, 32) and s["exemplar_label"].shape == (NUM_CLASSES, 32, 32)
    assert s["label_index"].max() < NUM_CLASSES and (s["label_index"] == 0).any()  # "other" is class 0
    torch.testing.assert_close(s["label"].sum(0), torch.ones(32, 32))
    # the same draw gives the same sample; another draw another crop/flip/reference
    t = ds[DrawIndex(0, 17)]
    assert all(torch.equal(s[k], t[k]) for k in ("image", "exemplar", "label"))
    val = ADE20kDataset(root, 32, split="val")
    assert len(val) == 2 and not bool(val[0]["self_ref"])  # validation: always the listed reference


def test_reference_sampling_probabilities(tmp_path):
    root = make_ade(tmp_path / "ade")
    ds = ADE20kDataset(root, 32, split="train", seed=3)
    counts = {"self": 0, "easy": 0, "hard": 0}
    n = 4000
    listed = read_pair_list(root / "ade20k_ref.txt")["ADE_train_00000001.jpg"]
    for g in range(n):
        ref = ds._reference(DrawIndex(0, g), draw_rng(DrawIndex(0, g), 3))
        counts["self" if ref is None else ("hard" if ref[0].name == listed[-1] else "easy")] += 1
    for key, p in (("self", 0.3), ("easy", 0.5), ("hard", 0.2)):
        sigma = math.sqrt(p * (1 - p) / n)
        assert abs(counts[key] / n - p) < 4 * sigma, counts


def test_missing_references_warn_once_and_fall_back(tmp_path):
    root = make_ade(tmp_path / "ade")
    (root / "ade20k_ref.txt").write_text("ADE_train_00000001.jpg,ADE_train_gone.jpg,ADE_train_gone.jpg\n")
    ds = ADE20kDataset(root, 32, split="train", options=ADE20kOptions(real_reference_probability=1.0,
                                                                     hard_reference_probability=0.0))
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        samples = [ds[DrawIndex(0, g)] for g in range(5)]
    msgs = [str(x.message) for x in w]
    assert len(msgs) == 1 and "ADE_train_gone.jpg" in msgs[0], msgs
    assert all(bool(s["self_ref"]) for s in samples)


def test_bad_layouts_and_labels(tmp_path, capsys):
    other = tmp_path / "celeba"
    write_image(torch.zeros(3, 8, 8), other / "CelebA-HQ-img" / "0.jpg")
    with pytest.raises(ImageError, match="not an ADE20k layout: expected ADEChallengeData2016.*found \\['CelebA-HQ-img'\\]"):
        ADE20kDataset(other, 32)
    root = make_ade(tmp_path / "ade", n_train=1)
    write_label(torch.full((48, 56), 200), root / "ADEChallengeData2016" / "annotations" / "training" /
                "ADE_train_00000001.png")
    with pytest.raises(LabelRangeError, match="ADE_train_00000001.png: label values span 200..200"):
        ADE20kDataset(root, 32, options=ADE20kOptions(real_reference_probability=0.0,
                                                     hard_reference_probability=0.0))[0]
    empty = tmp_path / "empty"
    (empty / "training").mkdir(parents=True)
    with pytest.raises(ImageError, match="not an ADE20k layout"):
        ADE20kDataset(empty, 32)
    # through the CLI: one line each, before anything is written
    code = cli.main(["train", "--dataset", "ade20k", "--data", str(other), "--num-classes", "151",
                     "--out", str(tmp_path / "r"), "--steps", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "not an ADE20k layout" in err[0], err
    code = cli.main(["train", "--dataset", "ade20k", "--data", str(root), "--out", str(tmp_path / "r"), "--steps", "1",
                     "--num-classes", "6"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "has 151 label classes; pass --num-classes 151 (or leave it out)" in err[-1], err
    assert not (tmp_path / "r").exists()


def test_unreadable_files_are_skipped_with_a_warning(tmp_path):
    root = make_ade(tmp_path / "ade", n_train=3)
    (root / "ADEChallengeData2016" / "images" / "training" / "ADE_train_00000002.jpg").write_bytes(b"junk")
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        ds = ADE20kDataset(root, 32)
    assert len(ds) == 2 and any("ADE_train_00000002.jpg" in str(x.message) for x in w)


@pytest.mark.parametrize("model,opts", [
    ("cocosnet", ["--option", "width=4", "--option", "num_up=2", "--option", "max_mult=2", "--option",
                  "spade_hidden=8", "--option", "adaptor_downsample=1", "--option", "exemplar_label_input=true"]),
    ("msca", ["--option", "width=4", "--option", "use_vgg=false", "--option", "num_scales=3", "--option",
              "ks=[2,2,2]", "--option", "spade_hidden=8"]),
])
def test_one_training_step_on_ade20k(tmp_path, capsys, model, opts):
    root = make_ade(tmp_path / "ade")
    out = tmp_path / "r"
    assert cli.main(["train", "--allow-random-vgg", "--model", model, "--dataset", "ade20k", "--data", str(root), "--num-classes", "151",
                     "--size", "64", "--batch-size", "2", "--steps", "1", "--quiet", "--out", str(out),
                     "--loss", "feat=0", "--loss", "perc=0", "--loss", "adv=0", "--loss", "gan_feat=0", *opts]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["step"] == 1 and math.isfinite(summary["loss"])
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["dataset"] == "ade20k" and cfg["supervision"] == "auto"


def test_pairs_finds_a_planted_near_duplicate(tmp_path, capsys):
    root = make_ade(tmp_path / "ade", n_train=8, pairs=False)
    train = root / "ADEChallengeData2016" / "images" / "training"
    from exsynth.imageio import read_image
    base = read_image(train / "ADE_train_00000001.jpg")
    write_image((base + 0.02 * torch.randn_like(base)).clamp(-1, 1), train / "ADE_train_00000006.jpg")
    out = tmp_path / "pairs.txt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random-init VGG19 (no weights file in tests)
        assert cli.main(["pairs", "--dataset", "ade20k", "--data", str(root), "--out", str(out), "--top-k", "3",
                         "--size", "64", "--quiet", "--cache", str(tmp_path / "cache")]) == 0
    ref = read_pair_list(out)
    assert len(ref) == 8 and all(len(v) == 3 for v in ref.values())
    assert ref["ADE_train_00000001.jpg"][0] == "ADE_train_00000006.jpg"
    assert ref["ADE_train_00000006.jpg"][0] == "ADE_train_00000001.jpg"
    assert all(name not in refs for name, refs in ref.items())  # never its own exemplar
    assert len(list((tmp_path / "cache").iterdir())) == 8       # features cached per file
    # the list trains: the loader reads it
    out.replace(root / "ade20k_ref.txt")
    ds = ADE20kDataset(root, 32, options=ADE20kOptions(real_reference_probability=1.0, hard_reference_probability=0))
    assert not bool(ds[DrawIndex(0, 0)]["self_ref"])
    # validation images get references from the training split
    out_val = tmp_path / "val.txt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert cli.main(["pairs", "--dataset", "ade20k", "--data", str(root), "--out", str(out_val), "--split", "val",
                         "--top-k", "2", "--size", "64", "--quiet"]) == 0
    val = read_pair_list(out_val)
    assert set(val) == {"ADE_val_00000001.jpg", "ADE_val_00000002.jpg"}
    assert all(r.startswith("ADE_train_") for refs in val.values() for r in refs)


def test_blocked_top_k_equals_a_full_sort():
    from exsynth.retrieval import top_k_neighbours
    g = torch.Generator().manual_seed(0)
    f = torch.nn.functional.normalize(torch.randn(50, 16, generator=g), dim=1)
    idx, sim = top_k_neighbours(f, f, 5, exclude_self=True, block=7)
    full = f @ f.T
    full.fill_diagonal_(-float("inf"))
    ref_s, ref_i = full.topk(5, dim=1)
    assert torch.equal(idx, ref_i)
    torch.testing.assert_close(sim, ref_s)


def test_a_file_that_fails_to_decode_is_skipped_once(tmp_path):
    root = make_ade(tmp_path / "ade", n_train=3, pairs=False)
    f = root / "ADEChallengeData2016" / "images" / "training" / "ADE_train_00000002.jpg"
    f.write_bytes(f.read_bytes()[:-200])  # the header reads, the data is cut
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        ds = ADE20kDataset(root, 32)
        a, b, again = ds[DrawIndex(1, 0)], ds[DrawIndex(2, 0)], ds[DrawIndex(1, 5)]
    bad = [str(x.message) for x in w if "ADE_train_00000002.jpg" in str(x.message)]
    assert len(bad) == 1 and a["index"] == 2 and again["index"] == 2


def test_pairs_cache_follows_the_weights(tmp_path):
    from exsynth.nn import load_vgg19
    from exsynth.retrieval import image_features
    root = make_ade(tmp_path / "ade", n_train=3, pairs=False)
    files = sorted((root / "ADEChallengeData2016" / "images" / "training").iterdir())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(0)
        v1 = load_vgg19(None)
        torch.manual_seed(1)
        v2 = load_vgg19(None)
    f1, _ = image_features(files, v1, size=32, cache=tmp_path / "c", progress=False)
    f2, _ = image_features(files, v2, size=32, cache=tmp_path / "c", progress=False)
    f1_again, _ = image_features(files, v1, size=32, cache=tmp_path / "c", progress=False)
    assert not torch.equal(f1, f2) and torch.equal(f1, f1_again)
    # a cache file cut short by an interrupted run is recomputed, not a crash
    for p in (tmp_path / "c").iterdir():
        p.write_bytes(p.read_bytes()[:10])
    f1_redo, _ = image_features(files, v1, size=32, cache=tmp_path / "c", progress=False)
    torch.testing.assert_close(f1_redo, f1)


def test_header_check_is_not_capped_by_pillow(tmp_path):
    from PIL import Image
    from exsynth.imageio import check_header
    Image.new("1", (15000, 15000)).save(tmp_path / "huge.png")  # 225 M pixels, above Pillow's own cap
    with pytest.raises(ImageError, match="225,000,000 pixels, above the limit of 40,000,000 \\(--max-pixels"):
        check_header(tmp_path / "huge.png")
    assert check_header(tmp_path / "huge.png", max_pixels=0) == (15000, 15000)


def test_worker_messages_keep_multi_line_errors():
    from exsynth.cli import _worker_message
    e = ValueError("Caught LabelRangeError in DataLoader worker process 0.\nOriginal Traceback (most recent call "
                   "last):\n  File \"x.py\", line 1, in f\n    g()\nexsynth.imageio.LabelRangeError: a.png: label "
                   "values span 0..200,\nexpected 0..150 (151 classes)\n")
    assert _worker_message(e) == "a.png: label values span 0..200, expected 0..150 (151 classes)"


def test_synthesize_a_validation_split(tmp_path, capsys):
    """`exsynth synthesize --dataset ade20k` runs the validation images with their listed
    references and writes one output per image."""
    root = make_ade(tmp_path / "ade")
    out = tmp_path / "r"
    assert cli.main(["train", "--dataset", "ade20k", "--data", str(root), "--num-classes", "151", "--size", "32",
                     "--batch-size", "2", "--steps", "1", "--quiet", "--out", str(out), "--option", "width=4",
                     "--option", "num_up=2", "--option", "max_mult=2", "--option", "spade_hidden=8",
                     "--option", "adaptor_downsample=1", "--option", "exemplar_label_input=true",
                     "--loss", "feat=0", "--loss", "perc=0", "--loss", "context=0", "--loss", "adv=0",
                     "--loss", "gan_feat=0"]) == 0
    capsys.readouterr()
    ck = str(out / "checkpoints" / "latest.pt")
    assert cli.main(["synthesize", "--checkpoint", ck, "--dataset", "ade20k", "--data", str(root),
                     "--out", str(tmp_path / "val"), "--warped"]) == 0
    from exsynth.imageio import read_image
    names = sorted(p.name for p in (tmp_path / "val").iterdir())
    assert names == ["ADE_val_00000001.png", "ADE_val_00000001_warped.png", "ADE_val_00000002.png",
                     "ADE_val_00000002_warped.png"]
    assert read_image(tmp_path / "val" / "ADE_val_00000001.png").shape == (3, 32, 32)
    # one clear line for mixed or missing arguments
    for argv, text in ((["--dataset", "ade20k", "--data", str(root), "--input", "x.png"], "drop --input"),
                       ([], "give --input and --exemplar"),
                       (["--dataset", "folder", "--data", str(root)], "no exemplars")):
        assert cli.main(["synthesize", "--checkpoint", ck, "--out", str(tmp_path / "o2"), *argv]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and text in err[0], err
    # the same split scored as the papers score it: outputs saved, SWD over the split's photos
    assert cli.main(["eval", "--checkpoint", ck, "--dataset", "ade20k", "--data", str(root), "--quiet",
                     "--save", str(tmp_path / "scored"), "--json", str(tmp_path / "e.json")]) == 0
    rec = json.loads((tmp_path / "e.json").read_text())
    assert rec["split"] == "val" and rec["samples"] == 2 and not rec["exact_ground_truth"]
    assert "swd" in rec["scores"] and "class_mean" in rec["results"]
    assert sorted(p.name for p in (tmp_path / "scored").iterdir()) == ["ADE_val_00000001.png", "ADE_val_00000002.png"]
    assert "listed references as exemplars" in capsys.readouterr().out


def test_photos_resample_bicubic_as_the_official_transform(tmp_path):
    from PIL import Image
    root = make_ade(tmp_path / "ade", n_train=2, n_val=1)
    val = ADE20kDataset(root, 32, split="val", options=ADE20kOptions(resample="bicubic"))
    s = val[0]                                                      # validation: resized to 32, no crop or flip
    img_path = val.image_files[0]
    want = np.asarray(Image.open(img_path).convert("RGB").resize((32, 32), Image.BICUBIC), np.float32) / 127.5 - 1
    np.testing.assert_array_equal(s["image"].permute(1, 2, 0).numpy(), want)
    bilinear = ADE20kDataset(root, 32, split="val")[0]["image"]
    assert not torch.equal(bilinear, s["image"])
    with pytest.raises(ValueError, match="resample must be one of \\['bilinear', 'bicubic'\\], got 'lanczos'"):
        ADE20kDataset(root, 32, split="val", options=ADE20kOptions(resample="lanczos"))
