#!/usr/bin/env bash
# blocksnap through a loopback S3 server (s3s-fs, which checks signatures
# and stores objects as files) against the local directory store, on the
# same generated node and the same disk:
#   full snapshot, incremental after BLOCKS blocks, restore, full verify,
# with wall time, throughput and the store requests each command reports,
# and a plain parallel GET of the same chunk objects (examples/parallel_get)
# as the ceiling for restore.
#
#   benches/s3.sh [SIZE_MIB] [BLOCKS]       (defaults: 2300 MiB, 1000 blocks)
#   LINK=1gbit benches/s3.sh                 (as root: loopback shaped to a link of
#                                             that rate with tc tbf, removed at exit)
#
# On loopback the server and blocksnap share the machine's cores, so without
# LINK the ratio to the plain GET measures CPU contention, not the network.
#
# Needs release builds: cargo build --release -p blocksnap-cli and
# cargo build --release -p blocksnap-s3 --example parallel_get; s3s-fs in
# ~/.cache/blocksnap-s3s (see .ci/run). Work files in $BENCH_DIR.
set -euo pipefail
size_mib=${1:-2300}
blocks=${2:-1000}
root="$(cd "$(dirname "$0")/.." && pwd)"
rel="${CARGO_TARGET_DIR:-$root/target}/release"
bin="${BLOCKSNAP_BIN:-$rel/blocksnap}"
pget="$rel/examples/parallel_get"
s3s="${BLOCKSNAP_S3S_FS:-$HOME/.cache/blocksnap-s3s/bin/s3s-fs}"
work="${BENCH_DIR:-$HOME/.cache/blocksnap-bench}"
base="$work/node-base/loopchain"
node="$work/node/loopchain"
for f in "$bin" "$pget" "$s3s"; do [ -x "$f" ] || { echo "missing $f (see the header)" >&2; exit 1; }; done

mkdir -p "$work"
. "$(dirname "$0")/node_base.sh"
node_base
rm -rf "$work/node" "$work/s3out" && mkdir -p "$work/s3out/s3/bench"
cp -a "$work/node-base" "$work/node"

port=$((20000 + RANDOM % 20000))
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench-secret AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
"$s3s" --host 127.0.0.1 --port "$port" --access-key "$AWS_ACCESS_KEY_ID" \
  --secret-key "$AWS_SECRET_ACCESS_KEY" "$work/s3out/s3" >/dev/null 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; [ -z "${LINK:-}" ] || tc qdisc del dev lo root 2>/dev/null' EXIT
if [ -n "${LINK:-}" ]; then
  tc qdisc add dev lo root tbf rate "$LINK" burst 1mb latency 50ms
  echo "loopback shaped to $LINK" >&2
fi
endpoint="http://127.0.0.1:$port"
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
export BLOCKSNAP_S3_ENDPOINT="$endpoint"

s3repo="s3://bench/repo"
localrepo="$work/s3out/local"
data=$(du -sb "$node" | cut -f1)
cat $(find "$node" -type f) >/dev/null
echo "node: $data bytes, s3s-fs at $endpoint" >&2

# run NAME CMD...: wall time and the command's JSON output.
declare -A T M C
run() {
  local name=$1; shift
  sync
  local t0 t1
  t0=$(date +%s.%N)
  /usr/bin/time -f '%M %U %S' -o "$work/s3out/$name.rss" "$@" >"$work/s3out/$name.json" 2>"$work/s3out/$name.err" ||
    { echo "$name failed:" >&2; cat "$work/s3out/$name.err" >&2; exit 1; }
  t1=$(date +%s.%N)
  T[$name]=$(echo "$t1 - $t0" | bc)
  local m u sy
  read -r m u sy < <(tail -1 "$work/s3out/$name.rss")
  M[$name]=$((m / 1024))
  C[$name]=$(echo "$u + $sy" | bc)
  echo "  $name: ${T[$name]} s, ${C[$name]} CPU-s, ${M[$name]} MiB peak RSS" >&2
}
req() { python3 -c "import json,sys; r=json.load(open(sys.argv[1])).get('requests') or {}; print('PUT %d GET %d HEAD %d LIST %d retries %d' % (r.get('put',0), r.get('get',0), r.get('head',0), r.get('list',0), r.get('retries',0)))" "$1"; }
field() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$1" "$2"; }

"$bin" init --repo "$localrepo" >/dev/null
"$bin" init --repo "$s3repo" >/dev/null
run local_full "$bin" snapshot --cache-dir "$work/s3out/cache" --repo "$localrepo" --source "$node" --height 1 --json
run s3_full "$bin" snapshot --cache-dir "$work/s3out/cache" --repo "$s3repo" --source "$node" --height 1 --json
"$bin" generate --dir "$node" --blocks "$blocks" >/dev/null
sync
run local_incr "$bin" snapshot --cache-dir "$work/s3out/cache" --repo "$localrepo" --source "$node" --height 2 --json
run s3_incr "$bin" snapshot --cache-dir "$work/s3out/cache" --repo "$s3repo" --source "$node" --height 2 --json
sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
run local_restore "$bin" restore --repo "$localrepo" latest --target "$work/s3out/r-local" --ip 10.0.0.8 --json
sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
run s3_restore "$bin" restore --repo "$s3repo" latest --target "$work/s3out/r-s3" --ip 10.0.0.8 --json
run s3_verify "$bin" verify --repo "$s3repo" all --full --json
run local_verify "$bin" verify --repo "$localrepo" all --full --json
sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
run parallel_get "$pget" "$endpoint" bench repo 32
diff -r "$work/s3out/r-local" "$work/s3out/r-s3" >/dev/null && echo "  restores identical" >&2

mb() { echo "scale=0; $data / $1 / 1000000" | bc; }
restored=$(field "$work/s3out/s3_restore.json" bytes)
chunk_bytes=$(field "$work/s3out/parallel_get.json" bytes)
echo
echo "| step | local store | S3 (s3s-fs, loopback) | S3 / local | S3 peak RSS | S3 requests |"
echo "|---|---:|---:|---:|---:|---|"
for s in full incr restore verify; do
  l=${T[local_$s]}; r=${T[s3_$s]}
  printf "| %s | %.1f s | %.1f s | %.2f | %s MiB | %s |\n" "$s" "$l" "$r" "$(echo "$r / $l" | bc -l)" "${M[s3_$s]}" "$(req "$work/s3out/s3_$s.json")"
done
echo
printf "S3 full snapshot: %s MB/s of node data; restore: %s MB/s of files\n" \
  "$(mb "${T[s3_full]}")" "$(echo "scale=0; $restored / ${T[s3_restore]} / 1000000" | bc)"
pg_secs=$(field "$work/s3out/parallel_get.json" seconds)
printf "plain parallel GET of the %s chunk objects (32 in flight): %s s, %s MB/s of objects\n" \
  "$(field "$work/s3out/parallel_get.json" objects)" "$pg_secs" "$(field "$work/s3out/parallel_get.json" mb_per_s)"
printf "restore (fetch, decompress, hash, write, fsync) takes %s s: %.0f %% of the plain GET's throughput\n" \
  "${T[s3_restore]}" "$(echo "100 * $pg_secs / ${T[s3_restore]}" | bc -l)"
printf "stored: full %s bytes in %s new chunks; incremental %s bytes in %s new chunks\n" \
  "$(field "$work/s3out/s3_full.json" new_stored_bytes)" "$(field "$work/s3out/s3_full.json" new_chunks)" \
  "$(field "$work/s3out/s3_incr.json" new_stored_bytes)" "$(field "$work/s3out/s3_incr.json" new_chunks)"
gib=$(echo "$restored / 1073741824" | bc -l)
printf "client CPU-seconds per GiB restored: restore %.2f (%.2f s for %s bytes), plain GET %.2f; the server's CPU is not counted\n" \
  "$(echo "${C[s3_restore]} / $gib" | bc -l)" "${C[s3_restore]}" "$restored" "$(echo "${C[parallel_get]} / $gib" | bc -l)"
printf "client CPU-seconds per GiB of node data: full snapshot %.2f\n" "$(echo "${C[s3_full]} * 1073741824 / $data" | bc -l)"
: "$chunk_bytes"
