//! blocksnap's main job, end to end, on generated node data: what the
//! README's first command runs on a fresh machine.
//!
//! Generate an ICON node directory (real RocksDB databases), snapshot it,
//! advance the node, snapshot again, restore the latest snapshot for a node
//! with another address, verify everything, and compare the restored tree
//! with the source byte for byte.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::commands::nodegen::{self, Node};
use crate::commands::restore::{self, RestoreOptions, RestoreReport};
use crate::commands::snapshot::{self, SnapshotOptions, SnapshotReport};
use crate::commands::verify::{self, Level, VerifyReport};
use crate::error::{Error, Result};
use crate::format::config::ChunkerParams;
use crate::progress::Progress;
use crate::repo::{Repository, Selector};
use crate::store::LocalStore;

pub struct DemoOptions {
    pub dir: PathBuf,
    pub size_bytes: u64,
    pub advance_blocks: u64,
    pub source_ip: Ipv4Addr,
    pub target_ip: Ipv4Addr,
    pub chunker: ChunkerParams,
    pub zstd_level: i32,
}

pub struct DemoReport {
    pub generate: Duration,
    pub source_bytes: u64,
    pub first: SnapshotReport,
    pub advance: Duration,
    pub second: SnapshotReport,
    pub restore: RestoreReport,
    pub verify: VerifyReport,
    pub repo_bytes: u64,
    /// Paths that differ between source and restored tree (empty: identical).
    pub differences: Vec<String>,
    pub repo: PathBuf,
    pub source: PathBuf,
}

pub fn run(opts: &DemoOptions, progress: &dyn Progress) -> Result<DemoReport> {
    let source = opts.dir.join("node-a/data/loopchain");
    let repo_dir = opts.dir.join("repo");
    let target = opts.dir.join("node-b/data/loopchain");
    for p in [&source, &repo_dir, &target] {
        if p.exists() {
            return Err(Error::Refused(format!(
                "{} exists: the demo needs a fresh directory (remove {} or pass another --dir)",
                p.display(),
                opts.dir.display()
            )));
        }
    }

    let t = Instant::now();
    let mut node = Node::open(&source, opts.source_ip, 7)?;
    node.grow_to(opts.size_bytes)?;
    drop(node);
    let generate = t.elapsed();
    let source_bytes = nodegen::du(&source)?;

    let store = Arc::new(LocalStore::open(&repo_dir));
    std::fs::create_dir_all(&repo_dir).map_err(Error::io("create", &repo_dir))?;
    let repo = Repository::init(store, opts.chunker, opts.zstd_level)?;
    let snap = |height| -> Result<SnapshotReport> {
        let o = SnapshotOptions {
            source: source.clone(),
            height,
            ..Default::default()
        };
        snapshot::snapshot(&repo, &o, progress)
    };
    let height = Node::open(&source, opts.source_ip, 7)?.height();
    let first = snap(height)?;

    let t = Instant::now();
    let mut node = Node::open(&source, opts.source_ip, 7)?;
    node.advance(opts.advance_blocks)?;
    let height = node.height();
    drop(node);
    let advance = t.elapsed();
    let second = snap(height)?;

    let key = repo.resolve(&Selector::Latest)?[0];
    let ropts = RestoreOptions {
        target: target.clone(),
        ip: Some(opts.target_ip.to_string()),
        ..Default::default()
    };
    let plan = restore::plan(&repo, &key, &ropts)?;
    let restore = restore::restore(&repo, &plan, &ropts, progress)?;
    let all = repo.resolve(&Selector::All)?;
    let verify = verify::verify(&repo, &all, Level::Full, progress)?;
    let differences = compare(&source, &target, opts.source_ip, opts.target_ip)?;
    Ok(DemoReport {
        generate,
        source_bytes,
        first,
        advance,
        second,
        restore,
        verify,
        repo_bytes: nodegen::du(&repo_dir)?,
        differences,
        repo: repo_dir,
        source,
    })
}

/// Paths whose type, bytes or permissions differ between the source and a
/// restore of it made for another address.
pub fn compare(
    source: &Path,
    restored: &Path,
    from: Ipv4Addr,
    to: Ipv4Addr,
) -> Result<Vec<String>> {
    use std::os::unix::fs::PermissionsExt;
    let list =
        |root: &Path, swap: Option<(Ipv4Addr, Ipv4Addr)>| -> Result<Vec<(String, PathBuf)>> {
            let mut out = Vec::new();
            for e in walkdir::WalkDir::new(root).sort_by_file_name() {
                let e = e.map_err(|e| Error::Io {
                    op: "walk",
                    path: root.to_path_buf(),
                    cause: e.into(),
                })?;
                let rel = e
                    .path()
                    .strip_prefix(root)
                    .expect("under root")
                    .to_string_lossy()
                    .into_owned();
                let rel = match swap {
                    Some((a, b)) => rel.replace(&a.to_string(), &b.to_string()),
                    None => rel,
                };
                out.push((rel, e.path().to_path_buf()));
            }
            out.sort();
            Ok(out)
        };
    let a = list(source, Some((from, to)))?;
    let b = list(restored, None)?;
    let mut diffs = Vec::new();
    let names_a: Vec<&String> = a.iter().map(|x| &x.0).collect();
    let names_b: Vec<&String> = b.iter().map(|x| &x.0).collect();
    if names_a != names_b {
        diffs.push("the trees hold different paths".to_string());
        return Ok(diffs);
    }
    for ((rel, pa), (_, pb)) in a.iter().zip(&b) {
        let (ma, mb) = (
            std::fs::symlink_metadata(pa).map_err(Error::io("stat", pa))?,
            std::fs::symlink_metadata(pb).map_err(Error::io("stat", pb))?,
        );
        let same = ma.file_type() == mb.file_type()
            && (rel.is_empty() || ma.permissions().mode() == mb.permissions().mode())
            && (!ma.is_file()
                || std::fs::read(pa).map_err(Error::io("read", pa))?
                    == std::fs::read(pb).map_err(Error::io("read", pb))?);
        if !same {
            diffs.push(rel.clone());
        }
    }
    Ok(diffs)
}
