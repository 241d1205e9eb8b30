"""The dense input maps (boundaries, distance channels, Canny, OpenPose skeletons) against
brute-force definitions on random inputs."""
import math

import numpy as np
import pytest

from exsynth.data.input_maps import (LIMBS, POSE_COLORS, boundaries, canny, city_block_distance, distance_channel,
                                     render_pose)


def test_boundaries_mark_both_sides_of_a_change():
    rng = np.random.default_rng(0)
    t = rng.integers(0, 3, size=(17, 23))
    got = boundaries(t)
    want = np.zeros_like(got)
    H, W = t.shape
    for y in range(H):
        for x in range(W):
            for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0)):
                if 0 <= y + dy < H and 0 <= x + dx < W and t[y + dy, x + dx] != t[y, x]:
                    want[y, x] = True
    assert (got == want).all()
    acc = np.zeros_like(got)
    acc[0, 0] = True
    assert (boundaries(t, acc) == (want | acc)).all()


@pytest.mark.parametrize("density", [0.002, 0.05, 0.3])
def test_city_block_distance_is_exact(density):
    rng = np.random.default_rng(1)
    m = rng.random((19, 31)) < density
    m[rng.integers(19), rng.integers(31)] = True
    d = city_block_distance(m)
    ys, xs = np.nonzero(m)
    yy, xx = np.mgrid[:19, :31]
    want = (np.abs(yy[..., None] - ys) + np.abs(xx[..., None] - xs)).min(-1)
    assert (d == want).all()
    ch = distance_channel(m)
    assert ch.dtype == np.uint8 and (ch == np.clip(want / 3, 0, 255).astype(np.uint8)).all()


def test_distance_channel_of_an_empty_mask_is_255_and_far_values_clip():
    assert (distance_channel(np.zeros((5, 7), bool)) == 255).all()
    m = np.zeros((1, 1000), bool)
    m[0, 0] = True
    ch = distance_channel(m)
    assert ch[0, 3] == 1 and ch[0, 999] == 255 and ch[0, 766] == 255 and ch[0, 764] == 254


def test_canny_finds_the_outline_of_a_square_and_nothing_on_flat_or_faint_images():
    img = np.full((48, 48), 0.2)
    img[12:36, 12:36] = 0.8
    e = canny(img)
    assert e.any() and not e[:8].any() and not e[20:28, 20:28].any()   # edges on the outline only
    rows = np.nonzero(e.any(1))[0]
    assert rows.min() in (10, 11, 12) and rows.max() in (35, 36, 37)
    for x in (12, 20, 30):                                             # closed: every column crosses it
        assert e[8:16, x - 1:x + 2].any() and e[32:40, x - 1:x + 2].any()
    assert not canny(np.full((32, 32), 0.5)).any()
    faint = np.full((48, 48), 0.5)
    faint[12:36, 12:36] = 0.505                                       # gradient below the low threshold
    assert not canny(faint).any()
    assert (canny((img * 255).astype(np.uint8)) == canny(np.round(img * 255) / 255)).all()  # uint8 is scaled


def test_canny_hysteresis_keeps_weak_pixels_joined_to_strong_ones():
    # a vertical step: height 0.05 gives a gradient between the thresholds (weak), above ~0.08 strong
    img = np.zeros((64, 40))
    assert not canny(img + (np.arange(40) >= 20) * 0.05).any()        # weak alone: nothing
    img[:, 20:] = np.linspace(0.05, 0.15, 64)[:, None]                 # fading from strong (bottom) to weak (top)
    e = canny(img)
    assert e[1:63, 18:22].any(1).all()                                 # the weak top is kept: it joins the strong part
    img[32:36, 20:] = 0.02                                             # a gap below the low threshold
    img[:32, 20:] = 0.05
    cut = canny(img)
    assert not cut[:32].any() and cut[37:63, 18:22].any(1).all()       # the weak part alone is dropped


def test_render_pose_draws_keypoints_and_limbs_in_openpose_colours():
    H, W = 80, 60
    cand = np.array([[30, 10], [30, 25], [18, 25], [15, 45], [12, 60], [42, 25], [45, 45], [48, 60]]
                    + [[5 + i, 70] for i in range(10)], np.float64)
    cand = np.c_[cand, np.ones(18), np.arange(18)]
    subset = np.arange(18, dtype=np.float64)
    subset[9] = -1                       # keypoint 10 undetected: limbs (9, 10) and (10, 11) are not drawn
    canvas, limbs = render_pose(cand, subset, H, W)
    assert canvas.shape == (H, W, 3) and canvas.dtype == np.uint8 and len(limbs) == 17
    drawn = [k for k, (a, b) in enumerate(LIMBS[:17]) if subset[a - 1] != -1 and subset[b - 1] != -1]
    for k in range(17):
        assert limbs[k].any() == (k in drawn)
    # limb 0 joins keypoints 2 and 3: its mask holds the midpoint and its colour is blended 0.6 there
    a, b = cand[1, :2], cand[2, :2]
    mx, my = (a + b) / 2
    assert limbs[0][int(my), int(mx)]
    # a lone keypoint: a disc of radius 4 in its colour, no limb
    lone = -np.ones(18)
    lone[4] = 4
    pic, masks = render_pose(cand, lone, H, W)
    x, y = cand[4, :2].astype(int)
    yy, xx = np.mgrid[:H, :W]
    disc = (xx - x) ** 2 + (yy - y) ** 2 <= 16
    assert (pic[disc] == POSE_COLORS[4]).all() and not pic[~disc].any() and not any(m.any() for m in masks)
    # the loader draws its colours list into a canvas it converts BGR -> RGB: its (170, 255, 0)
    # for keypoint 4 reaches the network as RGB (0, 255, 170), keypoint 0's (255, 0, 0) as blue
    assert POSE_COLORS[4] == (0, 255, 170) and POSE_COLORS[0] == (0, 0, 255)
    # the limb-free corner stays black
    assert not canvas[0:3, 0:3].any()
    # no person: an empty picture and 17 empty masks
    canvas, limbs = render_pose(np.zeros((0, 4)), -np.ones(18), H, W)
    assert not canvas.any() and not any(m.any() for m in limbs)


def test_limb_ellipse_has_the_sticks_width_and_length():
    cand = np.zeros((18, 4))
    cand[1, :2], cand[2, :2] = (20, 40), (60, 40)   # a horizontal limb 40 px long (keypoints 2 -> 3)
    subset = -np.ones(18)
    subset[1], subset[2] = 1, 2
    _, limbs = render_pose(cand, subset, 80, 80)
    m = limbs[0]
    ys, xs = np.nonzero(m)
    assert xs.min() == 20 and xs.max() == 60 and ys.min() == 36 and ys.max() == 44
    # the fill includes the outline's pixels: about the ellipse grown by half a pixel
    assert math.isclose(m.sum(), math.pi * 20.5 * 4.5, rel_tol=0.05)
