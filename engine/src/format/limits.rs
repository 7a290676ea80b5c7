//! Decoder limits. Each bounds what a hostile object can make a reader do;
//! `format-spec/FORMAT.md` lists them with their reasons. Writers never
//! produce objects beyond them.

/// Largest manifest object. A 3 GiB ICON node needs ~0.5 MiB; 256 MiB leaves
/// room for data directories a thousand times larger while capping memory.
pub const MAX_MANIFEST_BYTES: u64 = 256 << 20;

/// Entries (files, directories, symlinks) in one manifest.
pub const MAX_ENTRIES: u64 = 4_000_000;

/// Bytes in one relative path, as on Linux (PATH_MAX).
pub const MAX_PATH_BYTES: u64 = 4096;

/// Components in one relative path.
pub const MAX_PATH_DEPTH: u64 = 128;

/// Bytes in one symlink target.
pub const MAX_LINK_TARGET_BYTES: u64 = 4096;

/// Uncompressed bytes in one chunk. The chunker's largest maximum is 16 MiB,
/// so a decompressor never inflates a chunk beyond this (decompression bombs).
pub const MAX_CHUNK_BYTES: u64 = 16 << 20;

/// Tags on one snapshot, and bytes in one tag or in the source label.
pub const MAX_TAGS: u64 = 64;
pub const MAX_LABEL_BYTES: u64 = 1024;

/// Warnings recorded on one snapshot.
pub const MAX_WARNINGS: u64 = 1024;

/// Largest repository config object.
pub const MAX_CONFIG_BYTES: u64 = 64 << 10;

/// Largest forget record (a few labels and a key).
pub const MAX_RECORD_BYTES: u64 = 64 << 10;

/// Largest prune plan: 8 M chunk ids; a prune that condemns more writes
/// several plans.
pub const MAX_PLAN_BYTES: u64 = 256 << 20;

/// Largest repository index (FORMAT.md §12), and the most objects it may
/// name: a million snapshots, records and signatures.
pub const MAX_INDEX_BYTES: u64 = 128 << 20;
pub const MAX_INDEX_OBJECTS: u64 = 1_000_000;
