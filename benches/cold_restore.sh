#!/usr/bin/env bash
# Restore as on a new machine: the page cache dropped before each restore
# (root only), blocksnap against restic and the floor (zstd -d | tar -x of
# the same tree, then sync), on the same node and disk (issue #13). Also
# the cost of durability: the same full snapshot into a repository on
# tmpfs (/dev/shm) and on the disk.
#
#   benches/cold_restore.sh [SIZE_MIB]      (default 1024)
#
# Needs a release build (cargo build --release -p blocksnap-cli), restic,
# zstd, root. Work files in $BENCH_DIR.
set -euo pipefail
size_mib=${1:-1024}
bin="${BLOCKSNAP_BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/blocksnap-target}/release/blocksnap}"
work="${BENCH_DIR:-$HOME/.cache/blocksnap-bench}"
[ -w /proc/sys/vm/drop_caches ] || { echo "needs root (drop_caches)" >&2; exit 1; }
base="$work/node-base/loopchain"
. "$(dirname "$0")/node_base.sh"
node_base
out="$work/cold"
shm=/dev/shm/blocksnap-bench-durability
rm -rf "$out" "$shm" && mkdir -p "$out"
trap 'rm -rf "$shm"' EXIT
drop() { sync; echo 3 >/proc/sys/vm/drop_caches; }
declare -A T
run() {
  local name=$1; shift
  local t0 t1
  t0=$(date +%s.%N)
  "$@" >"$out/$name.out" 2>"$out/$name.err" || { echo "$name failed" >&2; cat "$out/$name.err" >&2; exit 1; }
  t1=$(date +%s.%N)
  T[$name]=$(echo "$t1 - $t0" | bc)
  echo "  $name: ${T[$name]} s" >&2
}
export RESTIC_PASSWORD=bench
restic init -q --repo "$out/restic" >/dev/null
restic backup -q --repo "$out/restic" "$base" >/dev/null
"$bin" init --repo "$out/repo" >/dev/null
"$bin" snapshot --repo "$out/repo" --source "$base" --height 1 --no-cache >/dev/null
tar -C "$base" -cf - . | zstd -1 -T0 -q -o "$out/node.tar.zst"

drop; run blocksnap sh -c "'$bin' restore --repo '$out/repo' latest --ip 10.0.0.7 --target '$out/r1'"
drop; run restic sh -c "restic restore -q --repo '$out/restic' latest --target '$out/r2' && sync"
mkdir -p "$out/r3"
drop; run floor sh -c "zstd -d -q -c '$out/node.tar.zst' | tar -C '$out/r3' -xf - && sync"
rm -rf "$out/r1" "$out/r2" "$out/r3"

# Durability: the same snapshot, warm, into tmpfs and into the disk.
cat $(find "$base" -type f) >/dev/null
for i in 1 2 3; do
  rm -rf "$shm" "$out/disk" && "$bin" init --repo "$shm" >/dev/null && "$bin" init --repo "$out/disk" >/dev/null
  sync
  run "tmpfs$i" "$bin" snapshot --repo "$shm" --source "$base" --height 1 --no-cache
  sync
  run "disk$i" "$bin" snapshot --repo "$out/disk" --source "$base" --height 1 --no-cache
done
med() { printf '%s\n' "$@" | sort -n | sed -n 2p; }
echo
echo "| restore, page cache dropped | time | / floor |"
echo "|---|---:|---:|"
for k in blocksnap restic floor; do
  printf '| %s | %.2f s | %.2f |\n' "$k" "${T[$k]}" "$(echo "${T[$k]} / ${T[floor]}" | bc -l)"
done
echo
tm=$(med "${T[tmpfs1]}" "${T[tmpfs2]}" "${T[tmpfs3]}"); dk=$(med "${T[disk1]}" "${T[disk2]}" "${T[disk3]}")
printf 'full snapshot, median of 3: repository on tmpfs %.2f s, on disk %.2f s (durability: %+.0f %%)\n' "$tm" "$dk" \
  "$(echo "100 * ($dk / $tm - 1)" | bc -l)"
echo "node $(du -sb "$base" | cut -f1) bytes; $(restic version | cut -d' ' -f1-2); $(nproc) cores; $(date -u +%F)."
