#!/usr/bin/env bash
# `dump` (issue #24) against what the old script and its consumers do with
# the same node: `tar -cf`, `tar -czf` (gzip -6, what the seed's script
# runs) and `tar -c | zstd -3`, on warm files; blocksnap dumps from a local
# repository holding one snapshot of that node. Reports wall time, CPU
# (user+sys) and peak RSS from /usr/bin/time, and the archive's size; and
# checks that each blocksnap archive lists the same files as tar's.
#
#   benches/dump.sh [SIZE_MIB]          (default 1024)
#
# Needs a release build (cargo build --release -p blocksnap-cli), zstd and
# GNU time. Work files in $BENCH_DIR (default ~/.cache/blocksnap-bench).
set -euo pipefail
size_mib=${1:-1024}
bin="${BLOCKSNAP_BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/blocksnap-target}/release/blocksnap}"
work="${BENCH_DIR:-$HOME/.cache/blocksnap-bench}"
[ -x "$bin" ] || { echo "missing $bin (see the header)" >&2; exit 1; }
base="$work/node-base/loopchain"
# The address node_base generates with (blocksnap generate's default).
ip=10.0.0.7
mkdir -p "$work"
. "$(dirname "$0")/node_base.sh"
node_base
out="$work/dump"
rm -rf "$out" && mkdir -p "$out"
"$bin" init --repo "$out/repo" >/dev/null
"$bin" snapshot --repo "$out/repo" --source "$base" --height 1 --no-cache --quiet
# Warm: every tool reads from the page cache.
cat $(find "$base" -type f) >/dev/null
row() {
  local name=$1 file=$2; shift 2
  /usr/bin/time -f "%e %U %S %M" -o "$out/$name.time" "$@" >/dev/null 2>"$out/$name.err" || {
    echo "$name failed" >&2; cat "$out/$name.err" >&2; exit 1; }
  read -r wall user sys rss <"$out/$name.time"
  printf '| %-28s | %7.2f s | %7.2f s | %8d MiB | %9.1f MiB |\n' "$name" "$wall" \
    "$(echo "$user + $sys" | bc)" "$((rss / 1024))" "$(echo "$(stat -c %s "$file") / 1048576" | bc -l)"
}
echo "node: $(du -sm "$base" | cut -f1) MiB in $(find "$base" -type f | wc -l) files; $(nproc) cores"
echo
echo '| step                         |    wall   |  CPU (u+s) |   peak RSS   |   archive     |'
echo '|------------------------------|-----------|-----------|--------------|---------------|'
row "tar -cf" "$out/tar.tar" tar -C "$base" -cf "$out/tar.tar" .
row "blocksnap dump (tar)" "$out/bs.tar" "$bin" dump --repo "$out/repo" latest --ip "$ip" -o "$out/bs.tar"
row "tar -czf (gzip -6)" "$out/tar.tgz" tar -C "$base" -czf "$out/tar.tgz" .
row "blocksnap dump (tar.gz)" "$out/bs.tgz" "$bin" dump --repo "$out/repo" latest --ip "$ip" --format tar.gz -o "$out/bs.tgz"
row "tar -c | zstd -3 -T0" "$out/tar.tzst" sh -c "tar -C '$base' -cf - . | zstd -3 -T0 -q -o '$out/tar.tzst'"
row "blocksnap dump (tar.zst)" "$out/bs.tzst" "$bin" dump --repo "$out/repo" latest --ip "$ip" --format tar.zst -o "$out/bs.tzst"
# Same files in each.
tar -tf "$out/tar.tar" | sed 's|^\./||; /^$/d; s|/$||' | sort >"$out/tar.list"
for f in bs.tar bs.tgz bs.tzst; do
  tar -tf "$out/$f" | sed 's|/$||' | sort >"$out/$f.list"
  cmp -s "$out/tar.list" "$out/$f.list" || { echo "$f lists other files than tar" >&2; diff "$out/tar.list" "$out/$f.list" | head >&2; exit 1; }
done
echo
echo "each blocksnap archive lists the same $(wc -l <"$out/tar.list") entries as tar's"
