#!/usr/bin/env bash
# Stored bytes against time, per zstd level, for a full snapshot of the same
# generated node (issue #13's compression choice). The node's table files
# are snappy-compressed by the LSM engine and its state values are binary,
# as a real node's are, so zstd gains what it gains on real data (~30 %),
# not what it gains on text.
#
#   benches/compression.sh [SIZE_MIB] [LEVELS]     (defaults: 1024, "-7 -5 -3 -1 1 2 3")
#
# Each level: a new local repository (init --zstd-level L), a full snapshot
# with the page cache warm, wall time, CPU seconds and stored bytes; then a
# full restore's wall time. Also prints what a year of storing the
# difference costs on S3 Standard against what the extra CPU costs, at the
# prices given (USD): S3_GB_MONTH (0.023), CPU_HOUR (0.04, one vCPU).
#
# Needs a release build (cargo build --release -p blocksnap-cli). Work files
# in $BENCH_DIR.
set -euo pipefail
size_mib=${1:-1024}
levels=${2:-"-7 -5 -3 -1 1 2 3"}
bin="${BLOCKSNAP_BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/blocksnap-target}/release/blocksnap}"
work="${BENCH_DIR:-$HOME/.cache/blocksnap-bench}"
s3_gb_month=${S3_GB_MONTH:-0.023}
cpu_hour=${CPU_HOUR:-0.04}
base="$work/node-base/loopchain"
mkdir -p "$work"
. "$(dirname "$0")/node_base.sh"
node_base
out="$work/compression"
rm -rf "$out" && mkdir -p "$out"
data=$(du -sb "$base" | cut -f1)
cat $(find "$base" -type f) >/dev/null
tarz=$(tar -cf - -C "$base" . | zstd -1 -T0 -c | wc -c)
echo "node: $data bytes; tar | zstd -1: $tarz bytes" >&2

printf '| zstd level | stored | stored / node | snapshot wall | snapshot CPU | MiB/s per CPU-s | restore wall |\n|---:|---:|---:|---:|---:|---:|---:|\n' >"$out/table.md"
declare -A S C
for l in $levels; do
  repo="$out/repo$l"
  "$bin" init --repo "$repo" --zstd-level "$l" >/dev/null
  sync
  /usr/bin/time -f '%e %U %S' -o "$out/snap$l.time" \
    "$bin" snapshot --repo "$repo" --source "$base" --height 1 --no-cache --json >"$out/snap$l.json"
  read -r e u s < <(tail -1 "$out/snap$l.time")
  cpu=$(echo "$u + $s" | bc)
  stored=$(du -sb "$repo/chunks" | cut -f1)
  rm -rf "$out/restore"
  sync
  /usr/bin/time -f '%e' -o "$out/restore$l.time" \
    "$bin" restore latest --repo "$repo" --ip 10.0.0.7 --target "$out/restore" >/dev/null
  r=$(tail -1 "$out/restore$l.time")
  rm -rf "$out/restore" "$repo"
  S[$l]=$stored; C[$l]=$cpu
  printf '| %s | %.0f MiB | %.3f | %.2f s | %.2f s | %.0f | %.2f s |\n' "$l" \
    "$(echo "$stored / 1048576" | bc -l)" "$(echo "$stored / $data" | bc -l)" "$e" "$cpu" \
    "$(echo "$data / 1048576 / $cpu" | bc -l)" "$r" >>"$out/table.md"
  echo "  level $l: $stored bytes, $e s, $cpu CPU-s, restore $r s" >&2
done
cat "$out/table.md"
echo
echo "Per GiB of node data stored for a year on S3 (\$$s3_gb_month/GB-month) against the CPU to compress it once (\$$cpu_hour/vCPU-hour), relative to level 1:"
gib=$(echo "$data / 1073741824" | bc -l)
for l in $levels; do
  ds=$(echo "(${S[$l]} - ${S[1]:-${S[$l]}}) / 1000000000 / $gib * $s3_gb_month * 12" | bc -l)
  dc=$(echo "(${C[$l]} - ${C[1]:-${C[$l]}}) / 3600 / $gib * $cpu_hour" | bc -l)
  printf '  level %s: storage %+.4f USD/year, CPU %+.6f USD once\n' "$l" "$ds" "$dc"
done
echo
echo "node $data bytes (generator gen2), tar | zstd -1 $tarz bytes; $(nproc) cores; $(date -u +%F)"
