#!/usr/bin/env bash
# End-to-end comparison on generated ICON node data: blocksnap against
# today's practice (tar -zcf) and restic, with the physical floor (b3sum over
# the same files with 2 threads, cat with a warm page cache) beside them.
#
#   benches/e2e.sh [SIZE_MIB] [BLOCKS]      (defaults: 2300 MiB, 1000 blocks)
#
# Needs: a release build (cargo build --release -p blocksnap-cli), and
# Debian's restic, b3sum and time packages. Work files go to
# $BENCH_DIR (default ~/.cache/blocksnap-bench); the generated node is kept
# there and reused by later runs. Every tool reads the same files with a warm
# page cache; every tool's output lands on the same disk.
set -euo pipefail
size_mib=${1:-2300}
blocks=${2:-1000}
root="$(cd "$(dirname "$0")/.." && pwd)"
bin="${BLOCKSNAP_BIN:-${CARGO_TARGET_DIR:-$root/target}/release/blocksnap}"
work="${BENCH_DIR:-$HOME/.cache/blocksnap-bench}"
base="$work/node-base/loopchain"
node="$work/node/loopchain"
export RESTIC_PASSWORD=bench RESTIC_CACHE_DIR="$work/restic-cache"
for tool in restic b3sum /usr/bin/time; do
  command -v "$tool" >/dev/null || { echo "missing $tool: apt-get install restic b3sum time" >&2; exit 1; }
done
[ -x "$bin" ] || { echo "no release binary at $bin: cargo build --release -p blocksnap-cli" >&2; exit 1; }

mkdir -p "$work"
. "$(dirname "$0")/node_base.sh"
node_base
rm -rf "$work/node" "$work/out" && mkdir -p "$work/out"
cp -a "$work/node-base" "$work/node"

declare -A T M B    # wall seconds, peak RSS KiB, bytes
# run NAME CMD...: time a command, keep wall time and peak RSS.
run() {
  local name=$1; shift
  sync
  /usr/bin/time -f '%e %M' -o "$work/out/time" "$@" >"$work/out/$name.log" 2>&1 ||
    { echo "$name failed:" >&2; cat "$work/out/$name.log" >&2; exit 1; }
  read -r T[$name] M[$name] <"$work/out/time"
  echo "  $name: ${T[$name]} s, $((M[$name] / 1024)) MiB RSS" >&2
}
dsize() { du -sb "$1" | cut -f1; }
files() { find "$node" -type f -print0; }

data=$(dsize "$node")
nfiles=$(find "$node" -type f | wc -l)
cat $(find "$node" -type f) >/dev/null   # warm the page cache
echo "node: $data bytes in $nfiles files" >&2

run cat bash -c "find '$node' -type f -print0 | xargs -0 cat >/dev/null"
run b3sum bash -c "find '$node' -type f -print0 | xargs -0 b3sum --num-threads 2 >/dev/null"

# Full snapshot.
run tar_full tar -C "$node/.." -zcf "$work/out/full.tar.gz" loopchain
B[tar_full]=$(stat -c %s "$work/out/full.tar.gz")
run restic_init restic init -q -r "$work/out/restic"
run restic_full restic backup -q -r "$work/out/restic" "$node"
B[restic_full]=$(dsize "$work/out/restic")
"$bin" init --repo "$work/out/bs" >/dev/null
run bs_full "$bin" snapshot --repo "$work/out/bs" --cache-dir "$work/out/bs-cache" --source "$node" --height 1 --json
B[bs_full]=$(dsize "$work/out/bs")

# Incremental after BLOCKS blocks.
"$bin" generate --dir "$node" --blocks "$blocks" >/dev/null
changed=$(dsize "$node")
run tar_incr tar -C "$node/.." -zcf "$work/out/incr.tar.gz" loopchain
B[tar_incr]=$(stat -c %s "$work/out/incr.tar.gz")
run restic_incr restic backup -q -r "$work/out/restic" "$node"
B[restic_incr]=$(( $(dsize "$work/out/restic") - B[restic_full] ))
run bs_incr "$bin" snapshot --repo "$work/out/bs" --cache-dir "$work/out/bs-cache" --source "$node" --height 2 --json
B[bs_incr]=$(( $(dsize "$work/out/bs") - B[bs_full] ))

# Restore the latest snapshot, then verify it.
mkdir -p "$work/out/tar-restore"
run tar_restore tar -C "$work/out/tar-restore" -xzf "$work/out/incr.tar.gz"
run restic_restore restic restore -q -r "$work/out/restic" latest --target "$work/out/restic-restore"
run bs_restore "$bin" restore --repo "$work/out/bs" latest --ip 10.0.0.8 --target "$work/out/bs-restore" --json
run tar_verify gzip -t "$work/out/incr.tar.gz"
run restic_verify restic check -q -r "$work/out/restic" --read-data
run bs_verify "$bin" verify --repo "$work/out/bs" all --full --json

# The restored tree must equal the source (IP swapped in one name).
diff -r "$node" "$work/out/bs-restore" >/dev/null 2>&1 && { echo "restore compare: unexpected identical names" >&2; exit 1; }
(cd "$node" && find . -type f | sort | sed 's/10\.0\.0\.7/10.0.0.8/' >"$work/out/src.list")
(cd "$work/out/bs-restore" && find . -type f | sort >"$work/out/dst.list")
cmp -s "$work/out/src.list" "$work/out/dst.list" || { echo "restored tree holds other files" >&2; exit 1; }
(cd "$node" && find . -type f -print0 | sort -z | xargs -0 b3sum --no-names) >"$work/out/src.sum"
(cd "$work/out/bs-restore" && find . -type f -print0 | sort -z | xargs -0 b3sum --no-names) >"$work/out/dst.sum"
cmp -s "$work/out/src.sum" "$work/out/dst.sum" || { echo "restored bytes differ" >&2; exit 1; }

mib() { awk -v b="$1" 'BEGIN { printf "%.0f MiB", b / 1048576 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.1fx", a / b; else print "-" }'; }
row() { # label blocksnap tar restic [bytes: bs tar restic]
  local l=$1 bs=$2 tar=$3 restic=$4
  printf '| %-28s | %8ss | %8ss | %8ss | %9s | %9s |\n' "$l" "${T[$bs]}" "${T[$tar]}" "${T[$restic]}" \
    "$(ratio "${T[$tar]}" "${T[$bs]}")" "$(ratio "${T[$restic]}" "${T[$bs]}")"
}
echo
echo "node: $(mib "$data") in $nfiles files (after +$blocks blocks: $(mib "$changed")); $(nproc) cores"
echo
echo "| step                         | blocksnap |  tar.gz   |  restic   | vs tar.gz | vs restic |"
echo "|------------------------------|-----------|-----------|-----------|-----------|-----------|"
row "full snapshot" bs_full tar_full restic_full
row "incremental (+$blocks blocks)" bs_incr tar_incr restic_incr
row "restore latest" bs_restore tar_restore restic_restore
row "verify (full read)" bs_verify tar_verify restic_verify
echo
printf '| %-28s | %9s | %9s | %9s |\n' "bytes stored, full" "$(mib "${B[bs_full]}")" "$(mib "${B[tar_full]}")" "$(mib "${B[restic_full]}")"
printf '| %-28s | %9s | %9s | %9s |\n' "bytes added, incremental" "$(mib "${B[bs_incr]}")" "$(mib "${B[tar_incr]}")" "$(mib "${B[restic_incr]}")"
for s in full incr restore verify; do
  printf '| %-28s | %6s MiB | %6s MiB | %6s MiB |\n' "peak RSS, $s" "$((M[bs_$s] / 1024))" "$((M[tar_$s] / 1024))" "$((M[restic_$s] / 1024))"
done
echo
echo "floor: b3sum (2 threads) ${T[b3sum]}s, cat ${T[cat]}s over the same $(mib "$data");" \
  "blocksnap's full snapshot runs at $(awk -v a="${T[b3sum]}" -v b="${T[bs_full]}" 'BEGIN { printf "%.0f%%", 100 * a / b }') of b3sum's throughput"
