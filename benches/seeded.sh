#!/usr/bin/env bash
# Seeded restore (issue #12): `restore latest --force` into a copy of the
# node that is 1 000 and 10 000 blocks behind, against a full restore into
# an empty directory, from the local store and from S3 (s3s-fs on loopback,
# shaped to LINK, default 1gbit, when run as root). For each: wall time,
# bytes downloaded (uncompressed and stored) against the stored bytes that
# truly differ (`blocksnap diff`: chunks of latest that the older state's
# snapshot lacks), and the floor the issue sets: the time to read the local
# data plus the time the full restore took per stored byte, times the bytes
# downloaded.
#
#   benches/seeded.sh [SIZE_MIB]          (default 1024)
#
# Needs a release build (cargo build --release -p blocksnap-cli), s3s-fs in
# ~/.cache/blocksnap-s3s (see .ci/run), tc for LINK. Work files in
# $BENCH_DIR (default ~/.cache/blocksnap-bench).
set -euo pipefail
size_mib=${1:-1024}
link=${LINK:-1gbit}
root="$(cd "$(dirname "$0")/.." && pwd)"
bin="${BLOCKSNAP_BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/blocksnap-target}/release/blocksnap}"
s3s="${BLOCKSNAP_S3S_FS:-$HOME/.cache/blocksnap-s3s/bin/s3s-fs}"
work="${BENCH_DIR:-$HOME/.cache/blocksnap-bench}"
for f in "$bin" "$s3s"; do [ -x "$f" ] || { echo "missing $f (see the header)" >&2; exit 1; }; done
out="$work/seeded"
base="$work/node-base/loopchain"
mkdir -p "$work"
. "$(dirname "$0")/node_base.sh"
node_base
rm -rf "$out" && mkdir -p "$out/s3/bench"
node="$out/node/loopchain"
mkdir -p "$out/node" && cp -a "$base" "$node"

echo "== states: 10 000 and 1 000 blocks behind, and latest" >&2
cp -a "$node" "$out/behind-10000"
"$bin" generate --dir "$node" --blocks 9000 >/dev/null
cp -a "$node" "$out/behind-1000"
"$bin" generate --dir "$node" --blocks 1000 >/dev/null

port=$((20000 + RANDOM % 20000))
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench-secret AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
"$s3s" --host 127.0.0.1 --port "$port" --access-key "$AWS_ACCESS_KEY_ID" \
  --secret-key "$AWS_SECRET_ACCESS_KEY" "$out/s3" >/dev/null 2>&1 &
server=$!
shaped=
trap 'kill $server 2>/dev/null; [ -z "$shaped" ] || tc qdisc del dev lo root 2>/dev/null' EXIT
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
export BLOCKSNAP_S3_ENDPOINT="http://127.0.0.1:$port"

local_repo="$out/local-repo"
s3_repo="s3://bench/repo"
"$bin" init --repo "$local_repo" >/dev/null
"$bin" init --repo "$s3_repo" >/dev/null
for r in "$local_repo" "$s3_repo"; do
  "$bin" snapshot --no-cache --repo "$r" --source "$out/behind-10000" --height 1 >/dev/null
  "$bin" snapshot --no-cache --repo "$r" --source "$out/behind-1000" --height 9001 >/dev/null
  "$bin" snapshot --no-cache --repo "$r" --source "$node" --height 10001 >/dev/null
done
field() { python3 -c "import json,sys; v=json.load(open(sys.argv[1])); print(v[sys.argv[2]])" "$1" "$2"; }
"$bin" diff --repo "$local_repo" 1 10001 --json >"$out/diff-10000.json"
"$bin" diff --repo "$local_repo" 9001 10001 --json >"$out/diff-1000.json"

if [ "$(id -u)" = 0 ] && command -v tc >/dev/null && tc qdisc add dev lo root tbf rate "$link" burst 1mb latency 50ms; then
  shaped=1
  echo "loopback shaped to $link" >&2
else
  link="unshaped"
fi

# run NAME CMD...: wall seconds into T[NAME], JSON output kept.
declare -A T
run() {
  local name=$1; shift
  sync
  local t0 t1
  t0=$(date +%s.%N)
  "$@" >"$out/$name.json" 2>"$out/$name.err" || { echo "$name failed:" >&2; cat "$out/$name.err" >&2; exit 1; }
  t1=$(date +%s.%N)
  T[$name]=$(echo "$t1 - $t0" | bc)
  echo "  $name: ${T[$name]} s" >&2
}
same() { diff -r "$node" "$1" >/dev/null || { echo "$1 differs from the node" >&2; exit 1; }; }

echo "| store | restore into | time | downloaded (stored) | differing stored bytes | downloaded / differing | floor: read local + download | time / floor |"
echo "|---|---|---:|---:|---:|---:|---:|---:|"
for store in local s3; do
  repo=$local_repo
  [ "$store" = s3 ] && repo=$s3_repo
  rm -rf "$out/full"
  run "${store}_full" "$bin" restore --repo "$repo" latest --target "$out/full" --ip 10.0.0.7 --json
  same "$out/full"
  full_stored=$(field "$out/${store}_full.json" stored_bytes_downloaded)
  printf "| %s | empty directory | %.2f s | %s | | | | |\n" "$store" "${T[${store}_full]}" "$full_stored"
  for behind in 1000 10000; do
    t="$out/t-$behind"
    rm -rf "$t" && cp -a "$out/behind-$behind" "$t"
    sync
    t0=$(date +%s.%N); cat $(find "$t" -type f) >/dev/null; t1=$(date +%s.%N)
    read_s=$(echo "$t1 - $t0" | bc)
    name="${store}_$behind"
    run "$name" "$bin" restore --repo "$repo" latest --target "$t" --ip 10.0.0.7 --force --json
    same "$t"
    got=$(field "$out/$name.json" stored_bytes_downloaded)
    raw=$(field "$out/$name.json" bytes_downloaded)
    differ=$(field "$out/diff-$behind.json" new_stored_bytes)
    floor=$(echo "$read_s + ${T[${store}_full]} * $got / $full_stored" | bc -l)
    printf "| %s | %s blocks behind | %.2f s | %s (%s) | %s | %.2f | %.2f s | %.2f |\n" \
      "$store" "$behind" "${T[$name]}" "$raw" "$got" "$differ" "$(echo "$got / $differ" | bc -l)" \
      "$floor" "$(echo "${T[$name]} / $floor" | bc -l)"
  done
done
echo
echo "S3 through s3s-fs on loopback, $link; node $(du -sb "$node" | cut -f1) bytes; page cache warm for the local data."
