"""`python -m bench video`: frame pairs per second, DALI (`--dataset video`) against plain PyAV.

Both readers decode the same generated clips (VP9, keyframes every 15 frames, written here with
PyAV from the synthetic video set) and produce the same samples: frame t and t' (|t - t'| <= T)
of one clip, a frame of another, their exact labels, at 64x64 and 256x256. Each case runs the
two readers alternately, `--rounds` times, through a torch DataLoader of batch 8 the way the
trainer reads: DALI in the main process with 1 or 2 decoding threads, PyAV with 1 or 2 worker
processes. pairs/s = samples after the first batch / the time they took (pipeline build and
worker start-up excluded); the median round is reported. Goal: DALI >= PyAV on the CPU.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from . import common

__all__ = ["main", "run"]


def _collate(samples):
    return {k: torch.stack([s[k] for s in samples]) if isinstance(samples[0][k], torch.Tensor)
            else [s[k] for s in samples] for k in samples[0]}


def _pairs_per_s(make, batch: int, pairs: int, workers: int) -> float:
    ds = make(length=pairs + batch)
    loader = DataLoader(ds, batch_size=batch, num_workers=workers, collate_fn=_collate)
    it = iter(loader)
    next(it)  # warm-up: pipeline build / worker start, first decodes
    t0, n = time.perf_counter(), 0
    for b in it:
        n += len(b["clip"])
    return n / (time.perf_counter() - t0)


def run(args) -> dict:
    from exsynth.video.dali_reader import DaliVideoPairs
    from exsynth.video.pyav_reader import PyAVVideoPairs
    from exsynth.video.writer import write_synthetic_videos

    env = common.environment(torch.device("cpu"))
    import av
    import nvidia.dali
    env.update(dali=nvidia.dali.__version__, av=av.__version__, cores=os.cpu_count(), load_before=os.getloadavg())
    tmp = tempfile.TemporaryDirectory(prefix="bench-video-")
    root = Path(args.data or tmp.name)
    if not (root / "videos").is_dir():
        t0 = time.perf_counter()
        write_synthetic_videos(root, clips=args.clips, frames=args.frames, size=args.source_size,
                               num_classes=args.classes, seed=0, codec=args.codec)
        print(f"# wrote {args.clips} {args.codec} clips of {args.frames} frames at {args.source_size}px "
              f"({time.perf_counter() - t0:.1f} s)", file=sys.stderr)
    common_kw = dict(num_classes=args.classes, window=args.window)
    rows = []
    for size in args.sizes:
        for workers in args.workers:
            makers = {
                "dali": lambda length, s=size, w=workers: DaliVideoPairs(root, size=s, threads=w, batch_size=args.batch,
                                                                         length=length, **common_kw),
                "pyav": lambda length, s=size: PyAVVideoPairs(root, size=s, length=length, **common_kw),
            }
            # DALI's parallelism two ways: decoding threads in one process, or DataLoader worker
            # processes with one thread each (as PyAV gets); the row reports the faster
            makers["dali_procs"] = lambda length, s=size: DaliVideoPairs(root, size=s, threads=1, batch_size=args.batch,
                                                                         length=length, **common_kw)
            rates = {"dali": [], "pyav": [], "dali_procs": []}
            for _ in range(args.rounds):  # interleaved: a load change hits both readers alike
                rates["dali"].append(_pairs_per_s(makers["dali"], args.batch, args.pairs, 0))
                rates["pyav"].append(_pairs_per_s(makers["pyav"], args.batch, args.pairs, workers))
                if workers > 1:
                    rates["dali_procs"].append(_pairs_per_s(makers["dali_procs"], args.batch, args.pairs, workers))
            med = {k: statistics.median(v) for k, v in rates.items() if v}
            best = max(("dali", "dali_procs"), key=lambda k: med.get(k, 0.0))
            row = dict(size=size, workers=workers, pairs=args.pairs, dali_pairs_per_s=round(med[best], 1),
                       dali_parallelism="threads" if best == "dali" else "worker processes",
                       dali_threads_pairs_per_s=round(med["dali"], 1),
                       dali_worker_processes_pairs_per_s=round(med["dali_procs"], 1) if "dali_procs" in med else None,
                       pyav_pairs_per_s=round(med["pyav"], 1), ratio=round(med[best] / med["pyav"], 3),
                       dali_rounds=[round(r, 1) for r in rates[best]],
                       pyav_rounds=[round(r, 1) for r in rates["pyav"]])
            row["goal_met"] = row["ratio"] >= 1.0
            rows.append(row)
            print(f"{size:>4}px  {workers} worker(s)/thread(s): DALI {row['dali_pairs_per_s']:7.1f} pairs/s "
                  f"({row['dali_parallelism']})  "
                  f"PyAV {row['pyav_pairs_per_s']:7.1f} pairs/s  ratio {row['ratio']:.2f}  "
                  f"{'met' if row['goal_met'] else 'NOT met'}", flush=True)
    env["load_after"] = os.getloadavg()
    env["notes"] = ("shared 2-core CPU machine: another process may be running (load averages before/after); "
                    "rates are ratios within one interleaved run, not absolute figures. DALI: "
                    "fn.experimental.readers.video on the CPU (device_id=None), `workers` decoding threads in the main "
                    "process, or (workers > 1) `workers` DataLoader processes of 1 thread each, the faster reported; "
                    "PyAV: DataLoader worker processes = workers.")
    met = all(r["goal_met"] for r in rows)
    summary = dict(goal="DALI pairs/s >= PyAV pairs/s in every case", goal_met=met,
                   clips=args.clips, frames=args.frames, source_size=args.source_size, codec=args.codec,
                   window=args.window, batch=args.batch, rounds=args.rounds)
    common.write_json(args.out, env, rows)
    import json
    rec = json.loads(Path(args.out).read_text())
    rec["summary"] = summary
    Path(args.out).write_text(json.dumps(rec, indent=1) + "\n")
    print(f"# goal DALI >= PyAV in every case: {'met' if met else 'NOT met'} (met in "
          f"{sum(r['goal_met'] for r in rows)} of {len(rows)} cases) -> {args.out}")
    png = _plot(rows, args.out)
    if png:
        print(f"# plot: {png}")
    tmp.cleanup()
    return rec


def _plot(rows, json_path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    labels = [f"{r['size']}px\n{r['workers']}w" for r in rows]
    x = range(len(rows))
    fig, ax = plt.subplots(figsize=(1.6 * len(rows) + 2, 3.2))
    ax.bar([i - 0.2 for i in x], [r["dali_pairs_per_s"] for r in rows], 0.4, label="DALI (CPU)")
    ax.bar([i + 0.2 for i in x], [r["pyav_pairs_per_s"] for r in rows], 0.4, label="PyAV")
    ax.set_xticks(list(x), labels)
    ax.set_ylabel("pairs / s")
    ax.set_title("video frame pairs (t, t', other clip's frame, labels)")
    ax.legend()
    fig.tight_layout()
    png = os.path.splitext(json_path)[0] + ".png"
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench video", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="an existing clip folder (ROOT/videos, ROOT/labels); default: generated")
    p.add_argument("--clips", type=int, default=8)
    p.add_argument("--frames", type=int, default=30)
    p.add_argument("--source-size", type=int, default=256, help="side of the generated clips")
    p.add_argument("--classes", type=int, default=6)
    p.add_argument("--codec", default="vp9", choices=("vp9", "vp8", "mjpeg"))
    p.add_argument("--window", type=int, default=10)
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 256])
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--pairs", type=int, default=320,
                   help="timed pairs per reader, case and round (enough that worker start-up is not what is timed)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "cpu", "video.json"))
    args = p.parse_args(argv)
    run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
