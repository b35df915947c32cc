#!/usr/bin/env bash
# lead's checkpoint part: backend (gpu suite: >48 KiB dynamic shared memory), GPU sampler (pre-pass)
# tests and benchmark.
set -u
case "${1:-}" in
test)
  for su in gpu gpu_sampling; do
    meson test -C "$BUILD" --no-rebuild --suite $su --print-errorlogs 2>&1 | grep -E "^ *[0-9]+/[0-9]+ |FAIL|Ok:|Fail:|Skipped:|Timeout:" | tail -20
  done
  ;;
bench)
  for pre in 1 0; do
    echo "--- KERNRUN_GPU_SAMPLER_PREPASS=$pre"
    KERNRUN_GPU_SAMPLER_PREPASS=$pre timeout 20 "$BUILD/tests/gpu_sampling/bench-gpu-sampling" 2>&1 | tail -12
  done
  ;;
esac
