#!/usr/bin/env bash
# The CPU extension built with AddressSanitizer + UBSan, and the op tests run against it
# (issue 18: the adversarial probe's sanitizer run, kept). Needs exsynth installed (.ci/run
# does that first): the installed package is copied beside the sanitized _C module.
set -euo pipefail
cd "$(dirname "$0")/.."
san=$(mktemp -d)
trap 'rm -rf "$san"' EXIT
t0=$(date +%s)
python -c "import pybind11" 2>/dev/null || python -m pip install -q "pybind11>=2.10"  # setup.py outside pip's build env
EXSYNTH_SANITIZE=1 EXSYNTH_CUDA=0 python setup.py -q build_ext --build-lib "$san/build" --build-temp "$san/tmp" \
  > "$san/build.log" 2>&1 || { cat "$san/build.log"; exit 1; }
pkg=$(cd / && python -c "import exsynth, os; print(os.path.dirname(exsynth.__file__))")
mkdir -p "$san/site"
cp -r "$pkg" "$san/site/exsynth"
rm -f "$san/site/exsynth"/_C*.so
cp "$san/build/exsynth"/_C*.so "$san/site/exsynth/"
t1=$(date +%s)
preload="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libstdc++.so)"
# the tests must load this build: check the module path and that it is instrumented
(cd "$san" && PYTHONPATH="$san/site" LD_PRELOAD="$preload" ASAN_OPTIONS=detect_leaks=0 python -c "
import exsynth._C as c, sys
assert c.__file__.startswith('$san/site/'), c.__file__
print('sanitized module:', c.__file__)")
# (grep -c reads all of nm's output: grep -q would close the pipe early and fail under pipefail)
nsym=$(nm -D "$san/site/exsynth"/_C*.so | grep -c __asan_init || true)
[ "$nsym" -gt 0 ] || { echo "the build is not instrumented" >&2; exit 1; }
# TRITON_INTERPRET=0: the Triton interpreter runs Python, not this build; only the cpu backend
# (and the reference) are exercised. Any sanitizer report aborts the run (non-zero status).
set +e  # keep going to the report scan below, whatever pytest returns
PYTHONPATH="$san/site" TRITON_INTERPRET=0 LD_PRELOAD="$preload" \
  ASAN_OPTIONS=detect_leaks=0:halt_on_error=1:abort_on_error=0 \
  UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
  pytest -q -p no:cacheprovider tests/test_correlation.py tests/test_patch_correlation.py tests/test_correlation_errors.py \
    tests/test_norm_msca.py tests/test_op_matrix.py tests/test_poisoned_outputs.py tests/test_backends.py \
    2>&1 | tee "$san/pytest.log"
status=${PIPESTATUS[0]}
set -e
if grep -qE "ERROR: AddressSanitizer|runtime error:" "$san/pytest.log"; then
  echo "sanitizer report found" >&2
  exit 1
fi
t2=$(date +%s)
echo "sanitizer step: build $((t1 - t0)) s, tests $((t2 - t1)) s"
exit "$status"
