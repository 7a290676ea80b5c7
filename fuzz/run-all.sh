#!/usr/bin/env bash
# Runs every fuzz target for SECONDS (default 600) each, JOBS (default 2) at
# a time, on the stable toolchain. New inputs go to corpus-work/ (ignored);
# the checked-in seeds in corpus/ are read, not written. Crashes land in
# artifacts/<target>/. Prints one summary line per target.
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-600}
jobs=${2:-2}
export RUSTC_BOOTSTRAP=1
cargo fuzz build -O
mkdir -p logs
run() {
  local t=$1
  mkdir -p "corpus-work/$t"
  cargo fuzz run -O "$t" "corpus-work/$t" "corpus/$t" -- -max_total_time="$seconds" -rss_limit_mb=2048 \
    >"logs/$t.log" 2>&1 || true
  local done crash
  done=$(grep -E '^Done [0-9]+ runs' "logs/$t.log" | tail -1)
  crash=$(ls "artifacts/$t" 2>/dev/null | wc -l)
  echo "$t: ${done:-no summary (see logs/$t.log)}; $crash crash artifact(s)"
}
export -f run
export seconds
printf '%s\n' $(ls fuzz_targets | sed 's/\.rs$//') | xargs -P "$jobs" -I{} bash -c 'run {}'
