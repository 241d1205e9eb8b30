"""How closely exsynth's numpy input maps (exsynth/data/input_maps.py) agree with the OpenCV and
scikit-image calls CoCosNet's loaders make. Those libraries are not exsynth dependencies:
install them anywhere and put them on the path, e.g.

    pip install --target /tmp/oracle scikit-image opencv-python-headless
    PYTHONPATH=/tmp/oracle python bench/input_maps_oracle.py [--out bench/results/cpu/input_maps_oracle.json]

Inputs: smooth random grey images with sharp shapes (Canny), random part masks (distance),
random OpenPose skeletons (pose canvas, limb masks), all seeded.
"""
from __future__ import annotations

import argparse
import json
import math
import platform
from pathlib import Path

import numpy as np

from exsynth.data.input_maps import (_LOADER_COLORS, KEYPOINT_RADIUS, LIMBS, STICK_HALF_WIDTH, canny, distance_channel,
                                     render_pose)


def official_pose(cv2, candidate, subset, H, W):
    """CoCosNet's DeepFashion drawing, written out from its loader: its `colors` list drawn as
    they are into the canvas that cv2.cvtColor(.., BGR2RGB) then converts."""
    bgr = [list(c) for c in _LOADER_COLORS]
    canvas = np.zeros((H, W, 3), np.uint8)
    for i in range(18):
        index = int(subset[i])
        if index == -1:
            continue
        x, y = candidate[index][0:2]
        cv2.circle(canvas, (int(x), int(y)), KEYPOINT_RADIUS, bgr[i], thickness=-1)
    joints = []
    for i in range(17):
        index = subset[np.array(LIMBS[i]) - 1]
        cur = canvas.copy()
        if -1 in index:
            joints.append(np.zeros((H, W), np.uint8))
            continue
        Y, X = candidate[index.astype(int), 0], candidate[index.astype(int), 1]
        mX, mY = np.mean(X), np.mean(Y)
        length = ((X[0] - X[1]) ** 2 + (Y[0] - Y[1]) ** 2) ** 0.5
        angle = math.degrees(math.atan2(X[0] - X[1], Y[0] - Y[1]))
        poly = cv2.ellipse2Poly((int(mY), int(mX)), (int(length / 2), STICK_HALF_WIDTH), int(angle), 0, 360, 1)
        cv2.fillConvexPoly(cur, poly, bgr[i])
        canvas = cv2.addWeighted(canvas, 0.4, cur, 0.6, 0)
        joint = np.zeros((H, W), np.uint8)
        cv2.fillConvexPoly(joint, poly, 255)
        joints.append(joint)
    return cv2.cvtColor(canvas, cv2.COLOR_BGR2RGB), joints


def main() -> None:
    import cv2
    from skimage import feature

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--n", type=int, default=20)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    S = args.size
    res = {}

    # Canny on images like the photos it sees: smooth gradients, shapes, noise
    agree, ours_px, theirs_px = [], 0, 0
    yy, xx = np.mgrid[:S, :S] / S
    for _ in range(args.n):
        img = 0.5 + 0.2 * np.sin(2 * math.pi * (rng.random() * 3 * xx + rng.random() * 2 * yy))
        for _ in range(6):
            cy, cx, r = rng.random() * S, rng.random() * S, 5 + rng.random() * S / 4
            img[(yy * S - cy) ** 2 + (xx * S - cx) ** 2 < r * r] = rng.random()
        img = np.clip(img + 0.02 * rng.standard_normal(img.shape), 0, 1)
        u8 = (img * 255).astype(np.uint8)
        a, b = canny(u8), feature.canny(u8)
        agree.append(float((a == b).mean()))
        ours_px += int(a.sum())
        theirs_px += int(b.sum())
        res.setdefault("canny_iou", []).append(float((a & b).sum() / max((a | b).sum(), 1)))
    res["canny"] = dict(pixel_agreement=float(np.mean(agree)), mean_edge_iou=float(np.mean(res.pop("canny_iou"))),
                        edge_pixels_ours=ours_px, edge_pixels_skimage=theirs_px)

    # distance channels (the loader: cv2.distanceTransform(255 - edge * 255, DIST_L1, 3) / 3, uint8)
    exact = []
    for _ in range(args.n):
        m = rng.random((S, S)) < rng.choice([0.0005, 0.005, 0.05])
        theirs = np.clip(cv2.distanceTransform((255 - m * 255).astype(np.uint8), cv2.DIST_L1, 3) / 3, 0, 255)
        exact.append(float((distance_channel(m) == theirs.astype(np.uint8)).mean()))
    res["distance_channel"] = dict(pixel_agreement=float(np.mean(exact)))

    # pose canvas and limb masks
    canvas_eq, canvas_diff, joint_iou = [], [], []
    for _ in range(args.n):
        cand = np.c_[rng.random((18, 2)) * S, rng.random(18), np.arange(18)]
        subset = np.where(rng.random(18) < 0.15, -1, np.arange(18)).astype(np.float64)
        ours_c, ours_j = render_pose(cand, subset, S, S)
        their_c, their_j = official_pose(cv2, cand, subset, S, S)
        canvas_eq.append(float((ours_c == their_c).all(-1).mean()))
        canvas_diff.append(float(np.abs(ours_c.astype(int) - their_c.astype(int)).mean()))
        for a, b in zip(ours_j, their_j):
            b = b > 0
            if a.any() or b.any():
                joint_iou.append(float((a & b).sum() / max((a | b).sum(), 1)))
    res["pose"] = dict(canvas_pixel_agreement=float(np.mean(canvas_eq)), canvas_mean_abs_diff=float(np.mean(canvas_diff)),
                       limb_mask_iou=float(np.mean(joint_iou)))
    res["setup"] = dict(size=S, images=args.n, opencv=cv2.__version__, numpy=np.__version__,
                        skimage=__import__("skimage").__version__, python=platform.python_version(),
                        command="PYTHONPATH=/tmp/oracle python bench/input_maps_oracle.py")
    text = json.dumps(res, indent=2)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
