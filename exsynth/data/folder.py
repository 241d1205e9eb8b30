"""Paired (label map, photo) folders for training on real data.

Layout: ``root/images/<name>.{png,jpg,...}`` and ``root/labels/<name>.png`` (class-index
PNG, pixel value = class). Without a pair list the samples carry no exemplar: a model trains
on them with its unpaired supervision (pseudo exemplars by distortion of the photo, or crops of
one image). With one (`--data-option pairs=FILE`, CoCosNet's `name,ref1,ref2,...` format, as
`exsynth pairs --dataset folder` writes it) the samples carry references drawn as ADE20k's are
(`exsynth.data.ade20k`: real / hard probabilities, resize-and-crop, flips).
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Tuple

import torch
from torch.utils.data import Dataset

from ..imageio import ImageError, check_header, list_images, read_image, read_label
from ..registry import DataSourceSpec, register_data_source
from ._robust import load_skipping_bad, readable
from .ade20k import ADE20kDataset, PairListOptions, read_pair_list
from .synthetic import one_hot

__all__ = ["PairedFolderDataset", "FolderPairListDataset"]


def _folder_pairs(root: Path):
    """[(label, image)] matched by file stem; ImageError when the layout or the matches are missing."""
    img_dir, lab_dir = root / "images", root / "labels"
    if not img_dir.is_dir() or not lab_dir.is_dir():
        raise ImageError(f"{root}: expected sub-folders images/ and labels/ (class-index PNGs)")
    labels = {p.stem: p for p in list_images(lab_dir, (".png",))}
    pairs = [(labels[p.stem], p) for p in list_images(img_dir) if p.stem in labels]
    if not pairs:
        raise ImageError(f"{root}: no image in images/ has a label PNG of the same name in labels/")
    return pairs


class PairedFolderDataset(Dataset):
    """(label, image) pairs matched by file stem, resized to `size` (bilinear photo, nearest label).

    Bad files never stop a long run: every file's header is read up front (cheap; a progress
    line on large sets) and pairs with a missing, unreadable or oversized file are dropped with
    one warning each; a file whose data turns out corrupt when drawn is warned about once and
    replaced by the next good pair (deterministically, so resume still retraces the run). A
    label id beyond num_classes is a configuration error and stops the run."""

    def __init__(self, root, size: Tuple[int, int], num_classes: int, *, progress: bool = True):
        self.root = Path(root)
        self.size = (int(size[0]), int(size[1]))
        self.num_classes = int(num_classes)
        pairs = _folder_pairs(self.root)
        self.pairs = readable(pairs, lambda pair: (check_header(pair[0]), check_header(pair[1])), progress=progress)
        if not self.pairs:
            raise ImageError(f"{self.root}: none of the {len(pairs)} image/label pairs is readable")
        self.image_files = [img for _, img in self.pairs]
        self._bad: set = set()

    @staticmethod
    def pair_key(path) -> str:
        """The name a pair list uses for an image file (`exsynth pairs`)."""
        return Path(path).name

    def __len__(self) -> int:
        return len(self.pairs)

    def _load(self, index: int) -> Dict[str, object]:
        lab_path, img_path = self.pairs[index]
        lab = read_label(lab_path, self.num_classes, self.size, resize=True)
        return {"label": one_hot(lab.numpy(), self.num_classes), "label_index": lab,
                "image": read_image(img_path, self.size, resize=True), "index": int(index)}

    def __getitem__(self, index: int) -> Dict[str, object]:
        return load_skipping_bad(index, len(self.pairs), self._load, self._bad, self.root)


class FolderPairListDataset(ADE20kDataset):
    """The folder layout with a pair list: samples with references (see the module docstring).
    There are no splits on disk: "val" / "test" read the same files without augmentation,
    always with the easy (first listed) reference."""

    LAYOUT = "folder"

    def _find(self):
        return [(img, lab) for lab, img in _folder_pairs(self.root)], self.root / "images"

    def _load_pairs(self):
        return read_pair_list(self.opts.pairs)

    def _label_of(self, image_path: Path):
        cand = self.root / "labels" / f"{Path(image_path).stem}.png"
        return cand if cand.is_file() else None


def _build_folder(root, *, size, num_classes, split, length, seed, options, rank, world_size):
    if options is not None and options.pairs is not None:
        return FolderPairListDataset(root, size, split=split, options=options, seed=seed, num_classes=num_classes)
    return PairedFolderDataset(root, (size, size), num_classes)


register_data_source(DataSourceSpec(
    name="folder", build=_build_folder, options=PairListOptions, pairs=False, needs_root=True,
    exemplars_with=lambda options: options.get("pairs") is not None,
    description="ROOT/images/NAME.{jpg,png,...} + ROOT/labels/NAME.png class-index maps; with "
                "--data-option pairs=FILE, references from a name,ref1,... pair list"))
