# tools/gpu-dev/common.sh — sourced by each tools/gpu-dev/<name>.sh after `cd` to the repository root
# (without arguments, so the script's own $1 stays `test` or `bench`). Sets the defaults run-all
# passes (LOG, BUILD, part) and provides the header every part writes first.
LOG=${LOG:-/dev/stdout}
BUILD=${BUILD:-build}
part=${1:-test}

# gpu_dev_header NAME "PATHS" [NVIDIA-SMI FIELDS]: "== NAME PART: commit C, N changed files under
# NAME's paths, HH:MM:SS" and the card line (default fields: name, driver) into $LOG.
gpu_dev_header() {
  local name=$1 mine=$2 fields=${3:-name,driver_version}
  {
    # shellcheck disable=SC2086
    echo "== $name $part: commit $(git rev-parse --short HEAD 2>/dev/null), $(git status --porcelain -- $mine 2>/dev/null | wc -l) changed files under $name's paths, $(date -u +%H:%M:%S)"
    nvidia-smi --query-gpu="$fields" --format=csv,noheader 2>/dev/null | head -1
  } >>"$LOG" 2>&1
}
