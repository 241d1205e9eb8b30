#!/usr/bin/env bash
# Issue 5 acceptance: each model trains for at most 10 minutes on this CPU at 64 px on the
# synthetic set, then is scored on 200 held-out test samples against the exact ground truth
# and the exemplar-blind baselines. Logs and JSON land in bench/results/train/.
# Usage: bash bench/train_acceptance.sh [minutes]   (run on an otherwise idle machine)
set -euo pipefail
MIN=${1:-10}
RES=bench/results/train
RUNS=${RUNS:-runs}
mkdir -p "$RES"
for m in cocosnet msca; do
  exsynth train --preset ${m}-cpu64 --max-minutes "$MIN" --out "$RUNS/${m}64" \
    2> "$RES/${m}64_train.log" | tee "$RES/${m}64_summary.json"
  exsynth eval --checkpoint "$RUNS/${m}64/checkpoints/latest.pt" --length 200 \
    --json "$RES/${m}64_eval.json" | tee "$RES/${m}64_eval.txt"
done
python - "$RES" <<'PY'
import json, platform, sys, torch
res = sys.argv[1]
env = dict(python=platform.python_version(), torch=torch.__version__, threads=torch.get_num_threads(),
           cpu=platform.processor() or platform.machine())
json.dump(env, open(f"{res}/environment.json", "w"), indent=2)
PY
