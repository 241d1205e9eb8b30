"""Two synthetic image domains for unpaired exemplar-guided translation (EGSC-IT's 64 px task).

Domain A: layouts rendered flat in one fixed palette (the analogue of MNIST-Single's black and
white); domain B: layouts rendered in random per-sample styles (`synthetic`'s textures).
A sample is the A->B task with exact answers: "label" = x_A (an RGB image, a dense 3-channel
input), "exemplar" = x_B (another layout in style s, holding every class of x_A), "image" =
GT_AB = x_A's layout rendered in s, "exemplar_label" = GT_BA = x_B's layout in the palette.
An unpaired model reads only x_A and x_B.

By default every class of domain B is styled alike, so nothing in x_B says which of its regions
is class k and the unpaired task is not identifiable: the best an unpaired model can paint on
each of A's regions is the same guess (`python -m bench.domains_oracles`: 0.3 dB over the
exemplar-blind class means, against 13.3 dB for the per-class correspondence). `class_hues`
draws class k's base colour from its own sector of the hue circle, so B's regions say their
class, as MNIST-Single's foreground and background do by their areas.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict

import numpy as np
import torch
from torch.utils.data import Dataset

from ..imageio import palette
from ..registry import DataSourceSpec, register_data_source
from .synthetic import _COLOUR_MAX, TEXTURES, Style, SyntheticExemplarDataset, render

__all__ = ["SyntheticDomainsDataset", "SyntheticDomainsOptions", "palette_style", "class_hue_colours", "hue"]

_STREAM_CLASS_HUES = 7    # a stream of the base dataset's seed tree that it does not use itself


def palette_style(num_classes: int) -> Style:
    """Domain A's fixed style: flat colours from exsynth's class palette."""
    k = int(num_classes)
    colour = palette(k).numpy().astype(np.float64)
    zeros = np.zeros(k)
    return Style(colour=colour, direction=np.ones((k, 3)), amplitude=zeros, kind=np.zeros(k, dtype=np.int64),
                 freq=np.ones(k), angle=zeros, phase=np.zeros((k, 2)), dot_radius=np.full(k, 0.3),
                 noise_k=np.zeros((k, 1, 2)), noise_phase=np.zeros((k, 1)))


def class_hue_colours(rng: np.random.Generator, num_classes: int) -> np.ndarray:
    """(K, 3) base colours in [-_COLOUR_MAX, _COLOUR_MAX]: class k's hue uniform in the middle
    60 % of the hue sector [k / K, (k + 1) / K), saturation and value uniform in [0.5, 1]."""
    k = int(num_classes)
    hue = (np.arange(k) + rng.uniform(0.2, 0.8, size=k)) / k
    sat, val = rng.uniform(0.2, 1.0, size=k), rng.uniform(0.2, 1.0, size=k)
    # HSV -> RGB (the standard hexcone formula)
    h6 = hue * 6.0
    i = np.floor(h6).astype(np.int64) % 6
    f = h6 - np.floor(h6)
    p, q, t = val * (1 - sat), val * (1 - sat * f), val * (1 - sat * (1 - f))
    table = np.stack([np.stack(c, 1) for c in ((val, t, p), (q, val, p), (p, val, t), (p, q, val), (t, p, val),
                                                (val, p, q))])          # (6, K, 3)
    rgb = table[i, np.arange(k)]
    return (rgb * 2.0 - 1.0) * _COLOUR_MAX


def hue(x: torch.Tensor) -> torch.Tensor:
    """(3, ...) RGB -> (...) hue in [0, 1) (hexcone); invariant to a common offset and a positive
    scale of the channels, so it reads [-1, 1] pixels and base colours alike."""
    r, g, b = x
    mx, mn = x.max(0).values, x.min(0).values
    d = (mx - mn).clamp_min(1e-8)
    h = torch.where(mx == r, ((g - b) / d) % 6, torch.where(mx == g, (b - r) / d + 2, (r - g) / d + 4))
    return h / 6


@dataclass
class SyntheticDomainsOptions:
    """Options of the synthetic-domains source.

    classes: layout classes (the palette's colours in domain A).
    textures: texture kinds of domain B's styles.
    class_hues: draw each class's base colour in domain B from its own hue sector
        (`class_hue_colours`), so x_B's regions say their class; False (the default): every
        class drawn alike, which no unpaired model can map class by class (see the module doc).
    """

    classes: int = 6
    textures: tuple = TEXTURES
    class_hues: bool = False

    def __post_init__(self):
        if int(self.classes) < 2:
            raise ValueError(f"synthetic-domains: classes must be >= 2, got {self.classes}")
        if not isinstance(self.class_hues, bool):
            raise ValueError(f"synthetic-domains: class_hues must be True or False, got {self.class_hues!r}")


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

    def style_b(self, index) -> Style:
        """Domain B's style of sample `index` (the base dataset's, with class_hues its colours)."""
        style = self.base.style(index)
        if self.opts.class_hues:
            rng = self.base._rng(_STREAM_CLASS_HUES, self.base.style_id(index))
            style = Style(**{**style.as_dict(), "colour": class_hue_colours(rng, self.num_classes)})
        return style

    def __getitem__(self, index) -> Dict[str, object]:
        s = self.base[int(index)]
        if self.opts.class_hues:
            style = self.style_b(int(index))
            s["exemplar"], s["image"] = render(s["exemplar_label_index"], style), render(s["label_index"], style)
        return {"label": render(s["label_index"], self.style_a), "exemplar": s["exemplar"], "image": s["image"],
                "exemplar_label": render(s["exemplar_label_index"], self.style_a), "label_index": s["label_index"],
                "index": int(index)}


def _build(root, *, size, num_classes, split, length, seed, options, rank, world_size):
    return SyntheticDomainsDataset(size, length=length or 2000, split=split, seed=seed, options=options)


register_data_source(DataSourceSpec(
    name="synthetic-domains", build=_build, options=SyntheticDomainsOptions, pairs=True, exemplars=True,
    needs_root=False, num_classes=3, label_kind="dense", picture=lambda x: x,
    description="two domains: layouts in a fixed palette (A) and in random styles (B); exact GT_AB and GT_BA"))
