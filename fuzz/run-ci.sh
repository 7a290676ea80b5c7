#!/usr/bin/env bash
# Every fuzz target for SECONDS (default 15) each with cargo-fuzz (libFuzzer,
# coverage-guided) on the stable toolchain: the checked-in seeds and past
# crashes are read, new inputs go to a scratch corpus. Fails when a target
# finds a crash (its input is left in artifacts/<target>/ and printed), and
# prints each target's executions.
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-15}
export RUSTC_BOOTSTRAP=1
td=${CARGO_TARGET_DIR:-target}
cargo fuzz build -O --target-dir "$td"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
status=0
for t in $(ls fuzz_targets | sed 's/\.rs$//'); do
  mkdir -p "$work/$t" "regressions/$t"
  if ! cargo fuzz run -O --target-dir "$td" "$t" "$work/$t" "corpus/$t" "regressions/$t" -- \
      -max_total_time="$seconds" -rss_limit_mb=2048 -print_final_stats=1 >"$work/$t.log" 2>&1; then
    echo "$t: CRASH"; tail -40 "$work/$t.log"; status=1
  fi
  runs=$(grep -E '^stat::number_of_executed_units' "$work/$t.log" | awk '{print $2}')
  echo "$t: ${runs:-?} executions in ${seconds} s"
done
exit $status
