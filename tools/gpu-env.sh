# tools/gpu-env.sh — sourced (from the repository root) by tools/gpu-check and tools/gpu-dev/run-all.
# 1. If the caller did not source the device env (Criterion etc. from the carried .device-deps), try
#    ../shared/device/env.sh, shared/device/env.sh, then the carried copy .device-env/env.sh.
# 2. KR_TESTDATA for executables run outside meson (sanitizer pass, benches): ../shared/testdata, or
#    the carried .device-testdata (the device machine has no ../shared).
# 3. KERNRUN_REQUIRE_GPU defaults to 1 (GPU tests fail instead of skipping).
if ! pkg-config --exists criterion 2>/dev/null; then
  for kr_env_f in ../shared/device/env.sh shared/device/env.sh .device-env/env.sh; do
    if [ -f "$kr_env_f" ]; then . "$kr_env_f"; break; fi
  done
  unset kr_env_f
fi
if [ -z "${KR_TESTDATA:-}" ]; then
  if [ -d ../shared/testdata ]; then KR_TESTDATA=$(cd ../shared/testdata && pwd)
  elif [ -d .device-testdata ]; then KR_TESTDATA=$PWD/.device-testdata; fi
fi
export KR_TESTDATA
export KERNRUN_REQUIRE_GPU=${KERNRUN_REQUIRE_GPU:-1}
