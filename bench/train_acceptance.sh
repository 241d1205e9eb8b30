#!/usr/bin/env bash
# Each model's CPU preset trains for at most 10 minutes on this CPU at 64 px on the synthetic
# set (its own view: class maps, or class boundaries for SEGIN), then is scored on 200 held-out
# test samples against the exact ground truth and the exemplar-blind baselines; then one table
# of every run (python -m bench models). Logs and JSON land in bench/results/train/.
# Usage: [MODELS="cocosnet msca segin"] bash bench/train_acceptance.sh [minutes]
#        (run on an otherwise idle machine)
set -euo pipefail
MIN=${1:-10}
RES=bench/results/train
RUNS=${RUNS:-runs}
mkdir -p "$RES"
MODELS=${MODELS:-"cocosnet msca segin"}
for m in $MODELS; do
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
runs=""
for m in cocosnet msca segin; do
  if [ -f "$RUNS/${m}64/checkpoints/latest.pt" ]; then runs="$runs $RUNS/${m}64"; fi
done
python -m bench models --runs $runs --out bench/results/models.json | tee "$RES/models.txt"
