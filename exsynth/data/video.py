"""`--dataset video --data ROOT`: frame pairs of real (or written) clips, decoded by NVIDIA DALI.

Layout: ROOT/videos/<clip>.(webm|mkv|avi|mp4) and exact class-index labels
ROOT/labels/<clip>/<frame:06d>.png (frames numbered from 0). The reader lives in
`exsynth.video.dali_reader`; DALI and PyAV are imported only when the source is built, so
`import exsynth` works without the `video` extra (pip install "exsynth[video]").
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ..registry import DataSourceSpec, register_data_source

__all__ = ["VideoOptions"]


@dataclass
class VideoOptions:
    """Options of the video source.

    window: T, the largest frame distance |t - t'| of a style-consistent pair (the paper's 10);
        clips need window + 1 frames (shorter ones are skipped with a warning).
    same_clip_probability: probability that a training sample's exemplar is frame t' of its own
        clip (same_style 1); otherwise a frame of another clip (0).
    step: frames between the starts of consecutive (window + 1)-frame sequences; each sequence
        gives one sample per epoch (none: (window + 1) // 2).
    threads: DALI decoding threads (per process; per DataLoader worker with --workers).
    shuffle_buffer: sequences held for shuffling per reader (memory: this many x (window + 1)
        decoded frames at the clips' own resolution).
    device: cpu (VP8/VP9/MJPEG) or gpu (NVDEC; H.264/HEVC too).
    """

    window: int = 10
    same_clip_probability: float = 0.3
    step: Optional[int] = None
    threads: int = 2
    shuffle_buffer: int = 32
    device: str = "cpu"

    def __post_init__(self):
        if int(self.window) < 1:
            raise ValueError(f"window must be >= 1, got {self.window}")
        if not 0.0 <= float(self.same_clip_probability) <= 1.0:
            raise ValueError(f"same_clip_probability must lie in [0, 1], got {self.same_clip_probability}")
        if self.step is not None and int(self.step) < 1:
            raise ValueError(f"step must be >= 1 or none, got {self.step}")
        if int(self.threads) < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")
        if int(self.shuffle_buffer) < 1:
            raise ValueError(f"shuffle_buffer must be >= 1, got {self.shuffle_buffer}")
        if self.device not in ("cpu", "gpu"):
            raise ValueError(f"device must be 'cpu' or 'gpu', got {self.device!r}")


def _build(root, *, size, num_classes, split, length, seed, options, rank, world_size):
    from ..video.dali_reader import DaliVideoPairs
    o = options or VideoOptions()
    # training reads endlessly (epochs repeat, reshuffled; the trainer stops at --steps);
    # other splits (synthesize / eval) read `length` samples when one is given
    return DaliVideoPairs(root, size=size, num_classes=num_classes, window=o.window,
                          same_clip_probability=o.same_clip_probability, step=o.step, threads=o.threads,
                          shuffle_buffer=o.shuffle_buffer, device=o.device, split=split, seed=seed, rank=rank,
                          world_size=world_size, length=None if split == "train" else length)


register_data_source(DataSourceSpec(
    name="video", build=_build, options=VideoOptions, pairs=False, exemplars=True, needs_root=True,
    description="clips in ROOT/videos + exact label PNGs in ROOT/labels/<clip>/, decoded by NVIDIA DALI: frame pairs "
                "within T frames (same style), frames of other clips (exsynth[video])"))
