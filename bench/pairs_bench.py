"""`exsynth pairs` over N generated 64x64 images (a folder layout): images/s and peak RSS.

    python bench/pairs_bench.py --n 10000 --work /tmp/pairs_bench   # writes bench/results/cpu/pairs.json

The images are the synthetic set's renderings (no two alike); the VGG19 is random-init (no
weights may be downloaded here), which costs the same as a trained one.
"""
import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

ap = argparse.ArgumentParser()
ap.add_argument("--n", type=int, default=10000)
ap.add_argument("--work", default="/tmp/pairs_bench")
ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "cpu" / "pairs.json"))
args = ap.parse_args()

from exsynth.data import SyntheticExemplarDataset  # noqa: E402
from exsynth.imageio import write_image, write_label  # noqa: E402

root = Path(args.work) / "data"
if not (root / "images").is_dir() or len(list((root / "images").iterdir())) != args.n:
    ds = SyntheticExemplarDataset(64, num_classes=6, length=args.n, split="train")
    for i in range(args.n):
        s = ds[i]
        write_image(s["image"], root / "images" / f"{i:05d}.png")
        write_label(s["label_index"], root / "labels" / f"{i:05d}.png")
cmd = [sys.executable, "-m", "exsynth", "pairs", "--dataset", "folder", "--data", str(root), "--out",
       str(Path(args.work) / "pairs.txt"), "--size", "64", "--batch-size", "64", "--top-k", "10", "--overwrite",
       "--quiet"]
t0 = time.perf_counter()
r = subprocess.run(cmd, capture_output=True, text=True, cwd="/")
wall = time.perf_counter() - t0
peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
assert r.returncode == 0, r.stderr[-2000:]
res = dict(command=" ".join(cmd), images=args.n, wall_s=round(wall, 1), images_per_s=round(args.n / wall, 1),
           peak_rss_mib=round(peak_kb / 1024, 1), torch=torch.__version__, threads=torch.get_num_threads(),
           cpu=platform.processor() or platform.machine(), output=r.stdout.strip())
Path(args.out).parent.mkdir(parents=True, exist_ok=True)
Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
print(json.dumps(res, indent=2))
