"""One table of every trained model: `python -m bench models --runs runs/cocosnet64 runs/msca64 ...`

Trains nothing. For each run folder (RUN/checkpoints/latest.pt) or checkpoint file it scores
the generator on the same synthetic test split (same data seed, same samples, exact ground
truth): PSNR, SSIM, SWD, FID with --inception and the VGG metrics with --vgg; reads its size
(parameters) and training speed (seconds per step, from the checkpoint's own clock), and writes
bench/results/models.json, a PNG of the table and a grid of every model's outputs on the same
inputs (rows: samples; columns: input, exemplar, each model, the exact answer).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import List

import torch


def _checkpoint(path: str) -> Path:
    p = Path(path)
    if p.is_dir():
        p = p / "checkpoints" / "latest.pt"
    if not p.is_file():
        raise SystemExit(f"{path}: no checkpoint (expected a run folder with checkpoints/latest.pt, or a .pt file)")
    return p


def _table_png(rows: List[dict], columns, path: str) -> bool:
    from .plots import _pyplot
    plt = _pyplot()
    if plt is None:
        return False
    cells = [[_fmt(r.get(k)) for k, _ in columns] for r in rows]
    fig, ax = plt.subplots(figsize=(1.3 * len(columns), 0.45 * (len(rows) + 1) + 0.4))
    ax.axis("off")
    t = ax.table(cellText=cells, colLabels=[h for _, h in columns], loc="center")
    t.auto_set_font_size(False)
    t.set_fontsize(8)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return True


def _fmt(v):
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def main(argv=None) -> int:
    from exsynth.checkpoint import load_generator
    from exsynth.data import one_hot
    from exsynth.evaluate import evaluate
    from exsynth.imageio import colorize_label, tile_rows, write_image
    from exsynth.inference import synthesize
    from exsynth.metrics import MetricSuite
    from exsynth.nn import load_fid_inception, load_vgg19
    from exsynth.registry import data_source

    ap = argparse.ArgumentParser(prog="python -m bench models", description=__doc__.splitlines()[0])
    ap.add_argument("--runs", nargs="+", required=True, help="run folders or checkpoint files")
    ap.add_argument("--length", type=int, default=200)
    ap.add_argument("--data-seed", type=int, default=0)
    ap.add_argument("--inception", help="FID: pt_inception-2015-12-05 weights")
    ap.add_argument("--vgg", help="semantic consistency / style relevance: VGG19 weights")
    ap.add_argument("--grid", type=int, default=4, help="samples in the picture of outputs")
    ap.add_argument("--out", default=os.path.join("bench", "results", "models.json"))
    args = ap.parse_args(argv)

    inception = load_fid_inception(args.inception) if args.inception else None
    vgg = load_vgg19(args.vgg) if args.vgg else None
    loaded = [(run, *load_generator(_checkpoint(run), device="cpu")) for run in args.runs]
    sizes = {int((p.get("train_config") or {}).get("size", 64)) for _, _, p in loaded}
    if len(sizes) > 1:
        raise SystemExit(f"the models must share one size to be compared on one split, got {sorted(sizes)}")
    size = sizes.pop()

    def split_of(model, payload):
        """The model's own view (synthetic, or synthetic-edges for sketch-input models) of the
        one synthetic test split: same layouts, styles, exemplars and ground truth."""
        name = (payload.get("train_config") or {}).get("dataset") or "synthetic"
        src = data_source(name)
        if not (src.pairs and name.startswith("synthetic")):
            name, src = "synthetic", data_source("synthetic")
        return name, src.make("synthetic", size=size, num_classes=int(model.cfg.label_channels), split="test",
                              length=args.length, seed=args.data_seed)

    tests = [split_of(m, p) for _, m, p in loaded]
    first = tests[0][1][0]["image"]
    for (name, t), (run, _, _) in zip(tests, loaded):
        if not torch.equal(t[0]["image"], first):
            raise SystemExit(f"{run}: its test split ({name}) does not hold the same ground truth as the others")
    picture = tests[0][1]
    n_grid = min(args.grid, len(picture))
    label_pic = torch.stack([colorize_label(one_hot(picture[i]["label_index"].numpy(), int(picture.num_classes)))
                             for i in range(n_grid)])
    ex = torch.stack([picture[i]["exemplar"] for i in range(n_grid)])
    truth = torch.stack([picture[i]["image"] for i in range(n_grid)])
    rows, fakes, names = [], [], []
    for (run, model, payload), (source, test) in zip(loaded, tests):
        tc = payload.get("train_config") or {}
        suite = MetricSuite(inception=inception, vgg=vgg, seed=args.data_seed)
        t0 = time.perf_counter()
        res = evaluate(model, test, batch_size=16, suite=suite, blind=bool(tc.get("blind", False)))
        scores = suite.compute()
        step = int(payload.get("step") or 0)
        secs = float(payload.get("train_seconds") or 0.0)
        row = dict(run=str(run), model=payload["model"], input=source, steps=step,
                   params_m=round(sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6, 2),
                   s_per_step=round(secs / step, 3) if step else None,
                   psnr=res["model"]["psnr"], ssim=res["model"]["ssim"],
                   warped_psnr=res.get("warped", {}).get("psnr"), swd=scores.get("swd"), fid=scores.get("fid"),
                   semantic_consistency=scores.get("semantic_consistency"),
                   style_color=scores.get("style_color"), style_texture=scores.get("style_texture"),
                   eval_seconds=round(time.perf_counter() - t0, 1))
        rows.append(row)
        print(json.dumps(row), flush=True)
        items = [test[i] for i in range(n_grid)]
        lab, exl = (torch.stack([it[k] for it in items]) for k in ("label", "exemplar_label"))
        fakes.append(synthesize(model, lab, ex, exl, warped=False)["fake"])
        names.append(payload["model"])
    columns = [("model", "model"), ("input", "input"), ("steps", "steps"), ("params_m", "params M"), ("s_per_step", "s/step"),
               ("psnr", "PSNR dB"), ("ssim", "SSIM"), ("warped_psnr", "warped PSNR"), ("swd", "SWD"),
               ("fid", "FID"), ("semantic_consistency", "sem. cons."), ("style_color", "style col."),
               ("style_texture", "style tex.")]
    print()
    print("  ".join(f"{h:>11}" for _, h in columns))
    for r in rows:
        print("  ".join(f"{_fmt(r.get(k)):>11}" for k, _ in columns))
    skipped = [] if inception else ["FID: no --inception"]
    skipped += [] if vgg else ["semantic consistency / style relevance: no --vgg"]
    if skipped:
        print("skipped: " + "; ".join(skipped))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    env = dict(python=platform.python_version(), torch=torch.__version__, threads=torch.get_num_threads(),
               cpu=platform.processor() or platform.machine())
    out.write_text(json.dumps(dict(command="python -m bench models " + " ".join(argv if argv is not None
                                                                                 else sys.argv[2:]),
                                   split=dict(source="synthetic (each model's view)", split="test", length=args.length,
                                              data_seed=args.data_seed),
                                   environment=env, skipped=skipped, results=rows), indent=2) + "\n")
    print(f"# wrote {out}")
    if _table_png(rows, columns, str(out.with_suffix(".png"))):
        print(f"# wrote {out.with_suffix('.png')}")
    grid = tile_rows([label_pic, ex, *fakes, truth])
    write_image(grid, out.with_name(out.stem + "_outputs.png"))
    print(f"# wrote {out.with_name(out.stem + '_outputs.png')} (columns: input, exemplar, "
          + ", ".join(names) + ", exact answer)")
    return 0
