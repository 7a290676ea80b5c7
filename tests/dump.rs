//! `dump` (issue #24, tarballs out): the archive extracts, with GNU tar, to
//! exactly the tree a restore writes; it is the same bytes every time, in
//! every compression; a damaged chunk stops it with the file and chunk named
//! and an archive that tar reports cut short; a snapshot a restore would
//! refuse is refused before a byte is written.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use blocksnap::chunking::DEFAULT_PARAMS;
use blocksnap::dump::{self, Compression, DumpOptions};
use blocksnap::format::layout::{self, SnapshotKey};
use blocksnap::format::manifest::EntryKind;
use blocksnap::progress::Silent;
use blocksnap::restore::{self, RestoreOptions};
use blocksnap::snapshot::{self, SnapshotOptions};
use blocksnap::store::MemoryStore;
use blocksnap::Repository;
use common::NODE_IP;

struct Lab {
    tmp: tempfile::TempDir,
    store: Arc<MemoryStore>,
    repo: Repository,
    key: SnapshotKey,
}

fn lab() -> Lab {
    let tmp = tempfile::tempdir().unwrap();
    let store = Arc::new(MemoryStore::new());
    let repo = Repository::init(store.clone(), DEFAULT_PARAMS, 1).unwrap();
    let source = common::node(tmp.path(), 4);
    let opts = SnapshotOptions {
        source,
        height: 7,
        ..Default::default()
    };
    let key = snapshot::snapshot(&repo, &opts, &Silent).unwrap().key;
    Lab {
        tmp,
        store,
        repo,
        key,
    }
}

fn opts(ip: Option<std::net::Ipv4Addr>, compression: Compression) -> DumpOptions {
    DumpOptions {
        ip,
        compression,
        jobs: 4,
        keep_special_modes: false,
    }
}

fn dump_bytes(lab: &Lab, key: &SnapshotKey, o: &DumpOptions) -> blocksnap::Result<Vec<u8>> {
    let mut out = Vec::new();
    dump::dump(&lab.repo, key, o, &mut out, &Silent).map(|_| out)
}

fn tar(args: &[&str], dir: &Path) -> std::process::Output {
    Command::new("tar")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

/// What a tree holds, with times in whole seconds (tar's precision) and
/// symlinks' own times left out (not every tar sets them).
fn tree(root: &Path) -> BTreeMap<String, (String, u32, i64)> {
    common::describe(root, None)
        .into_iter()
        .map(|(k, n)| {
            let kind = format!("{:?}", n.kind);
            let secs = if kind.starts_with("Symlink") {
                0
            } else {
                n.mtime_ns.div_euclid(1_000_000_000)
            };
            (k, (kind, n.mode, secs))
        })
        .collect()
}

#[test]
fn an_archive_extracts_to_the_restored_tree_and_is_the_same_every_time() {
    let lab = lab();
    let target = lab.tmp.path().join("restored");
    let ropts = RestoreOptions {
        target: target.clone(),
        ip: Some(NODE_IP.to_string()),
        ..Default::default()
    };
    let plan = restore::plan(&lab.repo, &lab.key, &ropts).unwrap();
    restore::restore(&lab.repo, &plan, &ropts, &Silent).unwrap();

    let plain = dump_bytes(&lab, &lab.key, &opts(Some(NODE_IP), Compression::None)).unwrap();
    assert_eq!(
        plain,
        dump_bytes(&lab, &lab.key, &opts(Some(NODE_IP), Compression::None)).unwrap(),
        "two dumps of one snapshot differ"
    );
    let file = lab.tmp.path().join("node.tar");
    fs::write(&file, &plain).unwrap();
    let out = lab.tmp.path().join("extracted");
    fs::create_dir_all(&out).unwrap();
    let x = tar(&["-xf", file.to_str().unwrap()], &out);
    assert!(x.status.success(), "{}", String::from_utf8_lossy(&x.stderr));
    assert_eq!(tree(&out), tree(&target));

    // gzip and zstd hold the very same tar stream, also deterministic.
    let gz = dump_bytes(&lab, &lab.key, &opts(Some(NODE_IP), Compression::Gzip)).unwrap();
    assert_eq!(
        gz,
        dump_bytes(&lab, &lab.key, &opts(Some(NODE_IP), Compression::Gzip)).unwrap()
    );
    let mut unzipped = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz[..]), &mut unzipped).unwrap();
    assert_eq!(unzipped, plain);
    let zst = dump_bytes(&lab, &lab.key, &opts(Some(NODE_IP), Compression::Zstd)).unwrap();
    assert_eq!(zstd::decode_all(&zst[..]).unwrap(), plain);
    assert!(gz.len() < plain.len() && zst.len() < plain.len());

    // Without an address the block database keeps CHANGEIP, as the old
    // script's archives name it.
    let anon = dump_bytes(&lab, &lab.key, &opts(None, Compression::None)).unwrap();
    fs::write(&file, &anon).unwrap();
    let list = tar(&["-tf", file.to_str().unwrap()], lab.tmp.path());
    let names = String::from_utf8_lossy(&list.stdout);
    assert!(names.contains("db_CHANGEIP:7100_icon_dex/"), "{names}");
    assert!(!names.contains(&NODE_IP.to_string()), "{names}");
}

#[test]
fn a_damaged_chunk_stops_the_archive_where_tar_sees_it_cut_short() {
    let lab = lab();
    let m = lab.repo.load_manifest(&lab.key).unwrap();
    // A file of more than one chunk, damaged in its last chunk: the
    // earlier chunks are already out when the damage is found.
    let (entry, _, _, chunks) = m
        .files()
        .filter(|(_, _, _, c)| c.len() > 1)
        .max_by_key(|(_, size, _, _)| *size)
        .expect("a file of several chunks");
    let victim = chunks.last().unwrap().id;
    lab.store.tamper(&layout::chunk_key(&victim), |b| {
        let n = b.len();
        b[n - 1] ^= 1;
    });
    let mut out = Vec::new();
    let err = dump::dump(
        &lab.repo,
        &lab.key,
        &opts(Some(NODE_IP), Compression::None),
        &mut out,
        &Silent,
    )
    .unwrap_err()
    .to_string();
    let shown = entry.path.replace("CHANGEIP", &NODE_IP.to_string());
    assert!(err.contains(&shown), "{err}");
    assert!(err.contains(&victim.to_hex()), "{err}");
    assert!(!out.is_empty(), "nothing was streamed before the damage");
    let file = lab.tmp.path().join("cut.tar");
    fs::write(&file, &out).unwrap();
    let dir = lab.tmp.path().join("x");
    fs::create_dir_all(&dir).unwrap();
    let x = tar(&["-xf", file.to_str().unwrap()], &dir);
    assert!(
        !x.status.success(),
        "tar took the cut archive for a whole one"
    );
}

#[test]
fn a_snapshot_a_restore_refuses_is_refused_before_a_byte() {
    let lab = lab();
    for (what, entries) in [
        (
            "reserved",
            vec![(".blocksnap-publish.journal", EntryKind::Dir)],
        ),
        (
            "leads to",
            vec![
                ("a", EntryKind::Dir),
                (
                    "a/up",
                    EntryKind::Symlink {
                        target: "../../etc".into(),
                    },
                ),
            ],
        ),
    ] {
        let key = common::plant_manifest(&lab.repo, entries);
        let mut out = Vec::new();
        let err = dump::dump(
            &lab.repo,
            &key,
            &opts(None, Compression::Gzip),
            &mut out,
            &Silent,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains(what) || err.contains("outside") || err.contains("climb"),
            "{err}"
        );
        assert!(out.is_empty(), "{what}: bytes were written");
    }
}

/// A manifest whose chunks are sound but whose file hash is not theirs (a
/// planted or damaged manifest): the file is refused before its last
/// window is written, so the archive never holds it whole.
#[test]
fn a_file_that_is_not_its_recorded_hash_is_never_archived_whole() {
    let lab = lab();
    let m = lab.repo.load_manifest(&lab.key).unwrap();
    let (_, size, _, chunks) = m
        .files()
        .find(|(_, _, _, c)| c.len() > 1)
        .expect("a file of several chunks");
    let key = common::plant_manifest(
        &lab.repo,
        vec![(
            "f",
            EntryKind::File {
                size,
                hash: blocksnap::Hash([9; 32]),
                chunks: chunks.to_vec(),
            },
        )],
    );
    let mut out = Vec::new();
    let err = dump::dump(
        &lab.repo,
        &key,
        &opts(None, Compression::None),
        &mut out,
        &Silent,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("f: the file's chunks do not add up"), "{err}");
    assert!(
        (out.len() as u64) < 512 + size,
        "the whole file was written: {} bytes",
        out.len()
    );
}
