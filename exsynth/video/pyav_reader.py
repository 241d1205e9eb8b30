"""The same frame pairs as `DaliVideoPairs`, decoded with plain PyAV: the benchmark's reference.

Sampling mirrors the DALI reader: the (clip, first frame) sequences of window + 1 frames, every
`step` frames, are split into contiguous shards by (rank, world_size) and by DataLoader worker,
shuffled per epoch; a sample takes two distinct frames t, t' of its sequence and a frame u of
a different clip (any clip, as DALI's unsharded second reader). Decoding seeks to the keyframe
before min(t, t') and decodes up to max(t, t'); u likewise. Frames are cropped to the centred
square and resized (bilinear, antialiased) in torch; labels come from the same `LabelStore`.
"""
from __future__ import annotations

import collections
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import IterableDataset, get_worker_info

from .clips import LabelStore, assemble_sample, scan_clips, to_unit_range
from .writer import _av

__all__ = ["PyAVVideoPairs"]


class PyAVVideoPairs(IterableDataset):
    """Samples of a clip folder in the keys of `DaliVideoPairs` (see there for the arguments);
    `length` samples per iteration (None: endless). Keeps up to `open_files` clips open per
    worker."""

    def __init__(self, root, size: int = 64, num_classes: int = 6, *, window: int = 10,
                 same_clip_probability: float = 0.3, step: Optional[int] = None, split: str = "train",
                 seed: int = 0, rank: int = 0, world_size: int = 1, length: Optional[int] = None,
                 open_files: int = 16):
        if int(window) < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        if not 0 <= int(rank) < int(world_size):
            raise ValueError(f"rank must lie in [0, world_size={world_size}), got {rank}")
        self.root, self.size, self.num_classes = Path(root), int(size), int(num_classes)
        self.window, self.p_same = int(window), float(same_clip_probability)
        self.step = int(step) if step is not None else max(1, (self.window + 1) // 2)
        self.split, self.seed, self.rank, self.world_size = split, int(seed), int(rank), int(world_size)
        self.length = None if length is None else int(length)
        self.open_files = int(open_files)
        # PyAV decodes any codec on the CPU; the clip set is the DALI reader's, for equal work
        self.clips = scan_clips(self.root, self.window + 1, device="cpu")
        self.labels = LabelStore(self.clips, self.size, self.num_classes)
        self.drawn = 0
        length_ = self.window + 1
        # DALI's sequence list: every `step` frames while a whole sequence fits
        self.sequences: List[Tuple[int, int]] = [(c, s) for c, clip in enumerate(self.clips)
                                                 for s in range(0, clip.frames - length_ + 1, self.step)]

    def start(self, step: int, batch_size: int) -> None:
        self.drawn = int(step) * int(batch_size)

    def _pts(self, clip: int) -> List[int]:
        """Presentation timestamps of the clip's frames in order (frame i has the i-th)."""
        av = _av()
        with av.open(str(self.clips[clip].path)) as container:
            stream = container.streams.video[0]
            return sorted(p.pts for p in container.demux(stream) if p.size)

    def _decode(self, open_: "collections.OrderedDict", clip: int, frames: Sequence[int]) -> Dict[int, np.ndarray]:
        """{frame index: (H, W, 3) uint8} for the wanted frames of one clip (one seek)."""
        if clip not in open_:
            av = _av()
            container = av.open(str(self.clips[clip].path))
            pts = self._pts(clip)
            open_[clip] = (container, pts, {p: i for i, p in enumerate(pts)})
            if len(open_) > self.open_files:
                open_.popitem(last=False)[1][0].close()
        open_.move_to_end(clip)
        container, pts, index_of = open_[clip]
        stream = container.streams.video[0]
        want, last = set(frames), max(frames)
        container.seek(pts[min(frames)], stream=stream, backward=True, any_frame=False)
        got = {}
        for frame in container.decode(stream):
            i = index_of.get(frame.pts)
            if i in want:
                got[i] = frame.to_ndarray(format="rgb24")
            if i is not None and i >= last:
                break
        missing = want - set(got)
        if missing:
            raise RuntimeError(f"{self.clips[clip].path}: frames {sorted(missing)} did not decode")
        return got

    def _square(self, rgb: np.ndarray) -> torch.Tensor:
        h, w = rgb.shape[:2]
        side = min(h, w)
        y0, x0 = (h - side) // 2, (w - side) // 2
        x = to_unit_range(torch.from_numpy(np.ascontiguousarray(rgb[y0:y0 + side, x0:x0 + side])))
        if side != self.size:
            x = F.interpolate(x[None], size=(self.size, self.size), mode="bilinear", align_corners=False,
                              antialias=True)[0]
        return x

    def __iter__(self) -> Iterator[Dict[str, object]]:
        info = get_worker_info()
        workers, worker = (info.num_workers, info.id) if info is not None else (1, 0)
        shard_id, num_shards = self.rank * workers + worker, self.world_size * workers
        n = len(self.sequences)
        lo, hi = n * shard_id // num_shards, n * (shard_id + 1) // num_shards
        mine = self.sequences[lo:hi] or self.sequences  # a shard never comes up empty
        rng = np.random.default_rng([self.seed, self.rank, worker, self.drawn, 3])
        open_: "collections.OrderedDict" = collections.OrderedDict()
        length_ = self.window + 1
        served, limit, index = 0, self.length if self.length is not None else -1, self.drawn * workers + worker
        try:
            while served != limit:
                for k in rng.permutation(len(mine)):  # a new order every epoch
                    if served == limit:
                        break
                    clip, first = mine[int(k)]
                    a = int(rng.integers(length_))
                    b = (a + 1 + int(rng.integers(length_ - 1))) % length_
                    t, t2 = first + a, first + b
                    other = int(rng.integers(len(self.clips) - 1))
                    other += other >= clip
                    u = int(rng.integers(self.clips[other].frames))
                    same = self.split == "train" and bool(rng.random() < self.p_same)
                    got = self._decode(open_, clip, (t, t2))
                    got_u = self._decode(open_, other, (u,))
                    sample = assemble_sample(self.labels, clip=clip, t=t, t2=t2, other=other, u=u,
                                             photo=self._square(got[t]), consistent=self._square(got[t2]),
                                             inconsistent=self._square(got_u[u]), same_style=same, index=index)
                    index += workers
                    if sample is not None:
                        served += 1
                        yield sample
        finally:
            for container, _, _ in open_.values():
                container.close()
