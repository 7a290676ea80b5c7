#!/usr/bin/env bash
# What an hourly snapshot costs with the local state (stat cache + chunk
# index), on the local store and on generated node data:
#   full snapshot (empty cache), incremental after BLOCKS blocks, the same
#   incremental with --rehash (every file read, as without the stat cache),
#   and a staged snapshot (--stop-cmd/--start-cmd) of a running "node" after
#   another BLOCKS blocks, with the node's downtime.
# The "node" is a process holding every database's LOCK with flock, as
# goloop does; the stop command kills it, the start command starts it again
# in the background.
#
#   benches/incremental.sh [SIZE_MIB] [BLOCKS]     (defaults: 2300 MiB, 1000 blocks)
#
# Needs a release build (cargo build --release -p blocksnap-cli). Work files
# in $BENCH_DIR (default ~/.cache/blocksnap-bench), the generated node is
# shared with benches/e2e.sh.
set -euo pipefail
size_mib=${1:-2300}
blocks=${2:-1000}
root="$(cd "$(dirname "$0")/.." && pwd)"
bin="${BLOCKSNAP_BIN:-${CARGO_TARGET_DIR:-$root/target}/release/blocksnap}"
work="${BENCH_DIR:-$HOME/.cache/blocksnap-bench}"
base="$work/node-base/loopchain"
out="$work/incr"
node="$out/node/loopchain"
[ -x "$bin" ] || { echo "no release binary at $bin: cargo build --release -p blocksnap-cli" >&2; exit 1; }

mkdir -p "$work"
. "$(dirname "$0")/node_base.sh"
node_base
rm -rf "$out" && mkdir -p "$out/node"
cp -a "$work/node-base/loopchain" "$node"
repo="$out/repo"
cache="$out/cache"
"$bin" init --repo "$repo" >/dev/null

declare -A T
run() {
  local name=$1; shift
  sync
  local t0 t1
  t0=$(date +%s.%N)
  "$@" --json >"$out/$name.json" 2>"$out/$name.err" ||
    { echo "$name failed:" >&2; cat "$out/$name.err" >&2; exit 1; }
  t1=$(date +%s.%N)
  T[$name]=$(echo "$t1 - $t0" | bc)
  echo "  $name: ${T[$name]} s" >&2
}
field() { python3 -c "import json,sys; d=json.load(open(sys.argv[1]))
for k in sys.argv[2].split('.'): d=d[k]
print(' '.join(f'{k} ({v})' for k, v in d.items()) if isinstance(d, dict) else d)" "$1" "$2"; }
snap() { "$bin" snapshot --repo "$repo" --cache-dir "$cache" --source "$node" "$@"; }

data=$(du -sb "$node" | cut -f1)
cat $(find "$node" -type f) >/dev/null
echo "node: $data bytes" >&2

run full snap --height 1
"$bin" generate --dir "$node" --blocks "$blocks" >/dev/null
run incr snap --height 2
run rehash snap --height 3 --rehash

# A running node: every LOCK held with flock until the process is killed.
cat >"$out/node.py" <<'EOF'
import fcntl, os, sys, time
held = []
for d, _, names in os.walk(sys.argv[1]):
    if "LOCK" in names:
        f = open(os.path.join(d, "LOCK"), "a"); fcntl.flock(f, fcntl.LOCK_EX); held.append(f)
open(sys.argv[2], "w").write(str(os.getpid()))
time.sleep(1e6)
EOF
start="python3 '$out/node.py' '$node' '$out/node.pid' & for i in \$(seq 100); do [ -s '$out/node.pid' ] && break; sleep 0.05; done"
stop="kill \$(cat '$out/node.pid') && rm '$out/node.pid'"
"$bin" generate --dir "$node" --blocks "$blocks" >/dev/null
sh -c "$start"
trap '[ -s "$out/node.pid" ] && kill "$(cat "$out/node.pid")" 2>/dev/null' EXIT
if snap --height 4 --json >/dev/null 2>"$out/live.err"; then
  echo "a snapshot of the running node was not refused" >&2; exit 1
fi
run staged snap --height 4 --stop-cmd "$stop" --start-cmd "$start"
kill "$(cat "$out/node.pid")" 2>/dev/null || true
"$bin" verify --repo "$repo" all --full >/dev/null

pct() { echo "scale=1; 100 * $1 / $2" | bc; }
read_incr=$(field "$out/incr.json" bytes_read)
share=$(echo "scale=4; $read_incr / $data" | bc)
echo
echo "| snapshot | wall | read | files unread (stat cache) | new chunks | stored | chunk index |"
echo "|---|---:|---:|---:|---:|---:|---|"
for s in full incr rehash staged; do
  printf "| %s | %.2f s | %s MiB | %s | %s | %s MiB | %s |\n" "$s" "${T[$s]}" \
    "$(( $(field "$out/$s.json" bytes_read) / 1048576 ))" "$(field "$out/$s.json" files_from_cache)" \
    "$(field "$out/$s.json" new_chunks)" "$(( $(field "$out/$s.json" new_stored_bytes) / 1048576 ))" \
    "$(field "$out/$s.json" chunk_index)"
done
echo
printf "incremental: %.2f s = %s %% of the full snapshot's %.2f s; it read %s %% of the node's bytes\n" \
  "${T[incr]}" "$(pct "${T[incr]}" "${T[full]}")" "${T[full]}" "$(pct "$read_incr" "$data")"
printf "limit from issue #4: max(5 %%, 1.5 x changed share %s %%) of full = %.2f s\n" \
  "$(echo "scale=1; 100 * $share" | bc)" \
  "$(echo "m = 0.05; c = 1.5 * $share; if (c > m) m = c; m * ${T[full]}" | bc -l)"
printf "staged: node down %s s (lock wait %s s, staging %s s: %s files linked, %s copied, %s MiB copied); snapshot %.2f s in all\n" \
  "$(field "$out/staged.json" stage.downtime)" "$(field "$out/staged.json" stage.lock_wait)" \
  "$(field "$out/staged.json" stage.staging)" "$(field "$out/staged.json" stage.files_linked)" \
  "$(field "$out/staged.json" stage.files_copied)" "$(( $(field "$out/staged.json" stage.bytes_copied) / 1048576 ))" \
  "${T[staged]}"
echo "refused while running: $(head -c 300 "$out/live.err")"
