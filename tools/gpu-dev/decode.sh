#!/usr/bin/env bash
# tools/gpu-dev/decode.sh test|bench — decode speed (issue 6: PDL, matvecs, fewer launches) on the GPU
# machine. Called by tools/gpu-dev/run-all with BUILD, LOG, KERNRUN_REQUIRE_GPU=1, KR_TESTDATA,
# KR_7B_Q4_0/Q8_0/F16, KR_KERNRUN set. Appends everything to $LOG; key numbers as a table at the end.
#   test : gpu_forward (CPU-vs-GPU logits/greedy, every step variant), gpu_forward_kernels
#          (kernels/forward vs CPU, PDL chain) and gpu_decode (kernels vs CPU, minus the slow
#          matvec_tunings sweep), in parallel, 52 s each.
#   bench: `kernrun bench --backend cuda --variants ...` per type: one model load + prefill, then the
#          same 128 decode tokens per step variant (kr_gpu_forward_set_tuning), two rounds in
#          alternating order so drift shows; --profile once (Q4_0, default variant).
set -u
cd "$(dirname "$0")/../.."
. tools/gpu-dev/common.sh
mine="core/src/cuda core/include/kernrun/backend.h kernels/decode kernels/forward plugins/cuda_decode plugins/cuda_forward tools/kernrun/pipe_bench.c tests/gpu_forward tests/gpu_decode"
gpu_dev_header decode "$mine" name,driver_version,clocks.max.sm,clocks.max.mem

if [ "$part" = test ]; then
  tmp=$(mktemp -d)
  export KERNRUN_PLUGIN_PATH=$BUILD/plugins KERNRUN_NO_SYSTEM_PLUGINS=1
  export KR_DECODE_KERNELS_DIR=$PWD/kernels/decode KR_DECODE_JIT_CACHE=$tmp/jit-cache
  s0=$(date +%s)
  ( timeout 52 "$BUILD/tests/gpu_forward/test_gpu_forward" -j1 --verbose=1 \
      --filter '!(gpu_forward/@(*step_variants|falcon*|bench_cli*|generate*))' >"$tmp/fwd.txt" 2>&1
    echo "rc=$?" >>"$tmp/fwd.txt" ) &
  ( timeout 52 "$BUILD/tests/gpu_forward/test_gpu_forward" -j1 --verbose=1 \
      --filter 'gpu_forward/@(bench_cli*|generate*)' >"$tmp/cli.txt" 2>&1; echo "rc=$?" >>"$tmp/cli.txt" ) &
  ( timeout 52 "$BUILD/tests/gpu_forward/test_gpu_forward" -j1 --verbose=1 --filter 'gpu_forward/falcon*' \
      >"$tmp/fal.txt" 2>&1; echo "rc=$?" >>"$tmp/fal.txt" ) &
  ( timeout 52 "$BUILD/tests/gpu_forward/test_gpu_forward" -j1 --verbose=1 --filter 'gpu_forward/*step_variants' \
      >"$tmp/var.txt" 2>&1; echo "rc=$?" >>"$tmp/var.txt" ) &
  ( timeout 52 "$BUILD/tests/gpu_forward/test_gpu_forward_kernels" -j1 --verbose=1 >"$tmp/kern.txt" 2>&1; echo "rc=$?" >>"$tmp/kern.txt" ) &
  ( timeout 52 "$BUILD/tests/gpu_decode/test_gpu_decode" -j1 --verbose=1 \
      --filter 'gpu_decode/!(matvec_tunings)' >"$tmp/dec.txt" 2>&1; echo "rc=$?" >>"$tmp/dec.txt" ) &
  wait
  {
    for f in kern fwd cli fal var dec; do
      echo "-- test_gpu_$f ($(( $(date +%s) - s0 )) s)"
      grep -E "^\[(FAIL|----|ERR|WARN)\]|Synthesis|^rc=|Assertion|expected|NMSE|variant" "$tmp/$f.txt" | head -60
      grep -E "^\[PASS\]" "$tmp/$f.txt" | sed 's/^/  /' | head -80
    done
    echo "== decode test summary"
    for f in kern fwd cli fal var dec; do echo "  test_gpu_$f: $(grep -E 'Synthesis' "$tmp/$f.txt" | tail -1) $(tail -1 "$tmp/$f.txt")"; done
  } >>"$LOG" 2>&1
  rm -rf "$tmp"
  exit 0
fi

if [ "$part" = bench ]; then
  KR=${KR_KERNRUN:-$BUILD/tools/kernrun/kernrun}
  tmp=$(mktemp -d)
  # variants (kr_gpu_forward_set_tuning, applied on top of the default; see docs/GPU-FORWARD.md)
  V4="old;pdl=0;default;norm=mb;skip=a;skip=n;skip=m"
  V8="old;default;norm=mb;skip=a"
  VF="old;default;pdl=0"
  rev() { echo "$1" | tr ';' '\n' | tac | paste -sd';'; }
  # decode timing only: keep the prompt on the decode step (independent of the batched prefill)
  pre=()
  "$KR" bench --help 2>/dev/null | grep -q -- --no-batch-prefill && pre=(--no-batch-prefill)
  for t in Q4_0 Q8_0 F16; do
    var=KR_7B_$t
    f=${!var:-}
    [ -n "$f" ] && [ -f "$f" ] || { echo "-- $t: model missing ($f)" >>"$LOG"; continue; }
    case $t in Q4_0) V=$V4 ;; Q8_0) V=$V8 ;; *) V=$VF ;; esac
    extra=()
    [ "$t" = Q4_0 ] && extra=(--profile)
    echo "-- $t: kernrun bench -p 512 -n 128 ${extra[*]} --variants (2 rounds)" >>"$LOG"
    timeout 40 "$KR" bench -m "$f" --backend cuda -p 512 -n 128 "${pre[@]}" "${extra[@]}" \
      --variants "$V;$(rev "$V")" >"$tmp/$t.txt" 2>&1
    echo "rc=$?" >>"$tmp/$t.txt"
    cat "$tmp/$t.txt" >>"$LOG"
  done
  {
    echo "== decode bench summary (ms/tok; % of copy = GB/s / copy GB/s of the same run; r1 r2 = the two rounds)"
    for t in Q4_0 Q8_0 F16; do
      [ -f "$tmp/$t.txt" ] || continue
      awk -v t="$t" '
        /^copy bw/ {copy=$4}
        /^decode    :/ {main=$0}
        /^variant / {n=split($0,a," "); spec=a[2]; ms=a[5]; gbs=a[7];
                     if (!(spec in r1)) {r1[spec]=ms; g1[spec]=gbs; order[++k]=spec} else {r2[spec]=ms; g2[spec]=gbs}}
        END {
          printf "%s  copy %s GB/s; main run: %s\n", t, copy, main
          for (i=1;i<=k;i++) {s=order[i];
            printf "  %-44s r1 %7.4f ms (%5.1f%%)  r2 %7.4f ms (%5.1f%%)\n", s, r1[s], (copy>0 ? 100*g1[s]/copy : 0), r2[s], (copy>0 ? 100*g2[s]/copy : 0)}
        }' "$tmp/$t.txt"
      grep -E "^rc=" "$tmp/$t.txt" | sed 's/^/  /'
    done
  } >>"$LOG" 2>&1
  rm -rf "$tmp"
  exit 0
fi
echo "usage: $0 test|bench" >&2
exit 2
