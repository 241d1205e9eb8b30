"""`--dataset video`: style-consistent frame pairs from a folder of clips, decoded by NVIDIA DALI.

One DALI pipeline holds one reader (`fn.experimental.readers.video`, which has a CPU backend;
`fn.readers.video` is GPU-only):

- "pairs" reads sequences of window + 1 consecutive frames, sharded by (rank, world_size):
  DALI shuffles the list of sequences (not clips) with the reader's seed and splits it into
  `num_shards` parts, so that seed is the same on every process (ranks then read disjoint
  sequences in an epoch); after its part a shard reads on into the next one, so over epochs
  every process sees every sequence, each epoch in a new order. Two distinct positions a, b
  of a sequence give frame t and frame t' (|t - t'| <= window, t != t'); only those two
  frames are resized.
- a third random position c of each sequence is kept in a ring of recent frames; for each
  pair, a frame u of the ring from a clip other than the pair's, chosen at random, is the
  inconsistent frame. (A second, unsharded single-frame reader did this before: it cost a
  seek-and-decode per pair, ~25 decoded frames per pair against PyAV's ~19; now ~11.) A shard
  whose sequences all come from one clip finds no other clip: an error says so.

Frames are cropped to the centred square and resized to size x size inside DALI, normalised
to [-1, 1] and laid out CHW there; labels are read from the PNGs (never through the codec) and
cropped/resized (nearest) identically (`clips.square_index`).

Resume: `start(step, batch_size)` seeds the pipeline and the pair choices from the number of
samples already drawn, so a resumed run continues at the same count in a fresh order (DALI
readers cannot seek to the middle of an epoch's shuffled order).
"""
from __future__ import annotations

import collections
import warnings
from pathlib import Path
from typing import Dict, Iterator, List, Optional

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from .clips import LabelStore, assemble_sample, scan_clips

__all__ = ["DaliVideoPairs", "require_dali", "DALI_MISSING"]

DALI_MISSING = ('the video data source needs NVIDIA DALI and PyAV: pip install "exsynth[video]" '
                '(nvidia-dali-cuda130, av)')


def require_dali():
    """The nvidia.dali module, or ImportError saying which extra installs it."""
    try:
        import nvidia.dali  # noqa: F401
        import nvidia.dali.plugin.pytorch  # noqa: F401
    except ImportError as e:
        raise ImportError(f"{DALI_MISSING} ({e})") from None
    try:
        import av  # noqa: F401  (clips are probed with PyAV before a pipeline is built)
    except ImportError as e:
        raise ImportError(f"{DALI_MISSING} ({e})") from None
    return nvidia.dali


def _seed31(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0] & 0x7FFFFFFF)


class DaliVideoPairs(IterableDataset):
    """Endless samples (epochs repeat, each reshuffled) of a clip folder, in the keys of
    `SyntheticVideoDataset` plus "consistent_frame", "inconsistent_clip", "inconsistent_frame"
    (clip numbers index `.clips`, the usable clips in name order).

    size: output side (centred square crop, resized). window: T, the largest |t - t'|; clips
    need window + 1 frames. step: frames between the starts of consecutive sequences (one
    sample per sequence and epoch). same_clip_probability: chance that the exemplar is frame t'
    (same_style 1) rather than the other clip's frame u (0); always u outside split "train".
    threads: DALI CPU threads. batch_size: samples per pipeline run (`start` sets the trainer's).
    shuffle_buffer: sequences in each reader's shuffle buffer (memory: buffer x (window + 1)
    decoded frames at the clips' resolution). device: "cpu" (VP8/VP9/MJPEG) or "gpu" (NVDEC,
    any codec DALI's GPU reader takes). length: samples per iteration (None: endless).
    """

    def __init__(self, root, size: int = 64, num_classes: int = 6, *, window: int = 10,
                 same_clip_probability: float = 0.3, step: Optional[int] = None, threads: int = 2,
                 batch_size: int = 8, shuffle_buffer: int = 32, device: str = "cpu", split: str = "train",
                 seed: int = 0, rank: int = 0, world_size: int = 1, length: Optional[int] = None):
        if int(size) < 8:
            raise ValueError(f"size must be >= 8, got {size}")
        if int(window) < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        if not 0.0 <= float(same_clip_probability) <= 1.0:
            raise ValueError(f"same_clip_probability must lie in [0, 1], got {same_clip_probability}")
        if device not in ("cpu", "gpu"):
            raise ValueError(f"device must be 'cpu' or 'gpu', got {device!r}")
        if not 0 <= int(rank) < int(world_size):
            raise ValueError(f"rank must lie in [0, world_size={world_size}), got {rank}")
        for name, v in (("threads", threads), ("batch_size", batch_size), ("shuffle_buffer", shuffle_buffer)):
            if int(v) < 1:
                raise ValueError(f"{name} must be >= 1, got {v}")
        if step is not None and int(step) < 1:
            raise ValueError(f"step must be >= 1, got {step}")
        require_dali()
        self.root, self.size, self.num_classes = Path(root), int(size), int(num_classes)
        self.window, self.p_same = int(window), float(same_clip_probability)
        self.step = int(step) if step is not None else max(1, (self.window + 1) // 2)
        self.threads, self.batch_size, self.shuffle_buffer = int(threads), int(batch_size), int(shuffle_buffer)
        self.device, self.split, self.seed = device, split, int(seed)
        self.rank, self.world_size = int(rank), int(world_size)
        self.length = None if length is None else int(length)
        self.clips = scan_clips(self.root, self.window + 1, device=device)
        self.labels = LabelStore(self.clips, self.size, self.num_classes)
        self.drawn = 0  # samples this process drew before the current iteration (set by start)

    def start(self, step: int, batch_size: int) -> None:
        """Resume point: `step` steps of `batch_size` samples per process were drawn already."""
        self.drawn = int(step) * int(batch_size)
        self.batch_size = max(1, int(batch_size))

    # -- pipeline ------------------------------------------------------------------------------

    def _resize_needed(self) -> bool:
        """False when every clip is already a size x size square (written at the training size):
        the pipeline then skips the resize, as the PyAV reader does; at 256 px it is three
        full-frame resamples per pair that change nothing."""
        return any((c.height, c.width) != (self.size, self.size) for c in self.clips)

    def _pipeline(self, shard_id: int, num_shards: int, seed: int, order_seed: int):
        from nvidia.dali import fn, pipeline_def, types
        import nvidia.dali.math as dmath

        files = [str(c.path) for c in self.clips]
        ids = list(range(len(files)))
        length, size = self.window + 1, self.size
        gpu = self.device == "gpu"
        device_id = torch.cuda.current_device() if gpu else None

        as_is = not self._resize_needed()

        def square(frames):
            if as_is:   # (the stacked frames carry no layout until the resize sets one)
                return fn.crop_mirror_normalize(fn.reshape(frames, layout="FHWC"), dtype=types.FLOAT, mean=[127.5],
                                                std=[127.5], output_layout="FCHW")
            # the centred square as a relative region of interest: resized once, no rounded crop
            shape = frames.shape(dtype=types.FLOAT)
            h, w = shape[1], shape[2]
            side = dmath.min(h, w)
            start = fn.stack((h - side) / (2 * h), (w - side) / (2 * w))
            end = fn.stack((h + side) / (2 * h), (w + side) / (2 * w))
            out = fn.resize(frames, size=[size, size], roi_start=start, roi_end=end, roi_relative=True)
            return fn.crop_mirror_normalize(out, dtype=types.FLOAT, mean=[127.5], std=[127.5], output_layout="FCHW")

        @pipeline_def(batch_size=self.batch_size, num_threads=self.threads, device_id=device_id, seed=seed,
                      prefetch_queue_depth=2, exec_dynamic=True)
        def pipe():
            seq, clip, first = fn.experimental.readers.video(
                device="gpu" if gpu else "cpu", filenames=files, labels=ids, sequence_length=length,
                step=self.step, random_shuffle=True, initial_fill=self.shuffle_buffer, enable_frame_num="scalar",
                shard_id=shard_id, num_shards=num_shards, pad_mode="none", name="pairs", seed=order_seed)
            a = fn.random.uniform(values=list(range(length)), dtype=types.INT32)
            # b != a: a plus 1..length-1, wrapped
            b = (a + 1 + fn.random.uniform(values=list(range(length - 1)), dtype=types.INT32)) % length
            # a third frame of the sequence, kept for later samples of other clips as their
            # inconsistent frame: no second reader, no second seek-and-decode per pair
            c = fn.random.uniform(values=list(range(length)), dtype=types.INT32)
            frames = square(fn.stack(seq[a], seq[b], seq[c]))
            return frames, clip, first, a, b, c

        return pipe()

    def __iter__(self) -> Iterator[Dict[str, object]]:
        from nvidia.dali.plugin.pytorch import DALIGenericIterator, LastBatchPolicy

        info = get_worker_info()
        workers, worker = (info.num_workers, info.id) if info is not None else (1, 0)
        # DataLoader workers split this process's shard further: no two of them read the same sequences
        shard_id, num_shards = self.rank * workers + worker, self.world_size * workers
        drawn = self.drawn
        seed = _seed31(self.seed, self.rank, worker, drawn, 1)
        # one sequence order for all processes and workers: their shards of it are disjoint
        order_seed = _seed31(self.seed, drawn, 4)
        rng = np.random.default_rng([self.seed, self.rank, worker, drawn, 2])
        keys = ["frames", "clip", "first", "a", "b", "c"]
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"nvidia\.dali.*")
            batches = DALIGenericIterator(self._pipeline(shard_id, num_shards, seed, order_seed), keys, reader_name="pairs",
                                          last_batch_policy=LastBatchPolicy.PARTIAL, auto_reset=True)
        # recent single frames of any clip: (clip, frame, image); 4 batches' worth and at least 64
        others: collections.deque = collections.deque(maxlen=max(64, 4 * self.batch_size))
        pending: collections.deque = collections.deque()
        limit = self.length if self.length is not None else -1
        served = 0
        index = drawn * workers + worker  # unique sample numbers across workers
        while served != limit:
            try:
                out = next(batches)[0]
            except StopIteration:  # end of an epoch (auto_reset restarts it, reshuffled)
                continue
            n = out["clip"].shape[0]
            for j in range(n):
                first, frames = int(out["first"][j]), out["frames"][j].cpu()
                others.append((int(out["clip"][j]), first + int(out["c"][j]), frames[2]))
                pending.append((int(out["clip"][j]), first + int(out["a"][j]), first + int(out["b"][j]), frames))
            while pending and served != limit:
                clip, t, t2, pair = pending[0]
                choices = [k for k, entry in enumerate(others) if entry[0] != clip]
                if not choices:  # every recent frame is of this clip: read on
                    if len(pending) > 64 * self.batch_size:
                        raise RuntimeError(f"{self.root}: the reader found no frame of a clip other than "
                                           f"{self.clips[clip].path} in {len(pending)} samples")
                    break
                pending.popleft()
                other, u, inconsistent = others[choices[int(rng.integers(len(choices)))]]
                same = self.split == "train" and bool(rng.random() < self.p_same)
                sample = assemble_sample(self.labels, clip=clip, t=t, t2=t2, other=other, u=u, photo=pair[0],
                                         consistent=pair[1], inconsistent=inconsistent, same_style=same,
                                         index=index)
                index += workers
                if sample is not None:
                    served += 1
                    yield sample
