"""Video data: clips written with PyAV, read as style-consistent frame pairs through NVIDIA DALI.

- `writer`: `write_clip`, `write_synthetic_videos` (synthetic clips with exact label PNGs),
  `transcode` (e.g. H.264 -> VP9 / MJPEG, which DALI's CPU decoder reads).
- `clips`: the ROOT/videos + ROOT/labels layout, clip probing, label geometry.
- `dali_reader`: `DaliVideoPairs`, the `--dataset video` source (needs `exsynth[video]`).
- `pyav_reader`: `PyAVVideoPairs`, the same samples decoded with PyAV (the benchmark's reference).

Nothing here imports DALI or PyAV until it is used, so `import exsynth` works without them.
"""
from __future__ import annotations

__all__ = ["write_clip", "write_synthetic_videos", "transcode"]


def __getattr__(name):
    if name in __all__:
        from . import writer
        return getattr(writer, name)
    raise AttributeError(name)
