"""ADE20k as its users have it on disk, read as the official CoCosNet loader reads it.

Layouts (ROOT is `--data`):
- canonical download: ROOT/ADEChallengeData2016/images/{training,validation}/ADE_*.jpg and
  ROOT/ADEChallengeData2016/annotations/{training,validation}/ADE_*.png (ROOT may also be the
  ADEChallengeData2016 folder itself);
- CoCosNet's flat layout: ROOT/training/ADE_train_*.jpg with the .png beside it (and
  ROOT/validation/ADE_val_*).
Labels: 150 classes + "other" (pixel value 0), so 151 label channels (`--num-classes 151`).

Exemplars as CoCosNet trains with them: a pair list in its format (`name,ref1,ref2,...` per
line; `ade20k_ref.txt` for training, `ade20k_ref_test.txt` for validation, from the `pairs`
option or found in ROOT; `exsynth pairs` builds one for any layout). Training draws, per
sample, a real reference with probability `real_reference_probability` (0.7) — the hard one
(the list's last) with probability `hard_reference_probability` (0.2), else the easy one
(the first) — and otherwise the image itself under another crop and flip (`self_ref` True).
Validation always takes the easy reference. Augmentation as the loader's resize_and_crop:
resize to load_size (286 for 256 px), random crop, random horizontal flip; validation resizes
to the size. Every choice is drawn from (seed, the run's sample count): resume retraces it.

Bad data never stops a run: unreadable or oversized files are dropped with one warning each
(headers are read up front), listed references that are missing fall back to the image
itself with one warning per file.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch

from ..imageio import RESAMPLING, ImageError, LabelRangeError, check_header, list_images, read_image, read_label
from ..registry import DataSourceSpec, draw_rng, register_data_source
from ._robust import load_skipping_bad, readable
from .synthetic import one_hot

__all__ = ["PairListOptions", "ADE20kOptions", "ADE20kDataset", "read_pair_list", "NUM_CLASSES"]

NUM_CLASSES = 151  # 150 + "other" (0)
_SPLIT_DIRS = {"train": "training", "val": "validation", "test": "validation"}


@dataclass
class PairListOptions:
    """Options of the sources that read CoCosNet pair lists (ade20k, celebahq).

    pairs: a pair list in CoCosNet's format (name,ref1,ref2,...); None: the layout's own file in
        ROOT when present (ade20k_ref.txt / ade20k_ref_test.txt, celebahq_ref.txt /
        celebahq_ref_test.txt for training / validation), else self-exemplars (`folder`: no
        exemplars).
    real_reference_probability: chance that a training sample takes a listed reference (0.7).
    hard_reference_probability: chance that it takes the hard (last listed) one (0.2).
    load_size: side the image is resized to before the random crop in training (None: 286/256
        of the size, the official 286 at 256 px).
    flip: random horizontal flips in training (the official loader's default).
    resample: how photos are resized to the load size, "bilinear" or "bicubic" (the official
        loaders' get_transform; label maps are always nearest).
    """

    pairs: Optional[str] = None
    real_reference_probability: float = 0.7
    hard_reference_probability: float = 0.2
    load_size: Optional[int] = None
    flip: bool = True
    resample: str = "bilinear"


ADE20kOptions = PairListOptions


def read_pair_list(path) -> Dict[str, List[str]]:
    """{name: [ref1, ref2, ...]} from CoCosNet's `name,ref1,ref2,...` lines (blank lines skipped)."""
    p = Path(path)
    if not p.is_file():
        raise ImageError(f"{p}: no such pair list")
    out: Dict[str, List[str]] = {}
    for n, line in enumerate(p.read_text().splitlines(), 1):
        items = [x.strip() for x in line.strip().split(",") if x.strip()]
        if not items:
            continue
        if len(items) < 2:
            raise ImageError(f"{p}:{n}: expected name,ref1[,ref2,...], got {line.strip()!r}")
        out[items[0]] = items[1:]
    return out


def _find_layout(root: Path, split: str) -> Tuple[List[Tuple[Path, Path]], Path]:
    """[(image, label)] of a split and the training image folder (where references live)."""
    sub = _SPLIT_DIRS[split]
    for base in (root / "ADEChallengeData2016", root):
        img_dir, ann_dir = base / "images" / sub, base / "annotations" / sub
        if img_dir.is_dir() and ann_dir.is_dir():
            labels = {p.stem: p for p in list_images(ann_dir, (".png",))}
            pairs = [(p, labels[p.stem]) for p in list_images(img_dir, (".jpg", ".jpeg", ".png"))
                     if p.stem in labels]
            return pairs, base / "images" / "training"
    flat = root / sub
    if flat.is_dir():
        tag = "_train_" if sub == "training" else "_val_"
        pairs = [(p, p.with_suffix(".png")) for p in sorted(flat.glob(f"ADE{tag}*.jpg")) if p.with_suffix(".png").is_file()]
        if pairs:
            return pairs, root / "training"
    found = sorted(x.name for x in root.iterdir())[:8] if root.is_dir() else []
    raise ImageError(f"{root}: not an ADE20k layout: expected ADEChallengeData2016/images/{sub} with "
                     f"annotations/{sub}, or {sub}/ADE_*.jpg with the .png beside each; found {found or 'nothing'}")


class ADE20kDataset(torch.utils.data.Dataset):
    """ADE20k samples: label (151, S, S) one-hot, label_index, image, exemplar, exemplar_label,
    self_ref (bool: the exemplar is the image itself) and index. See the module docstring.

    Other layouts with CoCosNet pair lists subclass it and override `_find` (the split's
    (image, label source) pairs and the folder references live in), `_check_label`,
    `_read_label` and `_label_of`."""

    LAYOUT = "ADE20k"
    PAIR_FILES = ("ade20k_ref.txt", "ade20k_ref_test.txt")
    DENSE = False  # True: `_read_label` gives a (C, H, W) map that is the input as it is (edges, pose)

    def __init__(self, root, size: int, split: str = "train", options: Optional[PairListOptions] = None,
                 seed: int = 0, num_classes: int = NUM_CLASSES):
        if split not in _SPLIT_DIRS:
            raise ValueError(f"split must be one of {sorted(_SPLIT_DIRS)}, got {split!r}")
        self.root, self.size, self.split, self.seed = Path(root), int(size), split, int(seed)
        self.opts = options or PairListOptions()
        self.num_classes = int(num_classes)
        if self.DENSE and self.num_classes != self.CHANNELS:
            raise ValueError(f"{self.LAYOUT}: its input maps have {self.CHANNELS} channels, got num_classes "
                             f"{self.num_classes}")
        self.train = split == "train"
        pairs, self.ref_dir = self._find()
        good = readable(pairs, lambda pair: (check_header(pair[0]), self._check_label(pair[1])))
        if not good:
            raise ImageError(f"{self.root}: the {self.LAYOUT} {_SPLIT_DIRS[split]} split holds no readable "
                             f"image/label pair")
        self.pairs = good
        self.image_files = [img for img, _ in good]
        self._refs: Optional[Dict[str, List[str]]] = None  # parsed on first use (`exsynth pairs` never does)
        self._warned: set = set()
        self._bad: set = set()
        if self.opts.resample not in RESAMPLING:
            raise ValueError(f"{self.LAYOUT}: resample must be one of {list(RESAMPLING)}, got {self.opts.resample!r}")
        p_real, p_hard = self.opts.real_reference_probability, self.opts.hard_reference_probability
        if not (0 <= p_hard <= p_real <= 1):
            raise ValueError(f"{self.LAYOUT}: need 0 <= hard_reference_probability ({p_hard}) <= "
                             f"real_reference_probability ({p_real}) <= 1")

    @classmethod
    def from_source(cls, root, *, size, num_classes, split, length, seed, options, rank, world_size):
        """`DataSourceSpec.build` of every layout built on this class (length, rank and world size
        do not apply: map-style, the trainer's sampler shards)."""
        return cls(root, size, split=split, options=options, seed=seed, num_classes=num_classes)

    # ---- what a layout defines ----------------------------------------------------------------

    def _find(self):
        return _find_layout(self.root, self.split)

    def _check_label(self, lab) -> None:
        check_header(lab)

    def _read_label(self, lab, load: int, img_path: Optional[Path] = None, image: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The label of `lab` at load x load: (H, W) class ids, or (C, H, W) float for a layout whose
        input is a dense map (DENSE; it may use the image, already at load x load in [-1, 1])."""
        return read_label(lab, self.num_classes, (load, load), resize=True)

    def _self_exemplar(self, index: int, rng) -> Optional[Tuple[Path, object]]:
        """Another picture of the same content that stands in for the image itself when no real
        reference is drawn (DeepFashion's same-person views); None: the image itself."""
        return None

    def _load_pairs(self) -> Dict[str, List[str]]:
        path = self.opts.pairs
        if path is None:
            name = self.PAIR_FILES[0] if self.train else self.PAIR_FILES[1]
            path = self.root / name if (self.root / name).is_file() else None
        if path is None:
            warnings.warn(f"{self.root}: no pair list ({self.PAIR_FILES[0]} or the pairs option): every exemplar is "
                          f"the image itself, differently cropped; `exsynth pairs` builds a list", stacklevel=3)
            return {}
        return read_pair_list(path)

    @property
    def refs(self) -> Dict[str, List[str]]:
        if self._refs is None:
            self._refs = self._load_pairs()
        return self._refs

    @staticmethod
    def pair_key(path: Path) -> str:
        """The name a pair list uses for an image file."""
        return Path(path).name

    def __len__(self) -> int:
        return len(self.pairs)

    def _geometry(self, rng) -> Tuple[int, int, int, bool]:
        """(load side, crop top, crop left, flip) of one view."""
        if not self.train:
            return self.size, 0, 0, False
        load = self.opts.load_size or int(round(self.size * 286 / 256))
        load = max(load, self.size)
        top, left = int(rng.integers(0, load - self.size + 1)), int(rng.integers(0, load - self.size + 1))
        return load, top, left, bool(self.opts.flip and rng.random() > 0.5)

    def _view(self, img_path: Path, lab_path: Path, rng) -> Tuple[torch.Tensor, torch.Tensor]:
        load, top, left, flip = self._geometry(rng)
        image = read_image(img_path, (load, load), resize=True, resample=self.opts.resample)
        label = self._read_label(lab_path, load, img_path, image)
        s = self.size
        image, label = image[:, top:top + s, left:left + s], label[..., top:top + s, left:left + s]
        if flip:
            image, label = image.flip(-1), label.flip(-1)
        return image.contiguous(), label.contiguous()

    def _reference(self, index, rng) -> Optional[Tuple[Path, Path]]:
        img_path = self.image_files[int(index)]
        u = rng.random()
        p_real = self.opts.real_reference_probability if self.train else 1.0
        if u >= p_real:
            return None
        listed = self.refs.get(self.pair_key(img_path))
        if not listed:
            return None
        name = listed[-1] if (self.train and u < self.opts.hard_reference_probability) else listed[0]
        ref = self.ref_dir / name
        return self._present(ref, name, f"{ref}: listed as a reference of {img_path.name} but missing (or its label "
                                        f"is); the image itself is used")

    def _present(self, ref: Path, key, missing: str) -> Optional[Tuple[Path, object]]:
        """(ref, its label source) when both exist; else None, with the `missing` warning once per key."""
        lab = self._label_of(ref)
        if not ref.is_file() or lab is None:
            self._warn_once(key, missing)
            return None
        return ref, lab

    def _label_of(self, image_path: Path) -> Optional[Path]:
        beside = image_path.with_suffix(".png")
        if beside.is_file():
            return beside
        parts = list(image_path.parts)
        if "images" in parts:  # canonical layout: images/<split>/x.jpg -> annotations/<split>/x.png
            i = len(parts) - 1 - parts[::-1].index("images")
            parts[i] = "annotations"
            cand = Path(*parts).with_suffix(".png")
            return cand if cand.is_file() else None
        return None

    def _warn_once(self, key, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(message, stacklevel=3)

    def __getitem__(self, index) -> Dict[str, object]:
        # the draw stays the requested sample's, whichever pair stands in for a bad one
        return load_skipping_bad(index, len(self.pairs), lambda i: self._sample(index, i), self._bad, self.root)

    def _sample(self, index, i: int) -> Dict[str, object]:
        rng = draw_rng(index, self.seed)
        img_path, lab_path = self.pairs[i]
        ref = self._reference(i, rng)
        self_ref = ref is None
        if self_ref:
            ref = self._self_exemplar(i, rng)
        image, label = self._view(img_path, lab_path, rng)
        exemplar = None
        if ref is not None:
            try:
                exemplar, ex_label = self._view(ref[0], ref[1], rng)
            except LabelRangeError:
                raise
            except ImageError as e:  # a listed reference that does not decode: the image itself
                self._warn_once(("ref", ref[0]), f"{e}; the image itself is used as its exemplar")
                self_ref = True
        if exemplar is None:  # the image itself, under its own crop and flip
            exemplar, ex_label = self._view(img_path, lab_path, rng)
        out = {"image": image, "exemplar": exemplar, "self_ref": torch.tensor(self_ref), "index": i}
        if self.DENSE:
            out.update(label=label, exemplar_label=ex_label)
        else:
            (lab, lab_index), (ex, ex_index) = self._encode_label(label), self._encode_label(ex_label)
            out.update(label=lab, label_index=lab_index, exemplar_label=ex, exemplar_label_index=ex_index)
        return out

    def _encode_label(self, label: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """The model's input map (K, H, W) and the class map (H, W) of what `_read_label` gave."""
        return one_hot(label.numpy(), self.num_classes), label


register_data_source(DataSourceSpec(
    name="ade20k", build=ADE20kDataset.from_source, options=PairListOptions, exemplars=True, num_classes=NUM_CLASSES,
    description="ADE20k (ADEChallengeData2016, or training/ADE_train_*.jpg + .png), 150 classes + other, "
                "name,ref1,... pair lists"))
