"""pix2pix's side-by-side A|B folders (edges2shoes, edges2handbags), as its authors publish them.

Layout (ROOT is `--data`): ROOT/train/*.jpg and ROOT/val/*.jpg, each image 2W x H with the
edge drawing A on the left (black lines on white) and the photo B on the right. The input is
the edge map, one channel in [0, 1] (1 - grey(A): lines are 1), a dense input (`--num-classes`
1). The foreground mask SEGIN's segmentation head learns ("mask", {-1, 1}) is read from
ROOT/{split}_mask/NAME.png when that folder exists (white = foreground), else taken from the
photo as its non-white pixels (the shoes and bags stand on white; grey level below 0.95).
Samples carry no exemplar: models train on them with their own supervision (SEGIN: from the
photo itself). Resize to the size asked for; bad files are skipped with one warning each.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from ..imageio import ImageError, check_header, list_images, read_image
from ..registry import DataSourceSpec, register_data_source
from ._robust import load_skipping_bad, readable

__all__ = ["EdgesToPhotosDataset"]

_SPLITS = {"train": "train", "val": "val", "test": "val"}


class EdgesToPhotosDataset(Dataset):
    """A|B pairs: "label" (1, S, S) edges, "image" (3, S, S) photo, "mask" (1, S, S)."""

    def __init__(self, root, size: int, split: str = "train"):
        if split not in _SPLITS:
            raise ValueError(f"split must be one of {sorted(_SPLITS)}, got {split!r}")
        self.root, self.size, self.split = Path(root), int(size), split
        folder = self.root / _SPLITS[split]
        if not folder.is_dir():
            found = sorted(x.name for x in self.root.iterdir())[:8] if self.root.is_dir() else []
            raise ImageError(f"{self.root}: not a pix2pix A|B layout: expected {_SPLITS[split]}/ with side-by-side "
                             f"edge|photo images; found {found or 'nothing'}")

        def check(p):
            h, w = check_header(p)
            if w % 2:
                raise ImageError(f"{p}: {w}x{h} is not two images side by side (expected an even width)")

        self.files = readable(list_images(folder, (".jpg", ".jpeg", ".png")), check)
        if not self.files:
            raise ImageError(f"{folder}: no readable A|B image")
        self.image_files = self.files
        self.mask_dir = self.root / f"{_SPLITS[split]}_mask"
        self.num_classes = 1
        self._bad: set = set()

    def __len__(self) -> int:
        return len(self.files)

    @staticmethod
    def pair_key(path) -> str:
        return Path(path).name

    def _load(self, i: int) -> Dict[str, object]:
        p = self.files[i]
        ab = read_image(p)
        W = ab.shape[-1] // 2
        a, b = ab[:, :, :W], ab[:, :, W:2 * W]
        S = (self.size, self.size)
        a = F.interpolate(a[None], size=S, mode="bilinear", align_corners=False)[0]
        b = F.interpolate(b[None], size=S, mode="bilinear", align_corners=False)[0]
        edges = (1 - (a.mean(0, keepdim=True) + 1) / 2).clamp(0, 1)
        mask_file = self.mask_dir / f"{p.stem}.png"
        if self.mask_dir.is_dir() and mask_file.is_file():
            m = read_image(mask_file, S, resize=True).mean(0, keepdim=True) > 0
        else:
            m = ((b.mean(0, keepdim=True) + 1) / 2) < 0.95
        return {"label": edges, "image": b, "mask": m.float() * 2 - 1, "index": i}

    def __getitem__(self, index) -> Dict[str, object]:
        return load_skipping_bad(index, len(self.files), self._load, self._bad, self.root)


def _build(root, *, size, num_classes, split, length, seed, options, rank, world_size):
    if int(num_classes) != 1:
        raise ValueError(f"edges2photos: the input is one edge channel, got num_classes {num_classes}")
    return EdgesToPhotosDataset(root, size, split)


register_data_source(DataSourceSpec(
    name="edges2photos", build=_build, num_classes=1, label_kind="dense",
    picture=lambda label: (1 - 2 * label).expand(-1, 3, -1, -1),
    description="pix2pix's edges2shoes / edges2handbags: ROOT/{train,val}/*.jpg, edges | photo side by side "
                "(1-channel edge input, foreground masks)"))
