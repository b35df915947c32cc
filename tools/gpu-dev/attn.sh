#!/usr/bin/env bash
# tools/gpu-dev/attn.sh test|bench — KV store + decode attention kernels (kernels/decode/kv_attn.cu,
# plugins/cuda_decode/decode_kv.c) on the GPU machine. Called by tools/gpu-dev/run-all with BUILD, LOG,
# KERNRUN_REQUIRE_GPU=1 (see docs/GPU-CHECK.md).
#   test : tests/gpu_decode/test_gpu_decode_kv (store, fused rope+store, attention f16/q8_0, ring, slots,
#          GQA/MQA, head_dim 64..256, invalid positions) + compute-sanitizer memcheck and racecheck on a
#          subset, in parallel; then the old kernels' tests (gpu_decode attention/rope/kv_append).
#   bench: bench-kv-attn (us/layer and GB/s, new vs old kernel, variants x split sweep, store
#          variants), then `kernrun bench --profile` on the 7B q4_0 model with KR_GKV_KERNELS=new / old.
set -u
cd "$(dirname "$0")/../.."
LOG=${LOG:-/dev/stdout}
BUILD=${BUILD:-build}
part=${1:-test}
mine="kernels/decode/kv_attn.cu plugins/cuda_decode/decode_kv.c plugins/cuda_decode/kr_decode_kv.h tests/gpu_decode/test_kv_attn.c tests/gpu_decode/bench_kv_attn.c"
{
  # shellcheck disable=SC2086
  echo "== attn $part: commit $(git rev-parse --short HEAD 2>/dev/null), $(git status --porcelain -- $mine 2>/dev/null | wc -l) changed files under attn's paths, $(date -u +%H:%M:%S)"
  # shellcheck disable=SC2086
  git diff --stat HEAD -- $mine 2>/dev/null | tail -1
  nvidia-smi --query-gpu=name,driver_version,memory.used,memory.total --format=csv,noheader 2>/dev/null | head -1
} >>"$LOG" 2>&1
export KERNRUN_PLUGIN_PATH=$BUILD/plugins KERNRUN_NO_SYSTEM_PLUGINS=1
export KR_DECODE_KERNELS_DIR=$PWD/kernels/decode
T=$BUILD/tests/gpu_decode/test_gpu_decode_kv
B=$BUILD/tests/gpu_decode/bench-kv-attn

if [ "$part" = test ]; then
  tmp=$(mktemp -d)
  s0=$(date +%s)
  if [ ! -x "$T" ]; then
    echo "-- $T missing (build failed?)" >>"$LOG"
    grep -iE "kv_attn|decode_kv|test_kv_attn|bench_kv" "$(dirname "$LOG")/build.log" 2>/dev/null | head -30 >>"$LOG"
    exit 1
  fi
  san=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null || true)
  ( timeout 50 "$T" -j1 --verbose=1 >"$tmp/a.txt" 2>&1; echo "rc=$?" >>"$tmp/a.txt" ) &
  if [ -n "$san" ]; then
    ( timeout 50 "$san" --tool memcheck --error-exitcode 9 --target-processes all "$T" -j1 \
        --filter 'kv_attn/@(store_f16|store_q8_0|store_then_attention|attention_invalid_position_is_nan)' \
        >"$tmp/m.txt" 2>&1; echo "rc=$?" >>"$tmp/m.txt" ) &
    ( timeout 50 "$san" --tool racecheck --error-exitcode 9 --target-processes all "$T" -j1 \
        --filter 'kv_attn/@(store_then_attention|attention_invalid_position_is_nan)' \
        >"$tmp/r.txt" 2>&1; echo "rc=$?" >>"$tmp/r.txt" ) &
  fi
  wait
  {
    echo "-- test_gpu_decode_kv ($(( $(date +%s) - s0 )) s)"
    grep -E "^\[(FAIL|----|ERR|WARN|SKIP)\]|Synthesis|^rc=|Assertion|NMSE|differ|NaN|bytes" "$tmp/a.txt" | head -100
    grep -E "^\[PASS\]" "$tmp/a.txt" | sed 's/^/  /' | head -40
    for f in m r; do
      [ -f "$tmp/$f.txt" ] || continue
      echo "-- compute-sanitizer $([ $f = m ] && echo memcheck || echo racecheck)"
      grep -E "ERROR SUMMARY|RACECHECK SUMMARY|Synthesis|^rc=|^\[FAIL\]" "$tmp/$f.txt" | head -10
      grep -E -A4 "Warning|Error|Invalid" "$tmp/$f.txt" | grep -v "^=*\s*$" | head -40
    done
  } >>"$LOG" 2>&1
  # the old kernels still pass (unchanged files, shared launcher library)
  if [ -x "$BUILD/tests/gpu_decode/test_gpu_decode" ]; then
    timeout 8 "$BUILD/tests/gpu_decode/test_gpu_decode" -j1 --filter 'gpu_decode/@(attention*|kv_append*|rope*)' \
      >"$tmp/o.txt" 2>&1
    { echo "-- old kernels (rc=$?)"; grep -E "^\[FAIL\]|Synthesis" "$tmp/o.txt" | head -10; } >>"$LOG" 2>&1
  fi
  rc=$(sed -n 's/^rc=//p' "$tmp/a.txt" | tail -1)
  rm -rf "$tmp"
  [ "${rc:-1}" = 0 ]
  exit $?
fi

if [ "$part" = bench ]; then
  if [ ! -x "$B" ]; then
    echo "-- $B missing (build failed?)" >>"$LOG"
    exit 1
  fi
  s0=$(date +%s)
  { echo "-- bench-kv-attn"; timeout 22 "$B" 2>&1; echo "rc=$? ($(( $(date +%s) - s0 )) s)"; } >>"$LOG"
  # end to end: the 7B q4_0 decode step with the new (KR_GKV_KERNELS=new) vs the old f16 kernels
  KR=${KR_KERNRUN:-$BUILD/tools/kernrun/kernrun}
  if [ -n "${KR_7B_Q4_0:-}" ] && [ -f "$KR_7B_Q4_0" ]; then
    for g in new old; do
      [ $(( $(date +%s) - s0 )) -lt 34 ] || break
      { echo "-- KR_GKV_KERNELS=$g kernrun bench 7B q4_0 -p 512 -n 64 --profile"
        KR_GKV_KERNELS=$g timeout 9 "$KR" bench -m "$KR_7B_Q4_0" --backend cuda -p 512 -n 64 --profile 2>&1 | \
          grep -iE "tok/s|decode|attention|rope|kv|append|store|combine|launch|error" | head -16
        echo "rc=${PIPESTATUS[0]}"; } >>"$LOG" 2>&1
    done
  fi
  exit 0
fi
echo "usage: $0 test|bench" >&2
exit 2
