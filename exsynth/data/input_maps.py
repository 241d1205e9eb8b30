"""Dense (non class-index) input maps as CoCosNet's loaders draw them: label boundaries, Canny
edges, city-block distance channels and OpenPose skeletons, in numpy only.

The official loaders call OpenCV (`cv2.distanceTransform`, `cv2.ellipse2Poly`,
`cv2.fillConvexPoly`, `cv2.circle`) and scikit-image (`feature.canny`); exsynth depends on
neither, so the same definitions are written here:
- `boundaries`: both pixels on either side of a value change (4-neighbours), the loaders'
  `get_edges`;
- `city_block_distance`: the exact L1 distance to the nearest marked pixel, which is what
  `cv2.distanceTransform(.., cv2.DIST_L1, 3)` computes; `distance_channel` scales it as the
  loaders do (`/3`, clipped to 255, truncated to 8 bits) and maps to [0, 1];
- `canny`: scikit-image's algorithm (Gaussian sigma 1 with normalised borders, Sobel,
  interpolated non-maximum suppression, hysteresis 0.1 / 0.2 over 8-connected chains);
- `render_pose`: the 18 keypoint discs (radius 4) and 17 limb ellipses (half-width 4) blended
  0.4 / 0.6 in OpenPose's colours, plus each limb's own mask for its distance channel.
`bench/input_maps_oracle.py` measures the agreement with OpenCV / scikit-image where they are
installed (they are not exsynth dependencies): Canny and the distance channels pixel for pixel
identical, the pose picture 99.87 % of pixels identical (limb masks IoU 0.995; OpenCV rasterises
polygon edges in fixed point), bench/results/cpu/input_maps_oracle.json.
"""
from __future__ import annotations

import math
from typing import List, Tuple

import numpy as np

__all__ = ["boundaries", "city_block_distance", "distance_channel", "canny", "render_pose", "LIMBS",
           "POSE_COLORS"]


def boundaries(values: np.ndarray, edges: np.ndarray = None) -> np.ndarray:
    """bool (H, W): pixels next to a pixel of another value (left/right/up/down), OR-ed into
    `edges` when given (the loaders accumulate several part masks this way)."""
    t = np.asarray(values)
    out = np.zeros(t.shape, bool) if edges is None else edges.astype(bool).copy()
    dx = t[:, 1:] != t[:, :-1]
    dy = t[1:, :] != t[:-1, :]
    out[:, 1:] |= dx
    out[:, :-1] |= dx
    out[1:, :] |= dy
    out[:-1, :] |= dy
    return out


def _scan_min(d: np.ndarray, axis: int) -> np.ndarray:
    """In place along `axis`: d[i] = min(d[i], d[i-1] + 1, d[i+1] + 1) over the whole line
    (two passes give the exact 1-D L1 distance transform of d)."""
    v = np.moveaxis(d, axis, 0)
    for i in range(1, v.shape[0]):
        np.minimum(v[i], v[i - 1] + 1, out=v[i])
    for i in range(v.shape[0] - 2, -1, -1):
        np.minimum(v[i], v[i + 1] + 1, out=v[i])
    return d


def city_block_distance(targets: np.ndarray) -> np.ndarray:
    """float64 (H, W): |dy| + |dx| to the nearest True pixel of `targets` (inf where there is
    none). L1 is separable, so a row pass after a column pass is exact."""
    d = np.where(np.asarray(targets, bool), 0.0, np.inf)
    return _scan_min(_scan_min(d, 0), 1)


def distance_channel(targets: np.ndarray) -> np.ndarray:
    """The loaders' distance channel of a mask, as 8-bit values (H, W) uint8:
    min(distance / 3, 255) truncated; a mask with no pixel is 255 everywhere."""
    d = city_block_distance(targets) / 3.0
    return np.clip(np.nan_to_num(d, posinf=255.0), 0, 255).astype(np.uint8)


# ---- Canny (scikit-image's feature.canny with its defaults) -------------------------------------

def _correlate_1d(a: np.ndarray, kernel: np.ndarray, axis: int, mode: str) -> np.ndarray:
    r = len(kernel) // 2
    pad = [(0, 0)] * a.ndim
    pad[axis] = (r, r)
    p = np.pad(a, pad, mode="constant" if mode == "constant" else "symmetric")
    out = np.zeros_like(a, dtype=np.float64)
    n = a.shape[axis]
    for k, w in enumerate(kernel):
        if w:
            out += w * np.take(p, np.arange(k, k + n), axis=axis)
    return out


def _gaussian(a: np.ndarray, sigma: float) -> np.ndarray:
    r = int(4.0 * sigma + 0.5)  # scipy's truncate=4
    x = np.arange(-r, r + 1, dtype=np.float64)
    g = np.exp(-0.5 * (x / sigma) ** 2)
    g /= g.sum()
    return _correlate_1d(_correlate_1d(a, g, 0, "constant"), g, 1, "constant")


def _sobel(a: np.ndarray, axis: int) -> np.ndarray:
    """scipy.ndimage.sobel: [-1, 0, 1] along axis, [1, 2, 1] across, reflected borders."""
    d = _correlate_1d(a, np.array([-1.0, 0.0, 1.0]), axis, "reflect")
    return _correlate_1d(d, np.array([1.0, 2.0, 1.0]), 1 - axis, "reflect")


def _dilate8(m: np.ndarray) -> np.ndarray:
    p = np.pad(m, 1)
    H, W = m.shape
    out = m.copy()
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            out |= p[dy:dy + H, dx:dx + W]
    return out


def canny(gray: np.ndarray, sigma: float = 1.0, low: float = 0.1, high: float = 0.2) -> np.ndarray:
    """bool (H, W) edges of a grey image (float in [0, 1], or uint8 which is scaled to it)."""
    img = np.asarray(gray)
    img = img / 255.0 if img.dtype == np.uint8 else img.astype(np.float64)
    H, W = img.shape
    # Gaussian with the border handled as a normalised convolution (no dark frame)
    smoothed = _gaussian(img, sigma) / (_gaussian(np.ones_like(img), sigma) + np.finfo(np.float64).eps)
    gy, gx = _sobel(smoothed, 0), _sobel(smoothed, 1)
    ay, ax = np.abs(gy), np.abs(gx)
    mag = np.hypot(gy, gx)
    inner = np.zeros((H, W), bool)
    inner[1:-1, 1:-1] = True  # the mask eroded by one pixel: no edges on the frame
    P = np.pad(mag, 1)

    def M(dy: int, dx: int) -> np.ndarray:
        return P[1 + dy:1 + dy + H, 1 + dx:1 + dx + W]

    with np.errstate(divide="ignore", invalid="ignore"):
        w_yx, w_xy = ax / ay, ay / ax
    same = ((gy >= 0) & (gx >= 0)), ((gy <= 0) & (gx <= 0))
    opposite = ((gy <= 0) & (gx >= 0)), ((gy >= 0) & (gx <= 0))
    steep, flat = ay >= ax, ay <= ax
    # (octant, weight, + side (c1, c2), - side (c1, c2)), in scikit-image's order (later wins)
    octants = (
        ((same[0] | same[1]) & steep, w_yx, ((1, 0), (1, 1)), ((-1, 0), (-1, -1))),
        ((same[0] | same[1]) & flat, w_xy, ((0, 1), (1, 1)), ((0, -1), (-1, -1))),
        ((opposite[0] | opposite[1]) & flat, w_xy, ((0, 1), (-1, 1)), ((0, -1), (1, -1))),
        ((opposite[0] | opposite[1]) & steep, w_yx, ((-1, 0), (-1, 1)), ((1, 0), (1, -1))),
    )
    maxima = np.zeros((H, W), bool)
    for pts, w, (p1, p2), (m1, m2) in octants:
        pts = pts & inner
        with np.errstate(invalid="ignore"):
            plus = M(*p2) * w + M(*p1) * (1 - w) <= mag
            minus = M(*m2) * w + M(*m1) * (1 - w) <= mag
        maxima[pts] = (plus & minus)[pts]
    weak = maxima & (mag >= low)
    strong = maxima & (mag >= high)
    # hysteresis: grow the strong pixels through 8-connected weak ones until nothing changes
    while True:
        grown = _dilate8(strong) & weak
        grown |= strong
        if (grown == strong).all():
            return strong
        strong = grown


# ---- OpenPose skeletons (CoCosNet's DeepFashion pose map) --------------------------------------

# limb k joins keypoints LIMBS[k] (1-based, OpenPose's COCO-18 order); the loader draws the first 17
LIMBS = ((2, 3), (2, 6), (3, 4), (4, 5), (6, 7), (7, 8), (2, 9), (9, 10), (10, 11), (2, 12), (12, 13), (13, 14),
         (2, 1), (1, 15), (15, 17), (1, 16), (16, 18), (3, 17), (6, 18))
# The loader's `colors` list of the 18 keypoints / 17 limbs. cv2 draws them into a canvas it then
# converts with cv2.cvtColor(.., BGR2RGB), so each is read as BGR: the RGB picture the network gets
# holds each entry reversed (keypoint 0 is blue), which is POSE_COLORS.
_LOADER_COLORS = (
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0), (0, 255, 0),
    (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255), (0, 0, 255), (85, 0, 255),
    (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85))
POSE_COLORS = tuple(tuple(reversed(c)) for c in _LOADER_COLORS)
STICK_HALF_WIDTH = 4
KEYPOINT_RADIUS = 4


def _disc(H: int, W: int, cx: int, cy: int, r: int) -> np.ndarray:
    yy, xx = np.ogrid[:H, :W]
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r


def _ellipse_polygon(cx: int, cy: int, a: int, b: int, angle_deg: int) -> np.ndarray:
    """cv2.ellipse2Poly(centre, (a, b), angle, 0, 360, 1): the outline at every degree, rounded
    to integer pixels, consecutive repeats dropped. (n, 2) int (x, y)."""
    t = np.radians(np.arange(0, 361, dtype=np.float64))
    al, be = math.cos(math.radians(angle_deg)), math.sin(math.radians(angle_deg))
    x, y = a * np.cos(t), b * np.sin(t)
    pts = np.stack([np.rint(cx + x * al - y * be), np.rint(cy + x * be + y * al)], 1).astype(np.int64)
    keep = np.ones(len(pts), bool)
    keep[1:] = (pts[1:] != pts[:-1]).any(1)
    return pts[keep]


def _fill_convex(pts: np.ndarray, H: int, W: int) -> np.ndarray:
    """cv2.fillConvexPoly's pixels: on each row, from the rounded leftmost to the rounded
    rightmost crossing of the outline, inclusive."""
    out = np.zeros((H, W), bool)
    p0, p1 = pts.astype(np.float64), np.roll(pts, -1, 0).astype(np.float64)
    y_lo, y_hi = max(int(pts[:, 1].min()), 0), min(int(pts[:, 1].max()), H - 1)
    if y_lo > y_hi:
        return out
    ys = np.arange(y_lo, y_hi + 1, dtype=np.float64)[:, None]
    lo, hi = np.minimum(p0[:, 1], p1[:, 1]), np.maximum(p0[:, 1], p1[:, 1])
    on = (ys >= lo) & (ys <= hi)
    flat = p0[:, 1] == p1[:, 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        xs = np.where(flat, p0[:, 0], p0[:, 0] + (ys - p0[:, 1]) * (p1[:, 0] - p0[:, 0]) / (p1[:, 1] - p0[:, 1]))
    left = np.where(on, np.minimum(xs, np.where(flat, p1[:, 0], xs)), np.inf).min(1)
    right = np.where(on, np.maximum(xs, np.where(flat, p1[:, 0], xs)), -np.inf).max(1)
    cols = np.arange(W)
    rows = (cols >= np.floor(left + 0.5)[:, None]) & (cols <= np.floor(right + 0.5)[:, None])
    out[y_lo:y_hi + 1] = rows
    return out


def _limb(H: int, W: int, cx: int, cy: int, a: int, b: int, angle_deg: int) -> np.ndarray:
    """A filled limb ellipse (semi-axes a along `angle_deg`, b across), as the loader draws it."""
    return _fill_convex(_ellipse_polygon(cx, cy, a, b, angle_deg), H, W)


def render_pose(candidate: np.ndarray, subset: np.ndarray, height: int, width: int
                ) -> Tuple[np.ndarray, List[np.ndarray]]:
    """(canvas uint8 (H, W, 3) RGB, 17 limb masks bool (H, W)) of one person.

    candidate: (N, >=2) keypoint rows (x, y, ...); subset: the person's 18 candidate indices
    (-1: not detected; further columns such as score and count are ignored). A limb with an
    undetected end is not drawn and its mask is empty."""
    cand = np.atleast_2d(np.asarray(candidate, np.float64))
    sub = np.asarray(subset, np.float64).reshape(-1)
    H, W = int(height), int(width)
    canvas = np.zeros((H, W, 3), np.float64)
    for i in range(18):
        k = int(sub[i])
        if k == -1:
            continue
        x, y = cand[k][0:2]
        canvas[_disc(H, W, int(x), int(y), KEYPOINT_RADIUS)] = POSE_COLORS[i]
    joints = []
    for i in range(17):
        ends = sub[np.array(LIMBS[i]) - 1]
        if (ends == -1).any():
            joints.append(np.zeros((H, W), bool))
            continue
        xs, ys = cand[ends.astype(int), 0], cand[ends.astype(int), 1]
        length = math.hypot(xs[0] - xs[1], ys[0] - ys[1])
        angle = math.degrees(math.atan2(ys[0] - ys[1], xs[0] - xs[1]))
        mask = _limb(H, W, int(np.mean(xs)), int(np.mean(ys)), int(length / 2), STICK_HALF_WIDTH, int(angle))
        # cv2.addWeighted(canvas, 0.4, canvas with the limb filled, 0.6): only the limb changes
        canvas[mask] = np.rint(0.4 * canvas[mask] + 0.6 * np.asarray(POSE_COLORS[i], np.float64))
        joints.append(mask)
    return canvas.astype(np.uint8), joints
