"""CelebA-HQ with CelebAMask-HQ's per-part masks, as its users have it on disk.

Layout (ROOT is `--data`): ROOT/CelebA-HQ-img/{id}.jpg, per-part masks
ROOT/CelebAMask-HQ-mask-anno/{id // 2000}/{id:05d}_{part}.png (255 inside the part), and the
split as CoCosNet's loader reads it: ROOT/train.txt and ROOT/val.txt, one image id per line.

The input is CoCosNet's (`celebahq_dataset.py`, `pix2pix_model.preprocess_input`), so its
released CelebA-HQ model reads our samples as its own: 19 channels, 0 background, then skin,
hair, l_brow, r_brow, l_eye, r_eye, l_ear, r_ear, nose, u_lip, mouth, l_lip, neck, cloth, hat,
eye_g, ear_r, neck_l = 1..18 (the order of its `all_parts_except_glasses` maps: checked on the
eight maps its repository ships against their eye masks and the skin / hair placement). The
class map holds every part but the glasses; the glasses mask is laid over channel 16 (eye_g)
of the one-hot map, so a lens pixel is both its part (skin, eye) and glasses, as in the code;
"label_index" is the map without glasses (the code's mask-loss target). Where
CelebAMask-HQ-mask-anno/all_parts_except_glasses/{id:05d}.png exists (the code's download) it
is the class map; else the parts are merged as CelebAMask-HQ's `g_mask.py` draws them (its
precedence: skin, nose, l_eye, r_eye, l_brow, r_brow, l_ear, r_ear, mouth, u_lip, l_lip, hair,
hat, ear_r, neck_l, neck, cloth, a later part over an earlier one).

Exemplars, sampling, augmentation and bad-file handling are ADE20k's (`exsynth.data.ade20k`):
pair lists celebahq_ref.txt / celebahq_ref_test.txt (CoCosNet's format; the names are the
`{id}.jpg` files, references from CelebA-HQ-img), resize-and-crop, flips.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np
import torch

from ..imageio import ImageError, _open, check_header, resize_label
from ..registry import DataSourceSpec, register_data_source
from .ade20k import ADE20kDataset, PairListOptions
from .synthetic import one_hot

__all__ = ["CELEBAHQ_PARTS", "GLASSES", "NUM_CLASSES", "CelebAHQDataset", "merge_part_masks"]

# class c + 1 is CELEBAHQ_PARTS[c]: CoCosNet's numbering (its released CelebA-HQ model's input)
CELEBAHQ_PARTS = ("skin", "hair", "l_brow", "r_brow", "l_eye", "r_eye", "l_ear", "r_ear", "nose", "u_lip", "mouth",
                  "l_lip", "neck", "cloth", "hat", "eye_g", "ear_r", "neck_l")
NUM_CLASSES = len(CELEBAHQ_PARTS) + 1  # + background
GLASSES = CELEBAHQ_PARTS.index("eye_g") + 1  # an overlay channel, never a class of the map
# g_mask.py's drawing order (a later part wins where parts overlap), glasses left out
_DRAW_ORDER = ("skin", "nose", "l_eye", "r_eye", "l_brow", "r_brow", "l_ear", "r_ear", "mouth", "u_lip", "l_lip",
               "hair", "hat", "ear_r", "neck_l", "neck", "cloth")


def _part_path(anno: Path, image_id: int, part: str) -> Path:
    return anno / str(image_id // 2000) / f"{image_id:05d}_{part}.png"


def _merged_path(anno: Path, image_id: int) -> Path:
    return anno / "all_parts_except_glasses" / f"{image_id:05d}.png"


def _read_mask(p: Path) -> np.ndarray:
    return np.asarray(_open(p).convert("L")) > 127  # 255 inside the part (JPEG-free PNGs, but be lenient)


def _canvas(label: Optional[np.ndarray], mask: np.ndarray, path: Path, what: str) -> np.ndarray:
    """The class map so far (a zero one shaped as `mask` at the first file); ImageError when
    `mask` (read from `path`) is of another size."""
    if label is None:
        return np.zeros(mask.shape, dtype=np.int64)
    if mask.shape != label.shape:
        raise ImageError(f"{path}: {what} is {mask.shape[0]}x{mask.shape[1]}, the class map is "
                         f"{label.shape[0]}x{label.shape[1]}")
    return label


def merge_part_masks(anno: Path, image_id: int) -> torch.Tensor:
    """(2, H, W) int64 of one image: its class map without glasses (the code's
    all_parts_except_glasses map when present, else the parts merged) and its glasses mask
    (0 / 1); ImageError when no part exists."""
    label, glasses = None, None
    merged = _merged_path(anno, image_id)
    if merged.is_file():
        label = np.asarray(_open(merged).convert("L")).astype(np.int64)
        bad = np.unique(label[(label >= NUM_CLASSES) | (label == GLASSES)])
        if bad.size:
            raise ImageError(f"{merged}: class values {bad.tolist()[:8]} outside 0..{NUM_CLASSES - 1} without "
                             f"{GLASSES} (eye_g comes from {image_id:05d}_eye_g.png)")
    else:
        for part in _DRAW_ORDER:
            p = _part_path(anno, image_id, part)
            if p.is_file():
                mask = _read_mask(p)
                label = _canvas(label, mask, p, "part mask")
                label[mask] = CELEBAHQ_PARTS.index(part) + 1
    g = _part_path(anno, image_id, "eye_g")
    if g.is_file():
        glasses = _read_mask(g)
        label = _canvas(label, glasses, g, "glasses mask")
    if label is None:
        raise ImageError(f"{anno / str(image_id // 2000)}: no part mask {image_id:05d}_<part>.png for image {image_id}")
    if glasses is None:
        glasses = np.zeros(label.shape, dtype=bool)
    return torch.from_numpy(np.stack([label, glasses.astype(np.int64)]))


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
        p = _merged_path(anno, image_id)
        if not p.is_file():
            p = _part_path(anno, image_id, "skin")
        check_header(p if p.is_file() else next(iter(sorted((anno / str(image_id // 2000)).glob(
            f"{image_id:05d}_*.png"))), p))

    def _read_label(self, lab, load: int, img_path=None, image=None) -> torch.Tensor:
        return torch.stack([resize_label(m, (load, load)) for m in merge_part_masks(*lab)])

    def _encode_label(self, label: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        index, glasses = label[0], label[1]
        onehot = one_hot(index.numpy(), self.num_classes)
        onehot[GLASSES] = glasses.to(onehot.dtype)   # over the lens's own part, as the code
        return onehot, index

    def _label_of(self, image_path: Path):
        try:
            image_id = int(Path(image_path).stem)
        except ValueError:
            return None
        anno = self.root / "CelebAMask-HQ-mask-anno"
        return (anno, image_id) if ((anno / str(image_id // 2000)).is_dir()
                                    or _merged_path(anno, image_id).is_file()) else None


register_data_source(DataSourceSpec(
    name="celebahq", build=CelebAHQDataset.from_source, options=PairListOptions, exemplars=True, num_classes=NUM_CLASSES,
    description="CelebA-HQ-img + CelebAMask-HQ-mask-anno part masks (19 classes, glasses "
                "over channel 16), train.txt/val.txt, "
                "name,ref1,... pair lists"))
