#!/usr/bin/env bash
# tools/gpu-dev/f16w.sh test|bench — fp16 weight storage (issue 8: --weights f16, converted at load)
# on the GPU machine. Called by tools/gpu-dev/run-all with BUILD, LOG, KERNRUN_REQUIRE_GPU=1,
# KR_TESTDATA, KR_7B_Q4_0/Q8_0/F16, KR_KERNRUN set. Appends everything to $LOG; a table at the end.
#   test : tests/gpu_forward/test_gpu_f16w in four parallel groups (dequant kernel, stories260K, fit
#          check and the CPU tests; the tiny mkmodel models; the 1b-shaped Q4_K / Q5_K models;
#          generate through the binary), 55 s each.
#   bench: `kernrun bench -p 512 -n 32 --backend cuda` on the 7B models: Q4_0 --weights f16 vs native,
#          then (time allowing) Q8_0 --weights f16, the F16 file natively (what f16 storage should
#          match) and a 1b-shaped Q5_K model (host conversion); prefill / decode tok/s, upload and
#          whole-command time.
set -u
cd "$(dirname "$0")/../.."
. tools/gpu-dev/common.sh
mine="kernels/decode/elementwise.cu plugins/cuda_decode plugins/cuda_forward tools/kernrun tests/gpu_forward/test_gpu_f16w.c"
gpu_dev_header f16w "$mine" name,driver_version,memory.total

if [ "$part" = test ]; then
  tmp=$(mktemp -d)
  export KERNRUN_PLUGIN_PATH=$BUILD/plugins KERNRUN_NO_SYSTEM_PLUGINS=1
  export KR_KERNRUN=${KR_KERNRUN:-$BUILD/tools/kernrun/kernrun}
  T=$BUILD/tests/gpu_forward/test_gpu_f16w
  s0=$(date +%s)
  ( timeout 55 "$T" -j1 --verbose=1 --filter '!(gpu_f16w/@(mkmodel_*|generate*))' >"$tmp/a.txt" 2>&1
    echo "rc=$?" >>"$tmp/a.txt" ) &
  ( timeout 55 "$T" -j1 --verbose=1 --filter 'gpu_f16w/mkmodel_!(llama_1b*)' >"$tmp/d.txt" 2>&1
    echo "rc=$?" >>"$tmp/d.txt" ) &
  ( timeout 55 "$T" -j1 --verbose=1 --filter 'gpu_f16w/mkmodel_llama_1b*' >"$tmp/b.txt" 2>&1
    echo "rc=$?" >>"$tmp/b.txt" ) &
  ( timeout 55 "$T" -j1 --verbose=1 --filter 'gpu_f16w/generate*' >"$tmp/c.txt" 2>&1
    echo "rc=$?" >>"$tmp/c.txt" ) &
  san=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null || true)
  if [ -n "$san" ]; then # memcheck on the device and host conversions, a tiny model each, the fit check
    ( timeout 55 "$san" --tool memcheck --error-exitcode 99 "$T" -j1 --verbose=1 \
        --filter 'gpu_f16w/@(dequant*|fit*|mkmodel_llama_q4_0|mkmodel_llama_q5_0_host|mkmodel_falcon*)' \
        >"$tmp/e.txt" 2>&1; echo "rc=$?" >>"$tmp/e.txt" ) &
    ( s1=$(date +%s); timeout 55 "$san" --tool memcheck --error-exitcode 99 "$T" -j1 --verbose=1 \
        --filter 'gpu_f16w/mkmodel_llama_1b_1layer_q4_k' >"$tmp/f.txt" 2>&1
      echo "rc=$? after $(( $(date +%s) - s1 )) s (1b Q4_K under memcheck)" >>"$tmp/f.txt" ) &
  else
    echo "compute-sanitizer not installed" >"$tmp/e.txt"
  fi
  wait
  {
    for f in a d b c e f; do
      echo "-- test_gpu_f16w group $f ($(( $(date +%s) - s0 )) s)"
      grep -E "^\[(FAIL|----|ERR|WARN|SKIP)\]|Synthesis|^rc=|Assertion|expected|NMSE|converted|needed|refusal|halves|cuda --weights|cpu:|ERROR SUMMARY|Invalid|=========" "$tmp/$f.txt" | grep -v "Test is disabled" | head -120
      grep -E "^\[PASS\]" "$tmp/$f.txt" | sed 's/^/  /' | head -40
    done
    echo "== f16w test summary"
    for f in a d b c e f; do echo "  group $f: $(grep -E 'Synthesis' "$tmp/$f.txt" | tail -1) $(tail -1 "$tmp/$f.txt")"; done
  } >>"$LOG" 2>&1
  rm -rf "$tmp"
  exit 0
fi

if [ "$part" = bench ]; then
  KR=${KR_KERNRUN:-$BUILD/tools/kernrun/kernrun}
  tmp=$(mktemp -d)
  s0=$(date +%s)
  runs=("Q4_0 f16" "Q4_0 native" "Q8_0 f16" "F16 native" "1B_Q5_K f16")
  limits=(16 13 14 12 9) # seconds; later runs only while the 45 s budget allows
  i=0
  for r in "${runs[@]}"; do
    t=${r% *}
    w=${r#* }
    lim=${limits[$i]}
    i=$((i + 1))
    left=$(( 43 - ($(date +%s) - s0) ))
    [ "$left" -lt 8 ] && { echo "-- $t --weights $w: skipped (${left} s left)" >>"$LOG"; continue; }
    [ "$lim" -gt "$left" ] && lim=$left
    if [ "$t" = 1B_Q5_K ]; then # host conversion (the device has no Q5_K decoder): a 1b-shaped model
      KR_7B_1B_Q5_K=$tmp/1b-q5_k.gguf
      timeout 6 "$KR" mkmodel --arch llama --preset 1b --type q5_k -o "$KR_7B_1B_Q5_K" >>"$LOG" 2>&1 ||
        { echo "-- 1b q5_k mkmodel failed or took > 6 s" >>"$LOG"; continue; }
      left=$(( 43 - ($(date +%s) - s0) ))
      [ "$lim" -gt "$left" ] && lim=$left
    fi
    var=KR_7B_$t
    f=${!var:-}
    [ -n "$f" ] && [ -f "$f" ] || { echo "-- $t: model missing ($f)" >>"$LOG"; continue; }
    out="$tmp/${t}_$w.txt"
    echo "-- $t --weights $w: kernrun bench -p 512 -n 32 --backend cuda (limit $lim s)" >>"$LOG"
    a=$(date +%s.%N)
    timeout "$lim" "$KR" --log-level info bench -m "$f" --backend cuda -p 512 -n 32 --weights "$w" >"$out" 2>&1
    echo "rc=$?" >>"$out"
    b=$(date +%s.%N)
    echo "wall=$(awk -v a="$a" -v b="$b" 'BEGIN {printf "%.2f", b - a}')" >>"$out"
    grep -vE "^kernrun: info: (jit|cuda)" "$out" | tail -40 >>"$LOG"
  done
  {
    echo "== f16w bench summary (7B, -p 512 -n 32; card: $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1))"
    printf "  %-8s %-7s %12s %12s %10s %9s %8s %s\n" file weights "pp512 tok/s" "decode tok/s" "% of copy" "upload s" "wall s" rc
    for r in "${runs[@]}"; do
      t=${r% *}
      w=${r#* }
      out="$tmp/${t}_$w.txt"
      [ -f "$out" ] || continue
      awk -v t="$t" -v w="$w" '
        /^prefill   :/ {pp=$5}
        /^decode    :/ {dec=$5}
        /^fraction  :/ {fr=$3}
        /^load      :/ {for (i=1;i<=NF;i++) if ($i=="upload") up=$(i+1)}
        /^rc=/ {rc=$0}
        /^wall=/ {sub("wall=","",$0); wall=$0}
        END {printf "  %-8s %-7s %12s %12s %10s %9s %8s %s\n", t, w, pp, dec, fr, up, wall, rc}' "$out"
    done
  } >>"$LOG" 2>&1
  rm -rf "$tmp"
  exit 0
fi
echo "usage: $0 test|bench" >&2
exit 2
