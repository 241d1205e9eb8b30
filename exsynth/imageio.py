"""Image files <-> tensors for the CLI (Pillow does the decoding).

Conventions: images are float32 (3, H, W) in [-1, 1]; label maps are class-index
PNGs (mode "L", "P" or "I", pixel value = class) read as int64 (H, W) and turned
into one-hot (K, H, W). Every reader raises `ImageError` with the file name and
what was expected, so the CLI can print one line.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["ImageError", "LabelRangeError", "IMAGE_SUFFIXES", "DEFAULT_MAX_PIXELS", "check_header", "image_format", "read_image", "read_label", "read_input_map", "resize_image", "resize_label",
           "tile_rows",
           "write_image", "write_label",
           "to_uint8", "palette", "colorize_label", "list_images"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
PathLike = Union[str, os.PathLike]


class ImageError(ValueError):
    """A file that is missing, unreadable, or of the wrong mode / size / class range."""


class LabelRangeError(ImageError):
    """A label map with class ids beyond the classes asked for: a configuration error (the
    wrong number of classes), never a corrupt file to skip."""


def _pil():
    try:
        from PIL import Image
    except ImportError as e:  # pragma: no cover - pillow is a dependency
        raise ImportError("exsynth image I/O needs Pillow: pip install pillow") from e
    return Image


def _pil_ops():
    from PIL import ImageOps
    return ImageOps


# Images above this many pixels are refused from their header, before decoding: 40 M pixels
# decode to ~0.5 GB of float32 RGB; a 10000 x 10000 PNG (97 KB on disk) would take 6.7 GB.
DEFAULT_MAX_PIXELS = 40_000_000


def _open(path: PathLike, max_pixels: Optional[int] = DEFAULT_MAX_PIXELS):
    """Open and decode; the size is checked from the header first (max_pixels None or 0: no limit)."""
    p = Path(path)
    if not p.is_file():
        raise ImageError(f"{p}: no such file")
    img = _open_header(p)
    if max_pixels and img.width * img.height > max_pixels:
        img.close()
        raise ImageError(f"{p}: image is {img.width}x{img.height} = {img.width * img.height:,} pixels, above the "
                         f"limit of {max_pixels:,} (--max-pixels raises it)")
    try:
        img.load()
    except Exception as e:
        img.close()
        raise ImageError(f"{p}: not a readable image ({type(e).__name__}: {e})") from None
    return img


def _open_header(p: Path):
    Image = _pil()
    limit = Image.MAX_IMAGE_PIXELS
    try:
        # exsynth checks the size itself, against --max-pixels: Pillow's own bomb check (a
        # warning above ~89 M pixels, an error above ~179 M) would override that limit
        Image.MAX_IMAGE_PIXELS = None
        return Image.open(p)  # reads the header only
    except Exception as e:  # PIL raises several types for corrupt / non-image files
        raise ImageError(f"{p}: not a readable image ({type(e).__name__}: {e})") from None
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def check_header(path: PathLike, max_pixels: Optional[int] = DEFAULT_MAX_PIXELS) -> Tuple[int, int]:
    """(H, W) of an image file from its header alone (cheap); ImageError when it is missing, not
    an image, or above max_pixels."""
    p = Path(path)
    if not p.is_file():
        raise ImageError(f"{p}: no such file")
    with _open_header(p) as img:
        w, h = img.width, img.height
    if max_pixels and w * h > max_pixels:
        raise ImageError(f"{p}: image is {w}x{h} = {w * h:,} pixels, above the limit of {max_pixels:,} "
                         f"(--max-pixels raises it)")
    return h, w


def _check_size(p: PathLike, hw: Tuple[int, int], size: Optional[Tuple[int, int]], what: str) -> None:
    if size is not None and tuple(hw) != tuple(size):
        raise ImageError(f"{p}: {what} is {hw[0]}x{hw[1]} (HxW), expected {size[0]}x{size[1]}")


RESAMPLING = ("bilinear", "bicubic")


def read_image(path: PathLike, size: Optional[Tuple[int, int]] = None, *, resize: bool = False,
               max_pixels: Optional[int] = DEFAULT_MAX_PIXELS, resample: str = "bilinear") -> torch.Tensor:
    """RGB photo -> float32 (3, H, W) in [-1, 1]. Grayscale and palette images are converted;
    an alpha channel is dropped. `size` = (H, W): resized when `resize` (Pillow's `resample`,
    "bilinear" or "bicubic"), else checked. Files above `max_pixels` are refused from their
    header (None or 0: no limit)."""
    if resample not in RESAMPLING:
        raise ValueError(f"read_image: resample must be one of {list(RESAMPLING)}, got {resample!r}")
    img = _open(path, max_pixels)
    if img.mode not in ("RGB", "RGBA", "L", "P", "LA", "CMYK", "YCbCr", "I;16", "I"):
        raise ImageError(f"{path}: image mode {img.mode!r} is not a photo (expected RGB, RGBA, L or P)")
    if img.mode in ("I;16", "I"):
        raise ImageError(f"{path}: 16/32-bit image (mode {img.mode!r}); expected an 8-bit RGB photo")
    img = _pil_ops().exif_transpose(img).convert("RGB")  # camera photos: honour the orientation tag
    if size is not None and resize and (img.height, img.width) != tuple(size):
        img = img.resize((size[1], size[0]), getattr(_pil(), resample.upper()))
    _check_size(path, (img.height, img.width), size, "image")
    return _from_pil(img)


def _from_pil(img) -> torch.Tensor:
    arr = np.asarray(img, dtype=np.float32)
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous() / 127.5 - 1.0


def resize_image(image: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """(3, H, W) image read by `read_image` -> size, resampled by Pillow (bilinear) exactly as
    `read_image(..., size, resize=True)` would (8-bit values survive the round trip)."""
    if tuple(image.shape[1:]) == tuple(size):
        return image
    img = _pil().fromarray(to_uint8(image)).resize((size[1], size[0]), _pil().BILINEAR)
    return _from_pil(img)


def read_label(path: PathLike, num_classes: int, size: Optional[Tuple[int, int]] = None, *,
               resize: bool = False, max_pixels: Optional[int] = DEFAULT_MAX_PIXELS,
               unlabeled_as: Optional[int] = None) -> torch.Tensor:
    """Class-index PNG (mode L, P or I; value = class) -> int64 (H, W). RGB label maps are
    refused: colours do not say which class they are. Values must be < num_classes. Files
    above `max_pixels` are refused from their header (None or 0: no limit). unlabeled_as: the
    class the value 255 ("unlabeled" in COCO-stuff / SPADE maps) is read as."""
    img = _open(path, max_pixels)
    if img.mode not in ("L", "P", "I", "I;16"):
        raise ImageError(f"{path}: label map has mode {img.mode!r}; expected a single-channel class-index "
                         f"image (mode L, P or I, pixel value = class id)")
    arr = np.asarray(img).astype(np.int64)
    if unlabeled_as is not None:
        arr[arr == 255] = unlabeled_as
    # the file's own values are checked, before a resize could drop the pixels that hold a bad one
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0 or hi >= num_classes:
        read_as = "" if unlabeled_as is None else f", 255 read as {unlabeled_as}"
        raise LabelRangeError(f"{path}: label values span {lo}..{hi}, expected 0..{num_classes - 1} "
                              f"({num_classes} classes{read_as})")
    if size is not None and resize:
        arr = resize_label(torch.from_numpy(arr), size).numpy()
    _check_size(path, arr.shape, size, "label map")
    return torch.from_numpy(arr)


def read_input_map(path: PathLike, channels: int, *, max_pixels: Optional[int] = DEFAULT_MAX_PIXELS) -> torch.Tensor:
    """A model's input map as float32 (channels, H, W): a class-index PNG one-hot encoded, or a
    `.npy` array of shape (channels, H, W) taken as it is (dense inputs: edge, distance and
    pose channels, as a data source such as celebahq-edge or deepfashion draws them)."""
    p = Path(path)
    if p.suffix.lower() != ".npy":
        lab = read_label(p, channels, max_pixels=max_pixels)
        cls = torch.arange(channels).view(channels, 1, 1)
        return (lab.unsqueeze(0) == cls).to(torch.float32)
    if not p.is_file():
        raise ImageError(f"{p}: no such file")
    try:
        arr = np.load(p, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise ImageError(f"{p}: not a numpy array file ({type(e).__name__}: {e})") from None
    if arr.ndim != 3 or arr.shape[0] != channels or not np.issubdtype(arr.dtype, np.number):
        raise ImageError(f"{p}: input map is {arr.dtype} {tuple(arr.shape)}, expected numbers of shape "
                         f"({channels}, H, W) (the model takes {channels} input channels)")
    if max_pixels and arr.shape[1] * arr.shape[2] > max_pixels:
        raise ImageError(f"{p}: input map is {arr.shape[2]}x{arr.shape[1]} pixels, above the limit of {max_pixels:,}")
    t = torch.from_numpy(np.ascontiguousarray(arr)).to(torch.float32)
    if not torch.isfinite(t).all():
        raise ImageError(f"{p}: input map holds NaN or infinite values")
    return t


def resize_label(label_index: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """(H, W) class indices -> size (nearest neighbour: no invented classes between regions)."""
    if tuple(label_index.shape) == tuple(size):
        return label_index
    t = label_index[None, None].float()
    return F.interpolate(t, size=tuple(size), mode="nearest")[0, 0].long()


def tile_rows(columns: Sequence[torch.Tensor]) -> torch.Tensor:
    """Columns of (B, 3, H, W) images in [-1, 1] -> one picture (3, B*H, n*W) whose row b shows
    sample b of every column, left to right."""
    rows = torch.cat([c.clamp(-1, 1) for c in columns], dim=3)
    return torch.cat(list(rows), dim=1)


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) or (H, W) in [-1, 1] -> uint8 (H, W, 3) / (H, W)."""
    x = image.detach().float().cpu().clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8)
    return (x.permute(1, 2, 0) if x.dim() == 3 else x).numpy()


def _atomic_save(img, path: PathLike) -> None:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp{os.getpid()}")
    try:
        fmt = image_format(p)
        if fmt is None:
            raise ImageError(f"{p}: unknown image format {p.suffix!r}")
        img.save(tmp, format=fmt)
        os.replace(tmp, p)
    finally:
        if tmp.exists():
            tmp.unlink()


def image_format(path: PathLike) -> Optional[str]:
    """Pillow's format name for a file name's suffix (PNG when there is none), None if unknown."""
    ext = Path(path).suffix.lower()
    if not ext:
        return "PNG"
    return _pil().registered_extensions().get(ext)


def write_image(image: torch.Tensor, path: PathLike) -> None:
    """(3, H, W) in [-1, 1] -> image file (format from the suffix; PNG by default), written
    to a temporary name first so an interrupted write leaves nothing half-written."""
    _atomic_save(_pil().fromarray(to_uint8(image)), path)


def write_label(label_index: torch.Tensor, path: PathLike) -> None:
    """int (H, W) class indices (< 256) -> mode-L PNG."""
    arr = label_index.detach().cpu().numpy()
    if arr.min() < 0 or arr.max() > 255:
        raise ValueError("write_label: class indices must be in 0..255")
    _atomic_save(_pil().fromarray(arr.astype(np.uint8), mode="L"), path)


def palette(num_classes: int) -> torch.Tensor:
    """(K, 3) distinct colours in [-1, 1] for drawing label maps (the PASCAL VOC bit pattern)."""
    cols = []
    for c in range(num_classes):
        r = g = b = 0
        x = c + 1 if c else 0
        for shift in range(7, -1, -1):
            r |= ((x >> 0) & 1) << shift
            g |= ((x >> 1) & 1) << shift
            b |= ((x >> 2) & 1) << shift
            x >>= 3
        cols.append((r, g, b))
    return torch.tensor(cols, dtype=torch.float32) / 127.5 - 1.0


def colorize_label(label: torch.Tensor) -> torch.Tensor:
    """One-hot / soft (K, H, W) or (B, K, H, W) label -> RGB in [-1, 1] of the same layout."""
    squeeze = label.dim() == 3
    lab = label[None] if squeeze else label
    pal = palette(lab.shape[1]).to(lab.device)
    rgb = torch.einsum("bkhw,kc->bchw", lab.float(), (pal + 1) / 2) * 2 - 1
    return rgb[0] if squeeze else rgb


def list_images(folder: PathLike, suffixes: Sequence[str] = IMAGE_SUFFIXES) -> list:
    p = Path(folder)
    if not p.is_dir():
        raise ImageError(f"{p}: no such folder")
    return sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in suffixes)
