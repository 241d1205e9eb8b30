"""Encode clips with PyAV: test and benchmark videos, synthetic sets, and transcoding.

Every clip written here has what random access needs: frame i has pts i in a 1/fps time base
(so timestamps rise by exactly one frame) and a keyframe at least every `keyframe_interval`
frames (a seek lands at most that many frames before the one asked for).
"""
from __future__ import annotations

import shutil
from fractions import Fraction
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple, Union

import numpy as np

__all__ = ["CODECS", "VIDEO_EXTENSIONS", "write_clip", "write_synthetic_videos", "transcode", "extension_for"]

PathLike = Union[str, Path]

# codec name -> (PyAV encoders to try in order, pixel format, file extension)
CODECS: Dict[str, Tuple[Tuple[str, ...], str, str]] = {
    "vp9": (("libvpx-vp9",), "yuv420p", ".webm"),
    "vp8": (("libvpx",), "yuv420p", ".webm"),
    "mjpeg": (("mjpeg",), "yuvj420p", ".avi"),
    # H.264 is written only to test the CPU refusal (DALI's CPU decoder has none) and GPU decoding
    "h264": (("libx264", "h264"), "yuv420p", ".mp4"),
}
VIDEO_EXTENSIONS = (".webm", ".mkv", ".avi", ".mp4")
# containers each codec may go in (webm takes VP8/VP9 only)
_CONTAINERS = {"vp9": (".webm", ".mkv"), "vp8": (".webm", ".mkv"), "mjpeg": (".avi", ".mkv"),
               "h264": (".mp4", ".mkv")}


def _av():
    try:
        import av
    except ImportError as e:
        raise ImportError('exsynth video I/O needs PyAV: pip install "exsynth[video]"') from e
    return av


def _encoder(codec: str) -> Tuple[str, str]:
    """(the PyAV encoder, the codec actually written): VP9 falls back to VP8 where PyAV's FFmpeg
    lacks libvpx-vp9 (both decode on DALI's CPU backend)."""
    if codec not in CODECS:
        raise ValueError(f"codec must be one of {sorted(CODECS)}, got {codec!r}")
    from av.codec.codec import codecs_available
    chain = [codec] + (["vp8"] if codec == "vp9" else [])
    for name in chain:
        for enc in CODECS[name][0]:
            if enc in codecs_available:
                try:
                    _av().codec.Codec(enc, "w")
                    return enc, name
                except Exception:  # listed but not an encoder in this build
                    continue
    raise ValueError(f"codec {codec!r}: this PyAV build has no encoder for it (tried {CODECS[codec][0]})")


def extension_for(codec: str) -> str:
    """The file extension `write_synthetic_videos` and `transcode` give a codec's clips."""
    if codec not in CODECS:
        raise ValueError(f"codec must be one of {sorted(CODECS)}, got {codec!r}")
    return CODECS[codec][2]


def write_clip(path: PathLike, frames: np.ndarray, fps: int = 10, codec: str = "vp9",
               keyframe_interval: int = 15, quality: int = 20) -> Path:
    """Encode (T, H, W, 3) uint8 RGB frames to `path` (its extension picks the container).

    fps: frames per second (timestamps are i / fps). keyframe_interval: a keyframe at least this
    often. quality: VP8/VP9 CRF (lower is better, 4..63) or MJPEG qscale (2..31).
    Even widths/heights are needed by 4:2:0 chroma. Returns the path written."""
    av = _av()
    path = Path(path)
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be a (T, H, W, 3) uint8 array, got {frames.dtype} {frames.shape}")
    t, h, w, _ = frames.shape
    if t < 1:
        raise ValueError("frames: a clip needs at least one frame, got 0")
    if h % 2 or w % 2:
        raise ValueError(f"frames: height and width must be even (4:2:0 chroma), got {h}x{w}")
    if int(fps) < 1:
        raise ValueError(f"fps must be >= 1, got {fps}")
    if not 1 <= int(keyframe_interval) <= 15:
        raise ValueError(f"keyframe_interval must lie in 1..15 (random access stays fast), got {keyframe_interval}")
    encoder, written = _encoder(codec)
    if path.suffix.lower() not in _CONTAINERS[written]:
        raise ValueError(f"path {path}: a {written} clip goes in one of {_CONTAINERS[written]}, got {path.suffix!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".partial" + path.suffix)
    gop = int(keyframe_interval)
    with av.open(str(tmp), "w") as container:
        stream = container.add_stream(encoder, rate=Fraction(int(fps)))
        stream.width, stream.height = w, h
        stream.pix_fmt = CODECS[written][1]
        stream.codec_context.gop_size = gop
        if written in ("vp9", "vp8"):
            # no lagged (hidden alt-ref) frames: one packet per shown frame, pts = frame index
            stream.options = {"g": str(gop), "lag-in-frames": "0", "deadline": "realtime", "cpu-used": "8",
                              "crf": str(int(quality)), "b": "0"}
        elif written == "mjpeg":
            stream.options = {"qscale": str(int(quality) // 8 + 2)}
        else:  # h264: no B-frames, so decode order is display order
            stream.options = {"g": str(gop), "keyint_min": str(gop), "bf": "0", "preset": "ultrafast"}
        for i in range(t):
            frame = av.VideoFrame.from_ndarray(frames[i], format="rgb24")
            frame.pts = i  # in the encoder's 1/fps time base; the muxer rescales to its own
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    tmp.replace(path)
    return path


def write_synthetic_videos(root: PathLike, clips: int = 8, frames: int = 30, size: int = 64, num_classes: int = 6,
                           seed: int = 0, split: str = "train", codec: str = "vp9", fps: int = 10,
                           keyframe_interval: int = 15, speed: float = 0.6, spin: float = 0.03) -> List[Path]:
    """Render clips 0..clips-1 of `exsynth.data.synthetic_video` (seed, split) to
    ROOT/videos/clip_NNNN.<ext> with their exact labels in ROOT/labels/clip_NNNN/<frame:06d>.png:
    the layout `--dataset video` reads. Returns the clip paths."""
    from ..data.synthetic_video import synthetic_clip
    from ..imageio import write_label
    import torch

    if int(clips) < 1 or int(frames) < 1:
        raise ValueError(f"clips and frames must be >= 1, got clips={clips}, frames={frames}")
    root = Path(root)
    ext = extension_for(_encoder(codec)[1])
    out = []
    for c in range(int(clips)):
        clip = synthetic_clip(seed, split, c, size, num_classes, speed=speed, spin=spin)
        name = f"clip_{c:04d}"
        rgb = np.empty((int(frames),) + clip.size + (3,), dtype=np.uint8)
        for t in range(int(frames)):
            lay = clip.layout(t)
            write_label(torch.from_numpy(lay), root / "labels" / name / f"{t:06d}.png")
            img = clip.frame(t)  # rendered from `lay`, so the PNG is the frame's exact label
            rgb[t] = ((img.permute(1, 2, 0).numpy() + 1.0) * 127.5).round().clip(0, 255).astype(np.uint8)
        out.append(write_clip(root / "videos" / (name + ext), rgb, fps=fps, codec=codec,
                              keyframe_interval=keyframe_interval))
    return out


def _clip_files(folder: Path) -> List[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS)


def transcode(src_dir: PathLike, dst_dir: PathLike, codec: str = "vp9", *, keyframe_interval: int = 15,
              overwrite: bool = False, progress=None) -> List[Path]:
    """Re-encode every clip of `src_dir` (e.g. H.264 .mp4) to VP9/VP8 (.webm) or MJPEG (.avi) in
    `dst_dir`, frame for frame (labels stay aligned), at the source's frame rate. A dataset root
    (one holding videos/) is converted to DST/videos and its labels/ copied alongside.
    Returns the written clips."""
    av = _av()
    src, dst = Path(src_dir), Path(dst_dir)
    if codec not in ("vp9", "vp8", "mjpeg"):
        raise ValueError(f"codec must be one of vp9, vp8, mjpeg (the ones DALI decodes on the CPU), got {codec!r}")
    if not src.is_dir():
        raise ValueError(f"src {src}: not a folder")
    if src.resolve() == dst.resolve():
        raise ValueError(f"dst {dst}: must differ from src (clips would be overwritten while read)")
    labels = None
    if (src / "videos").is_dir():
        labels = src / "labels" if (src / "labels").is_dir() else None
        src, dst = src / "videos", dst / "videos"
    files = _clip_files(src)
    if not files:
        raise ValueError(f"src {src}: no clips ({', '.join(VIDEO_EXTENSIONS)}) in it")
    ext = extension_for(_encoder(codec)[1])
    written = []
    for path in files:
        target = dst / (path.stem + ext)
        if target.exists() and not overwrite:
            raise ValueError(f"{target}: exists (pass overwrite=True / --overwrite to replace it)")
        try:
            with av.open(str(path)) as container:
                stream = container.streams.video[0]
                rate = stream.average_rate or stream.guessed_rate or Fraction(25)
                frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(stream)])
        except (av.error.FFmpegError, IndexError, ValueError) as e:
            raise ValueError(f"{path}: cannot be decoded by PyAV ({type(e).__name__}: {e})") from None
        h, w = frames.shape[1:3]
        if h % 2 or w % 2:  # 4:2:0 needs even sides: repeat the last row/column
            frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        fps = max(1, int(round(float(rate))))
        written.append(write_clip(target, frames, fps=fps, codec=codec, keyframe_interval=keyframe_interval))
        if progress is not None:
            progress(path, target, len(frames))
    if labels is not None:
        shutil.copytree(labels, dst.parent / "labels", dirs_exist_ok=True)
    return written
