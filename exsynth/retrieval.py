"""Exemplar retrieval for `exsynth pairs`: for every image, the k most similar other images by
the cosine of pooled VGG19 features — how CoCosNet's maintainers say its pair lists were built
— written in CoCosNet's `name,ref1,...,refk` format.

Features are relu4_1 and relu5_1 of a VGG19 loaded from a local file, each averaged over
positions and L2-normalised, then concatenated (so both layers weigh alike). They are computed
in batches and cached one file per image (`--cache DIR`), so an interrupted run resumes where
it stopped. The ranking is blocked: queries in blocks against keys in blocks with a running
top-k, memory O(block x (block + k)) beside the (N, 1024) features — never N x N.
"""
from __future__ import annotations

import hashlib
import sys
import time
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from .imageio import ImageError, read_image

__all__ = ["FEATURE_LAYERS", "image_features", "top_k_neighbours", "write_pair_list"]

FEATURE_LAYERS = ("relu4_1", "relu5_1")


class _Progress:
    def __init__(self, total: int, what: str, stream=sys.stderr, enabled: bool = True):
        self.total, self.what, self.stream, self.enabled = total, what, stream, enabled
        self.t0, self.shown = time.perf_counter(), 0.0

    def update(self, done: int) -> None:
        now = time.perf_counter()
        if not self.enabled or (now - self.shown < 0.5 and done < self.total):
            return
        self.shown = now
        rate = done / max(now - self.t0, 1e-9)
        self.stream.write(f"\r{self.what}: {done}/{self.total} ({rate:.1f}/s)")
        if done >= self.total:
            self.stream.write("\n")
        self.stream.flush()


def _weights_fingerprint(vgg) -> str:
    """SHA-1 of the network's weights: a cache filled with other weights is not reused."""
    h = hashlib.sha1()
    for t in vgg.state_dict().values():
        h.update(t.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _cache_file(cache: Path, path: Path, size: int, weights: str) -> Path:
    """One file per (image path, its size and modification time, feature size, weights)."""
    st = Path(path).stat()
    key = hashlib.sha1(f"{Path(path).resolve()}|{st.st_size}|{st.st_mtime_ns}|{size}|{','.join(FEATURE_LAYERS)}|"
                       f"{weights}".encode()).hexdigest()
    return cache / f"{key}.npy"


def _load_cached(f: Path) -> Optional[np.ndarray]:
    try:
        return np.load(f)
    except (OSError, ValueError):  # an interrupted write: compute it again
        return None


def _save_cached(f: Path, row: np.ndarray) -> None:
    tmp = f.with_name(f".{f.stem}.tmp.npy")
    np.save(tmp, row)
    tmp.replace(f)


@torch.no_grad()
def image_features(paths: Sequence[Path], vgg, *, size: int = 128, batch_size: int = 16, device="cpu",
                   cache: Optional[Path] = None, progress: bool = True) -> Tuple[torch.Tensor, List[int]]:
    """(features (n, F) float32 on the CPU, indices into `paths` that were readable).
    Unreadable images are skipped with one warning each."""
    import warnings
    vgg = vgg.to(device).eval()
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
    feats: List[Optional[np.ndarray]] = [None] * len(paths)
    weights = _weights_fingerprint(vgg) if cache is not None else ""
    todo = []
    for i, p in enumerate(paths):
        f = _cache_file(cache, p, size, weights) if cache is not None else None
        if f is not None and f.is_file():
            feats[i] = _load_cached(f)
        if feats[i] is None:
            todo.append(i)
    bar = _Progress(len(paths), "features", enabled=progress)
    done = len(paths) - len(todo)
    for start in range(0, len(todo), batch_size):
        chunk, images = [], []
        for i in todo[start:start + batch_size]:
            try:
                images.append(read_image(paths[i], (size, size), resize=True))
                chunk.append(i)
            except ImageError as e:
                warnings.warn(f"skipped: {e}", stacklevel=2)
        if images:
            out = vgg(torch.stack(images).to(device), FEATURE_LAYERS)
            pooled = [F.normalize(out[name].mean((2, 3)), dim=1) for name in FEATURE_LAYERS]
            vec = (torch.cat(pooled, 1) / len(pooled) ** 0.5).float().cpu().numpy()
            for row, i in zip(vec, chunk):
                feats[i] = row
                if cache is not None:
                    _save_cached(_cache_file(cache, paths[i], size, weights), row)
        done += len(todo[start:start + batch_size])
        bar.update(done)
    bar.update(len(paths))
    kept = [i for i, f in enumerate(feats) if f is not None]
    if not kept:
        return torch.zeros(0, 0), []
    return torch.from_numpy(np.stack([feats[i] for i in kept])), kept


@torch.no_grad()
def top_k_neighbours(queries: torch.Tensor, keys: torch.Tensor, k: int, *, exclude_self: bool = False,
                     block: int = 1024, device="cpu") -> Tuple[torch.Tensor, torch.Tensor]:
    """(indices (Nq, k') int64 into keys, cosines (Nq, k')) of each query's k most similar keys,
    best first, k' = min(k, available). Rows are unit vectors. exclude_self: queries and keys
    are the same set; a query never lists itself. Blocked: never Nq x Nk at once."""
    nq, nk = queries.shape[0], keys.shape[0]
    kk = min(k, nk - (1 if exclude_self else 0))
    if kk < 1:
        raise ValueError(f"top_k_neighbours: need at least {2 if exclude_self else 1} keys, got {nk}")
    out_i = torch.empty(nq, kk, dtype=torch.int64)
    out_s = torch.empty(nq, kk)
    for q0 in range(0, nq, block):
        q = queries[q0:q0 + block].to(device)
        best_s = torch.full((q.shape[0], kk), -float("inf"), device=device)
        best_i = torch.zeros((q.shape[0], kk), dtype=torch.int64, device=device)
        for k0 in range(0, nk, block):
            s = q @ keys[k0:k0 + block].to(device).T
            if exclude_self:
                rows = torch.arange(q.shape[0], device=device)
                cols = rows + q0 - k0
                hit = (cols >= 0) & (cols < s.shape[1])
                s[rows[hit], cols[hit]] = -float("inf")
            idx = torch.arange(k0, k0 + s.shape[1], device=device).expand_as(s)
            cand_s, pick = torch.cat([best_s, s], 1).topk(kk, dim=1)
            best_i = torch.cat([best_i, idx], 1).gather(1, pick)
            best_s = cand_s
        out_i[q0:q0 + q.shape[0]], out_s[q0:q0 + q.shape[0]] = best_i.cpu(), best_s.cpu()
    return out_i, out_s


def write_pair_list(path: Path, names: Sequence[str], neighbours: Sequence[Sequence[str]]) -> None:
    """CoCosNet's format, one line per image: name,ref1,...,refk (atomically)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(",".join([n, *refs]) + "\n" for n, refs in zip(names, neighbours)))
    tmp.replace(path)
