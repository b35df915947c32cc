#!/usr/bin/env bash
# tools/gpu-dev/l2pf.sh test|bench — the non-attention latency of the decode step (issue 6, l2pf
# helper): in-kernel L2 prefetch of the next matvec's weights (step variants pfa/pft/pfn/pfs/pfc/pfe)
# and the d/h v2 matvecs. Called by tools/gpu-dev/run-all with BUILD, LOG, KERNRUN_REQUIRE_GPU=1,
# KR_TESTDATA, KR_7B_Q4_0/Q8_0, KR_KERNRUN set. Appends everything to $LOG; a table at the end.
#   test : gpu_forward_kernels (every kernels/forward kernel vs CPU / bit-equality of the prefetching
#          kernels with the plain ones / PDL chains) and gpu_forward's step variants (every variant,
#          the l2pf ones included, CPU vs GPU logits + greedy) and a few whole-model tests, <= 70 s.
#   bench: `kernrun bench --backend cuda -p 512 -n 128 --variants ...`: one load + prefill per type,
#          the same 128 decode tokens per variant, two rounds in reverse order so drift shows.
set -u
cd "$(dirname "$0")/../.."
. tools/gpu-dev/common.sh
mine="kernels/forward plugins/cuda_forward tests/gpu_forward"
gpu_dev_header l2pf "$mine" name,driver_version,clocks.max.sm,clocks.max.mem

if [ "$part" = test ]; then
  tmp=$(mktemp -d)
  export KERNRUN_PLUGIN_PATH=$BUILD/plugins KERNRUN_NO_SYSTEM_PLUGINS=1
  s0=$(date +%s)
  ( timeout 70 "$BUILD/tests/gpu_forward/test_gpu_forward_kernels" -j1 --verbose=1 >"$tmp/kern.txt" 2>&1
    echo "rc=$?" >>"$tmp/kern.txt" ) &
  ( timeout 70 "$BUILD/tests/gpu_forward/test_gpu_forward" -j1 --verbose=1 --filter 'gpu_forward/*q4_0_step_variants' \
      >"$tmp/var.txt" 2>&1; echo "rc=$?" >>"$tmp/var.txt" ) &
  ( timeout 70 "$BUILD/tests/gpu_forward/test_gpu_forward" -j1 --verbose=1 --filter 'gpu_forward/*q8_0_step_variants' \
      >"$tmp/var8.txt" 2>&1; echo "rc=$?" >>"$tmp/var8.txt" ) &
  ( timeout 70 "$BUILD/tests/gpu_forward/test_gpu_forward" -j1 --verbose=1 \
      --filter 'gpu_forward/@(set_tuning*|mkmodel_llama_q4_0_q8_activations|mkmodel_llama_q8_0_q8_activations|stories*|graph*)' \
      >"$tmp/fwd.txt" 2>&1; echo "rc=$?" >>"$tmp/fwd.txt" ) &
  wait
  {
    for f in kern var var8 fwd; do
      echo "-- $f ($(( $(date +%s) - s0 )) s)"
      grep -E "^\[(FAIL|----|ERR|WARN)\]|Synthesis|^rc=|Assertion|expected|NMSE|differs" "$tmp/$f.txt" | head -60
      grep -E "^\[PASS\]" "$tmp/$f.txt" | sed 's/^/  /' | head -60
    done
    echo "== l2pf test summary"
    for f in kern var var8 fwd; do echo "  $f: $(grep -E 'Synthesis' "$tmp/$f.txt" | tail -1) $(tail -1 "$tmp/$f.txt")"; done
  } >>"$LOG" 2>&1
  rm -rf "$tmp"
  exit 0
fi

if [ "$part" = bench ]; then
  KR=${KR_KERNRUN:-$BUILD/tools/kernrun/kernrun}
  tmp=$(mktemp -d)
  # step variants (kr_gpu_forward_set_tuning on top of the default; docs/GPU-FORWARD.md):
  #   pfa=MiB qkv tail -> attn_output (+ gate/up) during the attention; pft=MiB every matvec tail ->
  #   the next matvec; pfn / pfs = MiB the norms / swiglu_q8 request before their PDL wait;
  #   pfe=1 tails request before the wait; pfc=N the last N x SMs CTAs request; mv4/mv8 d/h matvecs
  # checkpoint 10:10: every prefetch variant was slower (pfn=16 +0.73 ms), Q8_0 mv8=r2p1d -0.08 ms
  # (now Q8_0's default; mv8=r2p2 = the old one). Now: persistent matvecs (pr..., mvp = CTAs/SM).
  # checkpoint 10:43: persistent matvecs and nq/sq all slower; Q8_0 mv8e=r2p2d -0.03 (now default:
  # mv8e=r2p1d = the 10:43 default, mv8=r2p2,mv8e=r2p2 = session 2's). Q4_0: more double-buffered shapes.
  # 11:19 (H100): nq/sq still ~+1.4 ms (removed), Q4_0 d-variants no gain. Final confirmation:
  # defaults vs session 2's matvec configuration (mv8=r2p2,mv8e=r2p2) and the 10:43 one (mv8e=r2p1d).
  V4="default;mv4=r2p1d;mv4e=r2p4d;pfs=4;skip=a"
  V8="default;mv8e=r2p1d;mv8=r2p2,mv8e=r2p2;skip=a"
  rev() { echo "$1" | tr ';' '\n' | tac | paste -sd';'; }
  pre=()
  "$KR" bench --help 2>/dev/null | grep -q -- --no-batch-prefill && pre=(--no-batch-prefill)
  for t in Q4_0 Q8_0; do
    var=KR_7B_$t
    f=${!var:-}
    [ -n "$f" ] && [ -f "$f" ] || { echo "-- $t: model missing ($f)" >>"$LOG"; continue; }
    case $t in Q4_0) V=$V4; lim=62 ;; *) V=$V8; lim=32 ;; esac
    echo "-- $t: kernrun bench -p 512 -n 128 --variants (2 rounds)" >>"$LOG"
    timeout $lim "$KR" bench -m "$f" --backend cuda -p 512 -n 128 "${pre[@]}" \
      --variants "$V;$(rev "$V")" >"$tmp/$t.txt" 2>&1
    echo "rc=$?" >>"$tmp/$t.txt"
    cat "$tmp/$t.txt" >>"$LOG"
  done
  {
    echo "== l2pf bench summary (ms/tok; % of copy = GB/s / copy GB/s of the same run; r1 r2 = the two rounds; d = mean - default)"
    for t in Q4_0 Q8_0; do
      [ -f "$tmp/$t.txt" ] || continue
      awk -v t="$t" '
        /^copy bw/ {copy=$4}
        /^device/ {dev=$0}
        /^variant / {n=split($0,a," "); spec=a[2]; ms=a[5]; gbs=a[7];
                     if (!(spec in r1)) {r1[spec]=ms; g1[spec]=gbs; order[++k]=spec} else {r2[spec]=ms; g2[spec]=gbs}}
        END {
          printf "%s  copy %s GB/s; %s\n", t, copy, dev
          base=(r1["default"]+r2["default"])/2
          for (i=1;i<=k;i++) {s=order[i]; m=(r1[s]+r2[s])/2;
            printf "  %-34s r1 %7.4f ms (%5.1f%%)  r2 %7.4f ms (%5.1f%%)  d %+7.4f\n", s, r1[s], (copy>0 ? 100*g1[s]/copy : 0), r2[s], (copy>0 ? 100*g2[s]/copy : 0), m-base}
        }' "$tmp/$t.txt"
      grep -E "^rc=" "$tmp/$t.txt" | sed 's/^/  /'
    done
  } >>"$LOG" 2>&1
  rm -rf "$tmp"
  exit 0
fi
echo "usage: $0 test|bench" >&2
exit 2
