"""COCO-stuff (MSCA-Net's dataset) as its users have it on disk.

Layouts (ROOT is `--data`):
- SPADE's: ROOT/{train,val}_img/*.jpg with ROOT/{train,val}_label/*.png;
- the download: ROOT/images/{train2017,val2017}/*.jpg with the stuff+thing maps of
  stuffthingmaps_trainval2017.zip in ROOT/stuffthingmaps_trainval2017/{train2017,val2017}/*.png
  (or ROOT/annotations/{train2017,val2017}/*.png).
Labels: the maps hold 0..181 (things and stuff) and 255 (unlabeled), read as SPADE reads them:
255 becomes class 182, so 183 label channels (`--num-classes 183`).

Exemplars, sampling, augmentation and bad-file handling are ADE20k's (`exsynth.data.ade20k`),
with pair lists cocostuff_ref.txt / cocostuff_ref_test.txt when given; without one every
exemplar is the image itself, differently cropped (MSCA-Net trains with `--supervision self`).
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..imageio import ImageError, list_images, read_label
from ..registry import DataSourceSpec, register_data_source
from .ade20k import ADE20kDataset, PairListOptions

__all__ = ["NUM_CLASSES", "UNLABELED", "CocoStuffDataset"]

UNLABELED = 182      # where the maps hold 255
NUM_CLASSES = 183


class CocoStuffDataset(ADE20kDataset):
    """COCO-stuff samples (183 classes); see the module docstring."""

    LAYOUT = "COCO-stuff"
    PAIR_FILES = ("cocostuff_ref.txt", "cocostuff_ref_test.txt")

    def _find(self):
        spade = "train" if self.train else "val"
        year = "train2017" if self.train else "val2017"
        # (image folder, label folder, the training images references come from)
        candidates = [(self.root / f"{spade}_img", self.root / f"{spade}_label", self.root / "train_img")]
        for ann in ("stuffthingmaps_trainval2017", "annotations"):
            candidates.append((self.root / "images" / year, self.root / ann / year, self.root / "images" / "train2017"))
        for img_dir, lab_dir, ref_dir in candidates:
            if img_dir.is_dir() and lab_dir.is_dir():
                labels = {p.stem: p for p in list_images(lab_dir, (".png",))}
                pairs = [(p, labels[p.stem]) for p in list_images(img_dir, (".jpg", ".jpeg", ".png"))
                         if p.stem in labels]
                return pairs, ref_dir
        found = sorted(x.name for x in self.root.iterdir())[:8] if self.root.is_dir() else []
        raise ImageError(f"{self.root}: not a COCO-stuff layout: expected {spade}_img/ with {spade}_label/, or "
                         f"images/{year}/ with stuffthingmaps_trainval2017/{year}/; found {found or 'nothing'}")

    def _read_label(self, lab, load: int, img_path=None, image=None) -> torch.Tensor:
        return read_label(lab, self.num_classes, (load, load), resize=True, unlabeled_as=UNLABELED)

    def _label_of(self, image_path: Path):
        image_path = Path(image_path)
        for lab_dir in (image_path.parent.parent / "train_label",
                        self.root / "stuffthingmaps_trainval2017" / "train2017",
                        self.root / "annotations" / "train2017"):
            cand = lab_dir / f"{image_path.stem}.png"
            if cand.is_file():
                return cand
        return None


register_data_source(DataSourceSpec(
    name="cocostuff", build=CocoStuffDataset.from_source, options=PairListOptions, exemplars=True, num_classes=NUM_CLASSES,
    description="COCO-stuff (SPADE's train_img/train_label or images/ + stuffthingmaps), 182 classes + "
                "unlabeled"))
