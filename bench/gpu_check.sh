#!/usr/bin/env bash
# One run on a GPU machine (H100/H200): build with the CUDA extension, record
# the ptxas report, run the whole test suite on CUDA, then the benchmark sweep.
# Everything lands in $1 (default bench/results/gpu-<date>), ready to commit.
#   usage: bash bench/gpu_check.sh [results_dir] [--quick]
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-bench/results/gpu-$(date +%Y%m%d)}
quick=${2:-}
mkdir -p "$out"
export PYTHONUNBUFFERED=1

{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)"
  nvcc --version | tail -2
} > "$out/device.txt" 2>&1

EXSYNTH_CUDA=1 pip install --no-build-isolation --no-deps -e . > "$out/install.log" 2>&1 \
  || { echo "install failed, see $out/install.log"; exit 1; }
bash bench/cuda_resources.sh "$out/ptxas.txt" > /dev/null 2>&1 || echo "ptxas report failed"
exsynth doctor > "$out/doctor.txt" 2>&1

# Whole suite; on a GPU the CUDA/Triton backends are tested against the reference too.
pytest -q tests 2>&1 | tee "$out/tests.log" | tail -5

sweep() { python -m bench "$@" 2>&1 | tee -a "$out/bench.log"; }
if [ "$quick" = "--quick" ]; then
  sweep correlation --dtype bfloat16 --hw 4096 --d 256 --cv 3 --out "$out/correlation-bf16.json"
else
  for dt in bfloat16 float16 float32; do
    sweep correlation --dtype "$dt" --hw 4096 16384 65536 --d 64 256 2304 --cv 3 151 \
      --budget 10 --out "$out/correlation-$dt.json"
  done
  sweep pn_modulate --dtype bfloat16 --out "$out/pn_modulate-bf16.json"
  sweep pn_modulate --dtype float32 --out "$out/pn_modulate-fp32.json"
  sweep msca --dtype bfloat16 --out "$out/msca-bf16.json"
  sweep msca --dtype float32 --out "$out/msca-fp32.json"
fi
echo "results in $out"
