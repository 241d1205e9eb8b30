"""Can EGSC-IT's region segmenter S name synthetic-domains' classes without labels?
`python -m bench.domains_segmenter [--steps N] [--region-input texture] [--class-textures]`

Trains S alone (the model's `_segmenter` and `_init_segmenter`) by the loss that trains it inside the model,
region_recon: each image of both domains rebuilt from its own soft regions' mean colours. Then,
on the test pairs `exsynth eval` scores, paints A's regions with x_B's region colours (the map
region_style hands G) and scores it against GT_AB: the PSNR a model's painted map reaches, beside
`bench.domains_oracles`' exemplar-blind class means and the label-reading correspondence oracle.
Also the regions' class purity: over the test set, per domain, the share of pixels whose
region's majority class is their class; and whether each region's majority class is the same in
both domains.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import torch
import torch.nn.functional as F
from exsynth.data.synthetic_domains import SyntheticDomainsDataset, SyntheticDomainsOptions
from exsynth.metrics import psnr
from exsynth.models.egscit import EGSCITConfig, _init_segmenter, _segmenter
from exsynth.nn.blocks import region_style_map

from .common import environment


def _batch(ds, idx):
    items = [ds[int(i)] for i in idx]
    return {k: torch.stack([it[k] for it in items]) for k in ("label", "exemplar", "image", "label_index")}


def evaluate(seg, test, n):
    seg.eval()
    with torch.no_grad():
        b = _batch(test, range(n))
        sa, sb = seg(b["label"]), seg(b["exemplar"])
        painted = region_style_map(sa, b["exemplar"], sb, "mean")[:, :3]
        score = float(psnr(painted, b["image"]).mean())
        # purity: each domain's regions against its classes (x_A's layout is GT_AB's)
        lab_b = torch.stack([torch.from_numpy(test.base.layouts(i)[1]) for i in range(n)])
        k = test.num_classes
        joints = []
        for s, lab in ((sa, b["label_index"]), (sb, lab_b)):
            hard = s.argmax(1)
            joint = torch.zeros(s.shape[1], k)
            joint.index_put_((hard.flatten(), lab.flatten()), torch.ones(hard.numel()), accumulate=True)
            joints.append(joint)
        purity = [float(j.max(1).values.sum() / j.sum()) for j in joints]
        # do a region's majority classes agree across the domains?
        agree = float((joints[0].argmax(1) == joints[1].argmax(1)).float().mean())
    seg.train()
    return score, purity + [agree], joints


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--betas", type=float, nargs=2, default=[0.9, 0.999],
                   help="Adam's (the model's optimisers: 0.5 0.999)")
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--classes", type=int, default=5)
    p.add_argument("--class-textures", action="store_true")
    p.add_argument("--region-input", default="texture")
    p.add_argument("--dilations", type=int, nargs="*", default=[1, 2, 4])
    p.add_argument("--seg-width", type=int, default=1)
    p.add_argument("--regions", type=int, help="S's regions (default: --classes)")
    p.add_argument("--seed", type=int, default=0, help="S's init and the batches' draws")
    p.add_argument("--test", type=int, default=200)
    p.add_argument("--every", type=int, default=100)
    p.add_argument("--checkpoint", help="score the S of a trained EGSC-IT checkpoint instead (no training)")
    p.add_argument("--out")
    a = p.parse_args(argv)
    torch.manual_seed(a.seed)
    model = None
    if a.checkpoint:     # scored on the data it was trained on, whatever --classes says
        from exsynth.checkpoint import load_generator
        model, payload = load_generator(a.checkpoint)
        opts = SyntheticDomainsOptions(**(payload.get("train_config", {}).get("data_options") or {}))
        a.classes, a.class_textures = opts.classes, opts.class_textures
    else:
        opts = SyntheticDomainsOptions(classes=a.classes, class_textures=a.class_textures)
    test = SyntheticDomainsDataset(64, length=a.test, split="test", options=opts)
    if model is not None:
        score, (pa, pb, agree), joints = evaluate(model.segmenter, test, a.test)
        print(dict(painted_psnr=round(score, 2), purity_a=round(pa, 3), purity_b=round(pb, 3), agree=agree))
        return 0
    train = SyntheticDomainsDataset(64, length=2000, split="train", options=opts)
    cfg = EGSCITConfig(width=a.width, region_style="mean", regions=a.regions or a.classes, region_input=a.region_input,
                       segmenter_dilations=tuple(a.dilations), segmenter_width=a.seg_width)
    seg = _segmenter(cfg)
    _init_segmenter(seg)
    opt = torch.optim.Adam(seg.parameters(), lr=a.lr, betas=tuple(a.betas))
    g = torch.Generator().manual_seed(a.seed)
    log, t0 = [], time.time()
    for step in range(1, a.steps + 1):
        b = _batch(train, torch.randint(0, len(train), (a.batch,), generator=g))
        loss = 0.0
        for x in (b["label"], b["exemplar"]):
            r = seg(x)
            loss = loss + F.l1_loss(region_style_map(r, x, r, "mean")[:, :3], x)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % a.every == 0 or step == a.steps:
            score, purity, joints = evaluate(seg, test, a.test)
            log.append(dict(step=step, loss=round(float(loss.detach()), 4), painted_psnr=round(score, 2),
                            purity_a=round(purity[0], 3), purity_b=round(purity[1], 3), agree=purity[2],
                            seconds=round(time.time() - t0, 1)))
            print(log[-1], flush=True)
    for d, j in zip("AB", joints):
        print(f"{d}'s regions (rows) by class (columns), pixels:\n", j.long())
    if a.out:
        cmd = " ".join(["python -m bench.domains_segmenter"] + (argv or sys.argv[1:]))
        with open(a.out, "w") as f:
            json.dump(dict(command=cmd, environment=environment(torch.device("cpu")), args=vars(a), log=log,
                           joints=[j.long().tolist() for j in joints]), f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
