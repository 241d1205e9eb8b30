"""CelebA-HQ with CelebAMask-HQ's per-part masks, as its users have it on disk.

Layout (ROOT is `--data`): ROOT/CelebA-HQ-img/{id}.jpg, per-part masks
ROOT/CelebAMask-HQ-mask-anno/{id // 2000}/{id:05d}_{part}.png (255 inside the part), and the
split as CoCosNet's loader reads it: ROOT/train.txt and ROOT/val.txt, one image id per line.
The masks are merged into the dataset's own 19-class map as its `g_mask.py` does: 0 is
background, then skin, nose, eye_g, l_eye, r_eye, l_brow, r_brow, l_ear, r_ear, mouth, u_lip,
l_lip, hair, hat, ear_r, neck_l, neck, cloth = 1..18, a later part drawn over an earlier one.
(CoCosNet itself reads a preprocessed `all_parts_except_glasses` map plus the glasses mask as a
second channel; the merged 19-class map carries the same parts.)

Exemplars, sampling, augmentation and bad-file handling are ADE20k's (`exsynth.data.ade20k`):
pair lists celebahq_ref.txt / celebahq_ref_test.txt (CoCosNet's format; the names are the
`{id}.jpg` files, references from CelebA-HQ-img), resize-and-crop, flips.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Tuple

import numpy as np
import torch

from ..imageio import ImageError, _open, check_header, resize_label
from ..registry import DataSourceSpec, register_data_source
from .ade20k import ADE20kDataset, PairListOptions

__all__ = ["CELEBAHQ_PARTS", "NUM_CLASSES", "CelebAHQDataset", "merge_part_masks"]

CELEBAHQ_PARTS = ("skin", "nose", "eye_g", "l_eye", "r_eye", "l_brow", "r_brow", "l_ear", "r_ear", "mouth",
                  "u_lip", "l_lip", "hair", "hat", "ear_r", "neck_l", "neck", "cloth")
NUM_CLASSES = len(CELEBAHQ_PARTS) + 1  # + background


def _part_path(anno: Path, image_id: int, part: str) -> Path:
    return anno / str(image_id // 2000) / f"{image_id:05d}_{part}.png"


def merge_part_masks(anno: Path, image_id: int) -> torch.Tensor:
    """The 19-class map (H, W) int64 of one image from its per-part masks (parts that have no
    file are absent from the image); ImageError when none exists."""
    label = None
    found = False
    for cls, part in enumerate(CELEBAHQ_PARTS, 1):
        p = _part_path(anno, image_id, part)
        if not p.is_file():
            continue
        img = _open(p)
        mask = np.asarray(img.convert("L")) > 127  # 255 inside the part (JPEG-free PNGs, but be lenient)
        if label is None:
            label = np.zeros(mask.shape, dtype=np.int64)
        if mask.shape != label.shape:
            raise ImageError(f"{p}: part mask is {mask.shape[0]}x{mask.shape[1]}, the other parts are "
                             f"{label.shape[0]}x{label.shape[1]}")
        label[mask] = cls
        found = True
    if not found:
        raise ImageError(f"{anno / str(image_id // 2000)}: no part mask {image_id:05d}_<part>.png for image {image_id}")
    return torch.from_numpy(label)


class CelebAHQDataset(ADE20kDataset):
    """CelebA-HQ samples (19 classes); see the module docstring."""

    LAYOUT = "CelebA-HQ"
    PAIR_FILES = ("celebahq_ref.txt", "celebahq_ref_test.txt")

    def _find(self) -> Tuple[List[Tuple[Path, Tuple[Path, int]]], Path]:
        img_dir, anno = self.root / "CelebA-HQ-img", self.root / "CelebAMask-HQ-mask-anno"
        ids_file = self.root / ("train.txt" if self.train else "val.txt")
        missing = [str(p.relative_to(self.root)) for p in (img_dir, anno, ids_file) if not p.exists()]
        if missing:
            found = sorted(x.name for x in self.root.iterdir())[:8] if self.root.is_dir() else []
            raise ImageError(f"{self.root}: not a CelebA-HQ layout: expected CelebA-HQ-img/, CelebAMask-HQ-mask-anno/ "
                             f"and train.txt / val.txt (image ids, one per line); missing {missing}, found "
                             f"{found or 'nothing'}")
        pairs = []
        for n, line in enumerate(ids_file.read_text().splitlines(), 1):
            tok = line.strip()
            if not tok:
                continue
            try:
                image_id = int(Path(tok).stem)
            except ValueError:
                raise ImageError(f"{ids_file}:{n}: expected an image id, got {tok!r}") from None
            pairs.append((img_dir / f"{image_id}.jpg", (anno, image_id)))
        return pairs, img_dir

    def _check_label(self, lab) -> None:
        anno, image_id = lab
        p = _part_path(anno, image_id, "skin")
        check_header(p if p.is_file() else next(iter(sorted((anno / str(image_id // 2000)).glob(
            f"{image_id:05d}_*.png"))), p))

    def _read_label(self, lab, load: int, img_path=None, image=None) -> torch.Tensor:
        return resize_label(merge_part_masks(*lab), (load, load))

    def _label_of(self, image_path: Path):
        try:
            image_id = int(Path(image_path).stem)
        except ValueError:
            return None
        anno = self.root / "CelebAMask-HQ-mask-anno"
        return (anno, image_id) if (anno / str(image_id // 2000)).is_dir() else None


register_data_source(DataSourceSpec(
    name="celebahq", build=CelebAHQDataset.from_source, options=PairListOptions, exemplars=True, num_classes=NUM_CLASSES,
    description="CelebA-HQ-img + CelebAMask-HQ-mask-anno part masks (19 classes), train.txt/val.txt, "
                "name,ref1,... pair lists"))
