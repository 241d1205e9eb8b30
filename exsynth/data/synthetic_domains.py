"""Two synthetic image domains for unpaired exemplar-guided translation (EGSC-IT's 64 px task).

Domain A: layouts rendered flat in one fixed palette (the analogue of MNIST-Single's black and
white); domain B: layouts rendered in random per-sample styles (`synthetic`'s textures).
A sample is the A->B task with exact answers: "label" = x_A (an RGB image, a dense 3-channel
input), "exemplar" = x_B (another layout in style s, holding every class of x_A), "image" =
GT_AB = x_A's layout rendered in s, "exemplar_label" = GT_BA = x_B's layout in the palette.
An unpaired model reads only x_A and x_B.

Every class of domain B is styled alike, and every layout draws its background class and its
shapes' classes alike, so nothing in x_B says which of its regions is class k, and no unpaired
signal (reconstruction, cycle, GAN, style) can prefer the GT's pairing of A's class k with B's
class k over any other permutation: the task is not identifiable for an unpaired model. The best
such a model can paint on each of A's regions is one guess for all of them: `python -m
bench.domains_oracles` measures that at 0.3 dB over the exemplar-blind class means, against
13.3 dB for painting each class with the exemplar's colour of that class.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict

import numpy as np
import torch
from torch.utils.data import Dataset

from ..imageio import palette
from ..registry import DataSourceSpec, register_data_source
from .synthetic import TEXTURES, Style, SyntheticExemplarDataset, render

__all__ = ["SyntheticDomainsDataset", "SyntheticDomainsOptions", "palette_style"]


def palette_style(num_classes: int) -> Style:
    """Domain A's fixed style: flat colours from exsynth's class palette."""
    k = int(num_classes)
    colour = palette(k).numpy().astype(np.float64)
    zeros = np.zeros(k)
    return Style(colour=colour, direction=np.ones((k, 3)), amplitude=zeros, kind=np.zeros(k, dtype=np.int64),
                 freq=np.ones(k), angle=zeros, phase=np.zeros((k, 2)), dot_radius=np.full(k, 0.3),
                 noise_k=np.zeros((k, 1, 2)), noise_phase=np.zeros((k, 1)))


@dataclass
class SyntheticDomainsOptions:
    """Options of the synthetic-domains source.

    classes: layout classes (the palette's colours in domain A).
    textures: texture kinds of domain B's styles.
    """

    classes: int = 6
    textures: tuple = TEXTURES

    def __post_init__(self):
        if int(self.classes) < 2:
            raise ValueError(f"synthetic-domains: classes must be >= 2, got {self.classes}")


class SyntheticDomainsDataset(Dataset):
    def __init__(self, size: int = 64, length: int = 2000, split: str = "train", seed: int = 0,
                 options: SyntheticDomainsOptions = None):
        self.opts = options or SyntheticDomainsOptions()
        self.base = SyntheticExemplarDataset(size, num_classes=self.opts.classes, length=length, split=split, seed=seed,
                                             textures=tuple(self.opts.textures), cache=split == "train")
        self.style_a = palette_style(self.opts.classes)
        self.num_classes = int(self.opts.classes)   # of "label_index" (the class-mean baseline reads it)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index) -> Dict[str, object]:
        s = self.base[int(index)]
        return {"label": render(s["label_index"], self.style_a), "exemplar": s["exemplar"], "image": s["image"],
                "exemplar_label": render(s["exemplar_label_index"], self.style_a), "label_index": s["label_index"],
                "index": int(index)}


def _build(root, *, size, num_classes, split, length, seed, options, rank, world_size):
    return SyntheticDomainsDataset(size, length=length or 2000, split=split, seed=seed, options=options)


register_data_source(DataSourceSpec(
    name="synthetic-domains", build=_build, options=SyntheticDomainsOptions, pairs=True, exemplars=True,
    needs_root=False, num_classes=3, label_kind="dense", picture=lambda x: x,
    description="two domains: layouts in a fixed palette (A) and in random styles (B); exact GT_AB and GT_BA"))
