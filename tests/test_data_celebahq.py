"""CelebA-HQ with CelebAMask-HQ part masks: the 19-class map in CoCosNet's order with the glasses
overlay, the code's all_parts_except_glasses maps, the layout, pair lists, one step."""
import json
import math
import warnings

import numpy as np
import pytest
import torch

from exsynth import cli
from exsynth.data.celebahq import CELEBAHQ_PARTS, GLASSES, NUM_CLASSES, CelebAHQDataset, merge_part_masks
from exsynth.imageio import ImageError, write_image, write_label
from exsynth.data.ade20k import PairListOptions
from exsynth.registry import DrawIndex


def _mask(path, m):
    write_label(torch.from_numpy(m.astype(np.int64) * 255), path)


def make_celebahq(root, ids=(0, 1, 2, 2001), size=32):
    rng = np.random.default_rng(0)
    for i in ids:
        write_image(torch.rand(3, 2 * size, 2 * size, generator=torch.Generator().manual_seed(i)) * 2 - 1,
                    root / "CelebA-HQ-img" / f"{i}.jpg")
        folder = root / "CelebAMask-HQ-mask-anno" / str(i // 2000)
        skin = np.zeros((size, size), bool)
        skin[4:28, 6:26] = True
        _mask(folder / f"{i:05d}_skin.png", skin)
        hair = np.zeros((size, size), bool)
        hair[0:10, :] = True        # drawn over the skin where they overlap
        _mask(folder / f"{i:05d}_hair.png", hair)
        if i % 2:
            cloth = np.zeros((size, size), bool)
            cloth[28:, :] = True
            _mask(folder / f"{i:05d}_cloth.png", cloth)
        if i == 1:
            glasses = np.zeros((size, size), bool)
            glasses[12:16, 8:24] = True   # over the skin
            _mask(folder / f"{i:05d}_eye_g.png", glasses)
    (root / "train.txt").write_text("\n".join(str(i) for i in ids[:-1]) + "\n")
    (root / "val.txt").write_text(f"{ids[-1]}\n")
    (root / "celebahq_ref.txt").write_text("".join(f"{i}.jpg,{ids[(k + 1) % 3]}.jpg,{ids[(k + 2) % 3]}.jpg\n"
                                                   for k, i in enumerate(ids[:-1])))
    (root / "celebahq_ref_test.txt").write_text(f"{ids[-1]}.jpg,{ids[0]}.jpg,{ids[1]}.jpg\n")
    return root


def test_parts_merge_into_the_19_class_map_in_cocosnets_order(tmp_path):
    root = make_celebahq(tmp_path / "c")
    lab, glasses = merge_part_masks(root / "CelebAMask-HQ-mask-anno", 1)
    skin, hair, cloth = (CELEBAHQ_PARTS.index(p) + 1 for p in ("skin", "hair", "cloth"))
    # the released model's numbering: its all_parts_except_glasses maps, eye_g at channel -3
    assert NUM_CLASSES == 19 and (skin, hair, cloth, GLASSES) == (1, 2, 14, 16)
    assert CELEBAHQ_PARTS[4:6] == ("l_eye", "r_eye") and CELEBAHQ_PARTS[8] == "nose"
    assert lab[0, 0] == hair and lab[5, 10] == hair       # hair is drawn after skin
    assert lab[15, 15] == skin and lab[30, 3] == cloth and lab[15, 1] == 0
    assert GLASSES not in lab.unique().tolist()           # glasses are an overlay, not a class
    assert glasses[13, 10] == 1 and glasses[20, 10] == 0 and lab[13, 10] == skin
    with pytest.raises(ImageError, match="no part mask 00005_<part>.png"):
        merge_part_masks(root / "CelebAMask-HQ-mask-anno", 5)


def test_glasses_lie_over_their_part_as_the_code_feeds_them(tmp_path):
    root = make_celebahq(tmp_path / "c")
    ds = CelebAHQDataset(root, 32, split="train", num_classes=NUM_CLASSES,
                         options=PairListOptions(real_reference_probability=0.0, hard_reference_probability=0.0,
                                                 flip=False))
    s = ds[DrawIndex(1, 3)]                      # id 1 wears glasses
    onehot, index = s["label"], s["label_index"]
    lens = onehot[GLASSES] > 0
    assert lens.any() and (onehot.sum(0)[lens] == 2).all()          # its part and eye_g
    assert (onehot.sum(0)[~lens] == 1).all()
    assert torch.equal(onehot[:GLASSES].argmax(0)[lens], index[lens])  # label_index: the part, the mask-loss target
    assert not (index == GLASSES).any()


def test_the_codes_all_parts_except_glasses_map_is_read_as_it_is(tmp_path):
    root = make_celebahq(tmp_path / "c")
    anno = root / "CelebAMask-HQ-mask-anno"
    rng = np.random.default_rng(3)
    merged = rng.choice([c for c in range(NUM_CLASSES) if c != GLASSES], size=(32, 32))
    write_label(torch.from_numpy(merged), anno / "all_parts_except_glasses" / "00001.png")
    lab, glasses = merge_part_masks(anno, 1)
    assert np.array_equal(lab.numpy(), merged) and glasses.sum() > 0
    write_label(torch.full((32, 32), GLASSES, dtype=torch.int64), anno / "all_parts_except_glasses" / "00002.png")
    with pytest.raises(ImageError, match=r"00002.png: class values \[16\] outside 0..18 without 16"):
        merge_part_masks(anno, 2)


def test_layout_samples_and_references(tmp_path):
    root = make_celebahq(tmp_path / "c")
    ds = CelebAHQDataset(root, 32, split="train", num_classes=NUM_CLASSES)
    assert len(ds) == 3
    s = ds[DrawIndex(0, 3)]
    assert s["label"].shape == (NUM_CLASSES, 32, 32) and s["image"].shape == (3, 32, 32)
    assert set(s["label_index"].unique().tolist()) <= {0, 1, 2, 14}
    val = CelebAHQDataset(root, 32, split="val", num_classes=NUM_CLASSES)
    assert len(val) == 1 and not bool(val[0]["self_ref"])   # id 2001 lives in mask folder 1
    with pytest.raises(ImageError, match="not a CelebA-HQ layout.*missing \\['train.txt'\\]"):
        (root / "train.txt").unlink()
        CelebAHQDataset(root, 32)


def test_one_training_step_on_celebahq(tmp_path, capsys):
    root = make_celebahq(tmp_path / "c")
    out = tmp_path / "r"
    assert cli.main(["train", "--dataset", "celebahq", "--data", str(root), "--num-classes", "19", "--size", "32",
                     "--batch-size", "2", "--steps", "1", "--quiet", "--out", str(out), "--option", "width=4",
                     "--option", "num_up=2", "--option", "max_mult=2", "--option", "spade_hidden=8",
                     "--option", "adaptor_downsample=1", "--loss", "feat=0", "--loss", "perc=0",
                     "--loss", "context=0", "--loss", "adv=0", "--loss", "gan_feat=0"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["step"] == 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert cli.main(["pairs", "--dataset", "celebahq", "--data", str(root), "--out", str(tmp_path / "p.txt"),
                         "--top-k", "2", "--size", "32", "--quiet"]) == 0
    lines = (tmp_path / "p.txt").read_text().splitlines()
    assert len(lines) == 3 and all(l.split(",")[0] not in l.split(",")[1:] for l in lines)
