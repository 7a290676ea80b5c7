#!/usr/bin/env bash
# What a staged snapshot costs a node that runs while blocksnap reads,
# compresses and writes (issue #13, "Gentle on a running node"). A CPU-bound
# stand-in for the node (one sha256 loop per core, counting its work) runs
# throughout; each mode takes a full staged snapshot of the same generated
# node into a new local repository (--stop-cmd/--start-cmd true: the
# stand-in never stops), first with every core busy, then with one.
# Reported: blocksnap's wall time and how much the
# stand-in slowed during it, against its rate alone.
#
#   benches/gentle.sh [SIZE_MIB] [LIMIT]      (defaults: 1024, 50MiB)
#
# Modes: --priority normal; the default (auto: low once the node runs
# again); the default with --limit-upload LIMIT.
# Needs a release build (cargo build --release -p blocksnap-cli), python3.
set -euo pipefail
size_mib=${1:-1024}
limit=${2:-50MiB}
bin="${BLOCKSNAP_BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/blocksnap-target}/release/blocksnap}"
work="${BENCH_DIR:-$HOME/.cache/blocksnap-bench}"
base="$work/node-base/loopchain"
mkdir -p "$work"
. "$(dirname "$0")/node_base.sh"
node_base
out="$work/gentle"
rm -rf "$out" && mkdir -p "$out/node"
node="$out/node/loopchain"
cp -a "$base" "$node"
cat $(find "$node" -type f) >/dev/null
cpus=$(nproc)

# rate T0 T1: MiB hashed per second by all stand-ins between two times.
rate() {
  python3 - "$1" "$2" "$out"/standin* <<'PY'
import bisect, sys
t0, t1 = float(sys.argv[1]), float(sys.argv[2])
total = 0.0
for path in sys.argv[3:]:
    rows = [tuple(map(float, l.split())) for l in open(path) if l.count(" ") == 1]
    times = [r[0] for r in rows]
    a = rows[max(0, bisect.bisect_left(times, t0) - 1)]
    b = rows[min(len(rows) - 1, bisect.bisect_left(times, t1))]
    total += (b[1] - a[1]) / (b[0] - a[0])
print("%.1f" % total)
PY
}
mode() {
  local label=$1; shift
  rm -rf "$out/repo" "$out/cache"
  "$bin" init --repo "$out/repo" >/dev/null
  sync
  local a b
  a=$(date +%s.%N)
  "$bin" snapshot --repo "$out/repo" --source "$node" --height 1 --cache-dir "$out/cache" \
    --stop-cmd true --start-cmd true "$@" >/dev/null
  b=$(date +%s.%N)
  local r
  r=$(rate "$a" "$b")
  printf '| %s | %.2f s | %s MiB/s | %.0f %% |\n' "$label" "$(echo "$b - $a" | bc)" "$r" \
    "$(echo "100 * (1 - $r / $alone)" | bc -l)" >>"$out/table.md"
  tail -1 "$out/table.md" >&2
  sleep 2
}
# experiment N: N stand-ins (N of the cores busy), each mode once.
experiment() {
local n=$1
rm -f "$out"/standin*
pids=()
for i in $(seq "$n"); do
  python3 - "$out/standin$i" <<'PY' &
import hashlib, os, sys, time
buf, n = os.urandom(1 << 20), 0
with open(sys.argv[1], "w", buffering=1) as f:
    while True:
        for _ in range(4):
            hashlib.sha256(buf).digest()
            n += 1
        f.write("%.4f %d\n" % (time.time(), n))
PY
  pids+=($!)
done
trap 'kill ${pids[*]} 2>/dev/null || true' EXIT
sleep 2
t0=$(date +%s.%N); sleep 8; t1=$(date +%s.%N)
alone=$(rate "$t0" "$t1")
echo "$n stand-ins alone: $alone MiB/s" >&2
printf '| %s of %s cores busy: stand-in alone | | %s MiB/s | |\n' "$n" "$cpus" "$alone" >>"$out/table.md"
mode "--priority normal" --priority normal
mode "default (auto: low once the node runs)"
mode "default + --limit-upload $limit" --limit-upload "$limit"
kill "${pids[@]}" 2>/dev/null; wait "${pids[@]}" 2>/dev/null || true
}
printf '| mode | blocksnap wall | stand-in rate | stand-in slowed by |\n|---|---:|---:|---:|\n' >"$out/table.md"
experiment "$cpus"
experiment 1
cat "$out/table.md"
echo
echo "node $(du -sb "$node" | cut -f1) bytes; stand-ins: sha256 loops, one per busy core; local store; $(date -u +%F)."
