#!/usr/bin/env bash
# lead's checkpoint part: GPU sampler (pre-pass) tests and benchmark.
set -u
case "${1:-}" in
test)
  meson test -C "$BUILD" --no-rebuild --suite gpu_sampling --print-errorlogs 2>&1 | tail -40
  ;;
bench)
  for pre in 1 0; do
    echo "--- KERNRUN_GPU_SAMPLER_PREPASS=$pre"
    KERNRUN_GPU_SAMPLER_PREPASS=$pre timeout 20 "$BUILD/tests/gpu_sampling/bench-gpu-sampling" 2>&1 | tail -12
  done
  ;;
esac
