#!/usr/bin/env bash
# Is the cost flat as the node grows? Generated nodes of each size (default
# 1, 4 and 8 GiB): full snapshot, incremental after BLOCKS blocks, restore
# into an empty directory and verify --full, each with wall time, CPU
# seconds and peak RSS, and time per GiB of node (issue #13, "Flat at
# scale"); and dd conv=fsync of the node's size, the disk's floor for a
# restore (which writes and syncs that much). Page cache warm for the snapshot (the node was just written) and
# as the machine leaves it otherwise; local store.
#
#   benches/scale.sh [SIZES_MIB] [BLOCKS]     (defaults: "1024 4096 8192", 1000)
#
# Needs a release build (cargo build --release -p blocksnap-cli) and about
# 2.8 × the largest size free in $BENCH_DIR (node, repository, restore; each
# size's files are removed before the next).
set -euo pipefail
sizes=${1:-"1024 4096 8192"}
blocks=${2:-1000}
bin="${BLOCKSNAP_BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/blocksnap-target}/release/blocksnap}"
work="${BENCH_DIR:-$HOME/.cache/blocksnap-bench}"
out="$work/scale"
rm -rf "$out" && mkdir -p "$out"
declare -A T C M
run() {
  local name=$1; shift
  sync
  /usr/bin/time -f '%e %U %S %M' -o "$out/$name.time" "$@" >"$out/$name.out" 2>"$out/$name.err" ||
    { echo "$name failed:" >&2; cat "$out/$name.err" >&2; exit 1; }
  local e u s m
  read -r e u s m < <(tail -1 "$out/$name.time")
  T[$name]=$e; C[$name]=$(echo "$u + $s" | bc); M[$name]=$((m / 1024))
  echo "  $name: ${e} s wall, ${C[$name]} s CPU, ${M[$name]} MiB" >&2
}
rows=()
for size in $sizes; do
  echo "== $size MiB" >&2
  d="$out/$size"
  node="$d/node/loopchain"
  mkdir -p "$d"
  "$bin" generate --dir "$node" --size-mib "$size" >/dev/null
  bytes=$(du -sb "$node" | cut -f1)
  gib=$(echo "$bytes / 1073741824" | bc -l)
  "$bin" init --repo "$d/repo" >/dev/null
  run "full$size" "$bin" snapshot --repo "$d/repo" --source "$node" --height 1 --cache-dir "$d/cache" --json
  "$bin" generate --dir "$node" --blocks "$blocks" >/dev/null
  run "incr$size" "$bin" snapshot --repo "$d/repo" --source "$node" --height 2 --cache-dir "$d/cache" --json
  files=$(find "$node" -type f | wc -l)
  rm -rf "$node"
  run "restore$size" "$bin" restore --repo "$d/repo" latest --ip 10.0.0.7 --target "$d/restored" --json
  # The disk's part of a restore: writing as many bytes durably (in the
  # restore's place, so that both fit).
  rm -rf "$d/restored"
  run "dd$size" dd if=/dev/zero of="$d/dd" bs=1M count=$((bytes >> 20)) conv=fsync status=none
  rm -f "$d/dd"
  run "verify$size" "$bin" verify --repo "$d/repo" all --full --no-cache --json
  stored=$(du -sb "$d/repo" | cut -f1)
  for step in full incr restore dd verify; do
    k="$step$size"
    rows+=("$(printf '| %s | %.2f GiB | %s | %.2f s | %.2f s/GiB | %.2f s | %s MiB |' \
      "$step" "$gib" "$files" "${T[$k]}" "$(echo "${T[$k]} / $gib" | bc -l)" "${C[$k]}" "${M[$k]}")")
  done
  echo "  node $bytes bytes in $files files, repository $stored bytes" >&2
  rm -rf "$d"
done
echo
echo "| step | node | files | wall | wall per GiB | CPU | peak RSS |"
echo "|---|---:|---:|---:|---:|---:|---:|"
for step in full incr restore dd verify; do
  for r in "${rows[@]}"; do case "$r" in "| $step |"*) echo "$r" ;; esac; done
done
echo
echo "incr: +$blocks blocks after the full snapshot; dd: writing the node's size with dd conv=fsync (the disk's floor for restore); restore and verify --full read both snapshots' repository. $(nproc) cores, local store on $(df --output=fstype "$out" | tail -1), $(date -u +%F)."
