# Sourced by the benchmarks: node_base makes sure $work/node-base holds a
# generated node of $size_mib MiB (generator gen2), generating it once and
# keeping it for later runs; uses $bin and $work.
node_base() {
  if [ ! -f "$work/node-base.gen2.size-$size_mib" ]; then
    rm -rf "$work/node-base" "$work"/node-base.*size-*
    echo "generating a ${size_mib} MiB node (kept for later runs)..." >&2
    "$bin" generate --dir "$work/node-base/loopchain" --size-mib "$size_mib" >&2
    touch "$work/node-base.gen2.size-$size_mib"
  fi
}
