//! Manifests: one object per snapshot, the commit point of a snapshot.
//!
//! A manifest lists every entry of the snapshotted tree in canonical order
//! (strictly increasing byte order of paths), each file with its chunk list
//! and whole-file hash. It also records how it was made (chunker parameters,
//! zstd level) and the snapshot it follows (`parent`, the id of the previous
//! manifest of the same source), which chains a history so that a changed
//! or removed manifest breaks the chain visibly.
//!
//! `decode` validates everything a restore relies on, so that code after it
//! can trust paths, sizes and chunk lengths: a decoded manifest re-encodes to
//! the same bytes.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use super::config::ChunkerParams;
use super::envelope::{self, Kind, HEADER_LEN};
use super::{limits, path, FormatError};
use crate::id::{ChunkId, Hash};

/// A manifest as the engine uses it. On the wire it is version 3 when it
/// records a block hash, else version 2 (with `host`) or, when `host` is
/// empty, version 1 (the layout before hosts existed): a decoded manifest
/// always re-encodes to its own bytes.
#[derive(Debug, Clone, PartialEq, Eq, arbitrary::Arbitrary)]
pub struct Manifest {
    pub height: u64,
    /// Nanoseconds since the Unix epoch when the manifest was built, just
    /// before it was committed.
    pub created_unix_ns: u64,
    /// Where the snapshot was taken from (the source directory, with the
    /// node's IP normalised).
    pub source: String,
    /// The node that took it (`--host`, by default the host name). With
    /// `source` it names the snapshot's history. Empty only in version 1
    /// manifests, written before hosts were recorded.
    pub host: String,
    /// The hash of the block at `height`, read from the node's own
    /// database when the snapshot was taken (goloop); `None` when the
    /// height came from elsewhere. Version 3.
    pub block: Option<Hash>,
    pub tags: Vec<String>,
    /// Id of the previous snapshot of the same history, if any.
    pub parent: Option<Hash>,
    pub chunker: ChunkerParams,
    pub zstd_level: i32,
    /// Anything the operator overrode or the snapshot skipped.
    pub warnings: Vec<String>,
    pub stats: Stats,
    pub entries: Vec<Entry>,
}

/// What the snapshot cost; `list` shows it without touching any chunk.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, arbitrary::Arbitrary)]
pub struct Stats {
    pub files: u64,
    pub logical_bytes: u64,
    pub chunk_refs: u64,
    /// Chunks this snapshot wrote to the store (not there before).
    pub new_chunks: u64,
    /// Bytes of the chunk objects this snapshot wrote.
    pub new_stored_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, arbitrary::Arbitrary)]
pub struct Entry {
    pub path: String,
    /// Permission bits (`mode & 0o7777`).
    pub mode: u32,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
    pub kind: EntryKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, arbitrary::Arbitrary)]
pub enum EntryKind {
    Dir,
    File {
        size: u64,
        hash: Hash,
        chunks: Vec<ChunkRef>,
    },
    Symlink {
        target: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, arbitrary::Arbitrary)]
pub struct ChunkRef {
    pub id: ChunkId,
    /// Uncompressed length.
    pub len: u32,
    /// Length of the chunk object in the store; a quick verify compares it
    /// with what the store reports.
    pub stored_len: u32,
}

/// The version 1 body: the fields in wire order, borrowed for encoding.
#[derive(Serialize)]
struct WireV1<'a> {
    height: u64,
    created_unix_ns: u64,
    source: &'a str,
    tags: &'a [String],
    parent: &'a Option<Hash>,
    chunker: &'a ChunkerParams,
    zstd_level: i32,
    warnings: &'a [String],
    stats: &'a Stats,
    entries: &'a [Entry],
}

/// The version 2 body: version 1's with `host` after `source`.
#[derive(Serialize)]
struct WireV2<'a> {
    height: u64,
    created_unix_ns: u64,
    source: &'a str,
    host: &'a str,
    tags: &'a [String],
    parent: &'a Option<Hash>,
    chunker: &'a ChunkerParams,
    zstd_level: i32,
    warnings: &'a [String],
    stats: &'a Stats,
    entries: &'a [Entry],
}

/// The version 3 body: version 2's with `block` after `host`.
#[derive(Serialize)]
struct WireV3<'a> {
    height: u64,
    created_unix_ns: u64,
    source: &'a str,
    host: &'a str,
    block: &'a Hash,
    tags: &'a [String],
    parent: &'a Option<Hash>,
    chunker: &'a ChunkerParams,
    zstd_level: i32,
    warnings: &'a [String],
    stats: &'a Stats,
    entries: &'a [Entry],
}

#[derive(Deserialize)]
struct OwnedV3 {
    height: u64,
    created_unix_ns: u64,
    source: String,
    host: String,
    block: Hash,
    tags: Vec<String>,
    parent: Option<Hash>,
    chunker: ChunkerParams,
    zstd_level: i32,
    warnings: Vec<String>,
    stats: Stats,
    entries: Vec<Entry>,
}

#[derive(Deserialize)]
struct OwnedV1 {
    height: u64,
    created_unix_ns: u64,
    source: String,
    tags: Vec<String>,
    parent: Option<Hash>,
    chunker: ChunkerParams,
    zstd_level: i32,
    warnings: Vec<String>,
    stats: Stats,
    entries: Vec<Entry>,
}

#[derive(Deserialize)]
struct OwnedV2 {
    height: u64,
    created_unix_ns: u64,
    source: String,
    host: String,
    tags: Vec<String>,
    parent: Option<Hash>,
    chunker: ChunkerParams,
    zstd_level: i32,
    warnings: Vec<String>,
    stats: Stats,
    entries: Vec<Entry>,
}

impl Manifest {
    /// The format version this manifest is written as.
    pub fn version(&self) -> u8 {
        if self.block.is_some() {
            3
        } else if self.host.is_empty() {
            1
        } else {
            2
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let body = if let Some(block) = &self.block {
            super::encode_body(&WireV3 {
                height: self.height,
                created_unix_ns: self.created_unix_ns,
                source: &self.source,
                host: &self.host,
                block,
                tags: &self.tags,
                parent: &self.parent,
                chunker: &self.chunker,
                zstd_level: self.zstd_level,
                warnings: &self.warnings,
                stats: &self.stats,
                entries: &self.entries,
            })
        } else if self.host.is_empty() {
            super::encode_body(&WireV1 {
                height: self.height,
                created_unix_ns: self.created_unix_ns,
                source: &self.source,
                tags: &self.tags,
                parent: &self.parent,
                chunker: &self.chunker,
                zstd_level: self.zstd_level,
                warnings: &self.warnings,
                stats: &self.stats,
                entries: &self.entries,
            })
        } else {
            super::encode_body(&WireV2 {
                height: self.height,
                created_unix_ns: self.created_unix_ns,
                source: &self.source,
                host: &self.host,
                tags: &self.tags,
                parent: &self.parent,
                chunker: &self.chunker,
                zstd_level: self.zstd_level,
                warnings: &self.warnings,
                stats: &self.stats,
                entries: &self.entries,
            })
        };
        envelope::seal(Kind::Manifest, self.version(), &body)
    }

    /// Decodes and validates a manifest object of version 1, 2 or 3.
    pub fn decode(bytes: &[u8]) -> Result<Manifest, FormatError> {
        let (version, body) = envelope::open(bytes, Kind::Manifest, limits::MAX_MANIFEST_BYTES)?;
        let manifest = if version == 3 {
            let m: OwnedV3 = super::decode_body(body)?;
            Manifest {
                height: m.height,
                created_unix_ns: m.created_unix_ns,
                source: m.source,
                host: m.host,
                block: Some(m.block),
                tags: m.tags,
                parent: m.parent,
                chunker: m.chunker,
                zstd_level: m.zstd_level,
                warnings: m.warnings,
                stats: m.stats,
                entries: m.entries,
            }
        } else if version == 1 {
            let m: OwnedV1 = super::decode_body(body)?;
            Manifest {
                height: m.height,
                created_unix_ns: m.created_unix_ns,
                source: m.source,
                host: String::new(),
                block: None,
                tags: m.tags,
                parent: m.parent,
                chunker: m.chunker,
                zstd_level: m.zstd_level,
                warnings: m.warnings,
                stats: m.stats,
                entries: m.entries,
            }
        } else {
            let m: OwnedV2 = super::decode_body(body)?;
            if m.host.is_empty() {
                return Err(FormatError::corrupt(
                    "a version 2 manifest with an empty host",
                ));
            }
            Manifest {
                height: m.height,
                created_unix_ns: m.created_unix_ns,
                source: m.source,
                host: m.host,
                block: None,
                tags: m.tags,
                parent: m.parent,
                chunker: m.chunker,
                zstd_level: m.zstd_level,
                warnings: m.warnings,
                stats: m.stats,
                entries: m.entries,
            }
        };
        manifest.validate()?;
        Ok(manifest)
    }

    /// The history this snapshot belongs to: its host and source.
    pub fn history(&self) -> (&str, &str) {
        (&self.host, &self.source)
    }

    /// The invariants `decode` guarantees; `encode`'s callers uphold them too.
    pub fn validate(&self) -> Result<(), FormatError> {
        self.chunker.validate()?;
        if self.block.is_some() && self.host.is_empty() {
            return Err(FormatError::corrupt(
                "a manifest with a block hash and no host",
            ));
        }
        FormatError::check_limit("tags", self.tags.len() as u64, limits::MAX_TAGS)?;
        for label in self.tags.iter().chain([&self.source, &self.host]) {
            FormatError::check_limit("label length", label.len() as u64, limits::MAX_LABEL_BYTES)?;
        }
        FormatError::check_limit("warnings", self.warnings.len() as u64, limits::MAX_WARNINGS)?;
        for w in &self.warnings {
            FormatError::check_limit("warning length", w.len() as u64, limits::MAX_LABEL_BYTES)?;
        }
        if !(-7..=22).contains(&self.zstd_level) {
            return Err(FormatError::corrupt(format!(
                "zstd level {} out of range",
                self.zstd_level
            )));
        }
        FormatError::check_limit("entries", self.entries.len() as u64, limits::MAX_ENTRIES)?;

        let mut dirs: HashSet<&str> = HashSet::new();
        let mut previous: Option<&str> = None;
        let (mut files, mut bytes, mut refs) = (0u64, 0u64, 0u64);
        for entry in &self.entries {
            path::check(&entry.path)?;
            if let Some(prev) = previous {
                if prev.as_bytes() >= entry.path.as_bytes() {
                    return Err(FormatError::corrupt(format!(
                        "entries out of order or repeated at {:?}",
                        entry.path
                    )));
                }
            }
            previous = Some(&entry.path);
            if let Some(parent) = path::parent(&entry.path) {
                if !dirs.contains(parent) {
                    return Err(FormatError::corrupt(format!(
                        "{:?} has no directory entry for its parent",
                        entry.path
                    )));
                }
            }
            if entry.mode & !0o7777 != 0 {
                return Err(FormatError::corrupt(format!(
                    "{:?}: mode {:o} has bits beyond 0o7777",
                    entry.path, entry.mode
                )));
            }
            match &entry.kind {
                EntryKind::Dir => {
                    dirs.insert(&entry.path);
                }
                EntryKind::Symlink { target } => path::check_link_target(&entry.path, target)?,
                EntryKind::File { size, chunks, .. } => {
                    files += 1;
                    bytes = bytes.saturating_add(*size);
                    refs += chunks.len() as u64;
                    self.check_chunks(&entry.path, *size, chunks)?;
                }
            }
        }
        if (files, bytes, refs)
            != (
                self.stats.files,
                self.stats.logical_bytes,
                self.stats.chunk_refs,
            )
        {
            return Err(FormatError::corrupt(
                "stats disagree with the entries (files, bytes or chunk references)",
            ));
        }
        Ok(())
    }

    fn check_chunks(&self, path: &str, size: u64, chunks: &[ChunkRef]) -> Result<(), FormatError> {
        let mut sum = 0u64;
        for c in chunks {
            if c.len == 0 || u64::from(c.len) > u64::from(self.chunker.max_size) {
                return Err(FormatError::corrupt(format!(
                    "{path:?}: chunk {} has length {} outside 1..={}",
                    c.id, c.len, self.chunker.max_size
                )));
            }
            if (c.stored_len as usize) < HEADER_LEN {
                return Err(FormatError::corrupt(format!(
                    "{path:?}: chunk {} has stored length {} below the header size",
                    c.id, c.stored_len
                )));
            }
            sum += u64::from(c.len);
        }
        if sum != size {
            return Err(FormatError::corrupt(format!(
                "{path:?}: chunk lengths add up to {sum}, the file size is {size}"
            )));
        }
        Ok(())
    }

    /// Files in manifest order, with their chunk lists.
    pub fn files(&self) -> impl Iterator<Item = (&Entry, u64, &Hash, &[ChunkRef])> {
        self.entries.iter().filter_map(|e| match &e.kind {
            EntryKind::File { size, hash, chunks } => Some((e, *size, hash, chunks.as_slice())),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tiny_body_claiming_a_huge_string_is_refused() {
        // height, created, then `source` claiming 200 MiB that are not there.
        let mut body = Vec::new();
        body.extend_from_slice(&1u64.to_le_bytes());
        body.extend_from_slice(&2u64.to_le_bytes());
        body.extend_from_slice(&(200u64 << 20).to_le_bytes());
        body.extend_from_slice(b"short");
        let object = envelope::seal(Kind::Manifest, 1, &body);
        match Manifest::decode(&object) {
            Err(FormatError::Limit { .. }) => {}
            other => panic!("expected a limit error, got {other:?}"),
        }
    }
}
