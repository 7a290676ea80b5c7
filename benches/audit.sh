#!/usr/bin/env bash
# Audits at scale (issue #11), in one run:
#  1. `verify --dir` against b3sum over the same node directory (both warm,
#     both on all cores), and the same cold (page cache dropped, as root);
#  2. peak memory of `verify all` (quick) over synthetic histories of 360,
#     1 000 and 10 000 hourly snapshots (benches/verify_scale.rs), and of the
#     release before manifests were streamed when BLOCKSNAP_OLD_BIN is set;
#  3. quick verify of the 360-snapshot history through S3 (s3s-fs on
#     loopback): without the manifest cache, with a cold cache, a warm one,
#     and a warm one after 24 more snapshots (requests and time).
#
#   benches/audit.sh [SIZE_MIB]          (default 1024)
#
# Needs release builds (cargo build --release -p blocksnap-cli, and
# cargo bench --no-run -p blocksnap-engine --bench verify_scale), b3sum and
# time (Debian packages), s3s-fs in ~/.cache/blocksnap-s3s (see .ci/run).
# Work files in $BENCH_DIR (default ~/.cache/blocksnap-bench).
set -euo pipefail
size_mib=${1:-1024}
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
# shellcheck source=../.ci/rocksdb-env.sh
source .ci/rocksdb-env.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/blocksnap-target}"
bin="${BLOCKSNAP_BIN:-$CARGO_TARGET_DIR/release/blocksnap}"
s3s="${BLOCKSNAP_S3S_FS:-$HOME/.cache/blocksnap-s3s/bin/s3s-fs}"
work="${BENCH_DIR:-$HOME/.cache/blocksnap-bench}"
for tool in b3sum /usr/bin/time "$bin" "$s3s"; do
  command -v "$tool" >/dev/null || { echo "missing $tool (see the header)" >&2; exit 1; }
done
synth() {
  cargo bench --locked -q -p blocksnap-engine --bench verify_scale -- "$@" 2>&1 | grep -v '^$' >&2
}
out="$work/audit"
rm -rf "$out" && mkdir -p "$out"
base="$work/node-base/loopchain"
mkdir -p "$work"
. "$(dirname "$0")/node_base.sh"
node_base
node="$base"
data=$(du -sb "$node" | cut -f1)
nfiles=$(find "$node" -type f | wc -l)

# time NAME CMD...: wall seconds and peak RSS (KiB) into T[NAME], M[NAME].
declare -A T M
run() {
  local name=$1; shift
  /usr/bin/time -f '%e %M' -o "$out/$name.time" "$@" >"$out/$name.out" 2>"$out/$name.err" || {
    local rc=$?
    # verify exits 3 when it finds something: still a measurement.
    [ "$rc" = 3 ] || { echo "$name failed ($rc):" >&2; cat "$out/$name.err" >&2; exit 1; }
  }
  read -r T[$name] M[$name] < <(tail -1 "$out/$name.time")
  echo "  $name: ${T[$name]} s, $((M[$name] / 1024)) MiB peak RSS" >&2
}
drop() { sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true; }

echo "== 1. verify --dir against b3sum: $data bytes in $nfiles files" >&2
repo="$out/repo"
"$bin" init --repo "$repo" >/dev/null
"$bin" snapshot --repo "$repo" --cache-dir "$out/cache" --source "$node" --height 1 >/dev/null
cat $(find "$node" -type f) >/dev/null
b3() { find "$node" -type f -print0 | xargs -0 b3sum --num-threads "$(nproc)" >/dev/null; }
export -f b3; export node
run b3sum_warm bash -c b3
run dir_warm "$bin" verify --repo "$repo" --cache-dir "$out/cache" latest --dir "$node" --ip 10.0.0.7
grep -q '^SAME: 0 difference' "$out/dir_warm.out" || { cat "$out/dir_warm.out" >&2; exit 1; }
drop; run b3sum_cold bash -c b3
drop; run dir_cold "$bin" verify --repo "$repo" --cache-dir "$out/cache" latest --dir "$node" --ip 10.0.0.7
mbs() { echo "scale=0; $data / $1 / 1000000" | bc; }

echo "== 2. peak memory of verify all over long histories" >&2
declare -A N
for n in 360 1000 10000; do
  churn=22; [ "$n" -gt 1000 ] && churn=2
  synth "$out/synth-$n" "$n" 900 3 "$churn"
  N[$n]=$(find "$out/synth-$n/chunks" -type f | wc -l)
  run "scale_$n" "$bin" verify --repo "$out/synth-$n" --no-cache all
  grep -q '^OK: 0 problem' "$out/scale_$n.out" || { cat "$out/scale_$n.out" >&2; exit 1; }
  if [ -n "${BLOCKSNAP_OLD_BIN:-}" ]; then
    run "old_$n" "$BLOCKSNAP_OLD_BIN" verify --repo "$out/synth-$n" all
  fi
done

echo "== 3. quick verify through S3, with and without the manifest cache" >&2
port=$((20000 + RANDOM % 20000))
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench-secret AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
mkdir -p "$out/s3/bench"
# s3s-fs serves a directory: the synthetic repository is its bucket's prefix.
cp -a "$out/synth-360" "$out/s3/bench/repo"
"$s3s" --host 127.0.0.1 --port "$port" --access-key "$AWS_ACCESS_KEY_ID" \
  --secret-key "$AWS_SECRET_ACCESS_KEY" "$out/s3" >/dev/null 2>&1 &
server=$!
trap 'kill $server 2>/dev/null' EXIT
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
export BLOCKSNAP_S3_ENDPOINT="http://127.0.0.1:$port"
s3=(--repo s3://bench/repo --json)
run s3_nocache "$bin" verify "${s3[@]}" --no-cache all
run s3_cold "$bin" verify "${s3[@]}" --cache-dir "$out/s3cache" all
run s3_warm "$bin" verify "${s3[@]}" --cache-dir "$out/s3cache" all
synth "$out/s3/bench/repo" 24 900 3 22
run s3_plus24 "$bin" verify "${s3[@]}" --cache-dir "$out/s3cache" all
req() { python3 -c "import json,sys; r=json.load(open(sys.argv[1]))['requests']; print('%d GET, %d LIST' % (r['get'], r['list']))" "$1"; }

echo
echo "verify --dir vs b3sum ($((data >> 20)) MiB in $nfiles files, $(nproc) cores):"
echo
echo "| | warm page cache | cold (dropped) |"
echo "|---|---:|---:|"
printf "| b3sum --num-threads %s | %.2f s (%s MB/s) | %.2f s (%s MB/s) |\n" "$(nproc)" \
  "${T[b3sum_warm]}" "$(mbs "${T[b3sum_warm]}")" "${T[b3sum_cold]}" "$(mbs "${T[b3sum_cold]}")"
printf "| blocksnap verify --dir | %.2f s (%s MB/s) | %.2f s (%s MB/s) |\n" \
  "${T[dir_warm]}" "$(mbs "${T[dir_warm]}")" "${T[dir_cold]}" "$(mbs "${T[dir_cold]}")"
echo
echo "verify all (quick, local, no cache) over synthetic hourly histories (900 files × 3 chunks):"
echo
if [ -n "${BLOCKSNAP_OLD_BIN:-}" ]; then
  echo "| snapshots | distinct chunks | time | peak RSS | before streaming: time | peak RSS |"
  echo "|---:|---:|---:|---:|---:|---:|"
  for n in 360 1000 10000; do
    printf "| %s | %s | %.1f s | %s MiB | %.1f s | %s MiB |\n" "$n" "${N[$n]}" "${T[scale_$n]}" \
      "$((M[scale_$n] / 1024))" "${T[old_$n]}" "$((M[old_$n] / 1024))"
  done
else
  echo "| snapshots | distinct chunks | time | peak RSS |"
  echo "|---:|---:|---:|---:|"
  for n in 360 1000 10000; do
    printf "| %s | %s | %.1f s | %s MiB |\n" "$n" "${N[$n]}" "${T[scale_$n]}" "$((M[scale_$n] / 1024))"
  done
fi
echo
echo "quick verify of the 360-snapshot history through S3 (s3s-fs, loopback):"
echo
echo "| manifest cache | time | requests |"
echo "|---|---:|---|"
printf "| none (--no-cache) | %.2f s | %s |\n" "${T[s3_nocache]}" "$(req "$out/s3_nocache.out")"
printf "| cold (first run) | %.2f s | %s |\n" "${T[s3_cold]}" "$(req "$out/s3_cold.out")"
printf "| warm | %.2f s | %s |\n" "${T[s3_warm]}" "$(req "$out/s3_warm.out")"
printf "| warm, 24 new snapshots | %.2f s | %s |\n" "${T[s3_plus24]}" "$(req "$out/s3_plus24.out")"
