#!/usr/bin/env bash
# tools/gpu-dev/gemm.sh test|bench — prefill GEMM (docs/GEMM.md) on the GPU machine.
# Called by tools/gpu-dev/run-all with BUILD, LOG, KERNRUN_REQUIRE_GPU=1 set. Appends everything
# to $LOG; the key numbers as a short table at the end of each part.
#   test : tests/gpu_gemm (every type x variant vs the CPU reference; 6 criterion workers), then
#          compute-sanitizer memcheck on the MMA cases of two types (quick mode) if time is left.
#   bench: bench-gemm at M 512 N = K = 4096 (all types x variants), then the 7B shapes at 512
#          tokens (F16, Q4_0, Q8_0) for the main variants. GEMM_BENCH_* override (see below).
set -u
cd "$(dirname "$0")/../.."
LOG=${LOG:-/dev/stdout}
BUILD=${BUILD:-build}
part=${1:-test}
t0=$(date +%s)
left() { echo $(( $1 - ($(date +%s) - t0) )); }
{
  echo "== gemm $part: commit $(git rev-parse --short HEAD 2>/dev/null) ($(git status --porcelain -- kernels/gemm plugins/cuda_gemm tests/gpu_gemm 2>/dev/null | wc -l) changed files of gemm), $(date -u +%H:%M:%S)"
  nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,temperature.gpu,power.draw --format=csv,noheader 2>/dev/null
} >>"$LOG" 2>&1

export KERNRUN_PLUGIN_PATH=$BUILD/plugins KERNRUN_NO_SYSTEM_PLUGINS=1

if [ "$part" = test ]; then
  summary=()
  exe=$BUILD/tests/gpu_gemm/test_gpu_gemm
  if [ -x "$exe" ]; then
    # GPU tests only (the gemm_host suite, incl. the NVRTC compile of all records, runs in CI)
    echo "-- test_gpu_gemm --filter 'gpu_gemm/*' (-j8)" >>"$LOG"
    s0=$(date +%s%N)
    timeout 45 "$exe" -j10 --verbose=1 --filter 'gpu_gemm/*' >"$BUILD/gemm-test.log" 2>&1
    rc=$?
    cat "$BUILD/gemm-test.log" >>"$LOG"
    summary+=("test_gpu_gemm: rc=$rc ($(( ($(date +%s%N) - s0) / 1000000 )) ms) $(grep -h 'Synthesis' "$BUILD/gemm-test.log" | tail -1)")
    summary+=("  failed: $(grep -h '^\[FAIL\]' "$BUILD/gemm-test.log" | awk '{print $2}' | tr '\n' ' ')")
    summary+=("  passed: $(grep -h '^\[PASS\]' "$BUILD/gemm-test.log" | awk '{print $2 $3}' | tr '\n' ' ')")
  else
    summary+=("test_gpu_gemm: NOT BUILT")
  fi
  for bm in 128 64; do
    e=$BUILD/tests/gpu_gemm/gemm-tile-emu-bm$bm
    [ -x "$e" ] || { summary+=("emu bm$bm: NOT BUILT"); continue; }
    timeout 10 "$e" >>"$LOG" 2>&1
    summary+=("emu bm$bm: rc=$?")
  done
  if command -v compute-sanitizer >/dev/null 2>&1 && [ -x "$exe" ]; then
    for t in q8_0 f16; do
      [ "$(left 56)" -gt 5 ] || { summary+=("memcheck $t: no time left"); break; }
      KERNRUN_SKIP_FAULT_TESTS=1 timeout "$(left 56)" compute-sanitizer --tool memcheck --print-limit 5 \
        "$exe" -j1 --filter "gpu_gemm/$t" >"$BUILD/gemm-memcheck.log" 2>&1
      rc=$?
      grep -E "^\[----\]|\[FAIL\]|=========" "$BUILD/gemm-memcheck.log" | grep -v "^\[----\]\s*$" | head -12 >>"$LOG"
      summary+=("memcheck $t (quick): rc=$rc, $(grep -h 'ERROR SUMMARY' "$BUILD/gemm-memcheck.log" | tail -1)")
    done
  else
    summary+=("memcheck: skipped (no compute-sanitizer)")
  fi
  {
    echo "== gemm test summary"
    for l in "${summary[@]}"; do echo "  $l"; done
    grep -E "^\[----\].*(NMSE|not finite|outside C|kr_gemm_run|padding)" "$BUILD/gemm-test.log" 2>/dev/null | head -20
  } >>"$LOG" 2>&1
  exit 0
fi

if [ "$part" = bench ]; then
  bench=$BUILD/tests/gpu_gemm/bench-gemm
  out=$BUILD/gemm-bench.txt
  : >"$out"
  if [ ! -x "$bench" ]; then echo "bench-gemm: NOT BUILT" >>"$LOG"; exit 1; fi
  # 1. the issue's shape, every type x variant
  timeout 10 "$bench" 512 4096 4096 20 >>"$out" 2>&1
  echo "bench 512x4096x4096 rc=$?" >>"$out"
  # 2. 7B projections at 512 tokens (N x K = out x in): q/o 4096x4096, qkv 12288x4096,
  #    gate+up 22016x4096, down 4096x11008, output 32000x4096
  KR_BENCH_SHAPES=${GEMM_BENCH_SHAPES:-512x4096x4096,512x12288x4096,512x22016x4096,512x4096x11008,512x32000x4096} \
  KR_BENCH_TYPES=${GEMM_BENCH_TYPES:-F16 Q4_0 Q8_0 Q4_0R Q8_0R Q4_K Q6_K} KR_BENCH_NMSE=0 \
  KR_BENCH_VARIANTS=${GEMM_BENCH_VARIANTS:-auto mma128 mma128k2 mma128w8 wg wgk2 wg2 wg2k2 wgs4 wgs4k2 wgss wgssk2 hauto hmma128 hmma128k2 hwg hwgk2 hwg2 hwg2k2 hwgs4 hwgs4k2 hwgss hwgssk2} \
    timeout "$(left 26)" "$bench" 512 4096 4096 10 >>"$out" 2>&1
  echo "bench 7B shapes rc=$?" >>"$out"
  cat "$out" >>"$LOG"
  {
    echo "== gemm bench summary (TFLOP/s; best variant per type and shape; x = speedup vs SIMT of that shape)"
    awk '
      /^== shape/ { k = $9; sub(":", "", k); shape = $4 "x" $7 "x" k; order[++ns] = shape }
      /^gemm F32/ { simt[shape] = $6 }
      /^gemm / && $2 != "F32" && $5 == "ms" {
        key = shape " " $2; tf = $6 + 0
        if (tf > best[key]) { best[key] = tf; bv[key] = $3 }
        if ($0 ~ /BAD/) bad[key] = bad[key] " " $3
        types[$2] = 1
      }
      END {
        for (i = 1; i <= ns; i++) {
          s = order[i]; if (seen[s]++) continue
          line = sprintf("%-16s simt %6.1f |", s, simt[s])
          for (t in types) { k = s " " t; if (best[k] > 0) line = line sprintf(" %s %6.1f (%s%s)", t, best[k], bv[k], bad[k] != "" ? " BAD:" bad[k] : "") }
          print line
        }
      }' "$out"
    grep -h "speedup" "$out" | head -2
    grep -h "BAD\|FAILED" "$out" | head -10
  } >>"$LOG" 2>&1
  # 3. Nsight Compute on a few MMA kernels (512x4096x4096, fp16 A): where the time goes
  NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu /usr/local/cuda/bin/ncu 2>/dev/null | head -1)
  if [ -n "$NCU" ]; then
    for tv in F16:hwgss Q8_0:hwg Q4_0:hwgs4; do
      [ "$(left 43)" -gt 6 ] || { echo "ncu $tv: no time left" >>"$LOG"; break; }
      echo "-- ncu $tv" >>"$LOG"
      KR_BENCH_TYPES=${tv%%:*} KR_BENCH_VARIANTS=${tv##*:} KR_BENCH_SIMT=0 KR_BENCH_NMSE=0 \
        timeout "$(left 43)" "$NCU" --clock-control none -k regex:kr_mm_gemm --launch-skip 3 --launch-count 1 \
        --section SpeedOfLight --section WarpStateStats --section MemoryWorkloadAnalysis --section Occupancy \
        --section ComputeWorkloadAnalysis --print-details all \
        "$bench" 512 4096 4096 1 >"$BUILD/gemm-ncu.txt" 2>&1
      echo "ncu rc=$?" >>"$LOG"
      grep -E "Duration|Compute \(SM\) Throughput|Memory Throughput|L1/TEX Hit|L2 Hit|DRAM Throughput|L2 Cache Throughput|L1/TEX Cache Throughput|Achieved Occupancy|Theoretical Occupancy|Stall|Warp Cycles Per Issued|Issued Warp|Registers|Block Limit|Mem Busy|Max Bandwidth|Mem Pipes|Pipe|Tensor|Bank|==ERROR==|WRN|OPT" \
        "$BUILD/gemm-ncu.txt" | cut -c1-160 | head -70 >>"$LOG"
    done
  else
    echo "ncu: not found" >>"$LOG"
  fi
  exit 0
fi
echo "usage: $0 test|bench" >&2
exit 2
