#!/usr/bin/env bash
# tools/gpu-dev/prefill.sh test|bench — batched prefill (docs/PREFILL.md) on the GPU machine.
# Called by tools/gpu-dev/run-all with BUILD, LOG, KERNRUN_REQUIRE_GPU=1, KR_TESTDATA, KR_7B_*,
# KR_KERNRUN set. Appends everything to $LOG; key numbers as a table at the end.
set -u
cd "$(dirname "$0")/../.."
LOG=${LOG:-/dev/stdout}
BUILD=${BUILD:-build}
part=${1:-test}
{
  echo "== prefill $part: commit $(git rev-parse --short HEAD 2>/dev/null) ($(git status --porcelain -- kernels/prefill plugins/cuda_forward tests/gpu_prefill 2>/dev/null | wc -l) changed files of prefill), $(date -u +%H:%M:%S)"
} >>"$LOG" 2>&1

if [ "$part" = test ]; then
  # both executables at once (the part has 60 s); each writes its own log, appended at the end
  tmpd=$(mktemp -d)
  pids=()
  for t in test_gpu_prefill_ops test_gpu_prefill_forward; do # (prefill_host: CPU-only, CI)
    exe=$BUILD/tests/gpu_prefill/$t
    if [ ! -x "$exe" ]; then echo "NOT BUILT" >"$tmpd/$t.rc"; continue; fi
    ( s0=$(date +%s%N)
      KERNRUN_PLUGIN_PATH=$BUILD/plugins KERNRUN_NO_SYSTEM_PLUGINS=1 timeout 54 "$exe" -j4 --verbose=1 >"$tmpd/$t.log" 2>&1
      echo "rc=$? ($(( ($(date +%s%N) - s0) / 1000000 )) ms)" >"$tmpd/$t.rc" ) &
    pids+=($!)
  done
  # compute-sanitizer memcheck of the kernel tests (quick mode), alongside
  san=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null || true)
  if [ -n "$san" ] && [ -x "$BUILD/tests/gpu_prefill/test_gpu_prefill_ops" ]; then
    ( KERNRUN_SKIP_FAULT_TESTS=1 KERNRUN_PLUGIN_PATH=$BUILD/plugins KERNRUN_NO_SYSTEM_PLUGINS=1 timeout 54 "$san" \
        --tool memcheck --error-exitcode 99 --target-processes all "$BUILD/tests/gpu_prefill/test_gpu_prefill_ops" -j4 \
        >"$tmpd/memcheck.log" 2>&1
      echo "rc=$?" >"$tmpd/memcheck.rc" ) &
    pids+=($!)
  fi
  wait "${pids[@]}"
  {
    for t in test_gpu_prefill_ops test_gpu_prefill_forward; do
      echo "-- $t"
      [ -f "$tmpd/$t.log" ] && cat "$tmpd/$t.log"
    done
    echo "== prefill test summary"
    for t in test_gpu_prefill_ops test_gpu_prefill_forward; do echo "  $t: $(cat "$tmpd/$t.rc" 2>/dev/null)"; done
    if [ -f "$tmpd/memcheck.rc" ]; then
      echo "  memcheck test_gpu_prefill_ops (quick): $(cat "$tmpd/memcheck.rc") $(grep -h 'ERROR SUMMARY\|Synthesis' "$tmpd/memcheck.log" | tr '\n' ' ')"
      grep -h -B2 -A12 "Invalid\|========= Error\|Program hit" "$tmpd/memcheck.log" | head -60
    fi
    grep -h "flash attn D\|batched vs\|greedy tokens compared\|\[FAIL\]\|\[SKIP\]" "$tmpd"/*.log 2>/dev/null |
      sed 's/^.*\(flash attn D\)/  \1/' | head -60
  } >>"$LOG" 2>&1
  rm -rf "$tmpd"
  exit 0
fi

if [ "$part" = bench ]; then
  {
    echo "-- bench-prefill-attn"
    timeout 8 "$BUILD/tests/gpu_prefill/bench-prefill-attn" --iters 20
    echo "bench-prefill-attn rc=$?"
    KR=${KR_KERNRUN:-$BUILD/tools/kernrun/kernrun}
    rows=()
    # name | model var | extra args | extra env (VAR=VALUE ...)
    runs=("Q4_0 batch|KR_7B_Q4_0||" "Q8_0 batch|KR_7B_Q8_0||" "F16 batch|KR_7B_F16||"
          "Q4_0 token-by-token|KR_7B_Q4_0|--no-batch-prefill|"
          "F16 batch simple attention|KR_7B_F16||KERNRUN_FA_VARIANT=simple"
          "F16 batch (repeat)|KR_7B_F16||"
          "Q4_0 -p 2048|KR_7B_Q4_0|-p 2048|"
          "Q8_0 -p 2048|KR_7B_Q8_0|-p 2048|"
          "F16 -p 2048|KR_7B_F16|-p 2048|"
          "Q4_0 -p 2048 chunks of 512|KR_7B_Q4_0|-p 2048 --n-batch 512|")
    for r in "${runs[@]}"; do
      IFS='|' read -r name var extra envs <<<"$r"
      f=${!var:-}
      [ -n "$f" ] && [ -f "$f" ] || { rows+=("$name: model missing"); continue; }
      echo "-- kernrun bench $name ($f $extra $envs)"
      o=$(env KERNRUN_PREFILL_PROFILE=1 $envs timeout 8 "$KR" bench -m "$f" -p 512 -n 8 --backend cuda $extra 2>&1)
      rc=$?
      echo "$o" | tail -12
      rows+=("$name: rc=$rc $(echo "$o" | grep -m1 '^prefill *:' | tr -s ' ')")
      prof=$(echo "$o" | grep 'profile of' | tail -1 | sed 's/.*profile of/profile of/')
      [ -n "$prof" ] && rows+=("    $prof")
    done
    echo "== prefill bench summary ($(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1))"
    grep -A13 "^D  *H/HK" "$LOG" | tail -13 | sed 's/^/  attn /'
    for l in "${rows[@]}"; do echo "  $l"; done
  } >>"$LOG" 2>&1
  exit 0
fi
echo "usage: $0 test|bench" >&2
exit 2
