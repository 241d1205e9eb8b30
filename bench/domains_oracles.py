"""What an unpaired model can reach on `synthetic-domains` (the egscit-cpu64 task):
`python -m bench.domains_oracles [--size 64] [--length 200] [--out FILE.json]`.

In domain B every class gets a random style and every layout a random background class and
random shape classes, all drawn the same way for each class; so nothing in x_B says which of its
regions is class k. An unpaired model reads x_A (classes known from the palette) and x_B
(classes unknown): its best guess for A's class-k region is the same for every k. PSNR against
GT_AB on the split `exsynth eval` scores (test, seed 0), for outputs built from the data's
own labels:

- class_mean: the exemplar-blind baseline of `exsynth eval` (per-class mean colours of the
  training split);
- exemplar_mean: x_B's mean colour everywhere;
- exchangeable: every pixel the uniform mean of x_B's per-class mean colours (the posterior mean
  of a region's colour when the classes of x_B cannot be told apart; x_B's layout is read here
  only to find its regions);
- correspondence: A's class-k region painted with x_B's class-k mean colour (needs x_B's class
  labels, which an unpaired model never sees: what the +6 dB goal asks for).

(Making B's classes visible, e.g. drawing class k's colour from its own hue sector, does not
make the task identifiable for unpaired training: the losses cannot tell the GT's pairing of A's
class k with B's class k from any other permutation. Class identity would have to show in the
layouts of both domains.)
"""
from __future__ import annotations

import argparse
import json
import sys

import torch

from exsynth.data.synthetic_domains import SyntheticDomainsDataset, SyntheticDomainsOptions
from exsynth.evaluate import class_mean_colours
from exsynth.metrics import psnr

from .common import environment


def oracles(size: int = 64, length: int = 200, seed: int = 0, options: SyntheticDomainsOptions = None):
    test = SyntheticDomainsDataset(size, length=length, split="test", seed=seed, options=options)
    means = class_mean_colours(SyntheticDomainsDataset(size, length=2000, split="train", seed=seed, options=options))
    scores = {k: [] for k in ("class_mean", "exemplar_mean", "exchangeable", "correspondence")}
    for i in range(length):
        s = test[i]
        gt, xb = s["image"], s["exemplar"]
        la, lb = s["label_index"], test.base[i]["exemplar_label_index"]
        present = torch.unique(lb)
        colour = {int(k): xb[:, lb == k].mean(1) for k in present}
        outs = dict(
            class_mean=means[la].permute(2, 0, 1),
            exemplar_mean=xb.mean((1, 2), keepdim=True).expand_as(gt),
            exchangeable=torch.stack(list(colour.values())).mean(0)[:, None, None].expand_as(gt),
            correspondence=torch.stack([colour[int(k)] for k in la.flatten()], 1).view_as(gt),
        )
        for k, v in outs.items():
            scores[k].append(float(psnr(v[None].float(), gt[None].float())))
    return {k: sum(v) / len(v) for k, v in scores.items()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--length", type=int, default=200)
    p.add_argument("--classes", type=int, default=SyntheticDomainsOptions.classes)
    p.add_argument("--class-textures", action="store_true", help="the source's class_textures option")
    p.add_argument("--out")
    a = p.parse_args(argv)
    res = oracles(a.size, a.length, options=SyntheticDomainsOptions(classes=a.classes, class_textures=a.class_textures))
    for k, v in res.items():
        print(f"{k:16s} {v:6.2f} dB  ({v - res['class_mean']:+.2f} over class_mean)")
    if a.out:
        with open(a.out, "w") as f:
            cmd = " ".join(["python -m bench.domains_oracles"] + (argv or sys.argv[1:]))
            env = {**environment(torch.device("cpu")), "command": cmd}
            json.dump(dict(command=cmd, environment=env, size=a.size, length=a.length, classes=a.classes,
                           class_textures=a.class_textures, psnr=res), f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
