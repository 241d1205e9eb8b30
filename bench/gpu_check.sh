#!/usr/bin/env bash
# One run on a GPU machine (H100/H200), sized for a 15-minute lease: build with the CUDA
# extension (sm_90 only unless EXSYNTH_CUDA_ARCHS says otherwise), the GPU tests (each file
# in its own process with a per-test timeout, so one sticky CUDA error stays in its file),
# a CUDA training smoke, then the benchmark sweep of issue 17. Everything lands in one folder,
# packed as gpu.tar.gz beside it (the device tool brings back 8 files at most).
#   usage: bash bench/gpu_check.sh [results_dir] [--quick|--tests|--bench|--rerun|--next]
#   --next: what bench/NOTES.md "First GPU run" asks of the next run (up to ~10 min after the
#   build: give it the whole 600 s a call allows; whatever ran is packed even if it is killed).
set -uo pipefail
cd "$(dirname "$0")/.."
# Under the device tool, results go to /tmp and only the packed archive to $OUT.
out=${1:-${OUT:+/tmp/exsynth-gpu}}
out=${out:-bench/results/gpu-$(date +%Y%m%d)}
pack=${OUT:+$OUT/gpu.tar.gz}
pack=${pack:-$out.tar.gz}
what=${2:-all}
case "$what" in all|--quick|--tests|--bench|--rerun|--next) ;;
  *) echo "gpu_check.sh: unknown mode '$what' (all, --quick, --tests, --bench, --rerun, --next)" >&2; exit 2;; esac
mkdir -p "$out"
# Pack on any exit (a run killed at the device tool's limit still brings back what it wrote).
trap 'rm -f "$out"/*.png; tar -czf "$pack" -C "$(dirname "$out")" "$(basename "$out")"' EXIT
export PYTHONUNBUFFERED=1
t0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - t0 ))s] $*" | tee -a "$out/steps.txt"; }

run_test() {  # name, pytest args...: one file per process, so a sticky CUDA error stays in it
  local name=$1; shift
  timeout -k 10 "${TEST_TIMEOUT:-170}" python -m pytest -q -rfE -p no:cacheprovider --timeout 150 \
    --junitxml "$out/junit-$name.xml" "$@" > "$out/test-$name.log" 2>&1
  echo "$name rc=$? $(tail -1 "$out/test-$name.log")" >> "$out/tests-summary.txt"
}
smoke() {  # seconds each: a few CoCosNet and MSCA-Net steps on the GPU, backend "auto", AMP on
  for m in cocosnet msca; do
    timeout -k 10 "$1" exsynth train --model "$m" --dataset synthetic --device cuda --amp --steps 20 \
      --batch-size 4 --allow-random-vgg --out "/tmp/smoke-$m" > "$out/smoke-$m.log" 2>&1
    echo "smoke $m rc=$? $(tail -1 "$out/smoke-$m.log")" >> "$out/tests-summary.txt"
  done
}
sweep() {  # name, seconds, python -m bench args...
  local name=$1 t=$2; shift 2
  stamp "bench $name"
  timeout -k 10 "$t" python -m bench "$@" --out "$out/$name.json" > "$out/bench-$name.log" 2>&1
  echo "rc=$?" >> "$out/bench-$name.log"; tail -n 14 "$out/bench-$name.log"
}

{
  echo "command: bash bench/gpu_check.sh $*"
  date -u +%Y-%m-%dT%H:%M:%SZ
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv
  python -c "import torch, triton, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__); p = torch.cuda.get_device_properties(0); print(p.name, p.multi_processor_count, 'SMs', p.total_memory // 2**20, 'MiB')"
  nvcc --version | tail -2
} > "$out/device.txt" 2>&1
cat "$out/device.txt"

stamp build
EXSYNTH_CUDA=1 EXSYNTH_CUDA_ARCHS=${EXSYNTH_CUDA_ARCHS:-90} EXSYNTH_BUILD_JOBS=16 \
  python -m pip install --no-build-isolation --no-deps -e . > "$out/install.log" 2>&1 \
  || { tail -30 "$out/install.log"; echo "install failed"; exit 1; }
(cd /tmp && exsynth doctor) > "$out/doctor.txt" 2>&1
stamp built; grep -i -E "cuda|triton" "$out/doctor.txt" | head -20

if [ "$what" = all ] || [ "$what" = --tests ]; then
  stamp tests
  run_test gpu_precision tests/test_gpu_precision.py &
  run_test poisoned tests/test_poisoned_outputs.py -k cuda &
  run_test triton_gpu_script tests/test_kernels_triton_correlation.py -k test_compiled_kernels_on_gpu &
  run_test backends tests/test_backends.py &
  # End to end on the GPU with backend="auto": a few CoCosNet and MSCA-Net steps, AMP on.
  smoke 80 &
  wait
  cat "$out/tests-summary.txt"
  stamp tests done
fi

if [ "$what" = --rerun ]; then
  # Second run of 2026-11-30: what the first left unfinished or failed (see bench/NOTES.md).
  stamp rerun-tests
  TEST_TIMEOUT=120 run_test gpu_precision_norm_msca tests/test_gpu_precision.py -k norm_and_msca &
  smoke 70 &
  wait; cat "$out/tests-summary.txt"
  sweep pn-bf16-256 30 pn_modulate --dtype bfloat16 --c 256 --side 256 --budget 2
  sweep msca-bf16-256 30 msca --dtype bfloat16 --n 256 --k 8 --side 256 --budget 2
  sweep corr-bf16-65536-fwdbwd 70 correlation --dtype bfloat16 --hw 65536 --d 256 --cv 3 --budget 1 \
    --modes fwdbwd --only triton sdpa_pad cuda --no-memory --rounds 2
fi

if [ "$what" = --next ]; then
  # The smoke after the set_device and autocast fixes; the Triton script with room to autotune;
  # each op with and without its NaN/Inf scan, at sizes past launch overhead.
  stamp next-tests
  smoke 70 &
  TEST_TIMEOUT=300 run_test triton_gpu_script tests/test_kernels_triton_correlation.py \
    -k test_compiled_kernels_on_gpu --timeout 290 &
  wait; cat "$out/tests-summary.txt"
  for checks in "" --no-finite-checks; do
    tag=${checks:+-nocheck}
    sweep "corr-bf16-4096$tag" 45 correlation --dtype bfloat16 --hw 4096 16384 --d 256 --cv 3 --budget 2 $checks
    sweep "pn-bf16-256$tag" 30 pn_modulate --dtype bfloat16 --c 256 --side 256 --budget 2 $checks
    sweep "msca-bf16-256$tag" 30 msca --dtype bfloat16 --n 256 --k 8 --side 256 --budget 2 $checks
  done
fi

if [ "$what" = all ] || [ "$what" = --bench ] || [ "$what" = --quick ]; then
  sweep corr-bf16-4096 45 correlation --dtype bfloat16 --hw 4096 --d 256 --cv 3 --budget 3
  sweep corr-bf16-patch3 45 correlation --dtype bfloat16 --hw 4096 --d 2304 --cv 3 --budget 3
  if [ "$what" != --quick ]; then
    sweep pn-bf16 35 pn_modulate --dtype bfloat16 --c 256 --side 64 128 --budget 2
    sweep msca-bf16 35 msca --dtype bfloat16 --n 256 --k 8 --side 64 128 --budget 2
    sweep corr-fp32-4096 35 correlation --dtype float32 --hw 4096 --d 256 --cv 3 --budget 3
    sweep corr-bf16-65536 60 correlation --dtype bfloat16 --hw 65536 --d 256 --cv 3 --budget 2 \
      --only cuda triton sdpa_pad --no-memory
  fi
fi
stamp end
echo "results in $out (packed on exit: $pack)"
