//! Properties of the decoders, checked by the fuzz targets in `fuzz/` and,
//! for every input in the checked-in corpus and every past crash, by plain
//! `cargo test` on stable (`tests/fuzz_corpus.rs`).
//!
//! Each function panics when a property fails; returning means the input
//! was handled correctly, whether it was accepted or refused. The oracles
//! here are deliberately naive re-statements, not calls into the code under
//! test.

use std::net::Ipv4Addr;
use std::path::{Component, Path};

use crate::format::chunk;
use crate::format::config::RepoConfig;
use crate::format::manifest::{EntryKind, Manifest};
use crate::format::{limits, path, FormatError};
use crate::id::Hash;
use crate::ipnorm;
use crate::store::Location;

/// Manifest bytes: decoding never panics; an accepted manifest re-encodes
/// to the very same bytes (one canonical form) and never lets a restore
/// write outside its target.
pub fn manifest_bytes(data: &[u8]) {
    if let Ok(m) = Manifest::decode(data) {
        assert_eq!(m.encode(), data, "decoded manifest re-encodes differently");
        restore_stays_inside(&m);
    }
}

/// Any manifest value: it decodes back to itself exactly when it is valid.
pub fn manifest_value(m: &Manifest) {
    let bytes = m.encode();
    match (Manifest::decode(&bytes), m.validate()) {
        (Ok(d), Ok(())) => {
            assert_eq!(&d, m, "decode(encode(m)) != m");
            restore_stays_inside(&d);
        }
        (Err(_), Err(_)) => {}
        (Ok(_), Err(e)) => panic!("decode accepted a manifest validate refuses: {e}"),
        (Err(e), Ok(())) => panic!("decode refused a valid manifest: {e}"),
    }
}

/// Chunk objects: the first 32 bytes of `data` are the expected id, the
/// rest the object. Decoding never panics and never returns bytes that do
/// not hash to the id or exceed the chunk limit; re-encoding what decoded
/// gives an object that decodes to the same bytes.
pub fn chunk_bytes(data: &[u8]) {
    let Some((id, object)) = data.split_first_chunk::<32>() else {
        return;
    };
    let id = Hash(*id);
    if let Ok(raw) = chunk::decode(object, &id) {
        assert_eq!(Hash::of(&raw), id, "chunk decoded to bytes of another hash");
        assert!(raw.len() as u64 <= limits::MAX_CHUNK_BYTES);
        let mut compressor = zstd::bulk::Compressor::new(1).expect("zstd level 1");
        let again = chunk::encode(&raw, &mut compressor);
        assert_eq!(
            chunk::decode(&again, &id).expect("re-encoded chunk decodes"),
            raw
        );
    }
    // Any payload, encoded, decodes to itself.
    let mut compressor = zstd::bulk::Compressor::new(1).expect("zstd level 1");
    let encoded = chunk::encode(object, &mut compressor);
    assert_eq!(
        chunk::decode(&encoded, &Hash::of(object)).expect("fresh chunk decodes"),
        object
    );
}

/// Config objects: never panic; accepted ones re-encode identically.
pub fn config_bytes(data: &[u8]) {
    if let Ok(c) = RepoConfig::decode(data) {
        assert_eq!(c.encode(), data, "decoded config re-encodes differently");
    }
}

/// Signature objects: never panic, in decoding or in verifying; an
/// accepted one prints back to text that decodes to the same key id and
/// verifies (with the vectors' public key, over fixed bytes) the same way.
pub fn signature_bytes(data: &[u8]) {
    const PUBLIC: &str =
        include_str!("../../../format-spec/vectors/objects/signature/test.key.pub");
    let Ok(sig) = crate::repo::sign::decode(data) else {
        return;
    };
    let again =
        crate::repo::sign::decode(sig.to_string().as_bytes()).expect("printed signature decodes");
    assert_eq!(again.keynum(), sig.keynum());
    let line = PUBLIC.lines().nth(1).expect("vector public key");
    let pk = minisign::PublicKey::from_base64(line.trim()).expect("vector public key parses");
    let verify = |s: &crate::repo::sign::SignatureBox| {
        minisign::verify(
            &pk,
            s,
            std::io::Cursor::new(b"blocksnap"),
            true,
            false,
            false,
        )
        .is_ok()
    };
    assert_eq!(verify(&sig), verify(&again));
}

/// Repository locations: never panic; an S3 location prints back to a
/// string that parses to the same location.
pub fn location(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(loc @ Location::S3 { .. }) = s.parse::<Location>() {
        let again: Location = loc.to_string().parse().expect("printed location parses");
        assert_eq!(again, loc);
    }
}

/// IP normalisation and the path check: the first 4 bytes are an address,
/// the rest a path. A path that passes the check and normalises to a path
/// that passes too comes back unchanged from `denormalise`, and putting any
/// address back never makes an unsafe path (at most a too-long one).
pub fn path_and_ip(data: &[u8]) {
    let Some((ip, rest)) = data.split_first_chunk::<4>() else {
        return;
    };
    let ip = Ipv4Addr::from(*ip);
    let Ok(p) = std::str::from_utf8(rest) else {
        return;
    };
    let _ = ipnorm::find(p);
    if path::check(p).is_err() {
        return;
    }
    assert!(naive_inside(p), "path check accepted {p:?}");
    let Ok(n) = ipnorm::normalise(p, ip) else {
        return;
    };
    if path::check(&n).is_err() {
        return;
    }
    assert_eq!(
        ipnorm::denormalise(&n, ip),
        p,
        "normalise/denormalise lost {p:?}"
    );
    let other = Ipv4Addr::new(255, 255, 255, 255);
    match path::check(&ipnorm::denormalise(&n, other)) {
        Ok(()) | Err(FormatError::Limit { .. }) => {}
        Err(e) => panic!("denormalising {n:?} made an unsafe path: {e}"),
    }
}

/// A relative path of plain components: joined to any root, it stays below.
fn naive_inside(p: &str) -> bool {
    !p.is_empty()
        && Path::new(p)
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
        && !p.split('/').any(|c| c.is_empty() || c == "." || c == "..")
}

/// What restore relies on: every entry lands below the target and no entry
/// lies below a non-directory; and for a tree restore accepts (its link
/// rules, FORMAT.md §8), every symlink, resolved as the kernel would through
/// the snapshot's own tree — links followed, up to 40 of them — stays below
/// the target, never lands on the target's own directory, and never reaches
/// a top-level name the snapshot does not own (what `--force` keeps).
fn restore_stays_inside(m: &Manifest) {
    let mut dirs = std::collections::HashSet::new();
    for e in &m.entries {
        assert!(naive_inside(&e.path), "entry {:?} escapes", e.path);
        if let Some((parent, _)) = e.path.rsplit_once('/') {
            assert!(
                dirs.contains(parent),
                "entry {:?} is below a non-directory",
                e.path
            );
        }
        if let EntryKind::Dir = e.kind {
            dirs.insert(e.path.as_str());
        }
    }
    let paths: Vec<String> = m.entries.iter().map(|e| e.path.clone()).collect();
    if crate::commands::restore::links_refusal(m, &paths).is_some() {
        return;
    }
    let tree: std::collections::HashMap<&str, &EntryKind> = m
        .entries
        .iter()
        .map(|e| (e.path.as_str(), &e.kind))
        .collect();
    for e in &m.entries {
        if let EntryKind::Symlink { target } = &e.kind {
            let dir: Vec<&str> = e.path.split('/').collect();
            let dir = &dir[..dir.len() - 1];
            let mut hops = 0;
            match resolve(&tree, dir.to_vec(), target, &mut hops) {
                Resolved::Inside(at) => assert!(
                    !at.is_empty(),
                    "symlink {:?} -> {target:?} lands on the target's own directory",
                    e.path
                ),
                Resolved::Escapes => {
                    panic!("symlink {:?} -> {target:?} resolves outside the target", e.path)
                }
                Resolved::Foreign(name) => panic!(
                    "symlink {:?} -> {target:?} reaches {name:?}, a top-level name the snapshot does not own",
                    e.path
                ),
                Resolved::Stops => {}
            }
        }
    }
}

/// Where a path resolution through a snapshot's tree ends.
enum Resolved<'a> {
    /// At these components below the target's root ([] is the root).
    Inside(Vec<&'a str>),
    /// Above the target's root.
    Escapes,
    /// At a top-level name that is not the snapshot's.
    Foreign(&'a str),
    /// At a missing name inside the snapshot's own directories, a file with
    /// more to walk, or a loop: the kernel stops there.
    Stops,
}

/// Resolves `target` from the directory `at`, as the kernel would, in the
/// tree the manifest restores: a deliberately naive walk, one component at
/// a time, following the snapshot's own symlinks.
fn resolve<'a>(
    tree: &std::collections::HashMap<&'a str, &'a EntryKind>,
    mut at: Vec<&'a str>,
    target: &'a str,
    hops: &mut usize,
) -> Resolved<'a> {
    for c in target.split('/') {
        match c {
            "" | "." => continue,
            ".." => {
                if at.pop().is_none() {
                    return Resolved::Escapes;
                }
                continue;
            }
            name => {
                at.push(name);
                let path = at.join("/");
                match tree.get(path.as_str()) {
                    Some(EntryKind::Dir) | Some(EntryKind::File { .. }) => {}
                    Some(EntryKind::Symlink { target: next }) => {
                        *hops += 1;
                        if *hops > 40 {
                            return Resolved::Stops;
                        }
                        at.pop();
                        match resolve(tree, at.clone(), next, hops) {
                            Resolved::Inside(to) => at = to,
                            other => return other,
                        }
                    }
                    None if at.len() == 1 => return Resolved::Foreign(name),
                    None => return Resolved::Stops,
                }
            }
        }
    }
    Resolved::Inside(at)
}

/// Publish journals (the text restore leaves in a target while it swaps
/// trees, which the next restore acts on): decoding never panics, an
/// accepted journal names only blocksnap's own working directories and
/// plain top-level entries, and re-encodes to text that decodes to itself.
pub fn journal_bytes(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(j) = crate::commands::restore::publish::Journal::decode(text) else {
        return;
    };
    let single = |n: &str| naive_inside(n) && !n.contains('/');
    for dir in [&j.staging, &j.old] {
        assert!(
            single(dir) && dir.starts_with(crate::format::reserved::RESERVED_PREFIX),
            "journal names {dir:?} as a working directory"
        );
    }
    for e in &j.entries {
        assert!(
            single(&e.name) && !e.name.starts_with(crate::format::reserved::RESERVED_PREFIX),
            "journal moves {:?}",
            e.name
        );
    }
    assert_eq!(
        crate::commands::restore::publish::Journal::decode(&j.encode())
            .expect("re-encoded journal decodes"),
        j
    );
}

/// Forget records: decoding never panics; an accepted record re-encodes to
/// the same bytes, names a snapshot key, and keeps its labels bounded.
pub fn forget_record_bytes(data: &[u8]) {
    let Ok(r) = crate::format::forget::ForgetRecord::decode(data) else {
        return;
    };
    assert_eq!(
        r.encode(),
        data,
        "decoded forget record re-encodes differently"
    );
    assert!(r.key().is_ok(), "record names {:?}", r.snapshot);
    for label in [&r.host, &r.source, &r.by_host, &r.reason] {
        assert!(label.len() as u64 <= limits::MAX_LABEL_BYTES);
    }
}

/// Prune plans: decoding never panics; an accepted plan re-encodes to the
/// same bytes and lists its chunks in strictly increasing order.
pub fn prune_plan_bytes(data: &[u8]) {
    let Ok(p) = crate::format::prune::PrunePlan::decode(data) else {
        return;
    };
    assert_eq!(p.encode(), data, "decoded plan re-encodes differently");
    assert!(
        p.chunks.windows(2).all(|w| w[0] < w[1]),
        "plan's chunks out of order"
    );
}

/// Fates: the first 16 bytes name an attempt, the rest is a fate object.
/// Reading never panics, and a claim is recognised only when the body is
/// exactly `commit <secret>\n` with a secret whose BLAKE3 names the attempt
/// (which only its writer knows before its claim).
pub fn fate_bytes(data: &[u8]) {
    use crate::format::layout::Attempt;
    use crate::repo::{fate_commit, read_fate, Fate};
    let Some((a, body)) = data.split_first_chunk::<16>() else {
        return;
    };
    let attempt = Attempt(*a);
    if read_fate(body, Some(&attempt)) == Fate::Claim {
        let hex_secret = std::str::from_utf8(&body[7..body.len() - 1]).expect("ascii");
        let mut secret = [0u8; 32];
        hex::decode_to_slice(hex_secret, &mut secret).expect("hex");
        assert_eq!(
            Attempt::of(&secret),
            attempt,
            "a claim without the attempt's secret"
        );
        assert_eq!(fate_commit(&secret), body);
    }
    let _ = read_fate(body, None);
}
