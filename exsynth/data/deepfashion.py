"""DeepFashion pose-to-image, as CoCosNet's `deepfashion` loader reads it: a 20-channel input.

Layout (ROOT is `--data`, the DeepFashion folder): the photos under ROOT/img/..., OpenPose's
output beside them under ROOT/pose/... (`x.jpg` -> `x_candidate.txt`, keypoint rows x y score
id, and `x_subset.txt`, the person's 18 keypoint indices, -1 where undetected), and the split
files ROOT/train.txt / ROOT/val.txt listing the photos relative to ROOT (`img/WOMEN/.../x.jpg`).
Where OpenPose found several people the one with the highest score is drawn.

Input (values in [0, 1], `--num-classes` 20, the default for this source), drawn at the
photo's own size then resized to the load size as the loader does (`exsynth.data.input_maps`):
  0..2   the OpenPose skeleton picture (keypoint discs, limb sticks, OpenPose's colours; RGB);
  3..19  one distance channel per limb (the first 17 of OpenPose's limbs): min(L1 distance to
         the limb / 3, 255) / 255, all ones where the limb is not detected.

Exemplars: pair lists deepfashion_ref.txt / deepfashion_ref_test.txt (names relative to ROOT),
and the official training recipe's defaults: no real references in training
(`real_reference_probability` 0), no flips (a flip would swap the left/right limb colours), and
`video_like`: the exemplar is another view of the same person from deepfashion_self_pair.txt
(same folder and id prefix, `self_ref` True: the warp-to-self loss applies), else the photo
itself. Validation takes the listed easy reference.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch

from ..imageio import ImageError, check_header
from ..registry import DataSourceSpec, register_data_source
from .ade20k import ADE20kDataset, PairListOptions, read_pair_list
from .input_maps import LIMBS, distance_channel, render_pose

__all__ = ["DeepFashionOptions", "DeepFashionDataset", "pose_input", "read_openpose", "CHANNELS"]

CHANNELS = 3 + 17


@dataclass
class DeepFashionOptions(PairListOptions):
    """DeepFashion's options; the defaults are CoCosNet's DeepFashion training command.

    pairs: a pair list in CoCosNet's format with names relative to ROOT; None:
        ROOT/deepfashion_ref.txt (training) or ROOT/deepfashion_ref_test.txt when present.
    real_reference_probability: chance that a training sample takes a listed reference (0.0).
    hard_reference_probability: chance that it takes the hard (last listed) one (0.0).
    load_size: side the image is resized to before the random crop in training (None: 286/256
        of the size).
    flip: random horizontal flips in training (off, as the official command: --no_flip).
    video_like: otherwise take another view of the same person (self pair list) as exemplar.
    self_pairs: the same-person list (name,view1,...); None: ROOT/deepfashion_self_pair.txt.
    """

    real_reference_probability: float = 0.0
    hard_reference_probability: float = 0.0
    flip: bool = False
    video_like: bool = True
    self_pairs: Optional[str] = None


def read_openpose(template: str) -> Tuple[np.ndarray, np.ndarray]:
    """(candidate (N, 4), subset (18,)) from `template.format("candidate")` / `"subset"` files;
    the highest-scoring person when there are several. ImageError naming the file otherwise."""
    arrays = []
    for part in ("candidate", "subset"):
        path = Path(template.format(part))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # numpy warns on an empty file: no detection
                arrays.append(np.loadtxt(path, ndmin=2))
        except (OSError, ValueError) as e:
            raise ImageError(f"{path}: not an OpenPose {part} file ({type(e).__name__}: {e})") from None
    cand, sub = arrays
    if sub.size == 0:
        return np.zeros((0, 4)), -np.ones(18)
    if sub.shape[1] < 18:
        raise ImageError(f"{template.format('subset')}: expected 18 keypoint indices per person, got {sub.shape[1]}")
    best = int(np.argmax(sub[:, 18])) if sub.shape[1] > 18 else 0
    person = sub[best, :18]
    used = person[person != -1]
    if used.size and (used.min() < 0 or used.max() >= len(cand)):
        raise ImageError(f"{template.format('subset')}: keypoint index {int(used.max())} beyond the "
                         f"{len(cand)} candidates of {template.format('candidate')}")
    return cand, person


def pose_input(template: str, image_size: Tuple[int, int], load: int) -> torch.Tensor:
    """The (20, load, load) float32 input of one photo of `image_size` (H, W)."""
    from PIL import Image

    H, W = image_size
    cand, person = read_openpose(template)
    canvas, limbs = render_pose(cand, person, H, W)
    pose = np.asarray(Image.fromarray(canvas).resize((load, load), Image.NEAREST), np.float32) / 255.0
    dists = [np.asarray(Image.fromarray(distance_channel(m)).resize((load, load), Image.BILINEAR), np.float32) / 255.0
             for m in limbs]
    return torch.from_numpy(np.concatenate([pose.transpose(2, 0, 1), np.stack(dists)]))


class DeepFashionDataset(ADE20kDataset):
    """DeepFashion samples with the 20-channel pose input (see the module docstring)."""

    LAYOUT = "DeepFashion"
    PAIR_FILES = ("deepfashion_ref.txt", "deepfashion_ref_test.txt")
    SELF_PAIR_FILE = "deepfashion_self_pair.txt"
    DENSE = True
    CHANNELS = CHANNELS

    def _find(self):
        ids_file = self.root / ("train.txt" if self.train else "val.txt")
        missing = [str(p.relative_to(self.root)) for p in (self.root / "img", self.root / "pose", ids_file)
                   if not p.exists()]
        if missing:
            found = sorted(x.name for x in self.root.iterdir())[:8] if self.root.is_dir() else []
            raise ImageError(f"{self.root}: not a DeepFashion layout: expected img/, pose/ (OpenPose's "
                             f"*_candidate.txt / *_subset.txt) and train.txt / val.txt (photos relative to the "
                             f"root); missing {missing}, found {found or 'nothing'}")
        pairs = []
        for line in ids_file.read_text().splitlines():
            rel = line.strip().replace("\\", "/")
            if rel:
                img = self.root / rel
                pairs.append((img, self._label_of(img, check=False)))
        return pairs, self.root

    def _label_of(self, image_path: Path, check: bool = True):
        rel = Path(image_path).relative_to(self.root).as_posix()
        if not rel.startswith("img/"):
            return None
        template = str(self.root / ("pose/" + rel[4:].rsplit(".", 1)[0] + "_{}.txt"))
        if check and not all(Path(template.format(p)).is_file() for p in ("candidate", "subset")):
            return None
        return template

    def _check_label(self, lab) -> None:
        if lab is None:
            raise ImageError("a listed photo is not under img/")
        for part in ("candidate", "subset"):
            if not Path(lab.format(part)).is_file():
                raise ImageError(f"{lab.format(part)}: no such file (OpenPose output of the photo)")

    def _read_label(self, lab, load: int, img_path, image) -> torch.Tensor:
        return pose_input(lab, check_header(img_path), load)

    def pair_key(self, path: Path) -> str:  # names relative to the root, as the official lists hold them
        return Path(path).relative_to(self.root).as_posix()

    @property
    def self_pairs(self) -> Dict[str, List[str]]:
        if getattr(self, "_self_pairs", None) is None:
            path = self.opts.self_pairs or (self.root / self.SELF_PAIR_FILE)
            if self.opts.self_pairs is None and not Path(path).is_file():
                warnings.warn(f"{self.root}: no {self.SELF_PAIR_FILE} (video_like): every exemplar is the photo itself",
                              stacklevel=3)
                self._self_pairs = {}
            else:
                self._self_pairs = read_pair_list(path)
        return self._self_pairs

    def _self_exemplar(self, index: int, rng):
        if not (self.train and self.opts.video_like):
            return None
        img = self.image_files[int(index)]
        key = self.pair_key(img)
        views = self.self_pairs.get(key)
        if not views:
            return None
        view = views[0].replace("\\", "/")
        # the official check: the same folder and the same person id prefix
        if Path(view).parent != Path(key).parent or Path(view).name.split("_")[0] != Path(key).name.split("_")[0]:
            return None
        ref = self.root / view
        return self._present(ref, view, f"{ref}: listed as another view of {key} but missing (or its pose is); the "
                                        f"photo itself is used")


register_data_source(DataSourceSpec(
    name="deepfashion", build=DeepFashionDataset.from_source, options=DeepFashionOptions, exemplars=True,
    num_classes=CHANNELS, label_kind="dense", picture=lambda label: label[:, :3] * 2 - 1,
    description="DeepFashion img/ + OpenPose pose/ (*_candidate.txt, *_subset.txt), train.txt/val.txt; input = "
                "skeleton picture + 17 limb distance channels (20 channels)"))
