"""What a model that cannot tell which exemplar colour belongs to which input region can reach on
the synthetic test split: `python -m bench.class_blind_bound [--size 64] [--classes 6]
[--length 200] [--out FILE.json]`.

Every synthetic sample draws a fresh style (a colour and texture per class) and an exemplar of
another layout, so a model that cannot pair the input's regions with the exemplar's by class
(SEGIN on the edge view: the input shows no classes, the exemplar no labels) cannot know which
of the exemplar's class appearances goes where. (pix2pixSC is not bound by it: its F(I) is the
exemplar's label map, and it sees the input's.) Under a uniform prior over the classes the exemplar shows, its best estimate in
mean squared error is, per pixel, the mean over those classes of the style's texture there
(the textures are known exactly here, which no model has). Its PSNR bounds such a model's
expected score from above, up to what region shapes and sizes give away (classes are drawn
independently of shape kind and size, and each layout draws its own background class); it is
printed beside the label-aware class-means baseline fitted on the same samples."""
from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import numpy as np
import torch

from exsynth.data.synthetic import SyntheticExemplarDataset, render
from exsynth.metrics.image import psnr


def bound(size: int, classes: int, length: int, seed: int = 0) -> dict:
    ds = SyntheticExemplarDataset(size, num_classes=classes, length=length, split="test", seed=seed)
    sums, counts = torch.zeros(classes, 3, dtype=torch.float64), torch.zeros(classes, dtype=torch.float64)
    samples, blind = [], []
    for i in range(length):
        s, style = ds.generate(i), ds.style(i)
        shown = np.unique(s["exemplar_label_index"].numpy())
        hw = tuple(s["label_index"].shape)
        guess = torch.stack([render(np.full(hw, c, np.int64), style) for c in shown]).mean(0)
        blind.append(float(psnr(guess[None], s["image"][None])))
        samples.append((s["image"], s["label_index"]))
        for c in range(classes):
            m = s["label_index"] == c
            sums[c] += s["image"][:, m].double().sum(1)
            counts[c] += m.sum()
    means = (sums / counts.clamp_min(1)[:, None]).float()
    label_aware = [float(psnr(means[lab].permute(2, 0, 1)[None], img[None])) for img, lab in samples]
    return dict(size=size, classes=classes, samples=length, seed=seed,
                class_blind_bayes_psnr=round(float(np.mean(blind)), 2),
                class_means_psnr=round(float(np.mean(label_aware)), 2),
                goal_psnr_class_means_plus_6=round(float(np.mean(label_aware)) + 6, 2))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--classes", type=int, default=6)
    ap.add_argument("--length", type=int, default=200)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    res = bound(args.size, args.classes, args.length)
    res["setup"] = dict(command="python -m bench.class_blind_bound " + " ".join(argv if argv is not None else sys.argv[1:]),
                        torch=torch.__version__, python=platform.python_version())
    print(json.dumps(res, indent=2))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
