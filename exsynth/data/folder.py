"""Paired (label map, photo) folders for training on real data.

Layout: ``root/images/<name>.{png,jpg,...}`` and ``root/labels/<name>.png`` (class-index
PNG, pixel value = class). Samples carry no exemplar: a model trains on them with its
unpaired supervision (pseudo exemplars by distortion of the photo, or crops of one image).
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Tuple

import torch
from torch.utils.data import Dataset

from ..registry import DataSourceSpec, register_data_source
from ..imageio import ImageError, list_images, read_image, read_label
from .synthetic import one_hot

__all__ = ["PairedFolderDataset"]


class PairedFolderDataset(Dataset):
    """(label, image) pairs matched by file stem, resized to `size` (bilinear photo, nearest label)."""

    def __init__(self, root, size: Tuple[int, int], num_classes: int):
        self.root = Path(root)
        self.size = (int(size[0]), int(size[1]))
        self.num_classes = int(num_classes)
        img_dir, lab_dir = self.root / "images", self.root / "labels"
        if not img_dir.is_dir() or not lab_dir.is_dir():
            raise ImageError(f"{self.root}: expected sub-folders images/ and labels/ (class-index PNGs)")
        labels = {p.stem: p for p in list_images(lab_dir, (".png",))}
        self.pairs = [(labels[p.stem], p) for p in list_images(img_dir) if p.stem in labels]
        if not self.pairs:
            raise ImageError(f"{self.root}: no image in images/ has a label PNG of the same name in labels/")

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> Dict[str, object]:
        lab_path, img_path = self.pairs[index]
        lab = read_label(lab_path, self.num_classes, self.size, resize=True)
        return {"label": one_hot(lab.numpy(), self.num_classes), "label_index": lab,
                "image": read_image(img_path, self.size, resize=True), "index": int(index)}


def _build_folder(root, *, size, num_classes, split, length, seed, options, rank, world_size):
    return PairedFolderDataset(root, (size, size), num_classes)


register_data_source(DataSourceSpec(
    name="folder", build=_build_folder, pairs=False, needs_root=True,
    description="ROOT/images/NAME.{jpg,png,...} + ROOT/labels/NAME.png class-index maps"))
