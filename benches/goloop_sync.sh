#!/usr/bin/env bash
# ICON 2 (goloop) side by side (issue #23): blocksnap against icon2-docker's
# own practice on the same goleveldb node and the same S3 test server.
#
# icon2-docker (ctx/manager/backup_v2.py, restore_v3.py): stop the node,
# `aws s3 sync <node dir> s3://… --delete` (sockets, rconfig, auth, temp,
# restore excluded), start it; an index of every file (aria2c input:
# URL + out=path) with a checksum of each file's size and the xxh3 of its
# last 10 KiB; restores fetch every file with `aria2c -j10 -x8` and check
# those checksums. blocksnap: a staged snapshot (here with `true` as the
# stop and start commands: no node runs, so the stop→start window is the
# staging itself) to an S3 repository; restore into an empty directory and
# into a node 1 000 blocks behind.
#
#   benches/goloop_sync.sh [SIZE_MIB]        (default 1024)
#
# The node is grown by goleveldb itself (tests/goloopgen), 5 000 blocks at
# a time until it holds SIZE_MIB, then by 1 000 and by 10 000 blocks. The
# S3 server is s3s-fs (signed requests, objects as files); aria2c reads
# the same objects through a static web server on s3s-fs's directory (the
# "index" restore wants plain GETs). Reports bytes uploaded per increment,
# time to safe on S3, node downtime, restore time and bytes downloaded,
# and what each detects when one byte in the middle of a stored table is
# flipped in the bucket.
#
# Needs: a release build, s3s-fs (.ci/run), goloopgen
# (~/.cache/blocksnap-goloopgen, .ci/run), awscli in
# ~/.cache/blocksnap-awscli (python3 -m venv …; pip install awscli),
# aria2c and xxhsum (apt-get install aria2 xxhash), GNU time.
set -euo pipefail
size_mib=${1:-1024}
root="$(cd "$(dirname "$0")/.." && pwd)"
bin="${BLOCKSNAP_BIN:-${CARGO_TARGET_DIR:-$root/target}/release/blocksnap}"
s3s="${BLOCKSNAP_S3S_FS:-$HOME/.cache/blocksnap-s3s/bin/s3s-fs}"
gen="${BLOCKSNAP_GOLOOPGEN:-$HOME/.cache/blocksnap-goloopgen/goloopgen}"
aws="${AWS_BIN:-$HOME/.cache/blocksnap-awscli/bin/aws}"
work="${BENCH_DIR:-$HOME/.cache/blocksnap-bench}/goloop"
for f in "$bin" "$s3s" "$gen" "$aws" "$(command -v aria2c)" "$(command -v xxhsum)"; do
  [ -x "$f" ] || { echo "missing $f (see the header)" >&2; exit 1; }
done
mkdir -p "$work"

# The base node, grown once and kept.
base="$work/base-$size_mib"
if [ ! -f "$base.done" ]; then
  rm -rf "$base"
  while [ "$(du -sm "$base" 2>/dev/null | cut -f1 || echo 0)" -lt "$size_mib" ]; do
    "$gen" -dir "$base" -blocks 5000 -trie 60 >/dev/null
  done
  touch "$base.done"
fi
rm -rf "$work/run" && mkdir -p "$work/run/s3/bench"
node="$work/run/node"
cp -a "$base" "$node"

port=$((20000 + RANDOM % 20000))
web=$((port + 1))
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench-secret AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
"$s3s" --host 127.0.0.1 --port "$port" --access-key "$AWS_ACCESS_KEY_ID" \
  --secret-key "$AWS_SECRET_ACCESS_KEY" "$work/run/s3" >/dev/null 2>&1 &
server=$!
python3 -m http.server "$web" --bind 127.0.0.1 --directory "$work/run/s3/bench" >/dev/null 2>&1 &
webserver=$!
trap 'kill $server $webserver 2>/dev/null' EXIT
endpoint="http://127.0.0.1:$port"
for p in $port $web; do
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null && break; sleep 0.1; done
done
export BLOCKSNAP_S3_ENDPOINT="$endpoint"
repo="s3://bench/blocksnap"
excl=(--exclude "*.sock" --exclude "*rconfig.json" --exclude "*auth.json" --exclude "*temp*" --exclude "*restore*")

# t OUT CMD…: runs CMD, GNU time's "wall user sys rss" into OUT.time.
t() { local out=$1; shift; /usr/bin/time -f "%e %U %S %M" -o "$out.time" "$@" >"$out.out" 2>"$out.err" || {
  echo "$* failed" >&2; tail -5 "$out.err" >&2; exit 1; }; }
wall() { cut -d' ' -f1 "$1.time"; }
mib() { echo "scale=1; $1 / 1048576" | bc; }
json() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))" "$1" "$2"; }
# Bytes `aws s3 sync` uploaded: the sizes of the files it names.
# (Progress lines end in carriage returns.)
synced() { tr '\r' '\n' <"$1" | { grep -o '^upload: [^ ]*' || true; } | cut -d' ' -f2 |
  while read -r f; do stat -c %s "$f"; done | awk '{s+=$1} END {print s+0}'; }

"$bin" init --repo "$repo" >/dev/null
rows=()
step() { # NAME
  local name=$1 o="$work/run/$1"
  t "$o-sync" "$aws" --endpoint-url "$endpoint" s3 sync "$node/" "s3://bench/sync/" --delete "${excl[@]}"
  t "$o-bs" "$bin" snapshot --json --repo "$repo" --host prep-1 --source "$node" \
    --cache-dir "$work/run/cache" --stop-cmd true --start-cmd true
  local up_sync up_bs down
  up_sync=$(synced "$o-sync.out")
  up_bs=$(json "$o-bs.out" 'd["new_stored_bytes"]')
  down=$(json "$o-bs.out" 'round(d["stage"]["downtime"], 2)')
  rows+=("| $name | $(mib "$up_sync") MiB, $(wall "$o-sync") s (the node is down throughout) | $(mib "$up_bs") MiB, $(wall "$o-bs") s, node down ${down} s | height $(json "$o-bs.out" 'd["height"]') |")
}
echo "node: $(du -sm "$node" | cut -f1) MiB at height $("$gen" -dir "$node" -blocks 0 | python3 -c 'import json,sys; print(json.load(sys.stdin)["height"])'), $(find "$node" -type f | wc -l) files; $(nproc) cores"
step "full"
cp -a "$node" "$work/run/behind"
"$gen" -dir "$node" -blocks 1000 -trie 60 >/dev/null
step "+1 000 blocks"
cp -a "$node" "$work/run/behind-node"
"$gen" -dir "$node" -blocks 1000 -trie 60 >/dev/null
step "+1 000 blocks (again)"
"$gen" -dir "$node" -blocks 10000 -trie 60 >/dev/null
step "+10 000 blocks"
echo
echo "| increment | icon2-docker: aws s3 sync --delete | blocksnap (staged) | |"
echo "|---|---|---|---|"
printf '%s\n' "${rows[@]}"

# The index icon2-docker's restore reads: aria2c input and checksums
# (size, xxh3 of the last 10 KiB) of every file as uploaded.
index="$work/run/index.txt"; sums="$work/run/checksums.txt"
: >"$index"; : >"$sums"
(cd "$node" && find . -type f ! -name '*.sock' ! -name 'rconfig.json' ! -name 'auth.json' | sed 's|^\./||' | sort) |
  while read -r f; do
    printf 'http://127.0.0.1:%s/sync/%s\n\tout=%s\n' "$web" "$f" "$f" >>"$index"
    printf '%s %s %s\n' "$f" "$(stat -c %s "$node/$f")" "$(tail -c 10240 "$node/$f" | xxhsum -H3 | cut -d' ' -f1)" >>"$sums"
  done
check() { # DIR: files whose size or last-10-KiB xxh3 differ
  local bad=0
  while read -r f size sum; do
    [ "$(stat -c %s "$1/$f" 2>/dev/null)" = "$size" ] &&
      [ "$(tail -c 10240 "$1/$f" | xxhsum -H3 | cut -d' ' -f1)" = "$sum" ] || bad=$((bad + 1))
  done <"$sums"
  echo "$bad"
}
r="$work/run"
rm -rf "$r/aria" && t "$r/aria" aria2c -q -j10 -x8 -i "$index" -d "$r/aria"
aria_bytes=$(du -sb "$r/aria" | cut -f1)
aria_bad=$(check "$r/aria")
t "$r/bs-empty" "$bin" restore --json --repo "$repo" latest --target "$r/bs-empty-target" --with-consensus-wal
t "$r/bs-behind" "$bin" restore --json --repo "$repo" latest --target "$r/behind-node" --force --with-consensus-wal
cmp -s <(cd "$node" && find . -type f ! -name '*.sock' -exec md5sum {} + | sort) \
  <(cd "$r/bs-empty-target" && find . -type f -exec md5sum {} + | sort) || { echo "blocksnap restore differs from the node" >&2; exit 1; }
echo
echo "| restore | icon2-docker: aria2c -j10 -x8 of every file | blocksnap restore |"
echo "|---|---|---|"
echo "| into an empty directory | $(wall "$r/aria") s, $(mib "$aria_bytes") MiB downloaded | $(wall "$r/bs-empty") s, $(mib "$(json "$r/bs-empty.out" 'd["stored_bytes_downloaded"]')") MiB downloaded |"
echo "| into the node 1 000 blocks behind | the same: every file again (restores are always full) | $(wall "$r/bs-behind") s, $(mib "$(json "$r/bs-behind.out" 'd["stored_bytes_downloaded"]')") MiB downloaded, $(json "$r/bs-behind.out" 'd["files_kept"]') files kept |"
echo "| checksums after download | $aria_bad of $(wc -l <"$sums") files differ (size + xxh3 of the last 10 KiB) | every chunk and file checked against its hash |"

# One byte flipped in the middle of the largest table, as stored.
table=$(cd "$r/s3/bench/sync" && find . -name '*.ldb' -printf '%s %p\n' | sort -n | tail -1 | cut -d' ' -f2)
flip() { python3 - "$1" <<'EOF'
import sys
p = sys.argv[1]
with open(p, 'r+b') as f:
    f.seek(0, 2); n = f.tell(); f.seek(n // 2); b = f.read(1); f.seek(n // 2); f.write(bytes([b[0] ^ 0x20]))
EOF
}
flip "$r/s3/bench/sync/$table"
# The chunk written last: one the latest snapshot holds.
chunk=$(find "$r/s3/bench/blocksnap/chunks" -type f -printf '%T@ %p\n' | sort -n | tail -1 | cut -d' ' -f2)
flip "$chunk"
rm -rf "$r/aria2" && t "$r/aria2" aria2c -q -j10 -x8 -i "$index" -d "$r/aria2"
aria_bad2=$(check "$r/aria2")
set +e
"$bin" verify --repo "$repo" latest --full >"$r/verify.out" 2>&1; verify_rc=$?
"$bin" restore --repo "$repo" latest --target "$r/bs-flipped" --with-consensus-wal >"$r/restore-flipped.out" 2>&1; restore_rc=$?
set -e
echo
echo "| one byte flipped in the middle of a stored table | icon2-docker | blocksnap |"
echo "|---|---|---|"
echo "| detected | $( [ "$aria_bad2" -gt "$aria_bad" ] && echo "yes" || echo "no: the restore's checksums pass ($aria_bad2 files differ), the table is damaged on disk") | verify --full exit $verify_rc, restore exit $restore_rc: $(grep -m1 -o 'chunk [0-9a-f]*' "$r/restore-flipped.out" || true) |"
