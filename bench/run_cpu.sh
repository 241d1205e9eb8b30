#!/usr/bin/env bash
# The CPU sweeps whose results are committed under bench/results/cpu/.
# Sizes are cut to what a 2-core, 24 GiB machine runs in ~25 minutes: the
# 16384-position correlation runs D = 64 and 256 only (D = 2304 there takes
# minutes per call for every anchor), pn_modulate/msca tensors up to 128 MiB.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-bench/results/cpu}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
python -m bench correlation --hw 1024 4096 --d 64 256 2304 --cv 3 151 \
  --out "$out/correlation.json" 2>&1 | tee "$out/correlation.log"
python -m bench correlation --hw 16384 --d 64 256 --cv 3 --rounds 3 \
  --out "$out/correlation-16384.json" 2>&1 | tee "$out/correlation-16384.log"
python -m bench pn_modulate --c 64 256 1024 --side 32 64 128 --max-tensor-mib 128 \
  --out "$out/pn_modulate.json" 2>&1 | tee "$out/pn_modulate.log"
python -m bench msca --n 64 256 512 --k 8 16 --side 16 32 64 --max-tensor-mib 128 \
  --out "$out/msca.json" 2>&1 | tee "$out/msca.log"
