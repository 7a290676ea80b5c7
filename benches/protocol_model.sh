#!/usr/bin/env bash
# The writer/copy/forget/prune protocol's evidence, uncapped (issue #21):
# - the model checker of FORMAT.md §10 (tests/protocol_model.rs) with no cap
#   on distinct states per case (CI caps at the default of the test);
# - every interleaving of two actors on memory, a local directory and S3 on
#   s3s-fs (tests/prune_interleavings.rs; CI runs 4 per pair on S3);
# - prune killed at every crash point, more kills (tests/prune_stress.rs);
# - each fuzz target for FUZZ_SECS (default 300) with cargo-fuzz.
# Prints the states, interleavings and executions each reports; writes them
# to benches/results/protocol.md.
#
#   benches/protocol_model.sh
#
# Needs s3s-fs in ~/.cache/blocksnap-s3s (see .ci/run) and cargo-fuzz.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
. .ci/rocksdb-env.sh
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/blocksnap-target}
export CI=true
export BLOCKSNAP_S3S_FS="${BLOCKSNAP_S3S_FS:-$HOME/.cache/blocksnap-s3s/bin/s3s-fs}"
export BLOCKSNAP_MODEL_STATES=${BLOCKSNAP_MODEL_STATES:-1000000000}
export BLOCKSNAP_INTERLEAVINGS=${BLOCKSNAP_INTERLEAVINGS:-1000000}
export BLOCKSNAP_PRUNE_KILLS=${BLOCKSNAP_PRUNE_KILLS:-60}
export BLOCKSNAP_STRESS_SECS=${BLOCKSNAP_STRESS_SECS:-120}
out="$root/benches/results/protocol.md"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for t in protocol_model prune_interleavings prune_stress; do
  /usr/bin/time -f "$t: %e s wall" cargo test --locked --workspace \
    --test "$t" -- --nocapture --test-threads 1 2>&1 | tee -a "$log"
done
PATH="$HOME/.cache/blocksnap-cargo-fuzz/bin:$PATH" fuzz/run-ci.sh "${FUZZ_SECS:-300}" | tee -a "$log"
{
  echo "# Protocol evidence, uncapped ($(git rev-parse --short HEAD), $(date -u +%F))"
  echo
  echo '`benches/protocol_model.sh`: model states per case, interleavings per store, prune kills, fuzz executions.'
  echo
  echo '```'
  grep -E 'states|interleavings|kill|executions|wall|test result' "$log"
  echo '```'
} > "$out"
echo "wrote $out"
