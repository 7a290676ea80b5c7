#!/usr/bin/env bash
# Power-loss crash states at scale (issue #21): tests/crash_states.rs with
# 200 states per operation checked by running blocksnap and 20 000 in memory (CI
# checks a spread of a few per operation, and every distinct state in
# memory up to a cap), plus the mutation self-tests. Prints, per operation,
# the syscalls traced, crash states computed, distinct states and
# violations; writes them to benches/results/crash_states.md.
#
#   benches/crash_states.sh
#
# Needs strace.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
command -v strace >/dev/null || { echo "needs strace" >&2; exit 1; }
. .ci/rocksdb-env.sh
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/blocksnap-target}
export CI=true
export BLOCKSNAP_CRASH_STATES=${BLOCKSNAP_CRASH_STATES:-200}
export BLOCKSNAP_CRASH_MODEL_STATES=${BLOCKSNAP_CRASH_MODEL_STATES:-20000}
out="$root/benches/results/crash_states.md"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
/usr/bin/time -f "crash_states: %e s wall" cargo test --locked --workspace \
  --test crash_states -- --nocapture --test-threads 1 2>&1 | tee "$log"
{
  echo "# Crash states, uncapped ($(git rev-parse --short HEAD), $(date -u +%F))"
  echo
  echo '`benches/crash_states.sh`: per operation, syscalls traced, crash states under the'
  echo 'persistence model of FORMAT.md §10, distinct states, and violations.'
  echo
  echo '```'
  grep -E 'ops traced|without|wall|test result' "$log"
  echo '```'
} > "$out"
echo "wrote $out"
