#!/usr/bin/env bash
# ptxas resource report of every CUDA kernel: registers, spills, stack, static shared
# memory, for sm_80 and sm_90, compiled with the flags setup.py uses.
#
#   bash bench/cuda_resources.sh [OUTPUT]    (default bench/results/ptxas.txt)
#
# Needs only nvcc (no GPU). Kernels with dynamic shared memory (the correlation
# kernels) show 0 bytes smem here; their per-block size is computed at launch
# (FwdLayout/BwdLayout/MatchLayout in csrc/cuda/correlation.cu).
set -euo pipefail
cd "$(dirname "$0")/.."

out=${1:-bench/results/ptxas.txt}
mkdir -p "$(dirname "$out")"
nvcc_bin=${NVCC:-nvcc}
if command -v cu++filt >/dev/null 2>&1; then
  demangle=cu++filt
elif command -v c++filt >/dev/null 2>&1; then
  demangle=c++filt
else
  demangle=cat
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

{
  echo "# ptxas -v resource usage of csrc/cuda/*.cu"
  echo "# $("$nvcc_bin" --version | tail -n 1)"
  echo "# flags: -O3 -std=c++17 -Icsrc -Xptxas -v (as setup.py, one arch at a time)"
  echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  for arch in 80 90; do
    for f in csrc/cuda/*.cu; do
      echo
      echo "=== $f  sm_$arch"
      # One arch per compile (files compiled one at a time: shared CPUs).
      "$nvcc_bin" -c "$f" -o "$tmp/x.o" -O3 -std=c++17 -Icsrc \
        -gencode=arch=compute_$arch,code=sm_$arch -Xptxas -v 2>"$tmp/log" || {
          cat "$tmp/log"
          exit 1
        }
      # Keep one line per kernel: name | registers, barriers, smem | stack, spills.
      $demangle <"$tmp/log" | awk '
        /Compiling entry function/ {
          name = $0
          sub(/.*Compiling entry function \047/, "", name)
          sub(/\047 for \047sm_[0-9]+\047.*/, "", name)
          i = index(name, ">(")
          if (i > 0) name = substr(name, 1, i); else sub(/\(.*/, "", name)
          next
        }
        /bytes stack frame/ { sub(/^ +/, ""); frame = $0; next }
        /Used [0-9]+ registers/ {
          used = $0
          sub(/.*: *Used/, "Used", used)
          printf "%-100s  %s | %s\n", name, used, frame
        }'
    done
  done
} >"$out"

echo "wrote $out"
# Spills are worth a look: print any kernel that has them.
if grep -E "[1-9][0-9]* bytes spill (stores|loads)" "$out" >/dev/null; then
  echo "kernels with spills:"
  grep -E "[1-9][0-9]* bytes spill (stores|loads)" "$out" || true
fi
