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

The option class_textures names the classes in both domains: class k has texture kind k (flat,
stripes, checker, dots, noise; so at most five classes), in A at one fixed set of parameters in
the palette's colours, in B at the sample's random parameters and colours, at periods of 6 to
12 px. What the two domains share is then the texture kind of each region, which a model can
read without colour (EGSC-IT's region_input "texture"); `python -m bench.domains_segmenter`
measures how well an unsupervised segmenter learns it.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Dict

import numpy as np
import torch
from torch.utils.data import Dataset

from ..imageio import palette
from ..registry import DataSourceSpec, register_data_source
from .synthetic import _FREQ_RANGE, TEXTURES, Style, SyntheticExemplarDataset, render, sample_style

__all__ = ["SyntheticDomainsDataset", "SyntheticDomainsOptions", "palette_style"]

_CLASS_TEXTURE_SEED = 20261130   # domain A's fixed texture parameters under class_textures


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
    class_textures: class k has texture kind k (flat, stripes, checker, dots, noise) in both
        domains, A's at fixed parameters in the palette's colours, B's at random parameters in
        random colours (`textures` is then unused), all at periods of 6 to 12 px at 64 px. The
        classes of x_B are then named by something A shares, so the task becomes identifiable
        for an unpaired model (see the module's docstring).
    """

    classes: int = 6
    textures: tuple = TEXTURES
    class_textures: bool = False

    def __post_init__(self):
        if int(self.classes) < 2:
            raise ValueError(f"synthetic-domains: classes must be >= 2, got {self.classes}")
        if self.class_textures and int(self.classes) > len(TEXTURES):
            raise ValueError(f"synthetic-domains: class_textures gives each class its own texture kind, so "
                             f"classes must be <= {len(TEXTURES)} ({', '.join(TEXTURES)}), got {self.classes}")


class SyntheticDomainsDataset(Dataset):
    def __init__(self, size: int = 64, length: int = 2000, split: str = "train", seed: int = 0,
                 options: SyntheticDomainsOptions = None):
        self.opts = options or SyntheticDomainsOptions()
        self.base = SyntheticExemplarDataset(size, num_classes=self.opts.classes, length=length, split=split, seed=seed,
                                             textures=tuple(self.opts.textures), cache=split == "train")
        self.style_a = palette_style(self.opts.classes)
        self.num_classes = int(self.opts.classes)   # of "label_index" (the class-mean baseline reads it)
        if self.opts.class_textures:
            self._kinds = np.arange(self.num_classes, dtype=np.int64)      # class k: TEXTURES[k]
            self._fmax = max(self.base.size) / 6.0
            # A: the palette's colours, one fixed draw of texture parameters
            fixed = self._fine(sample_style(np.random.default_rng(_CLASS_TEXTURE_SEED), self.num_classes, size))
            self.style_a = replace(fixed, colour=self.style_a.colour)
        self._rendered: Dict[int, Dict[str, object]] = {}

    def __len__(self) -> int:
        return len(self.base)

    def _fine(self, style: Style) -> Style:
        """class_textures' style: kind k for class k, and the drawn frequencies mapped from
        [lowest, highest] onto [fmax / 2, fmax] (fmax: a 6 px period), so that a few pixels show
        a texture's kind (at the lowest drawn, 2 cycles per image, a 15 px window sees half a
        period of a 32 px one: stripes, checker and noise look alike there); noise's wave numbers
        likewise."""
        lo, hi = _FREQ_RANGE
        f = lambda v: self._fmax / 2 + (np.clip(v, lo, hi) - lo) / (hi - lo) * (self._fmax / 2)
        mag = np.linalg.norm(style.noise_k, axis=-1, keepdims=True)
        return replace(style, kind=self._kinds, freq=f(style.freq),
                       noise_k=style.noise_k / np.maximum(mag, 1e-12) * f(mag))

    def _class_textured(self, index: int) -> Dict[str, object]:
        i = self.base._index(index)
        if i in self._rendered:
            return self._rendered[i]          # shared: __getitem__ hands out clones
        style_b = self._fine(self.base.style(i))
        lay, ex = self.base.layouts(i)
        out = {"label": render(lay, self.style_a), "exemplar": render(ex, style_b), "image": render(lay, style_b),
               "exemplar_label": render(ex, self.style_a), "label_index": torch.from_numpy(lay), "index": i}
        if self.base.cache:
            self._rendered[i] = out
        return out

    def __getitem__(self, index) -> Dict[str, object]:
        if self.opts.class_textures:
            s = self._class_textured(int(index))
            return {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in s.items()}
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
