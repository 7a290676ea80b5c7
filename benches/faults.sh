#!/usr/bin/env bash
# Reliability figures (issue #9): many injected faults and many kill -9s.
#
#   FAULTS=10000 S3_FAULTS=2000 KILLS=60 benches/faults.sh
#
# - FAULTS faults (flipped bits, truncations, appended tails, deleted
#   objects) in chunks and manifests of a local and an in-memory repository,
#   each followed by a full verify that must name the file and chunk (or the
#   snapshot) and, every 10th, a restore that must refuse it;
# - S3_FAULTS more in the objects an s3s-fs server holds, verified through
#   S3 (every 5th also restored);
# - KILLS kill -9s of `snapshot` and as many of `restore` at random points,
#   each followed by a full verify of every committed snapshot and a re-run
#   that must complete (a snapshot storing exactly the missing chunks).
# The same tests run in CI with small counts; this runs them long, in the
# release profile. Prints each test's summary line.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=../.ci/rocksdb-env.sh
source .ci/rocksdb-env.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/blocksnap-target}"
export BLOCKSNAP_S3S_FS="${BLOCKSNAP_S3S_FS:-$HOME/.cache/blocksnap-s3s/bin/s3s-fs}"
export BLOCKSNAP_FAULTS="${FAULTS:-10000}" BLOCKSNAP_S3_FAULTS="${S3_FAULTS:-2000}" \
  BLOCKSNAP_KILLS="${KILLS:-60}" CI=true
run() {
  local started=$SECONDS
  cargo test --release --locked "$@" -- --nocapture 2>&1 | grep -E '^(faults|kills):|^fault [0-9]|test result|panicked' || true
  echo "  ($((SECONDS - started)) s)"
}
run -p blocksnap-engine --test faults
run -p blocksnap-s3 --test s3 every_fault
run -p blocksnap-cli --test crash killed_anywhere
