//! Helpers shared by the integration tests: generated node data and an
//! independent description of a directory tree to compare restores with.
#![allow(dead_code)]

pub mod faultproxy;
pub mod faults;
pub mod gated;
pub mod goloopadmin;
pub mod s3server;
pub mod webserver;

use std::collections::BTreeMap;
use std::fs;
use std::net::Ipv4Addr;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub const NODE_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 7);
pub const OTHER_IP: Ipv4Addr = Ipv4Addr::new(172, 16, 4, 20);

/// A small generated ICON node (`loopchain` directory) under `dir`, with the
/// things LevelDB never makes but a tree may hold: a symlink, an empty file,
/// an empty directory and unusual modes.
pub fn node(dir: &Path, mib: u64) -> PathBuf {
    let root = dir.join("node/data/loopchain");
    let mut n = blocksnap::nodegen::Node::open(&root, NODE_IP, 42).unwrap();
    n.grow_to(mib << 20).unwrap();
    drop(n);
    fs::create_dir_all(root.join("extra/empty-dir")).unwrap();
    fs::write(root.join("extra/empty-file"), b"").unwrap();
    fs::write(root.join("extra/readonly"), b"read only\n").unwrap();
    fs::set_permissions(
        root.join("extra/readonly"),
        fs::Permissions::from_mode(0o440),
    )
    .unwrap();
    std::os::unix::fs::symlink("../.storage", root.join("extra/storage-link")).unwrap();
    fs::set_permissions(
        root.join("extra/empty-dir"),
        fs::Permissions::from_mode(0o700),
    )
    .unwrap();
    root
}

pub fn advance(root: &Path, blocks: u64) {
    let mut n = blocksnap::nodegen::Node::open(root, NODE_IP, 42).unwrap();
    n.advance(blocks).unwrap();
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File(blake3::Hash),
    Link(PathBuf),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub kind: Kind,
    pub mode: u32,
    pub mtime_ns: i64,
}

/// Everything under `root` that a restore must reproduce, keyed by relative
/// path with `from` replaced by `to` (the IP swap).
pub fn describe(root: &Path, swap: Option<(Ipv4Addr, Ipv4Addr)>) -> BTreeMap<String, Node> {
    let mut out = BTreeMap::new();
    for e in walkdir::WalkDir::new(root).min_depth(1) {
        let e = e.unwrap();
        let m = fs::symlink_metadata(e.path()).unwrap();
        let kind = if m.is_dir() {
            Kind::Dir
        } else if m.file_type().is_symlink() {
            Kind::Link(fs::read_link(e.path()).unwrap())
        } else {
            Kind::File(blake3::hash(&fs::read(e.path()).unwrap()))
        };
        let mut rel = e
            .path()
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        if let Some((from, to)) = swap {
            rel = rel.replace(&from.to_string(), &to.to_string());
        }
        out.insert(
            rel,
            Node {
                kind,
                mode: m.permissions().mode() & 0o7777,
                mtime_ns: m.mtime() * 1_000_000_000 + m.mtime_nsec(),
            },
        );
    }
    out
}

/// What a restore published in `target`: its entries other than
/// blocksnap's own working directories (empty when the target is absent).
pub fn published(target: &Path) -> Vec<String> {
    match fs::read_dir(target) {
        Err(_) => Vec::new(),
        Ok(it) => it
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with(".blocksnap-"))
            .collect(),
    }
}

/// Bytes of regular files under `root`.
pub fn du(root: &Path) -> u64 {
    walkdir::WalkDir::new(root)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file())
        .map(|e| e.metadata().unwrap().len())
        .sum()
}

/// A manifest nobody's snapshot wrote (height 5, host "h", each entry mode
/// 0755 and mtime 1 ns, stats that agree with its entries), committed
/// straight into the store: what a co-tenant of the bucket can plant.
pub fn plant_manifest(
    repo: &blocksnap::Repository,
    entries: Vec<(&str, blocksnap::format::manifest::EntryKind)>,
) -> blocksnap::format::layout::SnapshotKey {
    use blocksnap::format::manifest::{Entry, EntryKind, Manifest, Stats};
    // Stats that agree with the entries, as a forger would write them.
    let mut stats = Stats::default();
    for (_, kind) in &entries {
        if let EntryKind::File { size, chunks, .. } = kind {
            stats.files += 1;
            stats.logical_bytes += size;
            stats.chunk_refs += chunks.len() as u64;
        }
    }
    let m = Manifest {
        height: 5,
        created_unix_ns: 1,
        source: "s".into(),
        host: "h".into(),
        block: None,
        tags: vec![],
        parent: None,
        chunker: blocksnap::chunking::DEFAULT_PARAMS,
        zstd_level: 1,
        warnings: vec![],
        stats,
        entries: entries
            .into_iter()
            .map(|(p, kind)| Entry {
                path: p.into(),
                mode: 0o755,
                mtime_ns: 1,
                kind,
            })
            .collect(),
    };
    let bytes = m.encode();
    let key = blocksnap::format::layout::SnapshotKey {
        height: 5,
        created_unix_ns: 1,
        id: blocksnap::Hash::of(&bytes),
    };
    repo.store().put_if_absent(&key.key(), &bytes).unwrap();
    key
}

/// The goloop node generator (`tests/goloopgen`, Go, built against
/// Debian's goleveldb): `$BLOCKSNAP_GOLOOPGEN`, or built once into the
/// build directory. `None` (skipped) without Go outside CI.
pub fn goloopgen() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("BLOCKSNAP_GOLOOPGEN") {
        return Some(PathBuf::from(p));
    }
    static BUILT: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let out = std::env::temp_dir().join(format!("blocksnap-goloopgen-{}", std::process::id()));
            let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/goloopgen");
            let built = std::process::Command::new("go")
                .args(["build", "-o"])
                .arg(&out)
                .arg(".")
                .current_dir(&src)
                .env("GOPATH", "/usr/share/gocode")
                .env("GO111MODULE", "off")
                .env("GOFLAGS", "")
                .env("GOCACHE", std::env::temp_dir().join("blocksnap-gocache"))
                .output();
            match built {
                Ok(o) if o.status.success() => Some(out),
                other => {
                    let msg = format!(
                        "cannot build tests/goloopgen with Go and Debian's goleveldb ({:?}); .ci/run installs them",
                        other.map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
                    );
                    assert!(!s3server::in_ci(), "{msg}; under CI=true the goloop tests must run");
                    eprintln!("SKIPPED: {msg}");
                    None
                }
            }
        })
        .clone()
}

/// Grows the goloop node at `dir` by `blocks` blocks with goleveldb;
/// returns (height, hash hex) of its last block.
pub fn goloop_grow(gen: &Path, dir: &Path, blocks: u64, extra: &[&str]) -> (u64, String) {
    let out = std::process::Command::new(gen)
        .arg("-dir")
        .arg(dir)
        .args(["-blocks", &blocks.to_string()])
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // {"hash":"<hex>","height":<n>}
    let text = String::from_utf8(out.stdout).unwrap();
    let field = |name: &str| -> String {
        let at = text.find(&format!("\"{name}\":")).unwrap() + name.len() + 3;
        text[at..]
            .trim_start_matches('"')
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect()
    };
    (field("height").parse().unwrap(), field("hash"))
}
