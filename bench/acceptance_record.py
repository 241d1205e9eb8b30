"""One committed record of an acceptance run: its training (the resolved config, the last
metrics line, training seconds, the command) and its `exsynth eval --json` record, plus the
last image grid beside it.

    python bench/acceptance_record.py RUN_DIR EVAL_JSON NAME [--command "exsynth train ..."]

writes bench/results/cpu/acceptance_NAME.json and acceptance_NAME.png.
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
from pathlib import Path

import torch


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path)
    p.add_argument("eval_json", type=Path)
    p.add_argument("name")
    p.add_argument("--command", help="the training command, as run")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "cpu")
    args = p.parse_args(argv)
    lines = [json.loads(l) for l in (args.run / "metrics.jsonl").read_text().splitlines() if l.strip()]
    record = dict(
        name=args.name, train_command=args.command, train_config=json.loads((args.run / "config.json").read_text()),
        train_seconds=lines[-1]["seconds"], last_metrics=lines[-1],
        eval=json.loads(args.eval_json.read_text()),
        machine=dict(cpu=platform.processor() or platform.machine(), threads=torch.get_num_threads(),
                     torch=torch.__version__))
    args.out.mkdir(parents=True, exist_ok=True)
    dst = args.out / f"acceptance_{args.name}.json"
    dst.write_text(json.dumps(record, indent=1) + "\n")
    grids = sorted((args.run / "samples").glob("step_*.png"))
    if grids:
        shutil.copyfile(grids[-1], args.out / f"acceptance_{args.name}.png")
    print(dst)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
