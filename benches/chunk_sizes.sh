#!/usr/bin/env bash
# Which average chunk size? Snapshots the same generated node into one
# repository per average (min = avg/4, max = 4 x avg), advancing the node
# between snapshots, and prints bytes stored and objects written for each.
#
#   benches/chunk_sizes.sh [SIZE_MIB] [ADVANCES] [BLOCKS]   (defaults: 2300 3 1000)
#
# Uses the node that benches/e2e.sh generated (or generates it) under
# $BENCH_DIR (default ~/.cache/blocksnap-bench), on a copy.
set -euo pipefail
size_mib=${1:-2300}
advances=${2:-3}
blocks=${3:-1000}
root="$(cd "$(dirname "$0")/.." && pwd)"
bin="${BLOCKSNAP_BIN:-${CARGO_TARGET_DIR:-$root/target}/release/blocksnap}"
work="${BENCH_DIR:-$HOME/.cache/blocksnap-bench}"
base="$work/node-base/loopchain"
mkdir -p "$work"
. "$(dirname "$0")/node_base.sh"
node_base
rm -rf "$work/cs" && mkdir -p "$work/cs"
cp -a "$work/node-base" "$work/cs/node"
node="$work/cs/node/loopchain"
avgs=(64 256 1024)
for a in "${avgs[@]}"; do "$bin" init --repo "$work/cs/repo-$a" --chunk-avg-kib "$a" >/dev/null; done

printf '| %-22s |' "snapshot"
for a in "${avgs[@]}"; do printf ' avg %4s KiB: stored, objects, time |' "$a"; done
echo
for step in $(seq 0 "$advances"); do
  [ "$step" -gt 0 ] && "$bin" generate --dir "$node" --blocks "$blocks" >/dev/null
  label=$([ "$step" -eq 0 ] && echo "full" || echo "+$((step * blocks)) blocks")
  printf '| %-22s |' "$label"
  for a in "${avgs[@]}"; do
    out=$("$bin" snapshot --repo "$work/cs/repo-$a" --source "$node" --height "$step" --json)
    bytes=$(grep -o '"new_stored_bytes": [0-9]*' <<<"$out" | grep -o '[0-9]*$')
    objs=$(grep -o '"new_chunks": [0-9]*' <<<"$out" | grep -o '[0-9]*$')
    secs=$(grep -o '"seconds": [0-9.]*' <<<"$out" | grep -o '[0-9.]*$')
    printf ' %8.1f MiB, %6d, %6.2fs |' "$(awk -v b="$bytes" 'BEGIN{print b/1048576}')" "$objs" "$secs"
  done
  echo
done
printf '| %-22s |' "repository total"
for a in "${avgs[@]}"; do
  printf ' %8.1f MiB, %6d objects        |' "$(du -sb "$work/cs/repo-$a" | awk '{print $1/1048576}')" \
    "$(find "$work/cs/repo-$a/chunks" -type f | wc -l)"
done
echo
