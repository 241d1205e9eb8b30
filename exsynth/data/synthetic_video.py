"""Synthetic video: layouts whose shapes move over a clip, rendered in one style per clip.

The video form of the synthetic data, for pix2pixSC's style-consistency learning and for the
video reader's tests and benchmark. A *clip* is a pure function of (seed, split, clip id):

- one style (`sample_style`) for the whole clip: two frames of a clip are a style-consistent
  pair, frames of two clips are not;
- a background class and shapes (every class of the K appears in at least one shape, the
  required ones painted last so they are rarely covered), each translating and rotating at
  its own constant rate; frame t is their union painted in order, so the label of every
  frame is exact (the frame is `render(label, style)`).

`SyntheticVideoDataset` (`--dataset synthetic-video`) draws training samples the way a video
reader does (frame t, a frame t' of the same clip with |t - t'| <= T, a frame of another clip)
and, because everything is rendered, it also knows the exact ground truth of a cross-clip
exemplar: "image" is the input's layout rendered in the exemplar's style, "photo" the frame
as its own clip shows it. `exsynth.video.write_synthetic_videos` encodes such clips to files.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset

from ..registry import DataSourceSpec, register_data_source
from .synthetic import TEXTURES, Size, _hw, _paint_shape, _SPLITS, one_hot, render, sample_style

__all__ = ["SyntheticClip", "synthetic_clip", "SyntheticVideoDataset", "SyntheticVideoOptions", "pair_frames"]

_STREAM_CLIP, _STREAM_SAMPLE = 10, 11   # sub-streams of (seed, split): apart from synthetic.py's 0..2


@dataclass(frozen=True)
class SyntheticClip:
    """One clip's recipe: render any frame with `layout(t)` / `frame(t)`."""

    size: Tuple[int, int]
    num_classes: int
    background: int
    masks: Tuple[np.ndarray, ...]          # each shape's mask at frame 0 (H, W) bool
    classes: Tuple[int, ...]
    centres: np.ndarray                    # (S, 2) (y, x) pixel centres at frame 0
    velocity: np.ndarray                   # (S, 2) pixels per frame
    spin: np.ndarray                       # (S,) radians per frame
    style: object

    def layout(self, t: int) -> np.ndarray:
        """(H, W) int64 labels of frame t: each shape's frame-0 mask moved by t steps
        (nearest sampling of the inverse motion: binary masks stay exact)."""
        h, w = self.size
        out = np.full((h, w), self.background, dtype=np.int64)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
        for m, c, cen, vel, om in zip(self.masks, self.classes, self.centres, self.velocity, self.spin):
            cy, cx = cen + vel * t
            a = -om * t
            dy, dx = yy - cy, xx - cx
            sy = np.rint(np.cos(a) * dy + np.sin(a) * dx + cen[0]).astype(np.int64)
            sx = np.rint(-np.sin(a) * dy + np.cos(a) * dx + cen[1]).astype(np.int64)
            ok = (sy >= 0) & (sy < h) & (sx >= 0) & (sx < w)
            hit = np.zeros((h, w), dtype=bool)
            hit[ok] = m[sy[ok], sx[ok]]
            out[hit] = c
        return out

    def frame(self, t: int, style=None) -> torch.Tensor:
        """(3, H, W) float32 in [-1, 1]: frame t in the clip's style (or another one)."""
        return render(self.layout(t), style if style is not None else self.style)


def synthetic_clip(seed: int, split: str, clip: int, size: Size = 64, num_classes: int = 6, *,
                   num_shapes: Tuple[int, int] = (3, 8), radius: Tuple[float, float] = (0.08, 0.3),
                   speed: float = 0.6, spin: float = 0.03, textures=TEXTURES) -> SyntheticClip:
    """Clip `clip` of (seed, split): shapes moving up to `speed` pixels (in 64-px units) and
    turning up to `spin` radians per frame."""
    if split not in _SPLITS:
        raise ValueError(f"split must be one of {sorted(_SPLITS)}, got {split!r}")
    h, w = _hw(size)
    k = int(num_classes)
    rng = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(_SPLITS[split], _STREAM_CLIP, int(clip))))
    style = sample_style(rng, k, (h, w), textures)
    bg = int(rng.integers(0, k))
    others = [c for c in range(k) if c != bg]
    extra = int(rng.integers(num_shapes[0], num_shapes[1] + 1))
    # random extras first, then every other class once, so the required ones end on top
    classes = [int(others[int(i)]) for i in rng.integers(0, len(others), size=extra)] if others else []
    classes += [int(c) for c in rng.permutation(others)]
    masks, centres = [], []
    for c in classes:
        canvas = np.zeros((h, w), dtype=np.int64)
        _paint_shape(canvas, 1, rng, radius)
        m = canvas.astype(bool)
        if not m.any():   # a shape painted wholly outside: a small disc in the middle instead
            yy, xx = np.mgrid[0:h, 0:w]
            m = (yy - h / 2) ** 2 + (xx - w / 2) ** 2 <= (0.1 * max(h, w)) ** 2
        ys, xs = np.nonzero(m)
        masks.append(m)
        centres.append((ys.mean(), xs.mean()))
    n = len(classes)
    scale = max(h, w) / 64.0
    ang = rng.uniform(0, 2 * np.pi, size=n)
    mag = rng.uniform(0.2, 1.0, size=n) * speed * scale
    velocity = np.stack([np.sin(ang) * mag, np.cos(ang) * mag], 1) if n else np.zeros((0, 2))
    turn = rng.uniform(-spin, spin, size=n)
    return SyntheticClip(size=(h, w), num_classes=k, background=bg, masks=tuple(masks), classes=tuple(classes),
                         centres=np.asarray(centres, dtype=np.float64).reshape(n, 2), velocity=velocity, spin=turn,
                         style=style)


def pair_frames(rng: np.random.Generator, clips: int, frames: int, window: int) -> Tuple[int, int, int, int, int]:
    """(clip, t, t', other clip, u): t' != t within `window` frames of t in the same clip
    (pix2pixSC's style-consistent pair, Sec. 3.3), u a frame of a different clip."""
    if clips < 2:
        raise ValueError(f"pairs of clips need at least 2 clips, got {clips}")
    if frames < 2:
        raise ValueError(f"a style-consistent pair needs clips of at least 2 frames, got {frames}")
    c = int(rng.integers(0, clips))
    t = int(rng.integers(0, frames))
    lo, hi = max(0, t - window), min(frames - 1, t + window)
    t2 = int(rng.integers(lo, hi))          # hi - lo >= 1: one of the others
    t2 += t2 >= t
    o = int(rng.integers(0, clips - 1))
    o += o >= c
    return c, t, t2, o, int(rng.integers(0, frames))


@dataclass
class SyntheticVideoOptions:
    """Options of the synthetic-video source.

    clips: clips in the split (train and test/val clips are disjoint: another seed stream).
    frames: frames per clip.
    window: T, the largest frame distance of a style-consistent pair (the paper's 10).
    same_clip_probability: probability that a training sample's exemplar is the consistent frame
        t' (its photo is then the exact output); otherwise it is the other clip's frame (the
        official data script's same_style_rate 0.3). Test/val samples always take the other
        clip's frame, whose exact output is rendered.
    speed, spin: shape motion per frame (pixels in 64-px units, radians).
    """

    clips: int = 64
    frames: int = 30
    window: int = 10
    same_clip_probability: float = 0.3
    speed: float = 0.6
    spin: float = 0.03

    def __post_init__(self):
        if int(self.clips) < 2:
            raise ValueError(f"clips must be >= 2 (consistent and inconsistent pairs), got {self.clips}")
        if int(self.frames) < 2:
            raise ValueError(f"frames must be >= 2, got {self.frames}")
        if int(self.window) < 1:
            raise ValueError(f"window must be >= 1, got {self.window}")
        if not 0.0 <= float(self.same_clip_probability) <= 1.0:
            raise ValueError(f"same_clip_probability must lie in [0, 1], got {self.same_clip_probability}")


class SyntheticVideoDataset(Dataset):
    """Samples of a synthetic video set. Sample i (a pure function of (seed, split, i, the
    draw count when training)) holds:

    - "label", "label_index": frame t of clip c (one-hot, indices); "photo": that frame;
    - "exemplar", "exemplar_label": frame t' of c (same_style 1) or frame u of clip o (0);
    - "image": the exact output for (label, exemplar): the photo when same_style, else
      frame t's layout rendered in clip o's style;
    - "consistent", "consistent_label": frame t' (style-consistent with the photo);
      "inconsistent", "inconsistent_label": frame u of another clip;
    - "same_style" (float 0/1), "clip", "frame", "index".
    """

    def __init__(self, size: Size = 64, num_classes: int = 6, length: int = 2000, split: str = "train",
                 seed: int = 0, options: Optional[SyntheticVideoOptions] = None):
        self.size, self.num_classes, self.length, self.split, self.seed = _hw(size), int(num_classes), int(length), split, int(seed)
        if min(self.size) < 16:
            raise ValueError(f"size must be >= 16, got {size!r}")
        if split not in _SPLITS:
            raise ValueError(f"split must be one of {sorted(_SPLITS)}, got {split!r}")
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        self.opts = options or SyntheticVideoOptions()
        self._clips: Dict[int, SyntheticClip] = {}

    def __len__(self) -> int:
        return self.length

    def clip(self, c: int) -> SyntheticClip:
        if c not in self._clips:
            o = self.opts
            self._clips[c] = synthetic_clip(self.seed, self.split, c, self.size, self.num_classes,
                                            speed=o.speed, spin=o.spin)
        return self._clips[c]

    def __getitem__(self, index) -> Dict[str, object]:
        i = int(index)
        if not 0 <= i < self.length:
            raise IndexError(f"index {i} out of range for length {self.length}")
        draw = int(getattr(index, "draw", i))
        rng = np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(_SPLITS[self.split], _STREAM_SAMPLE, draw)))
        o = self.opts
        c, t, t2, oc, u = pair_frames(rng, o.clips, o.frames, o.window)
        same = self.split == "train" and bool(rng.random() < o.same_clip_probability)
        clip, other = self.clip(c), self.clip(oc)
        lay, lay2, lay_u = clip.layout(t), clip.layout(t2), other.layout(u)
        photo, consistent, inconsistent = render(lay, clip.style), render(lay2, clip.style), render(lay_u, other.style)
        k = self.num_classes
        ex, ex_lay = (consistent, lay2) if same else (inconsistent, lay_u)
        return {
            "label": one_hot(lay, k), "label_index": torch.from_numpy(lay),
            "image": photo if same else render(lay, other.style),
            "photo": photo,
            "exemplar": ex, "exemplar_label": one_hot(ex_lay, k),
            "consistent": consistent, "consistent_label": one_hot(lay2, k),
            "inconsistent": inconsistent, "inconsistent_label": one_hot(lay_u, k),
            "same_style": torch.tensor(float(same)),
            "clip": c, "frame": t, "index": i,
        }


def _build(root, *, size, num_classes, split, length, seed, options, rank, world_size):
    return SyntheticVideoDataset(size, num_classes, length=length or 2000, split=split, seed=seed, options=options)


register_data_source(DataSourceSpec(
    name="synthetic-video", build=_build, options=SyntheticVideoOptions, pairs=True, exemplars=True,
    needs_root=False,
    description="synthetic clips (moving layouts, one style per clip): style-consistent frame pairs within T frames, "
                "frames of other clips, exact ground truth for cross-clip exemplars"))
