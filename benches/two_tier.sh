#!/usr/bin/env bash
# The seed operators' two tiers with blocksnap (issue #14): a staged
# snapshot into a local repository (the node is down only while its data is
# frozen), then `copy` of it to S3 (s3s-fs on loopback, shaped to LINK,
# default 1gbit, when run as root). Full, then incremental after BLOCKS
# blocks. Reports the node's downtime, the local snapshot's time and the
# time until the snapshot is safe on S3, with the requests.
#
#   benches/two_tier.sh [SIZE_MIB] [BLOCKS]       (defaults: 1024, 1000)
#
# Needs a release build (cargo build --release -p blocksnap-cli) and s3s-fs
# in ~/.cache/blocksnap-s3s (see .ci/run). Work files in $BENCH_DIR.
set -euo pipefail
size_mib=${1:-1024}
blocks=${2:-1000}
link=${LINK:-1gbit}
bin="${BLOCKSNAP_BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/blocksnap-target}/release/blocksnap}"
s3s="${BLOCKSNAP_S3S_FS:-$HOME/.cache/blocksnap-s3s/bin/s3s-fs}"
work="${BENCH_DIR:-$HOME/.cache/blocksnap-bench}"
for f in "$bin" "$s3s"; do [ -x "$f" ] || { echo "missing $f (see the header)" >&2; exit 1; }; done
out="$work/two-tier"
base="$work/node-base/loopchain"
mkdir -p "$work"
. "$(dirname "$0")/node_base.sh"
node_base
rm -rf "$out" && mkdir -p "$out/s3/bench" "$out/node"
node="$out/node/loopchain"
cp -a "$base" "$node"

port=$((20000 + RANDOM % 20000))
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench-secret AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
"$s3s" --host 127.0.0.1 --port "$port" --access-key "$AWS_ACCESS_KEY_ID" \
  --secret-key "$AWS_SECRET_ACCESS_KEY" "$out/s3" >/dev/null 2>&1 &
server=$!
shaped=
trap 'kill $server 2>/dev/null; [ -z "$shaped" ] || tc qdisc del dev lo root 2>/dev/null' EXIT
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
if [ "$(id -u)" = 0 ] && command -v tc >/dev/null && tc qdisc add dev lo root tbf rate "$link" burst 1mb latency 50ms; then
  shaped=1
else
  link="unshaped"
fi
local_repo="$out/local"
"$bin" init --repo "$local_repo" >/dev/null
field() { python3 -c "import json,sys; v=json.load(open(sys.argv[1]))
for k in sys.argv[2].split('.'): v=v[k]
print(v)" "$1" "$2"; }
req() { python3 -c "import json,sys; r=json.load(open(sys.argv[1]))[sys.argv[2]] or {}; print('PUT %d GET %d HEAD %d LIST %d' % (r.get('put',0), r.get('get',0), r.get('head',0), r.get('list',0)))" "$1" "$2"; }
declare -A T
run() {
  local name=$1; shift
  sync
  local t0 t1
  t0=$(date +%s.%N)
  "$@" >"$out/$name.json" 2>"$out/$name.err" || { echo "$name failed:" >&2; cat "$out/$name.err" >&2; exit 1; }
  t1=$(date +%s.%N)
  T[$name]=$(echo "$t1 - $t0" | bc)
}
echo "| step | node downtime | local snapshot (wall) | copy to S3 (wall) | safe on S3 after | copy requests (S3) |"
echo "|---|---:|---:|---:|---:|---|"
for step in full incremental; do
  if [ "$step" = incremental ]; then "$bin" generate --dir "$node" --blocks "$blocks" >/dev/null; fi
  run "${step}_snap" "$bin" snapshot --repo "$local_repo" --source "$node" --height-cmd 'echo 1' \
    --stop-cmd true --start-cmd true --cache-dir "$out/cache" --json
  run "${step}_copy" env BLOCKSNAP_S3_ENDPOINT= "$bin" copy --repo "$local_repo" latest \
    --to s3://bench/tier2 --to-endpoint "http://127.0.0.1:$port" --json
  down=$(field "$out/${step}_snap.json" stage.downtime 2>/dev/null || echo "?")
  printf "| %s | %s s | %.2f s | %.2f s | %.2f s | %s |\n" "$step" "$down" "${T[${step}_snap]}" \
    "${T[${step}_copy]}" "$(echo "${T[${step}_snap]} + ${T[${step}_copy]}" | bc)" \
    "$(req "$out/${step}_copy.json" destination_requests)"
done
echo
echo "node $(du -sb "$node" | cut -f1) bytes; S3 = s3s-fs on loopback, $link; stop/start commands are \`true\` (a real node adds its own stop and start time to the downtime)."
