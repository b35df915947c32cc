#!/usr/bin/env bash
# tools/gpu-dev/fattn.sh test|bench — the fused decode attention (kr_dec_fattn, kr_fa_* in
# kernels/decode/kv_attn.cu; tuning keys fa / fas / fapf / fast of the llama step) on the GPU machine.
# Called by tools/gpu-dev/run-all with BUILD, LOG, KERNRUN_REQUIRE_GPU=1, KR_7B_* (docs/GPU-CHECK.md).
#   test : tests/gpu_decode/test_gpu_decode_fattn (vs double references, f16/q8_0, GQA/MQA, ring, slots,
#          positions 0..5000, q8 output, new row == kr_dec_kv_store_rope's) + compute-sanitizer memcheck /
#          racecheck on the small cases; the whole-model equality tests (gpu_forward, gpu_kvcache) with the
#          fused attention on (KERNRUN_GF_TUNING=fa=1); the split kernels' tests (fallback).
#   bench: kernrun bench 7B q4_0 -p 512 -n 128 --variants (fa off/on, split / stage / prefetch sweeps,
#          2 rounds) with --profile of fa=1; -p 4096; q8_0 KV cache; 7B q8_0 weights.
set -u
cd "$(dirname "$0")/../.."
. tools/gpu-dev/common.sh
mine="kernels/decode/kv_attn.cu plugins/cuda_decode/decode_kv.c plugins/cuda_decode/kr_decode_kv.h plugins/cuda_forward/gpu_kvcache.c plugins/cuda_forward/gpu_kvcache.h plugins/cuda_forward/gpu_forward.c tests/gpu_decode/test_kv_fattn.c"
gpu_dev_header fattn "$mine"
export KERNRUN_PLUGIN_PATH=$BUILD/plugins KERNRUN_NO_SYSTEM_PLUGINS=1
export KR_DECODE_KERNELS_DIR=$PWD/kernels/decode
T=$BUILD/tests/gpu_decode/test_gpu_decode_fattn

if [ "$part" = test ]; then
  tmp=$(mktemp -d)
  export KR_DECODE_JIT_CACHE=$tmp/jit-cache
  s0=$(date +%s)
  if [ ! -x "$T" ]; then
    echo "-- $T missing (build failed?)" >>"$LOG"
    grep -iE "kv_attn|decode_kv|fattn|gpu_kvcache|gpu_forward" "$(dirname "$LOG")/build.log" 2>/dev/null | head -30 >>"$LOG"
  fi
  san=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null || true)
  ( timeout 65 "$T" -j1 --verbose=1 --filter '!(kv_fattn/variants)' >"$tmp/a.txt" 2>&1; echo "rc=$?" >>"$tmp/a.txt" ) &
  ( timeout 65 "$T" -j1 --verbose=1 --filter 'kv_fattn/variants' >"$tmp/v.txt" 2>&1; echo "rc=$?" >>"$tmp/v.txt" ) &
  if [ -n "$san" ]; then
    ( timeout 65 "$san" --tool memcheck --error-exitcode 9 "$T" -j1 --filter 'kv_fattn/@(small|invalid_position)' \
        >"$tmp/m.txt" 2>&1; echo "rc=$?" >>"$tmp/m.txt" ) &
    ( timeout 65 "$san" --tool racecheck --error-exitcode 9 "$T" -j1 --filter 'kv_fattn/small' \
        >"$tmp/r.txt" 2>&1; echo "rc=$?" >>"$tmp/r.txt" ) &
  fi
  ( KERNRUN_GF_TUNING=fa=1 timeout 65 "$BUILD/tests/gpu_forward/test_gpu_forward" -j1 --verbose=1 \
      --filter 'gpu_forward/@(stories260k_graph|stories260k_eager|llama2_tiny_random_f16|mkmodel_llama_q4_0|mkmodel_llama_q8_0|mkmodel_mistral_q4_1|mkmodel_llama_q4_0_q8_activations|graph_equals_eager_and_rewind|generate_cuda_equals_cpu|default_model_if_cached)' \
      >"$tmp/f.txt" 2>&1; echo "rc=$?" >>"$tmp/f.txt" ) &
  ( KERNRUN_GF_TUNING=fa=1 timeout 65 "$BUILD/tests/gpu_forward/test_gpu_forward" -j1 --verbose=1 \
      --filter 'gpu_forward/@(falcon_7b_layout_f16|falcon_7b_layout_q4_0|falcon_7b_layout_q4_0_q8_activations|falcon_40b_layout_q8_0|generate_cuda_equals_cpu_falcon|mkmodel_llama_q8_0_q8_activations|stories260k_attn_splits_1_and_7)' \
      >"$tmp/fa.txt" 2>&1; echo "rc=$?" >>"$tmp/fa.txt" ) &
  ( export KERNRUN_GF_TUNING=fa=1,fav=c64
    timeout 40 "$BUILD/tests/gpu_forward/test_gpu_forward" -j1 --verbose=1 \
      --filter 'gpu_forward/@(mkmodel_llama_q4_0|mkmodel_llama_q8_0|mkmodel_mistral_q4_1|graph_equals_eager_and_rewind|falcon_7b_layout_q4_0|stories260k_graph)' \
      >"$tmp/c.txt" 2>&1; echo "rc=$?" >>"$tmp/c.txt"
    timeout 24 "$BUILD/tests/gpu_kvcache/test_gpu_kvcache" -j1 --verbose=1 \
      --filter 'gpu_kvcache/@(ring_equals_masked_full_cache|q8_0_vs_f16_logits_nmse|graph_replay_across_slots)' >>"$tmp/c.txt" 2>&1
    echo "rc=$?" >>"$tmp/c.txt" ) &
  ( KERNRUN_GF_TUNING=fa=1 timeout 65 "$BUILD/tests/gpu_kvcache/test_gpu_kvcache" -j1 --verbose=1 \
      --filter 'gpu_kvcache/@(graph_replay_across_slots|ring_equals_masked_full_cache|q8_0_vs_f16_logits_nmse|stories260k_generation_with_shifts_same_as_cpu|stories260k_q8_0_vs_f16|lru_order_same_as_cpu)' \
      >"$tmp/k.txt" 2>&1; echo "rc=$?" >>"$tmp/k.txt" ) &
  ( timeout 30 "$BUILD/tests/gpu_decode/test_gpu_decode_kv" -j1 --filter 'kv_attn/@(attention_f16|store_f16|attention_invalid_position_is_nan)' \
      >"$tmp/o.txt" 2>&1; echo "rc=$?" >>"$tmp/o.txt" ) &
  wait
  {
    for f in a v m r f fa c k o; do
      [ -f "$tmp/$f.txt" ] || continue
      case $f in a) n="test_gpu_decode_fattn" ;; v) n="test_gpu_decode_fattn variants" ;; m) n="memcheck small" ;; r) n="racecheck small" ;;
        f) n="gpu_forward with fa=1" ;; fa) n="gpu_forward falcon etc. with fa=1" ;; c) n="gpu_forward + gpu_kvcache with fav=c64" ;; k) n="gpu_kvcache with fa=1" ;; o) n="split kernels (test_gpu_decode_kv)" ;; esac
      echo "-- $n ($(( $(date +%s) - s0 )) s)"
      grep -E "^\[(FAIL|----|ERR|WARN)\]|Synthesis|^rc=|Assertion|NMSE|differ|NaN|bytes|ERROR SUMMARY|RACECHECK SUMMARY|Invalid|Race" "$tmp/$f.txt" | head -40
    done
    echo "== fattn test summary"
    for f in a v m r f fa c k o; do [ -f "$tmp/$f.txt" ] && echo "  $f: $(grep -E 'Synthesis' "$tmp/$f.txt" | tail -1) $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$tmp/$f.txt" | tail -1) $(tail -1 "$tmp/$f.txt")"; done
  } >>"$LOG" 2>&1
  rm -rf "$tmp"
  exit 0
fi

if [ "$part" = bench ]; then
  KR=${KR_KERNRUN:-$BUILD/tools/kernrun/kernrun}
  tmp=$(mktemp -d)
  s0=$(date +%s)
  rev() { echo "$1" | tr ';' '\n' | tac | paste -sd';'; }
  pre=()
  "$KR" bench --help 2>/dev/null | grep -q -- --no-batch-prefill && pre=(--no-batch-prefill)
  V="fa=0;fa=1;fa=1,fav=c64;fa=1,fav=c64,fas=16;fa=1,fav=c128w,fas=12;fa=1,fav=c96w;fa=1,fav=c96w,fas=12;fa=1,fav=c96,fas=12;fa=1,fav=c128ws;fa=1,fav=c64w;fa=1,fav=cl8c128w;fa=1,fav=c64pw;fa=1,fapf=1;skip=a"
  run() { # name timeout args...
    local n=$1 t=$2; shift 2
    echo "-- $n: kernrun bench $*" >>"$LOG"
    timeout "$t" "$KR" bench --backend cuda "$@" >"$tmp/$n.txt" 2>&1
    echo "rc=$? ($(( $(date +%s) - s0 )) s)" >>"$tmp/$n.txt"
    grep -vE "^\s*$" "$tmp/$n.txt" | grep -vE "^variant" | tail -40 >>"$LOG"
  }
  if [ -n "${KR_7B_Q4_0:-}" ] && [ -f "$KR_7B_Q4_0" ]; then
    run q4_512 40 -m "$KR_7B_Q4_0" -p 512 -n 128 "${pre[@]}" --profile --variants "$V;$(rev "$V")"
    run q4_4096 22 -m "$KR_7B_Q4_0" -p 4096 -n 64 --variants "fa=0;fa=1;fa=1,fav=c64;fa=1,fav=c64w,fas=16;fa=1,fav=c128w;fa=1,fav=c64s;fa=0;fa=1"
    run q4_kvq8 14 -m "$KR_7B_Q4_0" -p 512 -n 64 --kv-type q8_0 --variants "fa=0;fa=1;fa=1,fav=c64;fa=0;fa=1"
  else
    echo "-- 7B q4_0 model missing (${KR_7B_Q4_0:-unset})" >>"$LOG"
  fi
  if [ -n "${KR_7B_Q8_0:-}" ] && [ -f "$KR_7B_Q8_0" ] && [ $(( $(date +%s) - s0 )) -lt 80 ]; then
    run q8_512 16 -m "$KR_7B_Q8_0" -p 512 -n 64 --variants "fa=0;fa=1;fa=0;fa=1"
  fi
  if [ -n "${KR_7B_F16:-}" ] && [ -f "$KR_7B_F16" ] && [ $(( $(date +%s) - s0 )) -lt 78 ]; then
    run f16_512 18 -m "$KR_7B_F16" -p 512 -n 32 --variants "fa=0;fa=1;fa=0;fa=1"
  fi
  {
    echo "== fattn bench summary (ms/tok; % of copy = GB/s / copy GB/s of the same run; r1 r2 = rounds)"
    for n in q4_512 q4_4096 q4_kvq8 q8_512 f16_512; do
      [ -f "$tmp/$n.txt" ] || continue
      awk -v t="$n" '
        /^copy bw/ {copy=$4}
        /^decode    :/ {main=$0}
        /^variant / {n=split($0,a," "); spec=a[2]; ms=a[5]; gbs=a[7];
                     if (!(spec in r1)) {r1[spec]=ms; g1[spec]=gbs; order[++k]=spec} else {r2[spec]=ms; g2[spec]=gbs}}
        END {
          printf "%s  copy %s GB/s; main run (fa=1 for q4_512): %s\n", t, copy, main
          for (i=1;i<=k;i++) {s=order[i];
            printf "  %-28s r1 %7.4f ms (%5.1f%%)  r2 %7.4f ms (%5.1f%%)\n", s, r1[s], (copy>0 ? 100*g1[s]/copy : 0), r2[s], (copy>0 ? 100*g2[s]/copy : 0)}
        }' "$tmp/$n.txt"
      grep -E "^rc=" "$tmp/$n.txt" | sed 's/^/  /'
    done
  } >>"$LOG" 2>&1
  rm -rf "$tmp"
  exit 0
fi
echo "usage: $0 test|bench" >&2
exit 2
