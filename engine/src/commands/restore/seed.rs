//! Seeds: local files whose bytes a restore uses instead of downloading them.
//!
//! A node that fell behind or broke still holds most of its snapshot's bytes
//! (LevelDB and RocksDB table files never change once written). Before
//! anything is fetched, a restore reads the seeds once: the entries of the
//! target that a `--force` restore replaces (the node's older state) and
//! every directory named with `--reuse-from`. Each regular file is cut with
//! the repository's chunker and each chunk hashed; only what the snapshot
//! needs is remembered: where each needed chunk can be read, and which files
//! are whole copies of a needed file (same size, same whole-file hash).
//!
//! Nothing read from a seed is trusted, because a seed may change, be
//! damaged, or belong to someone else:
//! - a chunk is taken from a seed only if the bytes read at restore time hash
//!   to the chunk's id; otherwise (changed, unreadable, gone) it is fetched;
//! - a whole file of the target's own older state (this user's, one link,
//!   not writable by others, and already with the restored entry's mode and
//!   mtime, so the older state changes in nothing) is kept as it is:
//!   hard-linked into the staging tree and checked again through the link
//!   before it counts, so nothing is rewritten. Any other whole match is
//!   copied chunk by chunk as above;
//! - seeds are walked through directory descriptors without following a
//!   symlink, and only regular files are opened.
//!
//! The restored file is then checked against its whole-file hash exactly as
//! a downloaded one is.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use rayon::prelude::*;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::format::config::ChunkerParams;
use crate::format::manifest::ChunkRef;
use crate::format::reserved::RESERVED_PREFIX;
use crate::id::Hash;
use crate::sys::fsx::{DirFd, EntryType};
use crate::sys::interrupt;

/// Where seeds come from.
pub struct SeedRoot {
    /// The directory to read.
    pub dir: DirFd,
    /// Only these entries of it (the target's replaced entries); `None`:
    /// everything except blocksnap's own reserved names.
    pub only: Option<Vec<String>>,
    /// Its files are the target's older state, which the restore replaces:
    /// a whole match may be kept by a hard link instead of a copy.
    pub replaced: bool,
}

/// What the snapshot needs, for indexing only what helps.
pub struct Needs<'a> {
    /// Chunk ids of the files still to write.
    pub chunks: HashSet<Hash>,
    /// (size, whole-file hash) of the files still to write.
    pub files: HashSet<(u64, &'a Hash)>,
    /// The same with the mode and mtime each is restored with: a seed
    /// that matches one of these whole can be kept by a link, and is not
    /// chunked.
    pub keepable: HashSet<(u64, &'a Hash, u32, i64)>,
}

struct SeedFile {
    dir: Arc<DirFd>,
    name: String,
    /// May be hard-linked into the staging tree (see the module comment).
    linkable: bool,
    /// Its mode and mtime when indexed: only a file that already has the
    /// restored entry's is linked, so the older state changes in nothing.
    mode: u32,
    mtime_ns: i64,
    /// For a whole match read as one: the inode as it was while its bytes
    /// were hashed (a link is made only if nothing changed it since).
    identity: Option<Identity>,
    /// Already linked once: a second path gets a copy, never a shared inode.
    linked: AtomicBool,
}

/// The index of the seeds, built by [`Seeds::index`].
pub struct Seeds {
    files: Vec<SeedFile>,
    /// Needed chunk id -> (file, offset).
    chunks: HashMap<Hash, (u32, u64)>,
    /// Needed (size, hash) -> files holding exactly that content.
    whole: HashMap<(u64, Hash), Vec<u32>>,
    pub stats: SeedStats,
}

impl std::fmt::Debug for Seeds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Seeds")
            .field("files", &self.files.len())
            .field("chunks", &self.chunks.len())
            .field("whole", &self.whole.len())
            .field("stats", &self.stats)
            .finish()
    }
}

/// What indexing found, for the plan and the report.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct SeedStats {
    /// Regular files read.
    pub files_read: u64,
    /// Bytes read to index them.
    pub bytes_read: u64,
    /// Files and directories that could not be read (skipped, not an
    /// error).
    pub unreadable: u64,
}

/// One file's contribution to the index.
struct Indexed {
    chunks: Vec<(Hash, u64)>,
    whole: Option<(u64, Hash)>,
    identity: Option<Identity>,
    bytes: u64,
}

/// What identifies an inode's content without reading it: the kernel sets
/// ctime on every change (a write, a chmod, a link) and no user can set it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Identity {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i64,
    ctime_ns: i64,
}

impl Identity {
    fn of(m: &crate::sys::fsx::Meta) -> Identity {
        Identity {
            dev: m.dev,
            ino: m.ino,
            size: m.size,
            mtime_ns: m.mtime_ns,
            ctime_ns: m.ctime_ns,
        }
    }

    fn of_file(f: &File) -> io::Result<Identity> {
        use std::os::unix::fs::MetadataExt;
        let m = f.metadata()?;
        let ns = |s: i64, n: i64| s.saturating_mul(1_000_000_000).saturating_add(n);
        Ok(Identity {
            dev: m.dev(),
            ino: m.ino(),
            size: m.len(),
            mtime_ns: ns(m.mtime(), m.mtime_nsec()),
            ctime_ns: ns(m.ctime(), m.ctime_nsec()),
        })
    }
}

impl Seeds {
    /// Reads every regular file under the roots and keeps what `needs` asks
    /// for. Unreadable files are skipped (counted); a directory that cannot
    /// be listed is an error naming it.
    pub fn index(roots: Vec<SeedRoot>, needs: &Needs, chunker: &ChunkerParams) -> Result<Seeds> {
        let mut found: Vec<Found> = Vec::new();
        let mut skipped = 0;
        for root in roots {
            skipped += walk(root, &mut found)?;
        }
        let sizes: HashSet<u64> = needs.files.iter().map(|(s, _)| *s).collect();
        let results: Vec<Option<Indexed>> = found
            .par_iter()
            .map(|f| {
                if interrupt::check().is_err() {
                    return None;
                }
                index_file(f, needs, &sizes, chunker).ok()
            })
            .collect();
        interrupt::check()?;

        let mut seeds = Seeds {
            files: Vec::with_capacity(found.len()),
            chunks: HashMap::new(),
            whole: HashMap::new(),
            stats: SeedStats {
                unreadable: skipped,
                ..SeedStats::default()
            },
        };
        for (f, indexed) in found.into_iter().zip(results) {
            let Some(indexed) = indexed else {
                seeds.stats.unreadable += 1;
                continue;
            };
            seeds.stats.files_read += 1;
            seeds.stats.bytes_read += indexed.bytes;
            if indexed.chunks.is_empty() && indexed.whole.is_none() {
                continue;
            }
            let i = seeds.files.len() as u32;
            seeds.files.push(SeedFile {
                dir: f.dir,
                name: f.name,
                linkable: f.linkable,
                mode: f.mode,
                mtime_ns: f.mtime_ns,
                identity: indexed.identity,
                linked: AtomicBool::new(false),
            });
            for (id, offset) in indexed.chunks {
                seeds.chunks.entry(id).or_insert((i, offset));
            }
            if let Some(key) = indexed.whole {
                seeds.whole.entry(key).or_default().push(i);
            }
        }
        Ok(seeds)
    }

    /// Whether a file of this size and hash is held whole by a seed, and
    /// by how many seeds that may be kept by a hard link for an entry of
    /// this mode and mtime (each links once).
    pub fn has_whole(&self, size: u64, hash: &Hash, mode: u32, mtime_ns: i64) -> Option<usize> {
        self.whole.get(&(size, *hash)).map(|files| {
            files
                .iter()
                .filter(|&&i| self.files[i as usize].links_as(mode, mtime_ns))
                .count()
        })
    }

    /// Whether some seed holds the chunk.
    pub fn has_chunk(&self, id: &Hash) -> bool {
        self.chunks.contains_key(id)
    }

    /// Keeps a whole seed file as `name` in `dir` by a hard link, if one is
    /// linkable, unused, already has the entry's mode and mtime, and is
    /// still this user's single-link regular file of the right size, hash,
    /// mode and mtime when read through the new link. `None` otherwise,
    /// with nothing left at `name`. The caller sets no mode or time on it.
    pub fn link_whole(&self, want: &Whole, dir: &DirFd, name: &str) -> Option<File> {
        let files = self.whole.get(&(want.size, *want.hash))?;
        for &i in files {
            let seed = &self.files[i as usize];
            if !seed.links_as(want.mode, want.mtime_ns) || seed.linked.swap(true, Ordering::Relaxed)
            {
                continue;
            }
            // Unchanged since its bytes were hashed (ctime included: the
            // link itself will change that), then linked, then the link
            // checked to be that very inode.
            let Some(identity) = seed.identity else {
                continue;
            };
            match seed.dir.stat(&seed.name) {
                Ok(Some(m)) if Identity::of(&m) == identity && m.nlink == 1 => {}
                _ => continue,
            }
            if seed.dir.link(&seed.name, dir, name).is_err() {
                continue;
            }
            if let Some(f) = checked_link(dir, name, want, &identity) {
                return Some(f);
            }
            let _ = dir.unlink(name);
        }
        None
    }

    /// A reader for one file's chunks (it keeps the last seed file open).
    pub fn reader(&self) -> SeedReader<'_> {
        SeedReader {
            seeds: self,
            open: None,
        }
    }
}

/// A file to restore, as a whole-file match needs it.
pub struct Whole<'a> {
    pub size: u64,
    pub hash: &'a Hash,
    /// The mode and mtime it is restored with.
    pub mode: u32,
    pub mtime_ns: i64,
}

impl SeedFile {
    fn links_as(&self, mode: u32, mtime_ns: i64) -> bool {
        self.linkable && self.mode == mode && self.mtime_ns == mtime_ns
    }
}

/// Reads chunks from seeds, each checked against its id.
pub struct SeedReader<'a> {
    seeds: &'a Seeds,
    open: Option<(u32, File)>,
}

impl SeedReader<'_> {
    /// The chunk's bytes from a seed, or `None` when no seed holds it or
    /// what a seed holds now does not hash to its id.
    pub fn read(&mut self, chunk: &ChunkRef) -> Option<Vec<u8>> {
        let &(i, offset) = self.seeds.chunks.get(&chunk.id)?;
        if self.open.as_ref().map(|(j, _)| *j) != Some(i) {
            let seed = &self.seeds.files[i as usize];
            self.open = Some((i, seed.dir.open_file(&seed.name).ok()?));
        }
        let (_, file) = self.open.as_ref()?;
        let mut buf = vec![0u8; chunk.len as usize];
        file.read_exact_at(&mut buf, offset).ok()?;
        (Hash::of(&buf) == chunk.id).then_some(buf)
    }
}

/// A hard link just made, seen through the new name (which only this user
/// can reach): the very inode whose bytes were hashed, unchanged (size,
/// mtime), this user's regular file linked from exactly one other place
/// (the seed), with the entry's mode (so not writable by others) and mtime.
fn checked_link(dir: &DirFd, name: &str, want: &Whole, hashed: &Identity) -> Option<File> {
    use std::os::unix::fs::MetadataExt;
    let f = dir.open_file(name).ok()?;
    let now = Identity::of_file(&f).ok()?;
    let m = f.metadata().ok()?;
    let same = now.dev == hashed.dev
        && now.ino == hashed.ino
        && now.size == hashed.size
        && now.mtime_ns == hashed.mtime_ns;
    if !same
        || now.size != want.size
        || now.mtime_ns != want.mtime_ns
        || m.nlink() != 2
        || m.uid() != crate::sys::fsx::euid()
        || m.mode() & 0o7777 != want.mode
        || m.mode() & 0o022 != 0
    {
        return None;
    }
    Some(f)
}

/// A regular file found under a root.
struct Found {
    dir: Arc<DirFd>,
    name: String,
    linkable: bool,
    mode: u32,
    mtime_ns: i64,
}

/// Collects the regular files under a root; returns how many entries could
/// not be looked at (skipped, as unreadable files are: a seed only saves
/// downloads, and another user's unreadable directory must not block a
/// restore). Files are linkable only in directories of this user all the
/// way down from the root (nobody else can swap what they hold).
fn walk(root: SeedRoot, out: &mut Vec<Found>) -> Result<u64> {
    let replaced = root.replaced;
    let dir = Arc::new(root.dir);
    let names = match root.only {
        Some(names) => names,
        None => dir.names().map_err(Error::io("read", dir.path()))?,
    };
    let mut skipped = 0;
    let mut stack = vec![(dir, names, replaced)];
    while let Some((dir, names, mine_all_the_way)) = stack.pop() {
        for name in names {
            // blocksnap's own entries (a staging tree, kept old entries)
            // are never a snapshot's, and never seeds.
            if name.starts_with(RESERVED_PREFIX) {
                continue;
            }
            let m = match dir.stat(&name) {
                Ok(Some(m)) => m,
                Ok(None) => continue,
                Err(_) => {
                    skipped += 1;
                    continue;
                }
            };
            match m.kind {
                EntryType::File if m.size > 0 => {
                    let linkable =
                        mine_all_the_way && m.is_mine() && m.nlink == 1 && m.mode & 0o022 == 0;
                    out.push(Found {
                        dir: dir.clone(),
                        name,
                        linkable,
                        mode: m.mode,
                        mtime_ns: m.mtime_ns,
                    });
                }
                EntryType::Dir => {
                    let opened = dir
                        .open_dir(&name)
                        .and_then(|child| child.names().map(|names| (child, names)));
                    match opened {
                        Ok((child, names)) => {
                            let mine = mine_all_the_way && m.is_mine();
                            stack.push((Arc::new(child), names, mine));
                        }
                        Err(_) => skipped += 1,
                    }
                }
                _ => {}
            }
        }
    }
    Ok(skipped)
}

/// Reads one file: when a needed file has its size, its whole-file hash
/// first (a file the node never changed, kept by a link, is read once and
/// never chunked); otherwise, or when it cannot be kept whole, the ids of
/// its chunks (those needed, with offsets).
fn index_file(
    found: &Found,
    needs: &Needs,
    sizes: &HashSet<u64>,
    chunker: &ChunkerParams,
) -> io::Result<Indexed> {
    use std::io::{Seek, SeekFrom};
    let mut f = found.dir.open_file(&found.name)?;
    let before = Identity::of_file(&f)?;
    let size = before.size;
    let mut indexed = Indexed {
        chunks: Vec::new(),
        whole: None,
        identity: None,
        bytes: 0,
    };
    if sizes.contains(&size) {
        let mut hasher = blake3::Hasher::new();
        let n = io::copy(&mut f, &mut hasher)?;
        indexed.bytes += n;
        let hash: Hash = hasher.finalize().into();
        if n == size && needs.files.contains(&(size, &hash)) {
            indexed.whole = Some((size, hash));
            // Unchanged while it was read: it may be linked later.
            if found.linkable && Identity::of_file(&f)? == before {
                indexed.identity = Some(before);
                let key = (size, &hash, found.mode, found.mtime_ns);
                if needs.keepable.contains(&key) {
                    return Ok(indexed);
                }
            }
        }
        f.seek(SeekFrom::Start(0))?;
    }
    let cuts = fastcdc::v2020::StreamCDC::new(
        io::BufReader::with_capacity(1 << 20, f),
        chunker.min_size as usize,
        chunker.avg_size as usize,
        chunker.max_size as usize,
    );
    for cut in cuts {
        let cut = cut.map_err(|e| match e {
            fastcdc::v2020::Error::IoError(e) => e,
            other => io::Error::other(other.to_string()),
        })?;
        let id = Hash::of(&cut.data);
        if needs.chunks.contains(&id) {
            indexed.chunks.push((id, cut.offset));
        }
        indexed.bytes += cut.length as u64;
    }
    Ok(indexed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunking;

    /// The seeds' streaming chunker cuts exactly where snapshot's does, or
    /// no chunk of a changed file would ever be found.
    #[test]
    fn streamed_cuts_match_the_snapshot_chunker() {
        let params = ChunkerParams {
            min_size: 1024,
            avg_size: 4096,
            max_size: 16384,
        };
        let data: Vec<u8> = (0..300_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let want: Vec<(u64, usize)> = chunking::cuts(&data, &params)
            .map(|c| (c.offset as u64, c.len))
            .collect();
        let got: Vec<(u64, usize)> = fastcdc::v2020::StreamCDC::new(
            io::BufReader::with_capacity(7000, &data[..]),
            1024,
            4096,
            16384,
        )
        .map(|c| c.map(|c| (c.offset, c.length)).unwrap())
        .collect();
        assert_eq!(got, want);
    }
}
