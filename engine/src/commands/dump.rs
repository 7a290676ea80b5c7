//! `dump`: a snapshot written out as one tar archive (plain, gzip or zstd),
//! laid out as the node's data directory is — what `tar -x` of the old
//! backup script's archives gives — for consumers that expect a tarball.
//!
//! Streamed: entries go out in manifest order (a directory before what it
//! holds), each file's chunks fetched a window at a time in parallel and
//! checked against their ids before a byte of them is written, and each
//! whole file checked against its hash before the next entry begins. Memory
//! is bounded by the window: `2 × jobs` chunks (4 MiB each at most with the
//! default chunker). Nothing is written to disk but the archive.
//!
//! Deterministic: the same snapshot (and address) gives the same bytes —
//! manifest order, numeric owner 0:0 with no names, the recorded times (in
//! whole seconds, as tar keeps them) and modes (with the special bits a
//! restore drops dropped), a gzip header with no name and time 0.
//!
//! A snapshot a restore would refuse (names, duplicates, reserved names,
//! symlinks that leave the tree) is refused before a byte is written. A
//! chunk that is missing or damaged stops the stream with an error naming
//! the file and the chunk; the archive then lacks tar's end-of-archive
//! blocks (and a compressed one its trailer), so `tar -x` reports it
//! truncated, and the command exits non-zero.

use std::io::{self, Read, Write};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};

use rayon::prelude::*;
use serde::Serialize;

use crate::commands::restore::{applied_mode, checked_paths};
use crate::error::{Error, Result};
use crate::format::layout::SnapshotKey;
use crate::format::manifest::{ChunkRef, EntryKind};
use crate::id::Hash;
use crate::progress::Progress;
use crate::repo::Repository;
use crate::sys::interrupt;

/// How the archive is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Compression {
    /// `.tar`
    None,
    /// `.tar.gz`
    Gzip,
    /// `.tar.zst`
    Zstd,
}

impl std::str::FromStr for Compression {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Compression, String> {
        match s {
            "tar" => Ok(Compression::None),
            "tar.gz" | "tgz" => Ok(Compression::Gzip),
            "tar.zst" | "tzst" => Ok(Compression::Zstd),
            other => Err(format!(
                "{other:?}: the formats are tar, tar.gz and tar.zst"
            )),
        }
    }
}

#[derive(Debug, Clone)]
pub struct DumpOptions {
    /// The node address to put back into paths; without one, paths keep
    /// `CHANGEIP`, as in the old script's archives.
    pub ip: Option<Ipv4Addr>,
    pub compression: Compression,
    /// Chunk fetches in flight (0: what the store suggests).
    pub jobs: usize,
    /// Keep setuid, setgid and world-write bits (a restore drops them).
    pub keep_special_modes: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct DumpReport {
    pub snapshot: String,
    pub entries: u64,
    pub files: u64,
    /// Bytes of file content archived.
    pub bytes: u64,
    pub chunks_fetched: u64,
    /// Bytes of the archive as written (compressed, if it is).
    pub archive_bytes: u64,
}

/// Writes snapshot `key` as an archive to `out`.
pub fn dump(
    repo: &Repository,
    key: &SnapshotKey,
    opts: &DumpOptions,
    out: &mut dyn Write,
    progress: &dyn Progress,
) -> Result<DumpReport> {
    let manifest = repo.load_manifest(key)?;
    let paths = checked_paths(key, &manifest, opts.ip)?;
    let bytes: u64 = manifest
        .files()
        .fold(0u64, |sum, (_, size, _, _)| sum.saturating_add(size));
    let jobs = if opts.jobs == 0 {
        repo.store().parallelism()
    } else {
        opts.jobs
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(jobs)
        .build()
        .map_err(|e| Error::Refused(format!("cannot start {jobs} dump workers: {e}")))?;
    let counted = Counted { inner: out, n: 0 };
    let chunks = AtomicU64::new(0);
    progress.begin("dump", bytes);
    let mut files = 0u64;
    let write_all = |w: &mut dyn Write, files: &mut u64| -> Result<()> {
        let mut tar = tar::Builder::new(w);
        let entries = |tar: &mut tar::Builder<&mut dyn Write>, files: &mut u64| -> Result<()> {
            for (entry, path) in manifest.entries.iter().zip(&paths) {
                interrupt::check()?;
                let mut h = tar::Header::new_gnu();
                h.set_mtime(u64::try_from(entry.mtime_ns.div_euclid(1_000_000_000)).unwrap_or(0));
                h.set_uid(0);
                h.set_gid(0);
                let shown = |e: io::Error| unwrap_io(e, path);
                match &entry.kind {
                    EntryKind::Dir => {
                        h.set_entry_type(tar::EntryType::Directory);
                        h.set_mode(applied_mode(entry.mode, opts.keep_special_modes));
                        h.set_size(0);
                        tar.append_data(&mut h, format!("{path}/"), io::empty())
                            .map_err(shown)?;
                    }
                    EntryKind::Symlink { target } => {
                        h.set_entry_type(tar::EntryType::Symlink);
                        h.set_mode(entry.mode & 0o7777);
                        h.set_size(0);
                        tar.append_link(&mut h, path, target).map_err(shown)?;
                    }
                    EntryKind::File {
                        size,
                        hash,
                        chunks: refs,
                    } => {
                        h.set_entry_type(tar::EntryType::Regular);
                        h.set_mode(applied_mode(entry.mode, opts.keep_special_modes));
                        h.set_size(*size);
                        let reader = FileReader {
                            repo,
                            pool: &pool,
                            path,
                            refs,
                            window: 2 * jobs.max(1),
                            next: 0,
                            buf: Vec::new(),
                            at: 0,
                            hasher: blake3::Hasher::new(),
                            want: *hash,
                            size: *size,
                            fetched: 0,
                            chunks: &chunks,
                            progress,
                        };
                        tar.append_data(&mut h, path, reader).map_err(shown)?;
                        *files += 1;
                    }
                }
            }
            Ok(())
        };
        if let Err(e) = entries(&mut tar, files) {
            // Dropped, the builder would end the archive with tar's
            // end-of-archive blocks and make what is cut short look whole.
            std::mem::forget(tar);
            return Err(e);
        }
        tar.into_inner()
            .map_err(Error::io("finish archive", "-"))?
            .flush()
            .map_err(Error::io("write archive", "-"))
    };
    let mut counted = counted;
    match opts.compression {
        Compression::None => write_all(&mut counted, &mut files)?,
        Compression::Gzip => {
            let mut gz = flate2::GzBuilder::new()
                .mtime(0)
                .write(&mut counted, flate2::Compression::default());
            write_all(&mut gz, &mut files)?;
            gz.finish().map_err(Error::io("finish gzip stream", "-"))?;
        }
        Compression::Zstd => {
            let mut z =
                zstd::Encoder::new(&mut counted, 3).map_err(Error::io("start zstd", "-"))?;
            write_all(&mut z, &mut files)?;
            z.finish().map_err(Error::io("finish zstd stream", "-"))?;
        }
    }
    counted.flush().map_err(Error::io("write archive", "-"))?;
    progress.end();
    Ok(DumpReport {
        snapshot: key.key(),
        entries: manifest.entries.len() as u64,
        files,
        bytes,
        chunks_fetched: chunks.into_inner(),
        archive_bytes: counted.n,
    })
}

/// Our error back out of the `io::Error` the tar writer wrapped it in, or
/// the write's own failure, naming the entry.
fn unwrap_io(e: io::Error, path: &str) -> Error {
    match e.into_inner() {
        Some(inner) => match inner.downcast::<Error>() {
            Ok(ours) => *ours,
            Err(other) => Error::Refused(format!("dump of {path}: {other}")),
        },
        None => Error::Refused(format!("dump of {path}: write failed")),
    }
}

/// A file's bytes from its chunks, fetched a window at a time in parallel,
/// each checked against its id (by `read_chunk`), the whole checked against
/// the file's size and hash before its last window goes out.
struct FileReader<'a> {
    repo: &'a Repository,
    pool: &'a rayon::ThreadPool,
    path: &'a str,
    refs: &'a [ChunkRef],
    window: usize,
    next: usize,
    buf: Vec<Vec<u8>>,
    at: usize,
    hasher: blake3::Hasher,
    want: Hash,
    size: u64,
    /// Bytes fetched so far (and hashed).
    fetched: u64,
    chunks: &'a AtomicU64,
    progress: &'a dyn Progress,
}

impl FileReader<'_> {
    fn refill(&mut self) -> Result<()> {
        interrupt::check()?;
        let end = (self.next + self.window).min(self.refs.len());
        let window = &self.refs[self.next..end];
        let got: Vec<Result<Vec<u8>>> = self
            .pool
            .install(|| window.par_iter().map(|c| self.repo.read_chunk(c)).collect());
        let mut bufs = Vec::with_capacity(got.len());
        for (c, r) in window.iter().zip(got) {
            let b = r.map_err(|e| {
                Error::Refused(format!(
                    "{}: chunk {} of the file: {e}; the archive is incomplete",
                    self.path, c.id
                ))
            })?;
            self.chunks.fetch_add(1, Ordering::Relaxed);
            bufs.push(b);
        }
        self.next = end;
        // Each byte is hashed once, as it arrives; the file's last window
        // is checked with the whole before any of it goes out, so that a
        // wrong file ends the stream inside its own data (where every tar
        // reader sees the archive cut short), never after it.
        for b in &bufs {
            self.hasher.update(b);
            self.fetched += b.len() as u64;
        }
        if end == self.refs.len() {
            self.check_whole()?;
        }
        bufs.reverse();
        self.buf = bufs;
        Ok(())
    }

    fn check_whole(&self) -> Result<()> {
        if self.fetched != self.size || Hash(*self.hasher.finalize().as_bytes()) != self.want {
            return Err(Error::Refused(format!(
                "{}: the file's chunks do not add up to its recorded size and hash; the archive \
                 is incomplete",
                self.path
            )));
        }
        Ok(())
    }
}

impl Read for FileReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        loop {
            if let Some(cur) = self.buf.last() {
                if self.at < cur.len() {
                    let n = out.len().min(cur.len() - self.at);
                    out[..n].copy_from_slice(&cur[self.at..self.at + n]);
                    self.at += n;
                    self.progress.advance(n as u64);
                    return Ok(n);
                }
                self.buf.pop();
                self.at = 0;
                continue;
            }
            if self.next < self.refs.len() {
                self.refill().map_err(io::Error::other)?;
                continue;
            }
            // An empty file has no window: it is checked here.
            if self.refs.is_empty() {
                self.check_whole().map_err(io::Error::other)?;
            }
            return Ok(0);
        }
    }
}

/// Counts what goes through.
struct Counted<'a> {
    inner: &'a mut dyn Write,
    n: u64,
}

impl Write for Counted<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.n += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
