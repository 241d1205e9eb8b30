"""Dense-input layouts (celebahq-edge, deepfashion), pair lists on the folder layout, one
training step of CoCosNet and MSCA-Net on every layout at 64 px, and dense inputs through
`exsynth synthesize`."""
import json
import math
import warnings

import numpy as np
import pytest
import torch

from exsynth import cli
from exsynth.data.celebahq_edge import CHANNELS as EDGE_CHANNELS, INNER_PARTS, CelebAHQEdgeDataset
from exsynth.data.deepfashion import CHANNELS as POSE_CHANNELS, DeepFashionDataset, DeepFashionOptions, read_openpose
from exsynth.data.folder import FolderPairListDataset, PairedFolderDataset
from exsynth.data.input_maps import boundaries, render_pose
from exsynth.imageio import ImageError, write_image, write_label
from exsynth.registry import DrawIndex, data_source
from test_data_ade20k import make_ade
from test_data_celebahq import make_celebahq
from test_data_cocostuff import make_coco


# ---- fixtures ------------------------------------------------------------------------------------

def _person(rng, W, H):
    """An OpenPose candidate table and one person's subset row (18 indices, score, count)."""
    cand = np.c_[rng.uniform(8, W - 8, 18), rng.uniform(8, H - 8, 18), rng.random(18), np.arange(18)]
    sub = np.r_[np.arange(18, dtype=np.float64), 12.0, 17.0]
    sub[int(rng.integers(10, 18))] = -1
    return cand, sub


def make_deepfashion(root, n=5, W=48, H=64):
    """img/MEN/Tees/id_0000000{k}/{v}_front.jpg photos (two views per person) with OpenPose files."""
    rng = np.random.default_rng(0)
    names = []
    for i in range(n):
        rel = f"img/MEN/Tees/id_{i // 2:08d}/{i % 2:02d}_1_front.jpg"
        names.append(rel)
        write_image(torch.rand(3, H, W, generator=torch.Generator().manual_seed(i)) * 2 - 1, root / rel)
        pose = root / ("pose/" + rel[4:-4])
        pose.parent.mkdir(parents=True, exist_ok=True)
        cand, sub = _person(rng, W, H)
        np.savetxt(f"{pose}_candidate.txt", cand)
        np.savetxt(f"{pose}_subset.txt", sub[None])
    (root / "train.txt").write_text("\n".join(names[:-1]) + "\n")
    (root / "val.txt").write_text(names[-1] + "\n")
    (root / "deepfashion_self_pair.txt").write_text(f"{names[0]},{names[1]}\n{names[1]},{names[0]}\n"
                                                    f"{names[2]},{names[3]}\n{names[3]},{names[2]}\n")
    (root / "deepfashion_ref.txt").write_text("".join(f"{a},{names[(k + 2) % 4]},{names[(k + 3) % 4]}\n"
                                                      for k, a in enumerate(names[:-1])))
    (root / "deepfashion_ref_test.txt").write_text(f"{names[-1]},{names[0]},{names[2]}\n")
    return root, names


def make_folder(root, n=5, with_pairs=True):
    rng = np.random.default_rng(3)
    for i in range(n):
        lab = torch.from_numpy(rng.integers(0, 6, size=(40, 40)))
        write_label(lab, root / "labels" / f"s{i}.png")
        write_image(torch.rand(3, 40, 40, generator=torch.Generator().manual_seed(i)) * 2 - 1, root / "images" / f"s{i}.jpg")
    if with_pairs:
        (root / "pairs.txt").write_text("".join(f"s{i}.jpg,s{(i + 1) % n}.jpg,s{(i + 2) % n}.jpg\n" for i in range(n)))
    return root


# ---- celebahq-edge ---------------------------------------------------------------------------------

def test_celebahq_edge_channels(tmp_path):
    root = make_celebahq(tmp_path / "c")
    ds = CelebAHQEdgeDataset(root, 32, split="val", num_classes=EDGE_CHANNELS)   # no crop, no flip
    s = ds[0]
    x = s["label"]
    assert EDGE_CHANNELS == 15 and x.shape == (15, 32, 32) and x.dtype == torch.float32 and "label_index" not in s
    assert float(x.min()) >= 0 and float(x.max()) <= 1 and torch.isfinite(x).all()
    assert set(x[0].unique().tolist()) <= {0.0, 1.0} and set(x[14].unique().tolist()) <= {0.0, 1.0}
    # id 2001 has skin and hair masks (and cloth, not an inner part), 32x32 masks read at 32x32
    skin = np.zeros((32, 32), bool)
    skin[4:28, 6:26] = True
    hair = np.zeros((32, 32), bool)
    hair[0:10, :] = True
    want = boundaries(skin.astype(np.uint8) * 255) | boundaries(hair.astype(np.uint8) * 255)
    assert (x[14].numpy().astype(bool) == want).all()
    assert (x[0] >= x[14]).all()                                   # all edges include the part boundaries
    i_skin, i_hair, i_brow = (1 + INNER_PARTS.index(p) for p in ("skin", "hair", "l_brow"))
    assert (x[i_brow] == 1).all()                                  # absent part: all ones
    assert (x[i_skin][torch.from_numpy(boundaries(skin.astype(np.uint8)))] == 0).all()
    assert float(x[i_skin, 16, 16]) == pytest.approx(int(10 / 3) / 255)  # 10 px (L1) from the nearest skin edge
    # the exemplar is the listed reference's own edge map
    assert s["exemplar_label"].shape == (15, 32, 32) and not bool(s["self_ref"])


def test_celebahq_edge_canny_on_the_background_only(tmp_path):
    root = make_celebahq(tmp_path / "c", ids=(0, 1, 2, 3))
    # a strong vertical stripe in the photo: Canny finds it on the background, not inside the skin
    img = torch.full((3, 64, 64), -0.6)
    img[:, :, 30:34] = 0.8
    write_image(img, root / "CelebA-HQ-img" / "3.jpg")
    x = CelebAHQEdgeDataset(root, 32, split="val", num_classes=15)[0]["label"]
    canny_only = (x[0] - x[14]).clamp_min(0)
    assert canny_only[28:32, 12:20].any() and not canny_only[12:26, 8:24].any()   # below the skin / inside it


# ---- deepfashion -------------------------------------------------------------------------------------

def test_deepfashion_pose_input_and_references(tmp_path):
    root, names = make_deepfashion(tmp_path / "DeepFashion")
    val = DeepFashionDataset(root, 64, split="val", num_classes=POSE_CHANNELS)
    s = val[0]
    assert POSE_CHANNELS == 20 and s["label"].shape == (20, 64, 64) and "label_index" not in s
    assert float(s["label"].min()) >= 0 and float(s["label"].max()) <= 1
    assert not bool(s["self_ref"])                                   # validation: the listed easy reference
    # the skeleton is drawn on the photo's own 48x64 grid, then resized (nearest) to the load size
    from PIL import Image
    cand, person = read_openpose(str(root / "pose/MEN/Tees/id_00000002/00_1_front_{}.txt"))
    canvas, limbs = render_pose(cand, person, 64, 48)
    want = np.asarray(Image.fromarray(canvas).resize((64, 64), Image.NEAREST), np.float32).transpose(2, 0, 1) / 255
    assert canvas.any() and np.array_equal(s["label"][:3].numpy(), want)
    assert sum(m.any() for m in limbs) >= 10 and all(
        bool((s["label"][3 + k] == 1).all()) == (not m.any()) for k, m in enumerate(limbs))
    # training with the official defaults: no real references, no flips, the other view as exemplar
    ds = DeepFashionDataset(root, 64, num_classes=POSE_CHANNELS, options=DeepFashionOptions())
    assert len(ds) == 4
    for i in range(4):
        t = ds[DrawIndex(i, i)]
        assert bool(t["self_ref"])
        assert not torch.equal(t["exemplar"], t["image"])            # every training photo has a listed other view
    # without video_like (and no crop: load size = size) the exemplar is the photo itself
    off = DeepFashionDataset(root, 64, num_classes=POSE_CHANNELS,
                             options=DeepFashionOptions(video_like=False, load_size=64))
    t = off[DrawIndex(0, 0)]
    assert bool(t["self_ref"]) and torch.equal(t["exemplar"], t["image"]) and torch.equal(t["exemplar_label"], t["label"])


def test_deepfashion_bad_files(tmp_path):
    root, names = make_deepfashion(tmp_path / "DeepFashion")
    (root / "pose/MEN/Tees/id_00000000/01_1_front_subset.txt").write_text("not numbers\n")
    (root / "pose/MEN/Tees/id_00000001/00_1_front_candidate.txt").unlink()
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        ds = DeepFashionDataset(root, 64, num_classes=20, options=DeepFashionOptions(video_like=False))
        assert len(ds) == 3                                          # the photo without its candidates is dropped
        s = ds[1]                                                    # the unparsable subset: skipped, the next used
    msgs = [str(m.message) for m in w]
    assert any("00_1_front_candidate.txt: no such file" in m for m in msgs)
    assert any("01_1_front_subset.txt: not an OpenPose subset file" in m for m in msgs)
    assert s["index"] == 2
    with pytest.raises(ImageError, match="not a DeepFashion layout.*missing \\['img', 'pose'\\].*found \\['CelebA-HQ-img'"):
        DeepFashionDataset(make_celebahq(tmp_path / "c"), 64, num_classes=20)
    with pytest.raises(ValueError, match="its input maps have 20 channels, got num_classes 19"):
        DeepFashionDataset(root, 64, num_classes=19)


def test_openpose_several_people_draws_the_best_scored(tmp_path):
    cand = np.c_[np.arange(36).reshape(18, 2) * 1.0, np.ones(18), np.arange(18)]
    cand = np.r_[cand, cand + [1, 1, 0, 18]]
    sub = np.full((2, 20), -1.0)
    sub[0, :3], sub[0, 18] = [0, 1, 2], 3.0
    sub[1, :3], sub[1, 18] = [18, 19, 20], 9.0
    np.savetxt(tmp_path / "p_candidate.txt", cand)
    np.savetxt(tmp_path / "p_subset.txt", sub)
    c, person = read_openpose(str(tmp_path / "p_{}.txt"))
    assert person[:3].tolist() == [18, 19, 20] and len(person) == 18
    np.savetxt(tmp_path / "q_candidate.txt", cand[:2])
    np.savetxt(tmp_path / "q_subset.txt", sub[:1] + np.r_[np.zeros(2), [5.0], np.zeros(17)])
    with pytest.raises(ImageError, match="keypoint index 7 beyond the 2 candidates"):
        read_openpose(str(tmp_path / "q_{}.txt"))


# ---- folder with a pair list ------------------------------------------------------------------------

def test_folder_pair_list(tmp_path):
    root = make_folder(tmp_path / "f")
    src = data_source("folder")
    assert not src.exemplars_for({}) and src.exemplars_for({"pairs": str(root / "pairs.txt")})
    assert isinstance(src.make(root, size=32, num_classes=6), PairedFolderDataset)
    ds = src.make(root, size=32, num_classes=6, options={"pairs": str(root / "pairs.txt")})
    assert isinstance(ds, FolderPairListDataset) and len(ds) == 5
    val = src.make(root, size=32, num_classes=6, split="val", options={"pairs": str(root / "pairs.txt")})
    s = val[0]
    assert not bool(s["self_ref"]) and s["exemplar_label"].shape == (6, 32, 32)
    ref = val[1]["exemplar_label_index"]     # s1's easy reference is s2
    assert torch.equal(ref, val[2]["label_index"])
    # a missing listed file: one warning naming it, the image itself instead
    (root / "images" / "s2.jpg").unlink()
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        val = src.make(root, size=32, num_classes=6, split="val", options={"pairs": str(root / "pairs.txt")})
        a, b = val[1], val[1]
    assert bool(a["self_ref"]) and sum("s2.jpg: listed as a reference" in str(m.message) for m in w) == 1


# ---- one training step on every layout ------------------------------------------------------------------

MODELS = {
    "cocosnet": ["--option", "width=4", "--option", "num_up=2", "--option", "max_mult=2", "--option", "spade_hidden=8",
                 "--option", "adaptor_downsample=1", "--loss", "context=0"],
    "msca": ["--option", "width=4", "--option", "use_vgg=false", "--option", "num_scales=3", "--option", "ks=[2,2,2]",
             "--option", "spade_hidden=8"],
}


def _layout(name, tmp_path):
    if name == "ade20k":
        return make_ade(tmp_path / "ade", n_train=3, n_val=1), []
    if name == "celebahq" or name == "celebahq-edge":
        return make_celebahq(tmp_path / "c"), []
    if name == "deepfashion":
        return make_deepfashion(tmp_path / "DeepFashion")[0], []
    if name == "cocostuff":
        return make_coco(tmp_path / "coco", n=(3, 1)), []
    root = make_folder(tmp_path / "f")
    return root, ["--data-option", f"pairs={root / 'pairs.txt'}"]


@pytest.mark.parametrize("model", sorted(MODELS))
@pytest.mark.parametrize("layout", ["celebahq", "celebahq-edge", "deepfashion", "cocostuff", "folder"])
def test_one_training_step_on_every_layout(tmp_path, capsys, layout, model):
    root, extra = _layout(layout, tmp_path)
    out = tmp_path / "r"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # random-init VGG, missing pair lists
        code = cli.main(["train", "--allow-random-vgg", "--model", model, "--dataset", layout, "--data", str(root), "--size", "64",
                         "--batch-size", "2", "--steps", "1", "--quiet", "--out", str(out), "--image-every", "1",
                         "--loss", "feat=0", "--loss", "adv=0", "--loss", "gan_feat=0", *MODELS[model], *extra])
    assert code == 0, capsys.readouterr().err
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["step"] == 1 and math.isfinite(summary["loss"])
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["num_classes"] == data_source(layout).num_classes or (layout == "folder" and cfg["num_classes"] == 6)
    assert list((out / "samples").glob("*.png"))


def test_wrong_channel_count_for_a_dense_layout(tmp_path, capsys):
    root = make_celebahq(tmp_path / "c")
    code = cli.main(["train", "--dataset", "celebahq-edge", "--data", str(root), "--num-classes", "19",
                     "--out", str(tmp_path / "r"), "--steps", "1"])
    assert code == 2 and "has 15 input channels; pass --num-classes 15" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


# ---- dense inputs through synthesize -----------------------------------------------------------------------

def test_synthesize_dense_inputs(tmp_path, capsys):
    root, names = make_deepfashion(tmp_path / "DeepFashion")
    run = tmp_path / "r"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert cli.main(["train", "--dataset", "deepfashion", "--data", str(root), "--size", "32", "--batch-size", "2",
                         "--steps", "1", "--quiet", "--out", str(run), *MODELS["cocosnet"],
                         "--loss", "feat=0", "--loss", "perc=0", "--loss", "adv=0", "--loss", "gan_feat=0"]) == 0
    capsys.readouterr()
    ckpt = str(run / "checkpoints" / "latest.pt")
    assert cli.main(["synthesize", "--checkpoint", ckpt, "--dataset", "deepfashion", "--data", str(root),
                     "--out", str(tmp_path / "o")]) == 0
    assert (tmp_path / "o" / "00_1_front.png").is_file()
    # a .npy input map of the model's 20 channels, and a wrong one
    ds = DeepFashionDataset(root, 32, split="val", num_classes=20)
    np.save(tmp_path / "in.npy", ds[0]["label"].numpy())
    write_image(ds[0]["exemplar"], tmp_path / "ex.png")
    assert cli.main(["synthesize", "--checkpoint", ckpt, "--input", str(tmp_path / "in.npy"),
                     "--exemplar", str(tmp_path / "ex.png"), "--exemplar-label", str(tmp_path / "in.npy"),
                     "--out", str(tmp_path / "one.png")]) == 0
    assert (tmp_path / "one.png").is_file()
    np.save(tmp_path / "bad.npy", np.zeros((19, 32, 32), np.float32))
    capsys.readouterr()
    assert cli.main(["synthesize", "--checkpoint", ckpt, "--input", str(tmp_path / "bad.npy"),
                     "--exemplar", str(tmp_path / "ex.png"), "--exemplar-label", str(tmp_path / "in.npy"),
                     "--out", str(tmp_path / "two.png")]) == 2
    assert "bad.npy: input map is float32 (19, 32, 32), expected numbers of shape (20, H, W)" in capsys.readouterr().err
    nan = ds[0]["label"].numpy().copy()
    nan[0, 0, 0] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    assert cli.main(["synthesize", "--checkpoint", ckpt, "--input", str(tmp_path / "nan.npy"),
                     "--exemplar", str(tmp_path / "ex.png"), "--exemplar-label", str(tmp_path / "in.npy"),
                     "--out", str(tmp_path / "three.png")]) == 2
    assert "nan.npy: input map holds NaN" in capsys.readouterr().err
    # scored on the validation split: no class maps, so no class-mean baseline; the VGG metrics skipped
    capsys.readouterr()
    assert cli.main(["eval", "--checkpoint", ckpt, "--dataset", "deepfashion", "--data", str(root), "--quiet",
                     "--json", str(tmp_path / "e.json")]) == 0
    rec = json.loads((tmp_path / "e.json").read_text())
    assert rec["samples"] == 1 and "class_mean" not in rec["results"] and "swd" in rec["scores"]
    assert "vgg" in rec["skipped"]
