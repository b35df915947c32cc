#!/usr/bin/env bash
# tools/gpu-dev/kvhost.sh test|bench — the CUDA path's KV cache (issue 9, GPU side) on the GPU machine.
# Called by tools/gpu-dev/run-all with BUILD, LOG, KERNRUN_REQUIRE_GPU=1, KR_TESTDATA, KR_7B_*, KR_KERNRUN.
#   test : tests/gpu_kvcache (sizes/refusals, LRU + pinning vs CPU, graph replay across slots, shift kernel
#          vs reference, shift GPU vs CPU, ring vs masked, q8_0 vs f16) in two parallel halves, 50 s each;
#          then `kernrun generate --backend cuda` with --kv-type / --ctx-shift on stories260K.
#   bench: bench-gpu-kvcache on the 7B q4_0 model: f16 vs q8_0 cache decode speed at 512 / 2048,
#          recompute-the-prefix vs cache ratio, logits NMSE q8_0 vs f16, sequences taking turns.
set -u
cd "$(dirname "$0")/../.."
. tools/gpu-dev/common.sh
mine="plugins/cuda_forward kernels/forward/kv_shift.cu models/model/src/kvcache.c tests/gpu_kvcache tools/kernrun/pipe_generate.c"
gpu_dev_header kvhost "$mine" name,driver_version,memory.used,memory.total
export KERNRUN_PLUGIN_PATH=$BUILD/plugins KERNRUN_NO_SYSTEM_PLUGINS=1
T=$BUILD/tests/gpu_kvcache/test_gpu_kvcache

if [ "$part" = test ]; then
  tmp=$(mktemp -d)
  s0=$(date +%s)
  if [ ! -x "$T" ]; then
    echo "-- $T missing (build failed?)" >>"$LOG"
    exit 1
  fi
  # a, b: defaults (kr_dec_kv_store_rope + kr_dec_attention_kv); c: the f16 tests again with the old
  # kernels (KR_GKV_KERNELS=old); d: part of tests/gpu_forward (GPU vs CPU logits) with the default kernels
  ( timeout 50 "$T" -j1 --verbose=1 --filter 'gpu_kvcache*/!(shift*|ring*|q8*)' >"$tmp/a.txt" 2>&1; echo "rc=$?" >>"$tmp/a.txt" ) &
  ( timeout 50 "$T" -j1 --verbose=1 --filter 'gpu_kvcache/@(shift*|ring*|q8*)' >"$tmp/b.txt" 2>&1; echo "rc=$?" >>"$tmp/b.txt" ) &
  ( KR_GKV_KERNELS=old timeout 50 "$T" -j1 --verbose=1 \
      --filter 'gpu_kvcache/@(lru*|pinning*|graph*|context_full*|shift_vs*|shift_kernel_f16*|stories260k_gen*)' >"$tmp/c.txt" 2>&1; echo "rc=$?" >>"$tmp/c.txt" ) &
  ( timeout 50 "$BUILD/tests/gpu_forward/test_gpu_forward" -j1 --verbose=1 \
      --filter 'gpu_forward/@(stories260k_graph|stories260k_attn_splits*|llama2_tiny*|mkmodel_mistral_q4_1|falcon_7b_layout_f16|falcon_40b_layout_q8_0)' \
      >"$tmp/d.txt" 2>&1; echo "rc=$?" >>"$tmp/d.txt" ) &
  # f: tests/generate's shift / kv-type cases, where --backend auto now picks CUDA
  ( KERNRUN_BIN=${KR_KERNRUN:-$BUILD/tools/kernrun/kernrun} timeout 50 "$BUILD/tests/generate/test_generate" -j1 \
      --verbose=1 --filter 'generate/@(ctx_shift*|kv_type*)' >"$tmp/f.txt" 2>&1; echo "rc=$?" >>"$tmp/f.txt" ) &
  # e: compute-sanitizer memcheck on the shift kernel, a shift through the forward pass, the ring
  san=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null || true)
  if [ -n "$san" ]; then
    ( timeout 50 "$san" --tool memcheck --error-exitcode 99 --target-processes all "$T" -j1 --verbose=1 \
        --filter 'gpu_kvcache/@(kv_shift_kernel_f16_neox|kv_shift_kernel_q8_0_normal|shift_vs_cpu_llama|ring*|lru*)' \
        >"$tmp/e.txt" 2>&1; echo "rc=$?" >>"$tmp/e.txt" ) &
  else
    echo "compute-sanitizer not installed" >"$tmp/e.txt"
  fi
  wait
  {
    for f in a b c d e f; do
      echo "-- test_gpu_kvcache part $f ($(( $(date +%s) - s0 )) s)"
      grep -E "^\[(FAIL|----|ERR|WARN|SKIP)\]|Synthesis|^rc=|Assertion|NMSE|nmse|refusal|kv_shift|^shift|^ring|^q8_0|^stories|graph" "$tmp/$f.txt" | head -80
      grep -E "^\[PASS\]" "$tmp/$f.txt" | sed 's/^/  /' | head -40
    done
    # the CLI on the CUDA backend (stories260K, tiny context so the shift happens)
    KR=${KR_KERNRUN:-$BUILD/tools/kernrun/kernrun}
    M=${KR_TESTDATA:-../shared/testdata}/models/stories260K-f32.gguf
    for args in "--kv-type f16" "--kv-type q8_0" "--ctx-shift --keep 4 -c 48" "--kv-type q8_0 --ctx-shift --keep 4 -c 48" "-c 48" "--backend cpu --ctx-shift --keep 4 -c 48" "--kv-type f32"; do
      echo "-- kernrun generate --backend cuda $args -n 96 --temp 0"
      # shellcheck disable=SC2086
      timeout 20 "$KR" --log-level info generate -m "$M" --backend cuda $args -n 96 --temp 0 -p "Once upon a time" \
        >"$tmp/gen.txt" 2>&1
      echo "rc=$?"
      grep -E "kvcache|KV cache|shift|context|error|backend" "$tmp/gen.txt" | head -8
      grep -vE "^kernrun:|^\[" "$tmp/gen.txt" | tr '\n' ' ' | cut -c1-300; echo
    done
    echo "== kvhost test summary"
    grep -E "ERROR SUMMARY|Invalid|out of bounds" "$tmp/e.txt" | head -10
    for f in a b c d e f; do echo "  part $f: $(grep -E 'Synthesis' "$tmp/$f.txt" | tail -1) $(tail -1 "$tmp/$f.txt")"; done
  } >>"$LOG" 2>&1
  rm -rf "$tmp"
  exit 0
fi

if [ "$part" = bench ]; then
  B=$BUILD/tests/gpu_kvcache/bench-gpu-kvcache
  f=${KR_7B_Q4_0:-}
  if [ -z "$f" ] || [ ! -f "$f" ]; then
    echo "-- 7B q4_0 model missing ($f)" >>"$LOG"
    exit 1
  fi
  # f16 on the new kernels (default, rope fused into the store), without the fused rope, on the old
  # kernels, q8_0; the default again last (drift). 64 tokens per point.
  echo "-- bench-gpu-kvcache 7B q4_0: positions 512, 2048, 8192; 64 tokens; 4 sequences" >>"$LOG"
  timeout 26 "$B" -m "$f" --kv-types f16,f16:newsep,f16:old,q8_0,f16 --pos 512,2048,8192 -n 64 --seqs 4 >>"$LOG" 2>&1
  echo "rc=$?" >>"$LOG"
  # the standard bench with each cache type (GB/s counts the KV bytes of the type)
  KR=${KR_KERNRUN:-$BUILD/tools/kernrun/kernrun}
  for kt in f16 q8_0; do
    echo "-- kernrun bench 7B q4_0 --kv-type $kt -p 2048 -n 128" >>"$LOG"
    timeout 8 "$KR" bench -m "$f" --backend cuda --kv-type $kt -p 2048 -n 128 2>&1 | grep -E "decode|prefill|KV|error" >>"$LOG"
  done
  # how sensitive this random-weight model is: the same kernels with another split count
  echo "-- bench-gpu-kvcache 7B q4_0: split count 1 vs default (summation order only)" >>"$LOG"
  timeout 6 "$B" -m "$f" --kv-types f16,f16/s1 --pos 512 -n 16 --seqs 1 >>"$LOG" 2>&1
  echo "rc=$?" >>"$LOG"
  exit 0
fi
echo "usage: $0 test|bench" >&2
exit 2
