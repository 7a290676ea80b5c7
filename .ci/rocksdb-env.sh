# Source this file: it makes RocksDB's C++ library a one-time cost.
#
# librocksdb-sys compiles ~340 C++ files (about 30-40 minutes on 2 cores).
# The first run builds it once, optimised, into ~/.cache and later builds of
# any profile link that archive instead (ROCKSDB_LIB_DIR / SNAPPY_LIB_DIR),
# so the C++ step vanishes from every later build on the machine.
# Without this file, cargo builds RocksDB from source as usual.

_bs_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
_bs_ver="$(awk '/^name = "librocksdb-sys"$/ {getline; gsub(/version = |"/, ""); print; exit}' "$_bs_root/Cargo.lock")"
_bs_cache="${BLOCKSNAP_ROCKSDB_CACHE:-$HOME/.cache/blocksnap-rocksdb}/$_bs_ver"

if [ ! -f "$_bs_cache/librocksdb.a" ] || [ ! -f "$_bs_cache/libsnappy.a" ]; then
  echo "building librocksdb-sys $_bs_ver once into $_bs_cache (about 30-40 minutes on 2 cores)" >&2
  _bs_build="$HOME/.cache/blocksnap-rocksdb-build"
  (
    cd "$_bs_root" &&
      env -u ROCKSDB_LIB_DIR -u ROCKSDB_STATIC -u SNAPPY_LIB_DIR -u SNAPPY_STATIC \
        CARGO_TARGET_DIR="$_bs_build" cargo build --release --locked -p librocksdb-sys
  ) || return 1
  _bs_out="$(ls -td "$_bs_build"/release/build/librocksdb-sys-*/out 2>/dev/null |
    while read -r d; do [ -f "$d/librocksdb.a" ] && echo "$d" && break; done)"
  if [ -z "$_bs_out" ]; then
    echo "librocksdb.a not found under $_bs_build" >&2
    return 1
  fi
  mkdir -p "$_bs_cache"
  # Debug info makes the archive ~1.5 GB and every link slow; drop it.
  # librocksdb.a last: its presence marks a complete cache.
  cp "$_bs_out/libsnappy.a" "$_bs_cache/libsnappy.a" &&
    cp "$_bs_out/librocksdb.a" "$_bs_cache/librocksdb.a.tmp" &&
    strip --strip-debug "$_bs_cache/librocksdb.a.tmp" &&
    mv "$_bs_cache/librocksdb.a.tmp" "$_bs_cache/librocksdb.a" || return 1
fi

export ROCKSDB_LIB_DIR="$_bs_cache" ROCKSDB_STATIC=1 SNAPPY_LIB_DIR="$_bs_cache" SNAPPY_STATIC=1
unset _bs_root _bs_ver _bs_cache _bs_build _bs_out
