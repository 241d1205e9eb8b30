"""CelebA-HQ edge-to-face: CoCosNet's `celebahqedge` input, a 15-channel map, not class ids.

The layout, split files, pair lists (celebahq_ref.txt / celebahq_ref_test.txt), sampling and
augmentation are `celebahq`'s (`exsynth.data.celebahq`). The input is drawn as CoCosNet's
loader draws it, at the load size, before the crop (see `exsynth.data.input_maps`):
  0      all edges: the part boundaries plus Canny edges of the photo outside the inner face
         parts (kept on the hair and the background);
  1..13  one distance channel per inner part, in the loader's order: skin, l_brow, r_brow,
         l_eye, r_eye, l_ear, r_ear, nose, u_lip, mouth, l_lip, eye_g, hair — min(L1 distance
         to that part's boundary / 3, 255) / 255, all ones where the part is absent;
  14     the part boundaries alone.
Values lie in [0, 1]; `--num-classes` is 15 (the default for this source).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..imageio import ImageError, _open, to_uint8
from ..registry import DataSourceSpec, register_data_source
from .ade20k import PairListOptions
from .celebahq import CelebAHQDataset, _part_path
from .input_maps import boundaries, canny, distance_channel

__all__ = ["INNER_PARTS", "CHANNELS", "CelebAHQEdgeDataset", "edge_input"]

INNER_PARTS = ("skin", "l_brow", "r_brow", "l_eye", "r_eye", "l_ear", "r_ear", "nose", "u_lip", "mouth", "l_lip",
               "eye_g", "hair")
CHANNELS = len(INNER_PARTS) + 2


def _grey(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) in [-1, 1] -> uint8 (H, W), Pillow's convert("L") of the 8-bit photo."""
    rgb = to_uint8(image).astype(np.int64)
    return ((rgb[..., 0] * 19595 + rgb[..., 1] * 38470 + rgb[..., 2] * 7471 + 0x8000) >> 16).astype(np.uint8)


def edge_input(anno: Path, image_id: int, image: torch.Tensor) -> torch.Tensor:
    """The (15, H, W) float32 input of one image at the photo's size (H, W) (see the module
    docstring); `image` is the photo in [-1, 1], already at that size."""
    from PIL import Image

    H, W = image.shape[1:]
    inner = np.ones((H, W), np.uint8)
    edges = np.zeros((H, W), bool)
    dists = []
    found = False
    for part in INNER_PARTS:
        p = _part_path(anno, image_id, part)
        part_edges = np.zeros((H, W), bool)
        if p.is_file():
            found = True
            m = np.asarray(_open(p).convert("L").resize((W, H), Image.NEAREST))
            inner[m == 255] = 1 if part == "hair" else 0
            edges = boundaries(m, edges)
            part_edges = boundaries(m)
        dists.append(distance_channel(part_edges))
    if not found:
        raise ImageError(f"{anno / str(image_id // 2000)}: no inner-part mask {image_id:05d}_<part>.png for image "
                         f"{image_id}")
    edges_all = edges | (canny(_grey(image)) & inner.astype(bool))
    chans = [edges_all.astype(np.float32)] + [d.astype(np.float32) / 255.0 for d in dists] + [edges.astype(np.float32)]
    return torch.from_numpy(np.stack(chans))


class CelebAHQEdgeDataset(CelebAHQDataset):
    """CelebA-HQ samples whose input is the 15-channel edge map (see the module docstring)."""

    LAYOUT = "CelebA-HQ"
    DENSE = True
    CHANNELS = CHANNELS

    def _read_label(self, lab, load: int, img_path, image) -> torch.Tensor:
        anno, image_id = lab
        return edge_input(anno, image_id, image)


def edge_picture(label: torch.Tensor) -> torch.Tensor:
    """(B, 15, H, W) -> the all-edges channel as a white-on-black picture in [-1, 1]."""
    return (label[:, :1] * 2 - 1).expand(-1, 3, -1, -1)


register_data_source(DataSourceSpec(
    name="celebahq-edge", build=CelebAHQEdgeDataset.from_source, options=PairListOptions, exemplars=True,
    num_classes=CHANNELS, label_kind="dense", picture=edge_picture,
    description="CelebA-HQ edge-to-face: celebahq's layout, input = edges + 13 part distance channels + part "
                "boundaries (15 channels)"))
