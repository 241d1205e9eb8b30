"""One training step of a paper preset at full size on this CPU: seconds per step, peak RSS
and the largest tensor any op makes (forward, backward, optimiser), each backend in a fresh
process. `python -m bench.preset_step [--preset cocosnet-ade20k] [--size 256] [--steps 3]
[--backends cpu reference] [--out FILE.json]`.

The data is a generated ADE20k layout (ADEChallengeData2016, 151 classes, pair lists) of
300 x 300 scenes, resized and cropped by the preset's own loader; the VGG19 is random-init
(the same cost as ImageNet weights). "reference" runs the correlation through the plain
PyTorch oracle (the HW x HW matrix materialised): the anchor of the same run.

Largest tensor: a TorchDispatchMode sees the output of every aten and exsynth op during one
more step (after the timed ones) and keeps the biggest; scratch memory inside a C++ kernel is
not a tensor and is not seen (the CPU correlation kernels' tiles are bounded by their tiling)."""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, sys, time, warnings
import numpy as np, torch
from torch.utils._python_dispatch import TorchDispatchMode
from exsynth.imageio import write_image, write_label
from exsynth.registry import DrawIndex
from exsynth.train import PRESETS, TrainConfig, Trainer
from exsynth.train.trainer import _collate

preset, size, steps, backend, root = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]

def rss(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024

rng = np.random.default_rng(0)
from pathlib import Path
base = Path(root) / "ADEChallengeData2016"
names = []
for i in range(steps + 1):
    lab = np.zeros((300, 300), np.int64)
    for _ in range(12):
        y, x, h, w = rng.integers(0, 260, 2).tolist() + rng.integers(20, 160, 2).tolist()
        lab[y:y + h, x:x + w] = int(rng.integers(1, 151))
    img = np.zeros((3, 300, 300), np.float32)
    for c in np.unique(lab):
        img[:, lab == c] = rng.uniform(-1, 1, (3, 1))
    img += rng.normal(0, 0.1, img.shape).astype(np.float32)
    name = f"ADE_train_{i + 1:08d}"
    write_image(torch.from_numpy(img.clip(-1, 1)), base / "images" / "training" / f"{name}.jpg")
    write_label(torch.from_numpy(lab), base / "annotations" / "training" / f"{name}.png")
    names.append(name + ".jpg")
(Path(root) / "ade20k_ref.txt").write_text("".join(f"{n},{names[(i + 1) % len(names)]},{names[(i + 2) % len(names)]}\n"
                                                   for i, n in enumerate(names)))

d = dict(PRESETS[preset])
opts = dict(d.get("model_options", {}), backend=backend)
d.update(data=root, size=size, batch_size=1, epochs=None, steps=steps + 1, allow_random_vgg=True,
         out=str(Path(root) / "run"), model_options=opts, log_every=1, checkpoint_every=10 ** 6, image_every=10 ** 6)
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    tr = Trainer(TrainConfig(**d), quiet=True)
params = sum(p.numel() for p in tr.model.parameters())
d_params = sum(p.numel() for d in tr.discriminators.values() for p in d.parameters())
batches = [_collate([tr.dataset[DrawIndex(i, i)]]) for i in range(steps + 1)]
rss_built = rss("VmRSS")
times = []
for i in range(steps):
    t = time.perf_counter()
    tr.train_step(batches[i])
    times.append(time.perf_counter() - t)

class Largest(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.bytes, self.what = 0, None
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        ins = {t.untyped_storage().data_ptr() for t in torch.utils._pytree.tree_leaves((args, kwargs))
               if isinstance(t, torch.Tensor)}
        for t in (out if isinstance(out, (tuple, list)) else [out]):
            if not isinstance(t, torch.Tensor) or t.untyped_storage().data_ptr() in ins:
                continue   # a view or an in-place result: no new memory
            if t.numel() * t.element_size() > self.bytes:
                self.bytes, self.what = t.numel() * t.element_size(), f"{func} {tuple(t.shape)} {t.dtype}"
        return out

with Largest() as seen:
    tr.train_step(batches[steps])
print(json.dumps(dict(preset=preset, size=size, batch=1, backend=backend, threads=torch.get_num_threads(),
                      generator_params=params, discriminator_params=d_params,
                      step_seconds=[round(t, 2) for t in times],
                      mean_step_seconds_after_first=round(sum(times[1:]) / max(len(times) - 1, 1), 2),
                      rss_after_build_mib=round(rss_built), peak_rss_mib=round(rss("VmHWM")),
                      largest_tensor_mib=round(seen.bytes / 2 ** 20, 1), largest_tensor=seen.what)))
"""


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="cocosnet-ade20k")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=3, help="timed steps (the first is reported apart)")
    ap.add_argument("--backends", nargs="*", default=["cpu", "reference"])
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    import torch
    rows = []
    for backend in args.backends:
        with tempfile.TemporaryDirectory() as root:
            res = subprocess.run([sys.executable, "-c", CHILD, args.preset, str(args.size), str(args.steps), backend,
                                  root], capture_output=True, text=True)
        if res.returncode:
            rows.append(dict(backend=backend, error=res.stderr.strip().splitlines()[-1:]))
        else:
            rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    ok = {r["backend"]: r for r in rows if "error" not in r}
    if "cpu" in ok and "reference" in ok:
        ratios = dict(step_time_reference_over_cpu=round(ok["reference"]["mean_step_seconds_after_first"]
                                                         / ok["cpu"]["mean_step_seconds_after_first"], 2),
                      peak_rss_reference_over_cpu=round(ok["reference"]["peak_rss_mib"] / ok["cpu"]["peak_rss_mib"], 2))
        print(json.dumps(ratios))
    else:
        ratios = {}
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(dict(
            rows=rows, ratios=ratios,
            setup=dict(command="python -m bench.preset_step " + " ".join(argv if argv is not None else sys.argv[1:]),
                       torch=torch.__version__, python=platform.python_version(), machine=platform.machine(),
                       cpu=platform.processor() or platform.machine())), indent=2) + "\n")


if __name__ == "__main__":
    main()
