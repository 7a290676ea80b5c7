#!/usr/bin/env bash
# Each blocksnap step against the machine's floor for the same work, on the
# same data, in one run, page cache warm for every step (issue #13): wall
# time, CPU seconds (user + sys) and peak RSS, and the ratio to the floor.
#
#   step                      floor
#   full snapshot             tar -cf - | zstd -1 -T0 (read, compress) + dd conv=fsync of the stored bytes
#   incremental (+BLOCKS)     b3sum of the changed files + dd conv=fsync of the new stored bytes
#   restore                   zstd -d of the compressed tar | tar -x, then sync
#   restore, cold cache       the same after dropping the page cache (as root)
#   verify --full             b3sum of the chunk objects (read) + zstd -d | b3sum of the same
#                             content (decompress and hash)
#
#   benches/floor.sh [SIZE_MIB] [BLOCKS]       (defaults: 1024, 1000)
#
# Needs a release build (cargo build --release -p blocksnap-cli) and b3sum,
# zstd and time (Debian packages). Work files in $BENCH_DIR.
set -euo pipefail
size_mib=${1:-1024}
blocks=${2:-1000}
bin="${BLOCKSNAP_BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/blocksnap-target}/release/blocksnap}"
work="${BENCH_DIR:-$HOME/.cache/blocksnap-bench}"
for tool in b3sum zstd /usr/bin/time "$bin"; do
  command -v "$tool" >/dev/null || { echo "missing $tool (see the header)" >&2; exit 1; }
done
out="$work/floor"
base="$work/node-base/loopchain"
mkdir -p "$work"
. "$(dirname "$0")/node_base.sh"
node_base
rm -rf "$out" && mkdir -p "$out/node"
node="$out/node/loopchain"
cp -a "$base" "$node"
cpus=$(nproc)
warm() { cat $(find "$@" -type f) >/dev/null 2>&1 || true; }

# run NAME CMD...: wall seconds, CPU seconds and peak RSS (MiB).
declare -A T C M
run() {
  local name=$1; shift
  sync
  /usr/bin/time -f '%e %U %S %M' -o "$out/$name.time" "$@" >"$out/$name.out" 2>"$out/$name.err" ||
    { echo "$name failed:" >&2; cat "$out/$name.err" >&2; exit 1; }
  local e u s m
  read -r e u s m < <(tail -1 "$out/$name.time")
  T[$name]=$e
  C[$name]=$(echo "$u + $s" | bc)
  M[$name]=$((m / 1024))
  echo "  $name: ${e} s wall, ${C[$name]} s CPU, ${M[$name]} MiB" >&2
}
# sum NAME...: wall seconds of several floor steps together.
sum() { local t=0; for n in "$@"; do t=$(echo "$t + ${T[$n]}" | bc); done; echo "$t"; }
csum() { local t=0; for n in "$@"; do t=$(echo "$t + ${C[$n]}" | bc); done; echo "$t"; }

repo="$out/repo"
"$bin" init --repo "$repo" >/dev/null
warm "$node"

echo "== full" >&2
run tar_zstd sh -c "tar -C '$node' -cf - . | zstd -1 -T0 -q -o '$out/node.tar.zst'"
run snap_full "$bin" snapshot --repo "$repo" --source "$node" --height 1 --cache-dir "$out/cache" --json
stored=$(du -sb "$repo/chunks" | cut -f1)
run dd_full dd if=/dev/zero of="$out/dd" bs=1M count=$((stored >> 20)) conv=fsync status=none

echo "== incremental" >&2
before=$(mktemp)
find "$node" -type f -printf '%P %s %T@\n' | sort >"$before"
"$bin" generate --dir "$node" --blocks "$blocks" >/dev/null
changed=$(find "$node" -type f -printf '%P %s %T@\n' | sort | comm -13 "$before" - | cut -d' ' -f1)
warm "$node"
(cd "$node" && printf '%s\n' $changed) >"$out/changed.txt"
run b3_changed sh -c "cd '$node' && xargs -a '$out/changed.txt' b3sum --num-threads $cpus >/dev/null"
run snap_incr "$bin" snapshot --repo "$repo" --source "$node" --height 2 --cache-dir "$out/cache" --json
new=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['new_stored_bytes'])" "$out/snap_incr.out")
run dd_incr dd if=/dev/zero of="$out/dd" bs=64K count=$(( (new >> 16) + 1 )) conv=fsync status=none

echo "== restore" >&2
warm "$repo" "$out/node.tar.zst"
mkdir -p "$out/untar"
run untar sh -c "zstd -d -q -c '$out/node.tar.zst' | tar -C '$out/untar' -xf - && sync"
run restore "$bin" restore --repo "$repo" latest --ip 10.0.0.7 --target "$out/restored" --json
# As on a new machine: nothing in the page cache (root only).
cold=""
if [ -w /proc/sys/vm/drop_caches ]; then
  cold=1
  drop() { sync; echo 3 >/proc/sys/vm/drop_caches; }
  rm -rf "$out/untar" && mkdir -p "$out/untar" && drop
  run untar_cold sh -c "zstd -d -q -c '$out/node.tar.zst' | tar -C '$out/untar' -xf - && sync"
  rm -rf "$out/restored" && drop
  run restore_cold "$bin" restore --repo "$repo" latest --ip 10.0.0.7 --target "$out/restored" --json
fi

echo "== verify" >&2
warm "$repo"
run b3_repo sh -c "find '$repo/chunks' -type f -print0 | xargs -0 b3sum --num-threads $cpus >/dev/null"
run unzstd_b3 sh -c "zstd -d -q -c '$out/node.tar.zst' | b3sum --num-threads $cpus >/dev/null"
run verify "$bin" verify --repo "$repo" all --full --no-cache --json

ratio() { echo "scale=2; $1 / $2" | bc; }
echo
echo "| step | blocksnap wall | CPU | peak RSS | floor | floor wall | floor CPU | wall / floor |"
echo "|---|---:|---:|---:|---|---:|---:|---:|"
row() {
  local name=$1 step=$2 label=$3; shift 3
  local fw fc
  fw=$(sum "$@"); fc=$(csum "$@")
  printf "| %s | %.2f s | %.2f s | %s MiB | %s | %.2f s | %.2f s | %s |\n" "$label" "${T[$step]}" "${C[$step]}" \
    "${M[$step]}" "$name" "$fw" "$fc" "$(ratio "${T[$step]}" "$fw")"
}
row "tar \| zstd -1 -T0, dd conv=fsync" snap_full "full snapshot" tar_zstd dd_full
row "b3sum changed files, dd conv=fsync" snap_incr "incremental (+$blocks blocks)" b3_changed dd_incr
row "zstd -d \| tar -x, sync" restore "restore" untar
[ -z "$cold" ] || row "zstd -d \| tar -x, sync, cold cache" restore_cold "restore, cold cache" untar_cold
row "b3sum of the chunk objects; zstd -d \| b3sum of the same content" verify "verify --full" b3_repo unzstd_b3
echo
echo "node $(du -sb "$node" | cut -f1) bytes, $(wc -l <"$out/changed.txt") files changed by +$blocks blocks; repository $(du -sb "$repo" | cut -f1) bytes; $cpus cores; local store on $(df --output=fstype "$out" | tail -1)."
