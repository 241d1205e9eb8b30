"""Procedural exemplar-guided synthesis data with exact ground truth.

A *layout* is an (H, W) int64 map of K classes: a background class plus random
ellipses, rectangles, star-shaped polygons and blobs of other classes, painted
in order. A *style* gives every class a base colour and a texture (flat,
stripes, checker, dots or smooth noise) modulating it along a colour direction.
``render(layout, style)`` is a pure function; textures live in absolute image
coordinates, so a class's pixels are the same wherever that class appears.

A sample pairs an input layout with an exemplar rendered in the SAME style from
another layout that contains every class of the input, so the correct output
of a model given (label, exemplar) is exactly ``image``: score it by PSNR.

Everything is a function of (seed, split, index): no global RNG is touched, so
samples do not depend on access order, worker processes or the torch seed.

Coordinates are normalised by max(H, W) and texture frequencies are in cycles
per unit, so the same (seed, split, index) gives the same scene at every
resolution (for sizes >= 48, where no frequency is clamped against aliasing);
only the rasterisation differs.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Dict, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from ..registry import DataSourceSpec, register_data_source

__all__ = [
    "TEXTURES",
    "SHAPES",
    "Style",
    "sample_style",
    "sample_layout",
    "ensure_classes",
    "render",
    "edge_map",
    "one_hot",
    "SyntheticExemplarDataset",
]

TEXTURES = ("flat", "stripes", "checker", "dots", "noise")
SHAPES = ("ellipse", "rectangle", "polygon", "blob")

_SPLITS = {"train": 0, "test": 1, "val": 2}
# Sub-streams of one (seed, split, index): fixed numbers, never reordered.
_STREAM_STYLE, _STREAM_INPUT, _STREAM_EXEMPLAR = 0, 1, 2

_NOISE_WAVES = 8          # sinusoids summed by the "noise" texture
_COLOUR_MAX = 0.6         # base colours lie in [-0.6, 0.6]^3
_AMP_RANGE = (0.12, 0.3)  # texture amplitude (per channel, at most this)
_FREQ_RANGE = (2.0, 8.0)  # cycles per unit (unit = max(H, W) pixels)

Size = Union[int, Tuple[int, int]]


def _hw(size: Size) -> Tuple[int, int]:
    if isinstance(size, (tuple, list)):
        h, w = int(size[0]), int(size[1])
    else:
        h = w = int(size)
    if h < 1 or w < 1:
        raise ValueError(f"size must be positive, got {size!r}")
    return h, w


def _grid(h: int, w: int) -> Tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (u right, v down), normalised by max(h, w)."""
    s = float(max(h, w))
    u = (np.arange(w, dtype=np.float64) + 0.5) / s
    v = (np.arange(h, dtype=np.float64) + 0.5) / s
    return np.broadcast_to(u[None, :], (h, w)), np.broadcast_to(v[:, None], (h, w))


# ----------------------------------------------------------------------------
# Style
# ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Style:
    """Per-class appearance; every field has the class as its first axis.

    A pixel of class c at normalised position (u, v) renders as
    ``colour[c] + amplitude[c] * t_c(u, v) * direction[c]`` with t_c in [-1, 1]
    given by ``kind[c]`` (an index into :data:`TEXTURES`):

    - stripes: ``sin(2*pi*freq*(u cos a + v sin a) + phase0)``
    - checker: ``tanh(4 sin(2*pi*freq*p + phase0) sin(2*pi*freq*q + phase1))``
      with (p, q) the coordinates rotated by ``angle``
    - dots: soft discs of radius ``dot_radius`` (in cells) on that rotated
      lattice: ``tanh(8 (dot_radius - r) / dot_radius)``-like, in [-1, 1]
    - noise: ``tanh(sum_m cos(2*pi*(k_m . (u, v)) + phi_m) / sqrt(M / 2))``
      with wave vectors ``noise_k`` and phases ``noise_phase``
    - flat: 0
    """

    colour: np.ndarray       # (K, 3) base RGB in [-1, 1]
    direction: np.ndarray    # (K, 3) texture colour direction, max |.| = 1
    amplitude: np.ndarray    # (K,)
    kind: np.ndarray         # (K,) int64 index into TEXTURES
    freq: np.ndarray         # (K,) cycles per unit
    angle: np.ndarray        # (K,) radians
    phase: np.ndarray        # (K, 2) radians
    dot_radius: np.ndarray   # (K,) fraction of a lattice cell
    noise_k: np.ndarray      # (K, M, 2) wave vectors, cycles per unit
    noise_phase: np.ndarray  # (K, M)

    @property
    def num_classes(self) -> int:
        return int(self.colour.shape[0])

    def texture_names(self) -> Tuple[str, ...]:
        return tuple(TEXTURES[int(k)] for k in self.kind)

    def as_dict(self) -> Dict[str, np.ndarray]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def equals(self, other: "Style") -> bool:
        return all(np.array_equal(getattr(self, f.name), getattr(other, f.name))
                   for f in fields(self))


def _spread_colours(rng: np.random.Generator, k: int, candidates: int = 16) -> np.ndarray:
    """K colours, each the best of `candidates` uniform draws (farthest from the
    ones already chosen): random, but well separated."""
    out = np.empty((k, 3))
    draws = rng.uniform(-_COLOUR_MAX, _COLOUR_MAX, size=(k, candidates, 3))
    out[0] = draws[0, 0]
    for i in range(1, k):
        d = np.linalg.norm(draws[i][:, None, :] - out[None, :i, :], axis=-1).min(axis=1)
        out[i] = draws[i, int(np.argmax(d))]
    return out


def sample_style(rng: np.random.Generator, num_classes: int, size: Size = 64,
                 textures: Sequence[str] = TEXTURES) -> Style:
    """Draw a style for `num_classes` classes from `rng`.

    `size` only clamps frequencies against aliasing (at most max(H, W)/6 cycles
    per unit, i.e. a period of at least 6 pixels); the RNG draws do not depend
    on it. `textures` restricts the texture kinds used.
    """
    k = int(num_classes)
    if k < 1:
        raise ValueError("num_classes must be >= 1")
    allowed = np.array([TEXTURES.index(t) for t in textures], dtype=np.int64)
    if allowed.size == 0:
        raise ValueError("textures must name at least one texture")
    s = max(_hw(size))
    fmax = min(_FREQ_RANGE[1], s / 6.0)

    colour = _spread_colours(rng, k)
    direction = rng.normal(size=(k, 3)) + 0.7  # leaning towards lightness
    direction /= np.abs(direction).max(axis=1, keepdims=True)
    amplitude = rng.uniform(*_AMP_RANGE, size=k)
    kind = allowed[rng.integers(0, allowed.size, size=k)]
    freq = np.minimum(rng.uniform(*_FREQ_RANGE, size=k), fmax)
    angle = rng.uniform(0.0, np.pi, size=k)
    phase = rng.uniform(0.0, 2 * np.pi, size=(k, 2))
    dot_radius = rng.uniform(0.2, 0.4, size=k)
    kmag = np.minimum(rng.uniform(1.0, _FREQ_RANGE[1] * 0.75, size=(k, _NOISE_WAVES)), fmax)
    kang = rng.uniform(0.0, 2 * np.pi, size=(k, _NOISE_WAVES))
    noise_k = np.stack([kmag * np.cos(kang), kmag * np.sin(kang)], axis=-1)
    noise_phase = rng.uniform(0.0, 2 * np.pi, size=(k, _NOISE_WAVES))
    return Style(colour=colour, direction=direction, amplitude=amplitude, kind=kind,
                 freq=freq, angle=angle, phase=phase, dot_radius=dot_radius,
                 noise_k=noise_k, noise_phase=noise_phase)


# ----------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------


def _texture(style: Style, cls: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """t in [-1, 1] for pixels of classes `cls` at (u, v) (all 1-D, same length)."""
    kind = style.kind[cls]
    t = np.zeros(cls.shape, dtype=np.float64)
    two_pi = 2.0 * np.pi
    ca, sa = np.cos(style.angle[cls]), np.sin(style.angle[cls])
    f = style.freq[cls]
    p = u * ca + v * sa
    q = -u * sa + v * ca
    ph0, ph1 = style.phase[cls, 0], style.phase[cls, 1]

    m = kind == TEXTURES.index("stripes")
    if m.any():
        t[m] = np.sin(two_pi * f[m] * p[m] + ph0[m])
    m = kind == TEXTURES.index("checker")
    if m.any():
        t[m] = np.tanh(4.0 * np.sin(two_pi * f[m] * p[m] + ph0[m])
                       * np.sin(two_pi * f[m] * q[m] + ph1[m]))
    m = kind == TEXTURES.index("dots")
    if m.any():
        a = f[m] * p[m] + ph0[m] / two_pi
        b = f[m] * q[m] + ph1[m] / two_pi
        r = np.hypot(a - np.round(a), b - np.round(b))  # distance to lattice point, in cells
        rad = style.dot_radius[cls[m]]
        t[m] = np.tanh(6.0 * (rad - r) / rad)
    m = kind == TEXTURES.index("noise")
    if m.any():
        c = cls[m]
        kvec = style.noise_k[c]                                     # (n, M, 2)
        arg = kvec[..., 0] * u[m, None] + kvec[..., 1] * v[m, None]  # (n, M)
        acc = np.cos(two_pi * arg + style.noise_phase[c]).sum(axis=1)
        t[m] = np.tanh(acc / np.sqrt(_NOISE_WAVES / 2.0))
    return t


def render(layout, style: Style) -> torch.Tensor:
    """Render an (H, W) integer layout (numpy or torch) with `style`.

    Returns a float32 (3, H, W) tensor in [-1, 1]. Pure: the same layout and
    style always give identical values, and each pixel depends only on its
    class and its position (textures are in absolute image coordinates).
    """
    lay = layout.cpu().numpy() if isinstance(layout, torch.Tensor) else np.asarray(layout)
    if lay.ndim != 2:
        raise ValueError(f"layout must be (H, W), got shape {lay.shape}")
    lay = lay.astype(np.int64, copy=False)
    if lay.size and (lay.min() < 0 or lay.max() >= style.num_classes):
        raise ValueError(f"layout classes must lie in [0, {style.num_classes})")
    h, w = lay.shape
    u, v = _grid(h, w)
    cls = lay.reshape(-1)
    t = _texture(style, cls, u.reshape(-1), v.reshape(-1))
    rgb = style.colour[cls] + (style.amplitude[cls] * t)[:, None] * style.direction[cls]
    img = np.clip(rgb, -1.0, 1.0).T.reshape(3, h, w).astype(np.float32)
    return torch.from_numpy(np.ascontiguousarray(img))


# ----------------------------------------------------------------------------
# Layouts
# ----------------------------------------------------------------------------


def _paint_shape(layout: np.ndarray, value: int, rng: np.random.Generator,
                 radius: Tuple[float, float]) -> None:
    """Paint one random shape of class `value` into `layout` in place.

    Shapes are defined in normalised coordinates (unit = max(H, W) pixels) and
    rasterised at pixel centres, only inside their bounding box. The number of
    values drawn from `rng` depends only on the shape type, never on the grid.
    """
    h, w = layout.shape
    s = float(max(h, w))
    kind = SHAPES[int(rng.integers(0, len(SHAPES)))]
    cu, cv = rng.uniform(0.0, w / s), rng.uniform(0.0, h / s)
    if kind in ("ellipse", "rectangle"):
        a, b = rng.uniform(*radius, size=2)
        th = rng.uniform(0.0, np.pi)
        reach = float(np.hypot(a, b))
    elif kind == "blob":
        big = rng.uniform(*radius)
        coef = rng.uniform(0.0, 0.25, size=3) / np.arange(1, 4)
        ph = rng.uniform(0.0, 2 * np.pi, size=3)
        reach = float(big * (1.0 + coef.sum()))
    else:  # star-shaped polygon: n jittered vertices around the centre, so
        # every edge spans < pi of angle and its polar line equation bounds it
        n = int(rng.integers(4, 9))
        jitter = rng.uniform(-0.35, 0.35, size=n)
        start = rng.uniform(0.0, 2 * np.pi)
        ang = start + (np.arange(n) + jitter) * (2 * np.pi / n)
        rad = rng.uniform(*radius, size=n)
        reach = float(rad.max())

    # bounding box in pixels (pixel x has centre (x + 0.5) / s)
    x0 = max(0, int(np.floor((cu - reach) * s - 0.5)))
    x1 = min(w, int(np.ceil((cu + reach) * s + 0.5)) + 1)
    y0 = max(0, int(np.floor((cv - reach) * s - 0.5)))
    y1 = min(h, int(np.ceil((cv + reach) * s + 0.5)) + 1)
    if x0 >= x1 or y0 >= y1:
        return
    du = ((np.arange(x0, x1, dtype=np.float64) + 0.5) / s - cu)[None, :]
    dv = ((np.arange(y0, y1, dtype=np.float64) + 0.5) / s - cv)[:, None]

    if kind in ("ellipse", "rectangle"):
        x = du * np.cos(th) + dv * np.sin(th)
        y = -du * np.sin(th) + dv * np.cos(th)
        if kind == "ellipse":
            mask = (x / a) ** 2 + (y / b) ** 2 <= 1.0
        else:
            mask = (np.abs(x) <= a) & (np.abs(y) <= b)
    else:
        r = np.hypot(du, dv)
        phi = np.arctan2(dv, du)
        if kind == "blob":
            bound = big * (1.0 + coef[0] * np.cos(2 * phi + ph[0])
                           + coef[1] * np.cos(3 * phi + ph[1])
                           + coef[2] * np.cos(4 * phi + ph[2]))
        else:
            # the edge between the vertices around each pixel's angle, as the
            # polar equation of the line through them
            rel = np.mod(phi - ang[0], 2 * np.pi)
            rel_v = np.concatenate([ang - ang[0], [2 * np.pi]])
            i = np.clip(np.searchsorted(rel_v, rel, side="right") - 1, 0, n - 1)
            a0, a1 = rel_v[i], rel_v[i + 1]
            r0, r1 = rad[i], rad[(i + 1) % n]
            num = r0 * r1 * np.sin(a1 - a0)
            den = r0 * np.sin(rel - a0) + r1 * np.sin(a1 - rel)
            bound = num / np.where(den > 0, den, np.inf)
        mask = r <= bound
    layout[y0:y1, x0:x1][mask] = value


def sample_layout(rng: np.random.Generator, size: Size, num_classes: int,
                  num_shapes: Tuple[int, int] = (3, 8),
                  radius: Tuple[float, float] = (0.08, 0.35)) -> np.ndarray:
    """A random (H, W) int64 layout: a random background class, then between
    num_shapes[0] and num_shapes[1] shapes (inclusive) of random other classes,
    each painted over the previous ones. `radius` is in units of max(H, W)."""
    h, w = _hw(size)
    k = int(num_classes)
    bg = int(rng.integers(0, k))
    layout = np.full((h, w), bg, dtype=np.int64)
    lo, hi = int(num_shapes[0]), int(num_shapes[1])
    if not 0 <= lo <= hi:
        raise ValueError(f"num_shapes must satisfy 0 <= min <= max, got {num_shapes}")
    for _ in range(int(rng.integers(lo, hi + 1))):
        c = int(rng.integers(0, k - 1)) if k > 1 else 0
        if k > 1 and c >= bg:
            c += 1  # any class but the background
        _paint_shape(layout, c, rng, radius)
    return layout


def ensure_classes(layout: np.ndarray, classes: Sequence[int], rng: np.random.Generator,
                   min_pixels: int = 1, tries: int = 6,
                   radius: Tuple[float, float] = (0.06, 0.18)) -> np.ndarray:
    """Return a copy of `layout` in which every class of `classes` covers at
    least `min_pixels` pixels.

    Up to `tries` rounds add a random shape for each class still short of
    `min_pixels` (a later shape may cover an earlier one, so each round
    re-checks). If classes are still short, the image is cut into a g×g grid
    (g = ceil(sqrt(n))) and the n required classes are painted one per cell,
    which guarantees them all; each then covers at least
    min(min_pixels, smallest cell area) pixels.
    """
    out = np.array(layout, dtype=np.int64, copy=True)
    need = np.unique(np.asarray(list(classes), dtype=np.int64))
    if need.size == 0:
        return out
    h, w = out.shape

    def short() -> np.ndarray:
        counts = np.bincount(out.reshape(-1), minlength=int(need.max()) + 1)
        return need[counts[need] < min_pixels]

    for _ in range(tries):
        missing = short()
        if missing.size == 0:
            return out
        for c in missing:
            _paint_shape(out, int(c), rng, radius)
    if short().size == 0:
        return out
    # Guaranteed fallback: a random assignment of required classes to cells.
    g = int(np.ceil(np.sqrt(need.size)))
    cells = rng.permutation(g * g)[: need.size]
    ys = np.linspace(0, h, g + 1).round().astype(int)
    xs = np.linspace(0, w, g + 1).round().astype(int)
    for c, cell in zip(need, cells):
        r, q = divmod(int(cell), g)
        y0, y1, x0, x1 = ys[r], ys[r + 1], xs[q], xs[q + 1]
        # shrink to a centred patch covering ~ max(min_pixels, half the cell)
        ch, cw = y1 - y0, x1 - x0
        area = max(min_pixels, (ch * cw + 1) // 2)
        ph = min(ch, max(1, int(np.ceil(np.sqrt(area * ch / max(cw, 1))))))
        pw = min(cw, max(1, int(np.ceil(area / ph))))
        oy, ox = y0 + (ch - ph) // 2, x0 + (cw - pw) // 2
        out[oy:oy + ph, ox:ox + pw] = c
    return out


# ----------------------------------------------------------------------------
# Derived maps
# ----------------------------------------------------------------------------


def _edges_np(lab: np.ndarray) -> np.ndarray:
    e = np.zeros(lab.shape, dtype=bool)
    dx = lab[..., :, 1:] != lab[..., :, :-1]
    dy = lab[..., 1:, :] != lab[..., :-1, :]
    e[..., :, 1:] |= dx
    e[..., :, :-1] |= dx
    e[..., 1:, :] |= dy
    e[..., :-1, :] |= dy
    return e


def edge_map(label_index) -> torch.Tensor:
    """(..., H, W) integer labels (numpy or torch) -> (..., 1, H, W) float32
    in {0, 1}: 1 at pixels with a 4-neighbour of another class, i.e. both
    sides of every class boundary (as pix2pixHD's instance edges)."""
    if isinstance(label_index, torch.Tensor) and label_index.device.type != "cpu":
        t = label_index
        e = torch.zeros(t.shape, dtype=torch.bool, device=t.device)
        dx = t[..., :, 1:] != t[..., :, :-1]
        dy = t[..., 1:, :] != t[..., :-1, :]
        e[..., :, 1:] |= dx
        e[..., :, :-1] |= dx
        e[..., 1:, :] |= dy
        e[..., :-1, :] |= dy
        return e.unsqueeze(-3).to(torch.float32)
    lab = label_index.numpy() if isinstance(label_index, torch.Tensor) else np.asarray(label_index)
    e = _edges_np(lab)[..., None, :, :].astype(np.float32)
    return torch.from_numpy(e)


def one_hot(label_index, num_classes: int) -> torch.Tensor:
    """(..., H, W) integer labels (numpy or torch) -> (..., K, H, W) float32 one-hot."""
    k = int(num_classes)
    if isinstance(label_index, torch.Tensor) and label_index.device.type != "cpu":
        cls = torch.arange(k, device=label_index.device).view(k, 1, 1)
        return (label_index.unsqueeze(-3) == cls).to(torch.float32)
    lab = label_index.numpy() if isinstance(label_index, torch.Tensor) else np.asarray(label_index)
    if lab.size and (lab.min() < 0 or lab.max() >= k):
        raise ValueError(f"labels must lie in [0, {k})")
    oh = lab[..., None, :, :] == np.arange(k).reshape(k, 1, 1)
    return torch.from_numpy(oh.astype(np.float32))


# ----------------------------------------------------------------------------
# Dataset
# ----------------------------------------------------------------------------


class SyntheticExemplarDataset(Dataset):
    """Exemplar-guided synthesis pairs with exact ground truth.

    Sample ``i`` is a dict of

    - ``label`` (K, H, W) float32 one-hot of the input layout,
      ``label_index`` (H, W) int64;
    - ``image`` (3, H, W) float32 in [-1, 1]: ``render(input layout, style)``,
      the exact correct output;
    - ``exemplar`` (3, H, W): ``render(exemplar layout, style)`` — another
      layout, same style, containing every class of the input (each with at
      least ``min_exemplar_pixels`` pixels, see :func:`ensure_classes`);
    - ``exemplar_label`` (K, H, W), ``exemplar_label_index`` (H, W);
    - ``edges`` (1, H, W) float32 class boundaries of the input (:func:`edge_map`);
    - ``style_id``, ``index``, ``seed`` (ints) and ``split`` (str).

    Args:
        size: int or (H, W); any size >= 16 is supported.
        num_classes: K.
        length: number of samples.
        split: "train", "test" or "val"; separate seed streams.
        seed: base seed. Sample i of a split is a pure function of
            (seed, split, i, the other arguments).
        num_shapes: (min, max) shapes painted on the background, inclusive.
        radius: (min, max) shape radius in units of max(H, W).
        num_styles: None gives every index its own style (style_id = index);
            an int n reuses n styles (style_id = index % n), so samples with
            equal style_id are style-consistent pairs.
        textures: texture kinds to draw from (subset of :data:`TEXTURES`).
        min_exemplar_pixels: pixels each input class must cover in the
            exemplar; default max(1, H*W // 200).
        cache: keep generated samples in memory (per process); returned
            tensors are copies, so callers may modify them.
    """

    def __init__(self, size: Size = 64, num_classes: int = 6, length: int = 1000,
                 split: str = "train", seed: int = 0,
                 num_shapes: Tuple[int, int] = (3, 8),
                 radius: Tuple[float, float] = (0.08, 0.35),
                 num_styles: Optional[int] = None,
                 textures: Sequence[str] = TEXTURES,
                 min_exemplar_pixels: Optional[int] = None,
                 cache: bool = False):
        super().__init__()
        self.height, self.width = _hw(size)
        if min(self.height, self.width) < 16:
            raise ValueError(f"size must be >= 16, got {size!r}")
        if split not in _SPLITS:
            raise ValueError(f"split must be one of {sorted(_SPLITS)}, got {split!r}")
        if int(num_classes) < 1:
            raise ValueError("num_classes must be >= 1")
        if int(length) < 0:
            raise ValueError("length must be >= 0")
        if num_styles is not None and int(num_styles) < 1:
            raise ValueError("num_styles must be None or >= 1")
        if int(seed) < 0:
            raise ValueError("seed must be >= 0")
        bad = [t for t in textures if t not in TEXTURES]
        if bad or not textures:
            raise ValueError(f"textures must be a non-empty subset of {TEXTURES}, got {textures!r}")
        self.size = (self.height, self.width)
        self.num_classes = int(num_classes)
        self.length = int(length)
        self.split = split
        self.seed = int(seed)
        self.num_shapes = (int(num_shapes[0]), int(num_shapes[1]))
        self.radius = (float(radius[0]), float(radius[1]))
        self.num_styles = None if num_styles is None else int(num_styles)
        self.textures = tuple(textures)
        hw = self.height * self.width
        self.min_exemplar_pixels = (max(1, hw // 200) if min_exemplar_pixels is None
                                    else int(min_exemplar_pixels))
        self.cache = bool(cache)
        self._cache: Dict[int, Dict[str, object]] = {}

    def __len__(self) -> int:
        return self.length

    # -- the pure generators ------------------------------------------------

    def _index(self, index: int) -> int:
        i = int(index)
        if i < 0:
            i += self.length
        if not 0 <= i < self.length:
            raise IndexError(f"index {index} out of range for length {self.length}")
        return i

    def _rng(self, *key: int) -> np.random.Generator:
        ss = np.random.SeedSequence(self.seed, spawn_key=(_SPLITS[self.split],) + tuple(key))
        return np.random.default_rng(ss)

    def style_id(self, index: int) -> int:
        i = self._index(index)
        return i if self.num_styles is None else i % self.num_styles

    def style(self, index: int) -> Style:
        """The style of sample `index`."""
        rng = self._rng(_STREAM_STYLE, self.style_id(index))
        return sample_style(rng, self.num_classes, self.size, self.textures)

    def background(self, index: int) -> int:
        """The input layout's background class: `sample_layout`'s first draw from its stream."""
        return int(self._rng(_STREAM_INPUT, self._index(index)).integers(0, self.num_classes))

    def layouts(self, index: int) -> Tuple[np.ndarray, np.ndarray]:
        """(input layout, exemplar layout) of sample `index`, (H, W) int64 each."""
        i = self._index(index)
        rng = self._rng(_STREAM_INPUT, i)
        lay = sample_layout(rng, self.size, self.num_classes, self.num_shapes, self.radius)
        rng = self._rng(_STREAM_EXEMPLAR, i)
        ex = sample_layout(rng, self.size, self.num_classes, self.num_shapes, self.radius)
        ex = ensure_classes(ex, np.unique(lay), rng, min_pixels=self.min_exemplar_pixels)
        return lay, ex

    def generate(self, index: int) -> Dict[str, object]:
        i = self._index(index)
        style = self.style(i)
        lay, ex = self.layouts(i)
        return {
            "label": one_hot(lay, self.num_classes),
            "label_index": torch.from_numpy(lay),
            "image": render(lay, style),
            "exemplar": render(ex, style),
            "exemplar_label": one_hot(ex, self.num_classes),
            "exemplar_label_index": torch.from_numpy(ex),
            "edges": edge_map(lay),
            "style_id": self.style_id(i),
            "index": i,
            "seed": self.seed,
            "split": self.split,
        }

    def __getitem__(self, index: int) -> Dict[str, object]:
        i = self._index(index)
        if not self.cache:
            return self.generate(i)
        sample = self._cache.get(i)
        if sample is None:
            sample = self._cache[i] = self.generate(i)
        return {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in sample.items()}

    def extra_repr(self) -> str:  # pragma: no cover - cosmetic
        return (f"size={self.size}, num_classes={self.num_classes}, length={self.length}, "
                f"split={self.split!r}, seed={self.seed}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"


# ----------------------------------------------------------------------------
# Registry entry: --dataset synthetic
# ----------------------------------------------------------------------------


@dataclass
class SyntheticOptions:
    """Options of the synthetic source.

    num_styles: reuse this many styles (samples with equal style ids are style-consistent
        pairs); None gives every sample its own style.
    textures: texture kinds to draw styles from (a subset of flat, stripes, checker, dots,
        noise).
    """

    num_styles: Optional[int] = None
    textures: Tuple[str, ...] = TEXTURES


def _build_synthetic(root, *, size, num_classes, split, length, seed, options, rank, world_size):
    opts = options or SyntheticOptions()
    return SyntheticExemplarDataset(size, num_classes=num_classes, length=length or 2000, split=split, seed=seed,
                                    num_styles=opts.num_styles, textures=tuple(opts.textures),
                                    cache=split == "train")


register_data_source(DataSourceSpec(
    name="synthetic", build=_build_synthetic, options=SyntheticOptions, pairs=True, exemplars=True, needs_root=False,
    description="random layouts rendered in a per-sample style; exact ground truth for every exemplar"))


# ----------------------------------------------------------------------------
# Registry entry: --dataset synthetic-edges (the same samples, the class boundaries as input)
# ----------------------------------------------------------------------------


@dataclass
class SyntheticEdgesOptions(SyntheticOptions):
    """Options of the synthetic edge view.

    num_styles: reuse this many styles (samples with equal style ids are style-consistent
        pairs); None gives every sample its own style.
    textures: texture kinds to draw styles from (a subset of flat, stripes, checker, dots,
        noise).
    classes: classes of the layouts behind the edges (the input itself has one channel).
    """

    classes: int = 6


class SyntheticEdgeView(Dataset):
    """A synthetic dataset with the input and the exemplar's label replaced by their class
    boundaries (1, H, W) in {0, 1} (`edge_map`): a sketch-like input with exact ground truth.
    "label_index" stays (the class-mean baseline knows the classes, which the input does not
    show) and "mask" is the foreground in {-1, 1}: everything but the layout's background
    class (exact: the class its generator painted first, not a guess from the border)."""

    def __init__(self, base: SyntheticExemplarDataset):
        self.base = base
        self.num_classes = base.num_classes
        self.size = base.size

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index):
        s = self.base[index]
        lab = s["label_index"]
        s["label"] = s.pop("edges")
        s["exemplar_label"] = edge_map(s["exemplar_label_index"])
        s["mask"] = ((lab != self.base.background(int(index))).float() * 2 - 1)[None]
        return s


def _build_synthetic_edges(root, *, size, num_classes, split, length, seed, options, rank, world_size):
    opts = options or SyntheticEdgesOptions()
    if int(num_classes) != 1:
        raise ValueError(f"synthetic-edges: the input is one edge channel, got num_classes {num_classes}")
    return SyntheticEdgeView(SyntheticExemplarDataset(size, num_classes=opts.classes, length=length or 2000,
                                                      split=split, seed=seed, num_styles=opts.num_styles,
                                                      textures=tuple(opts.textures), cache=split == "train"))


register_data_source(DataSourceSpec(
    name="synthetic-edges", build=_build_synthetic_edges, options=SyntheticEdgesOptions, pairs=True, exemplars=True,
    needs_root=False, num_classes=1, label_kind="dense", picture=lambda label: (1 - 2 * label).expand(-1, 3, -1, -1),
    description="the synthetic set with class boundaries (1 channel, sketch-like) as input; exact ground truth"))
