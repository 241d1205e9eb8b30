"""Where a pix2pixSC checkpoint's exemplar use comes from, on the synthetic-video set:
`python -m bench.pix2pixsc_diag CHECKPOINT [CHECKPOINT ...] [--length 200] [--out FILE.json]`.

For each checkpoint (data options read from it), PSNR of the output against:
- test_cross_clip: the test split as `exsynth eval` scores it (exemplar: a frame of another
  clip; target: the input's layout rendered in the exemplar's style, exact);
- test_same_clip: test clips, exemplar a frame t' of the input's own clip, target the photo;
- train_same_clip: the same on training clips (what L_SC trains on);
- train_cross_clip_vs_gt / _vs_own_photo: training clips with another clip's exemplar, scored
  against the exact output and against the input's own frame (a generator that paints the
  style it memorised for x's clip scores higher on the second);
- zero_exemplar: the test split with a mid-grey exemplar and F(I) of zeros.

And, once, the data's references: class means (the exemplar-blind baseline, fitted on the
training split), the raw exemplar (what copying it pixel by pixel scores; for same-clip
exemplars too), and the oracle that paints each input class with the mean colour of that
class in the exemplar, found through F(I) (what carrying each class's appearance over
reaches without textures).
"""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import torch

from exsynth.checkpoint import load_generator
from exsynth.data.synthetic_video import SyntheticVideoDataset, SyntheticVideoOptions
from exsynth.evaluate import class_mean_colours
from exsynth.metrics import psnr
from exsynth.models.pix2pixsc import region_style_map


def _samples(ds, n, mode):
    out = []
    for i in range(n):
        s = dict(ds[i])
        if mode == "same":
            s["exemplar"], s["exemplar_label"], s["image"] = s["consistent"], s["consistent_label"], s["photo"]
        out.append(s)
    return out


def _stack(items, keys=("label", "label_index", "exemplar", "exemplar_label", "image", "photo")):
    return {k: torch.stack([s[k] for s in items]) for k in keys}


def _mean_psnr(fake, real):
    return float(np.mean(psnr(fake, real).tolist()))


def references(opts: SyntheticVideoOptions, size: int, k: int, n: int) -> dict:
    test = SyntheticVideoDataset(size, k, length=n, split="test", seed=0, options=opts)
    train = SyntheticVideoDataset(size, k, length=500, split="train", seed=0, options=opts)
    means = class_mean_colours(train, 500)
    cross, same = _stack(_samples(test, n, "cross")), _stack(_samples(test, n, "same"))
    # the exemplar's class means painted on x (pix2pixSC's region_style "mean"); classes the
    # exemplar lacks take the training split's class mean
    pooled = region_style_map(cross["label"], cross["exemplar"], cross["exemplar_label"], "mean")
    blind = means[cross["label_index"]].permute(0, 3, 1, 2)
    oracle = torch.where(pooled[:, 3:] > 0, pooled[:, :3], blind)
    return {"class_means": _mean_psnr(blind, cross["image"]),
            "raw_exemplar_cross_clip": _mean_psnr(cross["exemplar"], cross["image"]),
            "raw_exemplar_same_clip": _mean_psnr(same["exemplar"], same["image"]),
            "oracle_exemplar_class_means": _mean_psnr(oracle, cross["image"])}


@torch.no_grad()
def diagnose(path: str, n: int) -> dict:
    model, payload = load_generator(path)
    tc = payload["train_config"]
    size, k = tc["size"], tc["num_classes"]
    do = dict(tc.get("data_options") or {})
    opts = SyntheticVideoOptions(**do)
    run = lambda b: model(b["label"], b["exemplar"], b["exemplar_label"])  # noqa: E731
    test = SyntheticVideoDataset(size, k, length=n, split="test", seed=0, options=opts)
    train = SyntheticVideoDataset(size, k, length=n, split="train", seed=0,
                                  options=SyntheticVideoOptions(**{**do, "same_clip_probability": 1.0}))
    train_x = SyntheticVideoDataset(size, k, length=n, split="train", seed=0,
                                    options=SyntheticVideoOptions(**{**do, "same_clip_probability": 0.0}))
    cross = _stack(_samples(test, n, "cross"))
    res = {"checkpoint": path, "step": payload.get("step"), "data_options": do,
           "model_options": {key: v for key, v in payload["model_config"].items() if key != "label_channels"}}
    res["test_cross_clip"] = _mean_psnr(run(cross), cross["image"])
    zero = dict(cross, exemplar=torch.zeros_like(cross["exemplar"]), exemplar_label=torch.zeros_like(cross["exemplar_label"]))
    res["zero_exemplar"] = _mean_psnr(run(zero), cross["image"])
    same = _stack(_samples(test, n, "same"))
    res["test_same_clip"] = _mean_psnr(run(same), same["image"])
    tr = _stack(_samples(train, n, "cross"))
    res["train_same_clip"] = _mean_psnr(run(tr), tr["photo"])
    tx = _stack(_samples(train_x, n, "cross"))
    f = run(tx)
    res["train_cross_clip_vs_gt"] = _mean_psnr(f, tx["image"])
    res["train_cross_clip_vs_own_photo"] = _mean_psnr(f, tx["photo"])
    res["references"] = references(opts, size, k, n)
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoints", nargs="+")
    ap.add_argument("--length", type=int, default=200)
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    rows = [diagnose(p, a.length) for p in a.checkpoints]
    text = json.dumps(rows, indent=1)
    print(text)
    if a.out:
        with open(a.out, "w") as fh:
            fh.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
