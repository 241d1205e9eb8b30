"""`exsynth demo`: held-out synthetic inputs x exemplars through the shipped checkpoint (its
model, configuration and training recipe are recorded inside it)."""
from __future__ import annotations

from pathlib import Path
from typing import Dict

import numpy as np
import torch

from .data.synthetic import ensure_classes, one_hot, render, sample_layout, sample_style

__all__ = ["DEMO_CHECKPOINT", "DEMO_SEED", "demo_set", "grid_picture"]

DEMO_CHECKPOINT = Path(__file__).with_name("assets") / "demo_synthetic64.pt"
DEMO_SEED = 20261122  # held out: training uses SyntheticExemplarDataset streams, never this one


def demo_set(n_inputs: int, n_exemplars: int, size: int, num_classes: int, seed: int = DEMO_SEED) -> Dict[str, torch.Tensor]:
    """Inputs i and exemplars j, each exemplar in its own style and containing every class,
    so the exact answer for every pair (i, j) is render(layout_i, style_j).
    Returns label (n, K, H, W), label_index (n, H, W), exemplar (m, 3, H, W),
    exemplar_label (m, K, H, W) and truth (n, m, 3, H, W)."""
    root = np.random.SeedSequence(seed)
    streams = root.spawn(n_inputs + 2 * n_exemplars)
    rngs = [np.random.default_rng(s) for s in streams]
    layouts = [sample_layout(rngs[i], size, num_classes) for i in range(n_inputs)]
    styles, ex_layouts = [], []
    for j in range(n_exemplars):
        styles.append(sample_style(rngs[n_inputs + j], num_classes, size))
        r = rngs[n_inputs + n_exemplars + j]
        ex_layouts.append(ensure_classes(sample_layout(r, size, num_classes), list(range(num_classes)), r,
                                         min_pixels=max(1, size * size // 200)))
    return dict(
        label=torch.stack([one_hot(l, num_classes) for l in layouts]),
        label_index=torch.stack([torch.from_numpy(l) for l in layouts]),
        exemplar=torch.stack([render(e, s) for e, s in zip(ex_layouts, styles)]),
        exemplar_label=torch.stack([one_hot(e, num_classes) for e in ex_layouts]),
        truth=torch.stack([torch.stack([render(l, s) for s in styles]) for l in layouts]),
    )


def grid_picture(label_rgb: torch.Tensor, exemplar: torch.Tensor, cells: torch.Tensor, pad: int = 2) -> torch.Tensor:
    """Top row: exemplars; left column: inputs; cell (i, j): output for input i, exemplar j.
    label_rgb (n, 3, H, W), exemplar (m, 3, H, W), cells (n, m, 3, H, W) -> (3, ., .) in [-1, 1]."""
    n, m, _, H, W = cells.shape
    canvas = torch.ones(3, (n + 1) * (H + pad) + pad, (m + 1) * (W + pad) + pad)

    def put(img, r, c):
        y, x = pad + r * (H + pad), pad + c * (W + pad)
        canvas[:, y:y + H, x:x + W] = img.clamp(-1, 1)

    for j in range(m):
        put(exemplar[j], 0, j + 1)
    for i in range(n):
        put(label_rgb[i], i + 1, 0)
        for j in range(m):
            put(cells[i, j], i + 1, j + 1)
    return canvas
