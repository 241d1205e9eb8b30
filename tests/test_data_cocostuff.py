"""COCO-stuff layouts (SPADE's and the download's), 255 -> unlabeled class 182, one MSCA step."""
import json

import numpy as np
import pytest
import torch

from exsynth import cli
from exsynth.data.cocostuff import NUM_CLASSES, UNLABELED, CocoStuffDataset
from exsynth.imageio import ImageError, LabelRangeError, write_image, write_label
from exsynth.registry import DrawIndex


def make_coco(root, layout="spade", n=(4, 2)):
    rng = np.random.default_rng(0)
    for split, count in zip(("train", "val"), n):
        for i in range(count):
            lab = rng.integers(0, 182, size=(40, 48))
            lab[:5] = 255
            img = torch.rand(3, 40, 48, generator=torch.Generator().manual_seed(i)) * 2 - 1
            name = f"{i:012d}"
            if layout == "spade":
                write_image(img, root / f"{split}_img" / f"{name}.jpg")
                write_label(torch.from_numpy(lab), root / f"{split}_label" / f"{name}.png")
            else:
                year = f"{split}2017"
                write_image(img, root / "images" / year / f"{name}.jpg")
                write_label(torch.from_numpy(lab), root / "stuffthingmaps_trainval2017" / year / f"{name}.png")
    return root


@pytest.mark.parametrize("layout", ["spade", "download"])
def test_layouts_and_unlabeled(tmp_path, layout):
    root = make_coco(tmp_path / "coco", layout)
    ds = CocoStuffDataset(root, 32, num_classes=NUM_CLASSES)
    assert len(ds) == 4 and len(CocoStuffDataset(root, 32, split="val", num_classes=NUM_CLASSES)) == 2
    s = ds[DrawIndex(1, 0)]
    assert s["label"].shape == (NUM_CLASSES, 32, 32) and int(s["label_index"].max()) <= UNLABELED
    full = CocoStuffDataset(root, 40, split="val", num_classes=NUM_CLASSES)._read_label(
        sorted((root / ("val_label" if layout == "spade" else "stuffthingmaps_trainval2017/val2017")).iterdir())[0], 40)
    assert (full[:5] == UNLABELED).all()  # 255 in the file


def test_bad_layout_and_ids(tmp_path):
    with pytest.raises(ImageError, match="not a COCO-stuff layout"):
        CocoStuffDataset(tmp_path, 32, num_classes=NUM_CLASSES)
    root = make_coco(tmp_path / "coco", n=(1, 1))
    write_label(torch.full((40, 48), 200), root / "train_label" / f"{0:012d}.png")
    with pytest.raises(LabelRangeError, match="label values span 200..200"):
        CocoStuffDataset(root, 32, num_classes=NUM_CLASSES)[0]


def test_one_msca_step_on_cocostuff(tmp_path, capsys):
    root = make_coco(tmp_path / "coco")
    assert cli.main(["train", "--model", "msca", "--dataset", "cocostuff", "--data", str(root), "--num-classes", "183",
                     "--size", "32", "--batch-size", "2", "--steps", "1", "--supervision", "self", "--quiet",
                     "--out", str(tmp_path / "r"), "--option", "width=4", "--option", "use_vgg=false",
                     "--option", "num_scales=3", "--option", "ks=[2,2,2]", "--option", "spade_hidden=8",
                     "--loss", "feat=0", "--loss", "adv=0", "--loss", "gan_feat=0"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["step"] == 1
