//! Comparing a snapshot with something else, reading only its manifest:
//! a directory on disk (`verify --dir`: a fresh restore, or a stopped
//! node), or another snapshot (`diff`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use rayon::prelude::*;
use serde::Serialize;

use crate::commands::restore;
use crate::error::{Error, Result};
use crate::format::manifest::{Entry, EntryKind, Manifest};
use crate::id::{ChunkId, Hash};
use crate::ipnorm;
use crate::progress::Progress;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DifferenceKind {
    /// In the snapshot, not on disk (or not in the second snapshot).
    Missing,
    /// On disk, not in the snapshot.
    Extra,
    Changed,
}

#[derive(Debug, Clone, Serialize)]
pub struct Difference {
    pub kind: DifferenceKind,
    pub path: String,
    pub detail: String,
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.kind {
            DifferenceKind::Missing => "missing",
            DifferenceKind::Extra => "extra",
            DifferenceKind::Changed => "changed",
        };
        write!(f, "{kind}: {}", self.path)?;
        if !self.detail.is_empty() {
            write!(f, ": {}", self.detail)?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct DirReport {
    pub files: u64,
    pub bytes_hashed: u64,
    pub differences: Vec<Difference>,
    #[serde(skip)]
    pub duration: Duration,
}

/// What the snapshot says an entry is, as restore would make it.
enum Want<'m> {
    Dir,
    File { size: u64, hash: &'m Hash },
    Link(&'m str),
}

/// Compares the directory `root` with `manifest` (paths with `ip` put back,
/// as restore would), under the snapshot's top-level entries only: each
/// missing, extra or changed entry (type, size, content hash, mode as
/// restore applies it, symlink target). Files are hashed in parallel, large
/// ones with several threads each.
pub fn dir(
    manifest: &Manifest,
    root: &Path,
    ip: Option<Ipv4Addr>,
    keep_special_modes: bool,
    progress: &dyn Progress,
) -> Result<DirReport> {
    let started = Instant::now();
    let mut want: BTreeMap<String, (Want<'_>, u32)> = BTreeMap::new();
    for e in &manifest.entries {
        let path = match ip {
            Some(ip) => ipnorm::denormalise(&e.path, ip),
            None if ipnorm::is_normalised(&e.path) => {
                return Err(ipnorm::IpError::Required {
                    paths: vec![e.path.clone()],
                }
                .into())
            }
            None => e.path.clone(),
        };
        want.insert(
            path,
            (
                want_of(e),
                restore::applied_mode(e.mode, keep_special_modes),
            ),
        );
    }
    let tops: Vec<&str> = want
        .keys()
        .filter(|p| !p.contains('/'))
        .map(String::as_str)
        .collect();
    // What is on disk under those entries, without following links.
    let mut found: BTreeMap<String, fs::Metadata> = BTreeMap::new();
    for top in &tops {
        let start = root.join(top);
        if fs::symlink_metadata(&start).is_err() {
            continue;
        }
        for e in walkdir::WalkDir::new(&start).follow_links(false) {
            crate::sys::interrupt::check()?;
            let e = e.map_err(|e| Error::Io {
                op: "walk",
                path: e.path().unwrap_or(&start).to_path_buf(),
                cause: e.into(),
            })?;
            let rel = e
                .path()
                .strip_prefix(root)
                .expect("under the root")
                .to_string_lossy()
                .into_owned();
            let meta = fs::symlink_metadata(e.path()).map_err(Error::io("stat", e.path()))?;
            found.insert(rel, meta);
        }
    }
    let mut differences = Vec::new();
    let mut to_hash: Vec<(&str, u64, &Hash)> = Vec::new();
    for (path, (w, mode)) in &want {
        let Some(meta) = found.get(path) else {
            differences.push(Difference {
                kind: DifferenceKind::Missing,
                path: path.clone(),
                detail: String::new(),
            });
            continue;
        };
        let ft = meta.file_type();
        let actual_mode = meta.permissions().mode() & 0o7777;
        let mut changed = |detail: String| {
            differences.push(Difference {
                kind: DifferenceKind::Changed,
                path: path.clone(),
                detail,
            })
        };
        match w {
            Want::Dir if !ft.is_dir() => changed("not a directory".into()),
            Want::File { .. } if !ft.is_file() => changed("not a regular file".into()),
            Want::Link(_) if !ft.is_symlink() => changed("not a symlink".into()),
            Want::Link(target) => {
                let actual = fs::read_link(root.join(path))
                    .map_err(Error::io("read symlink", root.join(path)))?;
                if actual.as_os_str() != std::ffi::OsStr::new(target) {
                    changed(format!(
                        "symlink to {}, the snapshot has {target}",
                        actual.display()
                    ));
                }
            }
            Want::File { size, hash } => {
                if meta.len() != *size {
                    changed(format!("{} bytes, the snapshot has {size}", meta.len()));
                } else {
                    to_hash.push((path, *size, hash));
                }
                if actual_mode != *mode {
                    changed(format!("mode {actual_mode:o}, the snapshot has {mode:o}"));
                }
            }
            Want::Dir => {
                if actual_mode != *mode {
                    changed(format!("mode {actual_mode:o}, the snapshot has {mode:o}"));
                }
            }
        }
    }
    for path in found.keys() {
        if !want.contains_key(path) {
            differences.push(Difference {
                kind: DifferenceKind::Extra,
                path: path.clone(),
                detail: String::new(),
            });
        }
    }
    let bytes: u64 = to_hash.iter().map(|f| f.1).sum();
    progress.begin("hash", bytes);
    // Largest first, so that one big file does not run alone at the end.
    to_hash.sort_by_key(|f| std::cmp::Reverse(f.1));
    let hashed: Vec<Result<Option<Difference>>> = to_hash
        .par_iter()
        .map(|(path, size, hash)| {
            crate::sys::interrupt::check()?;
            let full = root.join(path);
            let actual = hash_file(&full, *size)?;
            progress.advance(*size);
            Ok((actual != **hash).then(|| Difference {
                kind: DifferenceKind::Changed,
                path: path.to_string(),
                detail: format!("content hashes to {actual}, the snapshot has {hash}"),
            }))
        })
        .collect();
    progress.end();
    for h in hashed {
        differences.extend(h?);
    }
    differences.sort_by(|a, b| (&a.path, a.kind).cmp(&(&b.path, b.kind)));
    Ok(DirReport {
        files: manifest.files().count() as u64,
        bytes_hashed: bytes,
        differences,
        duration: started.elapsed(),
    })
}

fn want_of(e: &Entry) -> Want<'_> {
    match &e.kind {
        EntryKind::Dir => Want::Dir,
        EntryKind::File { size, hash, .. } => Want::File { size: *size, hash },
        EntryKind::Symlink { target } => Want::Link(target),
    }
}

/// BLAKE3 of the regular file at `path` (not followed if it became a
/// symlink since it was listed). Read, not mapped, so that a file that
/// shrinks meanwhile (a running node) is a difference, not a SIGBUS; files of
/// 16 MiB and more are hashed with several threads (as `b3sum` does).
pub fn hash_file(path: &Path, size: u64) -> Result<Hash> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(Error::io("open", path))?;
    let meta = file.metadata().map_err(Error::io("stat", path))?;
    if !meta.is_file() {
        return Err(Error::Refused(format!(
            "{}: no longer a regular file",
            path.display()
        )));
    }
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; (size.clamp(1, 8 << 20)) as usize];
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io("read", path)(e)),
        };
        if n >= 1 << 20 && size >= 16 << 20 {
            hasher.update_rayon(&buf[..n]);
        } else {
            hasher.update(&buf[..n]);
        }
    }
    Ok(hasher.finalize().into())
}

#[derive(Debug, Clone, Serialize)]
pub struct DiffReport {
    pub differences: Vec<Difference>,
    /// Files in both with the same content.
    pub unchanged: u64,
    /// Chunks of the second snapshot that the first does not reference.
    pub new_chunks: u64,
    /// Their uncompressed and stored bytes.
    pub new_bytes: u64,
    pub new_stored_bytes: u64,
}

/// What changed from snapshot `a` to snapshot `b`: added (`extra`),
/// removed (`missing`) and changed entries, and how many of `b`'s chunks are
/// new (not referenced by `a`).
pub fn diff(a: &Manifest, b: &Manifest) -> DiffReport {
    let in_a: HashMap<&str, &Entry> = a.entries.iter().map(|e| (e.path.as_str(), e)).collect();
    let in_b: HashSet<&str> = b.entries.iter().map(|e| e.path.as_str()).collect();
    let mut differences = Vec::new();
    let mut unchanged = 0;
    let size_of = |e: &Entry| match &e.kind {
        EntryKind::File { size, .. } => format!("{size} bytes"),
        EntryKind::Dir => "directory".into(),
        EntryKind::Symlink { target } => format!("symlink to {target}"),
    };
    for e in &b.entries {
        match in_a.get(e.path.as_str()) {
            None => differences.push(Difference {
                kind: DifferenceKind::Extra,
                path: e.path.clone(),
                detail: size_of(e),
            }),
            Some(old) => {
                let what = match (&old.kind, &e.kind) {
                    (
                        EntryKind::File {
                            size: s1, hash: h1, ..
                        },
                        EntryKind::File {
                            size: s2, hash: h2, ..
                        },
                    ) => {
                        if h1 == h2 {
                            None
                        } else {
                            Some(format!("{s1} -> {s2} bytes, content changed"))
                        }
                    }
                    (EntryKind::Dir, EntryKind::Dir) => None,
                    (EntryKind::Symlink { target: t1 }, EntryKind::Symlink { target: t2 }) => {
                        (t1 != t2).then(|| format!("symlink {t1} -> {t2}"))
                    }
                    _ => Some(format!("{} -> {}", size_of(old), size_of(e))),
                };
                let mode =
                    (old.mode != e.mode).then(|| format!("mode {:o} -> {:o}", old.mode, e.mode));
                match (what, mode) {
                    (None, None) => {
                        if matches!(e.kind, EntryKind::File { .. }) {
                            unchanged += 1;
                        }
                    }
                    (w, m) => differences.push(Difference {
                        kind: DifferenceKind::Changed,
                        path: e.path.clone(),
                        detail: [w, m].into_iter().flatten().collect::<Vec<_>>().join(", "),
                    }),
                }
            }
        }
    }
    for e in &a.entries {
        if !in_b.contains(e.path.as_str()) {
            differences.push(Difference {
                kind: DifferenceKind::Missing,
                path: e.path.clone(),
                detail: size_of(e),
            });
        }
    }
    differences.sort_by(|x, y| (&x.path, x.kind).cmp(&(&y.path, y.kind)));
    let old: HashSet<ChunkId> = a
        .files()
        .flat_map(|(_, _, _, c)| c.iter().map(|c| c.id))
        .collect();
    let mut seen = HashSet::new();
    let (mut new_chunks, mut new_bytes, mut new_stored_bytes) = (0, 0, 0);
    for (_, _, _, chunks) in b.files() {
        for c in chunks {
            if !old.contains(&c.id) && seen.insert(c.id) {
                new_chunks += 1;
                new_bytes += u64::from(c.len);
                new_stored_bytes += u64::from(c.stored_len);
            }
        }
    }
    DiffReport {
        differences,
        unchanged,
        new_chunks,
        new_bytes,
        new_stored_bytes,
    }
}
