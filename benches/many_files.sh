#!/usr/bin/env bash
# A tree of many small files (other chains' nodes, general users): full
# snapshot, incremental after 1 % of the files changed, restore into an
# empty directory and verify --full, with wall time and peak RSS, at each
# file count; the memory per file is the RSS difference between the
# largest and the smallest tree over the difference in files (issue #13).
#
#   benches/many_files.sh [COUNTS]     (default: "10000 1000000")
#
# Files: 1 000 per directory, sizes 0–1 KiB (mean 512 B) of random bytes.
# Needs a release build (cargo build --release -p blocksnap-cli) and
# python3. Work files in $BENCH_DIR.
set -euo pipefail
counts=${1:-"10000 1000000"}
bin="${BLOCKSNAP_BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/blocksnap-target}/release/blocksnap}"
work="${BENCH_DIR:-$HOME/.cache/blocksnap-bench}"
out="$work/many-files"
rm -rf "$out" && mkdir -p "$out"
declare -A T M
run() {
  local name=$1; shift
  sync
  /usr/bin/time -f '%e %M' -o "$out/$name.time" "$@" >"$out/$name.out" 2>"$out/$name.err" ||
    { echo "$name failed:" >&2; cat "$out/$name.err" >&2; exit 1; }
  local e m
  read -r e m < <(tail -1 "$out/$name.time")
  T[$name]=$e; M[$name]=$((m / 1024))
  echo "  $name: ${e} s wall, ${M[$name]} MiB" >&2
}
make_tree() { # DIR COUNT SEED [CHANGE_PERCENT]
  python3 - "$@" <<'PY'
import os, random, sys
root, count, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
change = float(sys.argv[4]) if len(sys.argv) > 4 else None
rng = random.Random(seed)
for i in range(count):
    d = os.path.join(root, "d%04d" % (i // 1000))
    if change is None:
        if i % 1000 == 0:
            os.makedirs(d, exist_ok=True)
    elif rng.random() * 100 >= change:
        continue
    with open(os.path.join(d, "f%06d" % i), "wb") as f:
        f.write(os.urandom(rng.randrange(0, 1025)))
PY
}
first=""; last=""
for n in $counts; do
  echo "== $n files" >&2
  d="$out/$n"; src="$d/src"
  mkdir -p "$src"
  make_tree "$src" "$n" 1
  "$bin" init --repo "$d/repo" >/dev/null
  run "full$n" "$bin" snapshot --repo "$d/repo" --source "$src" --height 1 --cache-dir "$d/cache" --json
  make_tree "$src" "$n" 2 1
  run "incr$n" "$bin" snapshot --repo "$d/repo" --source "$src" --height 2 --cache-dir "$d/cache" --json
  run "restore$n" "$bin" restore --repo "$d/repo" latest --target "$d/restored" --json
  run "verify$n" "$bin" verify --repo "$d/repo" latest --full --no-cache --json
  run "verifydir$n" "$bin" verify --repo "$d/repo" latest --dir "$d/restored" --no-cache --json
  diff -r "$src" "$d/restored" >/dev/null && echo "  restore identical" >&2
  rm -rf "$d"
  [ -n "$first" ] || first=$n
  last=$n
done
echo
echo "| step | $(for n in $counts; do printf '%s files: wall | RSS | ' "$n"; done)memory per file |"
echo "|---|$(for n in $counts; do printf -- '---:|---:|'; done)---:|"
for step in full incr restore verify verifydir; do
  per=$(echo "(${M[$step$last]} - ${M[$step$first]}) * 1048576 / ($last - $first)" | bc)
  printf '| %s | ' "$step"
  for n in $counts; do printf '%.1f s | %s MiB | ' "${T[$step$n]}" "${M[$step$n]}"; done
  printf '%s bytes |\n' "$per"
done
echo
echo "incr: 1 % of the files rewritten; verify: --full of the latest snapshot; verifydir: verify --dir of the restore. $(nproc) cores, $(date -u +%F)."
