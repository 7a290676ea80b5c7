//! `import` (issue #24, tarballs in): the old script's archive becomes the
//! snapshot a snapshot of its tree would be — same chunks, so an imported
//! history dedups with later snapshots — restores byte-identical, and
//! every hostile or broken archive is refused with its entry named and
//! nothing committed.

mod common;

use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use blocksnap::chunking::DEFAULT_PARAMS;
use blocksnap::format::manifest::EntryKind;
use blocksnap::import::{self, ImportOptions};
use blocksnap::progress::Silent;
use blocksnap::restore::{self, RestoreOptions};
use blocksnap::snapshot::{self, SnapshotOptions};
use blocksnap::store::MemoryStore;
use blocksnap::Repository;
use common::NODE_IP;

const NAME: &str = "PRep_BH7_data-20240102_0330.tar.gz";

fn repo() -> Repository {
    Repository::init(Arc::new(MemoryStore::new()), DEFAULT_PARAMS, 1).unwrap()
}

fn opts(name: &str) -> ImportOptions {
    ImportOptions {
        name: Some(name.to_string()),
        host: "node-a".into(),
        jobs: 2,
        ..ImportOptions::default()
    }
}

/// The old script's archive of `root`: `.score_data` and `.storage`, the
/// block database's directory renamed to CHANGEIP (`tar --xform`).
fn old_script_archive(root: &Path, out: &Path, flags: &str) {
    let xform =
        format!("s|.storage/db_{NODE_IP}:7100_icon_dex|.storage/db_CHANGEIP:7100_icon_dex|");
    let st = Command::new("tar")
        .arg(flags)
        .arg(out)
        .arg(format!("--xform={xform}"))
        .args([".score_data", ".storage", "extra"])
        .current_dir(root)
        .status()
        .unwrap();
    assert!(st.success());
}

fn import_file(
    repo: &Repository,
    path: &Path,
    o: &ImportOptions,
) -> blocksnap::Result<import::ImportReport> {
    import::import(repo, fs::File::open(path).unwrap(), o, &Silent)
}

#[test]
fn an_old_script_archive_imports_as_the_snapshot_of_its_tree() {
    let tmp = tempfile::tempdir().unwrap();
    let root = common::node(tmp.path(), 4);
    let archive = tmp.path().join(NAME);
    old_script_archive(&root, &archive, "-zcf");
    let repo = repo();
    let r = import_file(&repo, &archive, &opts(NAME)).unwrap();
    assert_eq!(r.height, 7);
    assert_eq!(r.created_unix_ns, 1_704_166_200 * 1_000_000_000);
    assert_eq!(r.compression, import::Compression::Gzip);
    assert_eq!(r.archive_bytes, fs::metadata(&archive).unwrap().len());
    assert!(r.new_chunks > 0);

    // Restored for the node's address, the tree is the source's (tar keeps
    // whole seconds).
    let target = tmp.path().join("restored");
    let key = repo.snapshots().unwrap()[0];
    let ropts = RestoreOptions {
        target: target.clone(),
        ip: Some(NODE_IP.to_string()),
        ..Default::default()
    };
    let plan = restore::plan(&repo, &key, &ropts).unwrap();
    restore::restore(&repo, &plan, &ropts, &Silent).unwrap();
    let secs = |t: std::collections::BTreeMap<String, common::Node>| {
        t.into_iter()
            .map(|(k, mut n)| {
                n.mtime_ns = n.mtime_ns.div_euclid(1_000_000_000);
                if matches!(n.kind, common::Kind::Link(_)) {
                    n.mtime_ns = 0;
                }
                (k, n)
            })
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    let mut want = secs(common::describe(&root, None));
    // The archive holds what the script names, not the node's other files.
    want.retain(|k, _| {
        [".score_data", ".storage", "extra"]
            .iter()
            .any(|t| k.starts_with(t))
    });
    assert_eq!(secs(common::describe(&target, None)), want);

    // A snapshot of the same tree stores nothing new: the same chunks.
    let s = snapshot::snapshot(
        &repo,
        &SnapshotOptions {
            source: root.clone(),
            height: 8,
            includes: vec![".score_data".into(), ".storage".into(), "extra".into()],
            host: "node-a".into(),
            ..Default::default()
        },
        &Silent,
    )
    .unwrap();
    assert_eq!(s.stats.new_chunks, 0, "{s:?}");
    let files = |key| {
        let m = repo.load_manifest(&key).unwrap();
        m.files()
            .map(|(e, size, hash, chunks)| (e.path.clone(), size, *hash, chunks.to_vec()))
            .collect::<Vec<_>>()
    };
    assert_eq!(files(key), files(s.key));
}

#[test]
fn plain_gzip_and_zstd_archives_give_the_same_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    let root = common::node(tmp.path(), 2);
    let plain = tmp.path().join("a.tar");
    old_script_archive(&root, &plain, "-cf");
    let bytes = fs::read(&plain).unwrap();
    let gz = {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(&bytes).unwrap();
        e.finish().unwrap()
    };
    let zst = zstd::encode_all(&bytes[..], 3).unwrap();
    let o = ImportOptions {
        height: Some(3),
        created_unix_ns: Some(5_000_000_000),
        ..opts("stdin")
    };
    let mut ids = Vec::new();
    for (data, c) in [
        (&bytes, import::Compression::None),
        (&gz, import::Compression::Gzip),
        (&zst, import::Compression::Zstd),
    ] {
        let r = import::import(&repo(), &data[..], &o, &Silent).unwrap();
        assert_eq!(r.compression, c);
        ids.push(r.snapshot);
    }
    assert!(ids.windows(2).all(|w| w[0] == w[1]), "{ids:?}");
}

#[test]
fn a_real_address_is_normalised_and_missing_parents_are_implied() {
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |path: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(1_700_000_000);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, path, data).unwrap();
    };
    add(".storage/db_10.0.0.7:7100_icon_dex/000001.ldb", b"table");
    add("./.score_data/x/CURRENT", b"MANIFEST-000001\n");
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Link);
    h.set_size(0);
    h.set_mode(0o644);
    b.append_link(
        &mut h,
        ".storage/copy.ldb",
        ".storage/db_10.0.0.7:7100_icon_dex/000001.ldb",
    )
    .unwrap();
    let data = b.into_inner().unwrap();
    let repo = repo();
    let o = ImportOptions {
        height: Some(1),
        created_unix_ns: Some(1),
        ..opts("x.tar")
    };
    let r = import::import(&repo, &data[..], &o, &Silent).unwrap();
    assert_eq!(r.normalised_ip, Some(NODE_IP));
    let key = repo.snapshots().unwrap()[0];
    let m = repo.load_manifest(&key).unwrap();
    let paths: Vec<(&str, bool)> = m
        .entries
        .iter()
        .map(|e| (e.path.as_str(), matches!(e.kind, EntryKind::Dir)))
        .collect();
    assert_eq!(
        paths,
        [
            (".score_data", true),
            (".score_data/x", true),
            (".score_data/x/CURRENT", false),
            (".storage", true),
            (".storage/copy.ldb", false),
            (".storage/db_CHANGEIP:7100_icon_dex", true),
            (".storage/db_CHANGEIP:7100_icon_dex/000001.ldb", false),
        ]
    );
    let hashes: Vec<_> = m.files().map(|(_, _, h, _)| *h).collect();
    assert_eq!(hashes[1], hashes[2], "the hard link holds its file's bytes");
}

/// One tar header with a raw name (the `tar` crate's builder refuses the
/// names a hostile archive holds).
fn raw_entry(name: &str, kind: tar::EntryType, link: &str, data: &[u8]) -> Vec<u8> {
    let mut h = tar::Header::new_old();
    h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
    h.set_entry_type(kind);
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(1);
    h.set_cksum();
    let mut out = h.as_bytes().to_vec();
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
    out
}

fn with_end(mut body: Vec<u8>) -> Vec<u8> {
    body.extend_from_slice(&[0u8; 1024]);
    body
}

#[test]
fn hostile_and_broken_archives_are_refused_with_the_entry_named_and_nothing_committed() {
    use tar::EntryType as T;
    let good = raw_entry(".storage/a.ldb", T::Regular, "", &[7u8; 3000]);
    let gz = |b: &[u8]| {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(b).unwrap();
        e.finish().unwrap()
    };
    let whole_gz = gz(&with_end(good.clone()));
    let cases: Vec<(&str, Vec<u8>, &[&str])> = vec![
        (
            "absolute name",
            with_end(raw_entry("/etc/cron.d/x", T::Regular, "", b"x")),
            &["/etc/cron.d/x", "absolute"],
        ),
        (
            "climbing name",
            with_end(raw_entry("a/../../x", T::Regular, "", b"x")),
            &["a/../../x", "climbs"],
        ),
        (
            "device file",
            with_end(raw_entry("dev/sda", T::Block, "", b"")),
            &["dev/sda", "device file"],
        ),
        (
            "fifo",
            with_end(raw_entry("p", T::Fifo, "", b"")),
            &["\"p\"", "fifo"],
        ),
        (
            "hard link out of the tree",
            with_end(raw_entry("l", T::Link, "/etc/shadow", b"")),
            &["\"l\"", "hard link to \"/etc/shadow\""],
        ),
        (
            "hard link to a later entry",
            with_end([raw_entry("l", T::Link, ".storage/a.ldb", b""), good.clone()].concat()),
            &["\"l\"", "not a file the archive holds before it"],
        ),
        (
            "symlink out of the tree",
            with_end(raw_entry("s", T::Symlink, "../../etc", b"")),
            &["\"s\"", "a symlink to \"../../etc\""],
        ),
        (
            "the same name twice",
            with_end([good.clone(), good.clone()].concat()),
            &[".storage/a.ldb", "twice"],
        ),
        (
            "a size that lies",
            good[..512 + 1000].to_vec(),
            &[
                ".storage/a.ldb",
                "says 3000 bytes",
                "after 1000",
                "truncated",
            ],
        ),
        (
            "cut at an entry boundary",
            good.clone(),
            &["end-of-archive marker", "truncated"],
        ),
        (
            "truncated gzip",
            whole_gz[..whole_gz.len() - 12].to_vec(),
            &["reading the archive failed"],
        ),
        (
            "garbage after the end",
            [with_end(good.clone()), b"more".to_vec()].concat(),
            &["bytes follow the archive's end-of-archive marker"],
        ),
        (
            "a bad header checksum",
            with_end({
                let mut b = good.clone();
                b[0] ^= 1;
                b
            }),
            &["entry 1", "not a valid tar entry"],
        ),
    ];
    // The good archive itself imports (each case differs from it in one way).
    let o = ImportOptions {
        height: Some(1),
        created_unix_ns: Some(1),
        ..opts("evil.tar")
    };
    import::import(&repo(), &whole_gz[..], &o, &Silent).unwrap();
    for (case, data, words) in cases {
        let repo = repo();
        let e = import::import(&repo, &data[..], &o, &Silent)
            .expect_err(case)
            .to_string();
        for w in words {
            assert!(e.contains(w), "{case}: {w:?} not in {e}");
        }
        assert!(
            e.contains("evil.tar"),
            "{case}: the archive is not named: {e}"
        );
        assert!(repo.snapshots().unwrap().is_empty(), "{case}: committed");
    }
}
