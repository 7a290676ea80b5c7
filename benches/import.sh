#!/usr/bin/env bash
# `import` (issue #24, tarballs in): 15 daily archives of a growing node,
# made as the old backup script makes them (`tar -zcf` of .score_data and
# .storage, the block database's directory renamed to CHANGEIP, named
# PRep_BH<height>_data-<YYYYMMDD>_<HHMM>.tar.gz), imported in one
# `blocksnap import --tar DIR` into a local repository:
#   - stored bytes of the repository against the archives' bytes;
#   - time per GiB of one archive: `blocksnap import` into an empty
#     repository against `tar -xzf` of the same archive (to disk, synced)
#     and `gzip -dc > /dev/null` (the decompression both must do), with
#     CPU (user+sys) and peak RSS from GNU time.
#
#   benches/import.sh [SIZE_MIB] [DAYS] [BLOCKS_PER_DAY]   (1024, 15, 1000)
#
# Needs a release build (cargo build --release -p blocksnap-cli) and GNU
# time. Work files in $BENCH_DIR (default ~/.cache/blocksnap-bench).
set -euo pipefail
size_mib=${1:-1024}
days=${2:-15}
per_day=${3:-1000}
bin="${BLOCKSNAP_BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/blocksnap-target}/release/blocksnap}"
work="${BENCH_DIR:-$HOME/.cache/blocksnap-bench}"
[ -x "$bin" ] || { echo "missing $bin (see the header)" >&2; exit 1; }
base="$work/node-base/loopchain"
ip=10.0.0.7
mkdir -p "$work"
. "$(dirname "$0")/node_base.sh"
node_base
out="$work/import"
# REUSE=1: keep the archives (and node) of an earlier run.
if [ -z "${REUSE:-}" ] || [ "$(ls "$out/archives" 2>/dev/null | wc -l)" -ne "$days" ]; then
rm -rf "$out" && mkdir -p "$out/archives"
cp -a "$base" "$out/node"
for d in $(seq 1 "$days"); do
  height=$("$bin" generate --dir "$out/node" --blocks "$per_day" --json |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["height"])')
  name="PRep_BH${height}_data-202401$(printf %02d "$d")_0000.tar.gz"
  tar -C "$out/node" -zcf "$out/archives/$name" \
    --xform="s|.storage/db_$ip:7100_icon_dex|.storage/db_CHANGEIP:7100_icon_dex|" .score_data .storage
done
fi
last="$out/archives/$(ls "$out/archives" | sort -t_ -k2.3n | tail -1)"
node_mib=$(du -sm "$out/node" | cut -f1)
echo "node: $node_mib MiB after $days days of $per_day blocks; $(nproc) cores"
rm -rf "$out/repo" && "$bin" init --repo "$out/repo" >/dev/null
/usr/bin/time -f "%e %U %S %M" -o "$out/all.time" \
  "$bin" import --repo "$out/repo" --host bench --tar "$out/archives" --quiet
read -r wall user sys rss <"$out/all.time"
archives=$(du -sb "$out/archives" | cut -f1)
stored=$(du -sb "$out/repo" | cut -f1)
echo
echo "| $days archives | archives' bytes | repository after import | ratio | import wall | CPU (u+s) | peak RSS |"
echo "|---|---|---|---|---|---|---|"
printf '| %s | %.1f MiB | %.1f MiB | %.2f | %.1f s | %.1f s | %d MiB |\n' "$days" \
  "$(echo "$archives / 1048576" | bc -l)" "$(echo "$stored / 1048576" | bc -l)" \
  "$(echo "$stored / $archives" | bc -l)" "$wall" "$(echo "$user + $sys" | bc)" "$((rss / 1024))"

# One archive, three ways, on a warm page cache.
cat "$last" >/dev/null
logical=$(gzip -dc "$last" | wc -c)
gib=$(echo "$logical / 1073741824" | bc -l)
row() {
  local name=$1; shift
  sync
  /usr/bin/time -f "%e %U %S %M" -o "$out/row.time" "$@" >/dev/null 2>"$out/row.err" || {
    echo "$name failed" >&2; cat "$out/row.err" >&2; exit 1; }
  read -r wall user sys rss <"$out/row.time"
  printf '| %-34s | %7.2f s | %6.2f s/GiB | %6.2f CPU-s/GiB | %6d MiB |\n' "$name" "$wall" \
    "$(echo "$wall / $gib" | bc -l)" "$(echo "($user + $sys) / $gib" | bc -l)" "$((rss / 1024))"
}
echo
echo "one archive: $(basename "$last"), $(du -m "$last" | cut -f1) MiB compressed, $((logical / 1048576)) MiB of tar"
echo
echo '| step                               |    wall   |   per GiB    |    CPU per GiB     |  peak RSS  |'
echo '|------------------------------------|-----------|--------------|--------------------|------------|'
row "gzip -dc > /dev/null (floor)" sh -c "gzip -dc '$last' >/dev/null"
rm -rf "$out/x" && mkdir -p "$out/x"
row "tar -xzf, then sync" sh -c "tar -C '$out/x' -xzf '$last' && sync -f '$out/x'"
rm -rf "$out/one" && "$bin" init --repo "$out/one" >/dev/null
row "blocksnap import (empty repo)" "$bin" import --repo "$out/one" --host bench --tar "$last" --quiet
rm -rf "$out/x" "$out/one"
