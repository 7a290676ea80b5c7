#!/usr/bin/env bash
# A repository with many snapshots on the S3 test server (s3s-fs): does
# working with one snapshot stay cheap? Writes N synthetic hourly snapshots
# (benches/verify_scale.rs: 50 files of one chunk, 2 changing per hour,
# stand-in chunk objects: many snapshots, not many chunks, which s3s-fs
# lists slowly) straight into s3s-fs's directory, then real snapshots of
# a generated node on top through S3, and times, with the store requests
# each makes:
#   the first snapshot of a new history (it reads every manifest once,
#   looking for a parent) and the next one, list (manifest cache cold,
#   then warm), restore latest (the real one), quick verify of the latest
#   (cache cold, then warm).
#
#   benches/many_snapshots.sh [N]      (default 10000)
#
# Needs release builds (cargo build --release -p blocksnap-cli; cargo bench
# -p blocksnap-engine --bench verify_scale --no-run) and s3s-fs in
# ~/.cache/blocksnap-s3s (see .ci/run). Work files in $BENCH_DIR.
set -euo pipefail
n=${1:-10000}
root="$(cd "$(dirname "$0")/.." && pwd)"
bin="${BLOCKSNAP_BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/blocksnap-target}/release/blocksnap}"
s3s="${BLOCKSNAP_S3S_FS:-$HOME/.cache/blocksnap-s3s/bin/s3s-fs}"
work="${BENCH_DIR:-$HOME/.cache/blocksnap-bench}"
out="$work/many-snapshots"
rm -rf "$out" && mkdir -p "$out/s3/bench"
echo "== writing $n synthetic snapshots" >&2
t0=$(date +%s.%N)
(cd "$root" && cargo bench -q -p blocksnap-engine --bench verify_scale -- "$out/s3/bench/repo" "$n" 50 1 2 >&2)
echo "  $(echo "$(date +%s.%N) - $t0" | bc) s" >&2
rm -rf "$out/s3/bench/repo/tmp"

port=$((20000 + RANDOM % 20000))
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench-secret AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
"$s3s" --host 127.0.0.1 --port "$port" --access-key "$AWS_ACCESS_KEY_ID" \
  --secret-key "$AWS_SECRET_ACCESS_KEY" "$out/s3" >/dev/null 2>&1 &
server=$!
trap 'kill $server 2>/dev/null' EXIT
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
export BLOCKSNAP_S3_ENDPOINT="http://127.0.0.1:$port" BLOCKSNAP_REPO=s3://bench/repo

"$bin" generate --dir "$out/node/loopchain" --size-mib 64 >/dev/null

declare -A T R
run() { # NAME CMD...: wall time and requests (from --json, else from -v's log)
  local name=$1; shift
  local t0 t1
  t0=$(date +%s.%N)
  "$@" >"$out/$name.out" 2>"$out/$name.err" || { echo "$name failed:" >&2; cat "$out/$name.err" >&2; exit 1; }
  t1=$(date +%s.%N)
  T[$name]=$(echo "$t1 - $t0" | bc)
  R[$name]=$(python3 - "$out/$name.out" "$out/$name.err" <<'PY'
import json, re, sys
try:
    r = json.load(open(sys.argv[1])).get("requests") or {}
    print("GET %d, HEAD %d, LIST %d" % (r.get("get", 0), r.get("head", 0), r.get("list", 0)))
except Exception:
    m = re.search(r"store requests: (GET \d+, HEAD \d+, LIST \d+)", open(sys.argv[2]).read())
    print(m.group(1) if m else "?")
PY
)
  echo "  $name: ${T[$name]} s, ${R[$name]}" >&2
}
# Above every synthetic height (1 000 000 + 1 800 per hour): `latest`.
top=$((1000000 + 1800 * n + 1000000))
# The first snapshot of a new history reads every manifest once (to find
# a parent); the next reads one.
run snapshot_new_history "$bin" snapshot --source "$out/node/loopchain" --height "$top" --cache-dir "$out/snapcache" --json
"$bin" generate --dir "$out/node/loopchain" --blocks 100 >/dev/null
run snapshot_next "$bin" snapshot --source "$out/node/loopchain" --height $((top + 100)) --cache-dir "$out/snapcache" --json
run list_cold "$bin" -v list --cache-dir "$out/cache"
run list_warm "$bin" -v list --cache-dir "$out/cache"
run restore "$bin" restore latest --ip 10.0.0.7 --target "$out/restored" --json
run verify_cold "$bin" verify latest --cache-dir "$out/cache2" --json
run verify_warm "$bin" verify latest --cache-dir "$out/cache2" --json
listed=$(($(wc -l <"$out/list_warm.out") - 1))
echo
echo "| command | time | store requests |"
echo "|---|---:|---|"
for k in snapshot_new_history snapshot_next list_cold list_warm restore verify_cold verify_warm; do
  printf '| %s | %.2f s | %s |\n' "$k" "${T[$k]}" "${R[$k]}"
done
echo
echo "$listed snapshots listed ($n synthetic + 2 real of a 64 MiB node); s3s-fs on loopback, $(nproc) cores, $(date -u +%F)."
