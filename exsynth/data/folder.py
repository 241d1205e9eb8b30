"""Paired (label map, photo) folders for training on real data.

Layout: ``root/images/<name>.{png,jpg,...}`` and ``root/labels/<name>.png`` (class-index
PNG, pixel value = class). Without a pair list the samples carry no exemplar: a model trains
on them with its unpaired supervision (pseudo exemplars by distortion of the photo, or crops of
one image). With one (`--data-option pairs=FILE`, CoCosNet's `name,ref1,ref2,...` format, as
`exsynth pairs --dataset folder` writes it) the samples carry references drawn as ADE20k's are
(`exsynth.data.ade20k`: real / hard probabilities, resize-and-crop, flips).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch
from torch.utils.data import Dataset

from ..imageio import ImageError, check_header, list_images, read_image, read_label
from ..registry import DataSourceSpec, draw_rng, register_data_source
from ._robust import load_skipping_bad, readable
from .ade20k import ADE20kDataset, PairListOptions, read_pair_list
from .synthetic import one_hot

__all__ = ["PairedFolderDataset", "FolderPairListDataset", "StyleGroupDataset", "FolderOptions", "read_style_groups"]


@dataclass
class FolderOptions(PairListOptions):
    """Options of the folder source: a pair list (see PairListOptions), or style groups.

    groups: a list file of `name group` lines (whitespace or a comma between; name = an image's
        file name or stem): images of one group are style-consistent (BDD100K's weather x time
        of day, pix2pixSC Table 7), of two groups not. Samples then carry pix2pixSC's pairs.
    same_group_probability: chance that a sample's exemplar comes from its own group (else from
        another group), the official data script's same_style_rate 0.3.
    """

    groups: Optional[str] = None
    same_group_probability: float = 0.3

    def __post_init__(self):
        if self.groups is not None and self.pairs is not None:
            raise ValueError("folder: give a pair list (pairs=FILE) or style groups (groups=FILE), not both")
        if not 0.0 <= float(self.same_group_probability) <= 1.0:
            raise ValueError(f"folder: same_group_probability must lie in [0, 1], got {self.same_group_probability}")


def read_style_groups(path) -> Dict[str, str]:
    """{name: group} from `name group` lines (blank lines and # comments skipped)."""
    p = Path(path)
    if not p.is_file():
        raise ImageError(f"{p}: no such style group list")
    out: Dict[str, str] = {}
    for n, line in enumerate(p.read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.replace(",", " ").split()
        if len(parts) != 2:
            raise ImageError(f"{p}:{n}: expected 'name group', got {line!r}")
        out[parts[0]] = parts[1]
    if not out:
        raise ImageError(f"{p}: the style group list is empty")
    return out


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


class StyleGroupDataset(PairedFolderDataset):
    """The folder layout with style groups (`--data-option groups=FILE`): pix2pixSC's group-based
    pair sampling for image sets with style attributes. Sample i (group g) carries "consistent"
    (another image of g), "inconsistent" (an image of another group), their label maps, and as
    "exemplar" the consistent one with probability same_group_probability ("same_style" 1), else
    the inconsistent one; "image" and "photo" are image i itself. Images the list does not name
    are left out (one warning); a group needs two images."""

    def __init__(self, root, size: Tuple[int, int], num_classes: int, options: FolderOptions, seed: int = 0, *,
                 split: str = "train", progress: bool = True):
        super().__init__(root, size, num_classes, progress=progress)
        groups = read_style_groups(options.groups)
        keep, missing = [], 0
        for pair in self.pairs:
            g = groups.get(pair[1].name, groups.get(pair[1].stem))
            if g is None:
                missing += 1
            else:
                keep.append((pair, g))
        if missing:
            warnings.warn(f"{options.groups}: names no group for {missing} of the {len(self.pairs)} images; "
                          f"they are left out", stacklevel=2)
        members: Dict[str, List[int]] = {}
        for i, (_, g) in enumerate(keep):
            members.setdefault(g, []).append(i)
        if len(members) < 2 or not any(len(m) >= 2 for m in members.values()):
            raise ImageError(f"{options.groups}: style-group sampling needs at least 2 groups and a group of at least "
                             f"2 images; the images here fall into {len(members)} group(s) of sizes "
                             f"{sorted(len(m) for m in members.values())}")
        self.pairs = [p for p, _ in keep]
        self.image_files = [img for _, img in self.pairs]
        self.group = [g for _, g in keep]
        self.members = members
        # samples whose group has a second image (a consistent partner exists)
        self.usable = [i for i, g in enumerate(self.group) if len(members[g]) >= 2]
        self.opts, self.seed, self.split = options, int(seed), split

    def __len__(self) -> int:
        return len(self.usable)

    def __getitem__(self, index) -> Dict[str, object]:
        i = self.usable[int(index)]
        rng = draw_rng(index, self.seed)
        g = self.group[i]
        mates = [j for j in self.members[g] if j != i]
        j = mates[int(rng.integers(len(mates)))]
        others = [h for h in self.members if h != g]
        h = others[int(rng.integers(len(others)))]
        k = self.members[h][int(rng.integers(len(self.members[h])))]
        same = self.split == "train" and bool(rng.random() < self.opts.same_group_probability)
        out = dict(super().__getitem__(i))
        c, n = super().__getitem__(j), super().__getitem__(k)
        ex = c if same else n
        out.update(photo=out["image"], consistent=c["image"], consistent_label=c["label"], inconsistent=n["image"],
                   inconsistent_label=n["label"], exemplar=ex["image"], exemplar_label=ex["label"],
                   same_style=torch.tensor(float(same)), index=int(index))
        return out


def _build_folder(root, *, size, num_classes, split, length, seed, options, rank, world_size):
    if options is not None and options.groups is not None:
        return StyleGroupDataset(root, (size, size), num_classes, options, seed, split=split)
    if options is not None and options.pairs is not None:
        return FolderPairListDataset(root, size, split=split, options=options, seed=seed, num_classes=num_classes)
    return PairedFolderDataset(root, (size, size), num_classes)


register_data_source(DataSourceSpec(
    name="folder", build=_build_folder, options=FolderOptions, pairs=False, needs_root=True,
    exemplars_with=lambda options: options.get("pairs") is not None or options.get("groups") is not None,
    description="ROOT/images/NAME.{jpg,png,...} + ROOT/labels/NAME.png class-index maps; with "
                "--data-option pairs=FILE, references from a name,ref1,... pair list; with groups=FILE "
                "(name group lines), style-consistent / inconsistent pairs by group"))
