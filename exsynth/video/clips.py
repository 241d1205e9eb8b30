"""The video layout both readers share: which clips are usable, their exact labels, the geometry.

Layout: ROOT/videos/<clip>.(webm|mkv|avi|mp4) and ROOT/labels/<clip>/<frame:06d>.png, class-index
PNGs numbered from 0 in decode order. Labels never go through a codec: they are read from the
PNGs and cropped/resized (nearest) exactly as the frames are.

Geometry: the centred square of side min(H, W) is resized to size x size. Frames are resized
bilinearly (DALI: `fn.resize` over that region of interest); labels take, for output pixel i,
the source pixel floor(y0 + (i + 0.5) * side / size): the same pixel centres.
"""
from __future__ import annotations

import warnings
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch

from ..imageio import ImageError, read_label
from .writer import VIDEO_EXTENSIONS, _av

__all__ = ["Clip", "ClipError", "CPU_CODECS", "TRANSCODE_FIX", "scan_clips", "probe_clip", "square_index",
           "LabelStore", "assemble_sample", "to_unit_range"]

# what DALI 2.4's CPU video decoder reads (its bundled FFmpeg has no H.264/HEVC/AV1 decoder)
CPU_CODECS = ("vp8", "vp9", "mjpeg")
TRANSCODE_FIX = "exsynth video transcode SRC DST --codec vp9"
LAYOUT = "ROOT/videos/<clip>.(webm|mkv|avi|mp4) with labels ROOT/labels/<clip>/<frame:06d>.png"


class ClipError(ImageError):
    """A clip file that is missing, empty, corrupt, too short or without labels."""


@dataclass(frozen=True)
class Clip:
    path: Path
    frames: int
    height: int
    width: int
    codec: str
    labels: Path

    @property
    def name(self) -> str:
        return self.path.stem


def probe_clip(path: Path, labels: Path) -> Clip:
    """Open `path` with PyAV: count its video packets (its frames) and decode the first frame and
    the last keyframe's group, so that an empty, truncated or garbage file fails here, before a
    pipeline is built, and not in the middle of an epoch. ClipError says what is wrong."""
    av = _av()
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise ClipError(f"{path}: empty file")
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ClipError(f"{path}: no video stream")
            stream = container.streams.video[0]
            codec = stream.codec_context.name
            keyframes, n = [], 0
            for packet in container.demux(stream):
                if packet.size:  # the flush packet at the end has none
                    if packet.is_keyframe:
                        keyframes.append(packet.pts)
                    n += 1
            if n == 0:
                raise ClipError(f"{path}: no frames")
            height, width = stream.codec_context.height, stream.codec_context.width
            if codec in CPU_CODECS:
                # the first frame and everything from the last keyframe on must decode: a
                # garbage file fails at its start, a truncated one at its end
                if keyframes:
                    container.seek(keyframes[0], stream=stream, backward=True, any_frame=False)
                first = next(iter(container.decode(stream)), None)
                if first is None:
                    raise ClipError(f"{path}: no frame decodes")
                height, width = first.height, first.width
                if keyframes:
                    container.seek(keyframes[-1], stream=stream, backward=True, any_frame=False)
                    for _ in container.decode(stream):
                        pass
    except ClipError:
        raise
    except (av.error.FFmpegError, OSError, ValueError, IndexError, RuntimeError) as e:
        raise ClipError(f"{path}: unreadable video ({type(e).__name__}: {e})") from None
    return Clip(path=path, frames=n, height=int(height), width=int(width), codec=codec, labels=Path(labels))


def scan_clips(root, min_frames: int, *, device: str = "cpu") -> List[Clip]:
    """The usable clips of ROOT/videos, in name order. Unreadable, empty, too short (fewer than
    `min_frames`) or unlabelled clips are skipped, each with one warning naming the file; H.264 /
    HEVC / AV1 on the CPU raise (naming the file and the transcode command); fewer than 2
    usable clips raise ValueError (pairs of different clips need two)."""
    root = Path(root)
    videos = root / "videos"
    if not videos.is_dir():
        raise ValueError(f"data {root}: no videos/ folder; the video source reads {LAYOUT}")
    files = sorted(p for p in videos.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS)
    good, gpu_only = [], []
    for path in files:
        try:
            clip = probe_clip(path, root / "labels" / path.stem)
        except ClipError as e:
            warnings.warn(f"skipped: {e}", stacklevel=2)
            continue
        if device == "cpu" and clip.codec not in CPU_CODECS:
            gpu_only.append(clip)
            continue
        if clip.frames < min_frames:
            warnings.warn(f"skipped: {path}: {clip.frames} frame(s); frame pairs within the window need at least "
                          f"{min_frames} (window + 1)", stacklevel=2)
            continue
        if not clip.labels.is_dir():
            warnings.warn(f"skipped: {path}: no label folder {clip.labels}", stacklevel=2)
            continue
        good.append(clip)
    if gpu_only:
        more = f" (and {len(gpu_only) - 1} more clip(s) in {gpu_only[0].codec} or another GPU-only codec)" \
            if len(gpu_only) > 1 else ""
        raise ValueError(f"{gpu_only[0].path}: {gpu_only[0].codec} video{more}: DALI's CPU decoder reads only "
                         f"{'/'.join(c.upper() for c in CPU_CODECS)} (its FFmpeg has no H.264/HEVC decoder on the "
                         f"CPU); convert the folder with `{TRANSCODE_FIX}` (SRC={root}) and train on DST, or decode "
                         f"on a GPU (--data-device gpu)")
    if len(good) < 2:
        raise ValueError(f"data {root}: {len(good)} usable clip(s) among {len(files)} file(s) in {videos}; the video "
                         f"source needs at least 2 (pairs of different clips), each readable, labelled and at least "
                         f"{min_frames} frames long ({LAYOUT})")
    return good


def square_index(height: int, width: int, size: int) -> Tuple[np.ndarray, np.ndarray]:
    """Source rows and columns of the nearest-neighbour resize of the centred square to size x size."""
    side = min(height, width)
    scale = side / size
    centres = (np.arange(size) + 0.5) * scale
    ys = np.floor((height - side) / 2 + centres).astype(np.int64).clip(0, height - 1)
    xs = np.floor((width - side) / 2 + centres).astype(np.int64).clip(0, width - 1)
    return ys, xs


class LabelStore:
    """Exact labels of (clip, frame) at the output geometry, the most recently used ones cached
    (a pair's frames recur: windows overlap and every clip is drawn many times per epoch)."""

    def __init__(self, clips: List[Clip], size: int, num_classes: int, cache: int = 1024):
        self.clips, self.size, self.num_classes, self.cache = clips, int(size), int(num_classes), int(cache)
        self._index = {i: square_index(c.height, c.width, self.size) for i, c in enumerate(clips)}
        self._cached: "OrderedDict[Tuple[int, int], torch.Tensor]" = OrderedDict()
        self.missing: set = set()

    def path(self, clip: int, frame: int) -> Path:
        return self.clips[clip].labels / f"{int(frame):06d}.png"

    def get(self, clip: int, frame: int) -> torch.Tensor:
        """(size, size) int64 class indices; ImageError for a missing or mismatched PNG."""
        key = (int(clip), int(frame))
        hit = self._cached.get(key)
        if hit is not None:
            self._cached.move_to_end(key)
            return hit.long()
        c = self.clips[key[0]]
        path = self.path(*key)
        if not path.is_file():
            raise ImageError(f"{path}: missing label map of frame {key[1]} of {c.path}")
        lab = read_label(path, self.num_classes)
        if tuple(lab.shape) != (c.height, c.width):
            raise ImageError(f"{path}: label map is {lab.shape[1]}x{lab.shape[0]}, its clip {c.path} is "
                             f"{c.width}x{c.height}")
        ys, xs = self._index[key[0]]
        out = lab[torch.from_numpy(ys)][:, torch.from_numpy(xs)]
        # stored small (a class index fits 8 bits for up to 256 classes)
        self._cached[key] = out.to(torch.uint8 if self.num_classes <= 256 else torch.int32)
        if len(self._cached) > self.cache:
            self._cached.popitem(last=False)
        return out


def to_unit_range(frames_uint8: torch.Tensor) -> torch.Tensor:
    """(..., H, W, 3) uint8 -> (..., 3, H, W) float32 in [-1, 1]."""
    return frames_uint8.movedim(-1, -3).to(torch.float32).div_(127.5).sub_(1.0)


def assemble_sample(labels: LabelStore, *, clip: int, t: int, t2: int, other: int, u: int,
                    photo: torch.Tensor, consistent: torch.Tensor, inconsistent: torch.Tensor,
                    same_style: bool, index: int) -> Optional[Dict[str, object]]:
    """One sample in SyntheticVideoDataset's keys (frames (3, S, S) in [-1, 1]); None, after one
    warning per file, when a label PNG of its frames is missing or unreadable."""
    from ..data.synthetic import one_hot
    try:
        lab, lab2, lab_u = labels.get(clip, t), labels.get(clip, t2), labels.get(other, u)
    except ImageError as e:
        from ..imageio import LabelRangeError
        if isinstance(e, LabelRangeError):  # the wrong --num-classes: a configuration error
            raise
        key = str(e).split(":")[0]
        if key not in labels.missing:
            labels.missing.add(key)
            warnings.warn(f"skipped sample: {e}", stacklevel=3)
        return None
    k = labels.num_classes
    ex, ex_lab = (consistent, lab2) if same_style else (inconsistent, lab_u)
    return {
        "label": one_hot(lab, k), "label_index": lab,
        # real video has no exact output for a cross-clip exemplar: the frame itself is the target
        "image": photo, "photo": photo,
        "exemplar": ex, "exemplar_label": one_hot(ex_lab, k),
        "consistent": consistent, "consistent_label": one_hot(lab2, k),
        "inconsistent": inconsistent, "inconsistent_label": one_hot(lab_u, k),
        "same_style": torch.tensor(float(same_style)),
        "clip": int(clip), "frame": int(t), "consistent_frame": int(t2),
        "inconsistent_clip": int(other), "inconsistent_frame": int(u), "index": int(index),
    }
