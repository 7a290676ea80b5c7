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
    const PUBLIC: &str = include_str!("../../format-spec/vectors/objects/signature/test.key.pub");
    let Ok(sig) = crate::sign::decode(data) else {
        return;
    };
    let again = crate::sign::decode(sig.to_string().as_bytes()).expect("printed signature decodes");
    assert_eq!(again.keynum(), sig.keynum());
    let line = PUBLIC.lines().nth(1).expect("vector public key");
    let pk = minisign::PublicKey::from_base64(line.trim()).expect("vector public key parses");
    let verify = |s: &crate::sign::SignatureBox| {
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

/// What restore relies on: every entry lands below the target, no entry
/// lies below a non-directory, and symlinks resolve inside the tree.
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
        match &e.kind {
            EntryKind::Dir => {
                dirs.insert(e.path.as_str());
            }
            EntryKind::Symlink { target } => {
                assert!(!target.starts_with('/'), "absolute symlink {target:?}");
                let mut depth: i64 = e.path.split('/').count() as i64 - 1;
                for c in target.split('/') {
                    match c {
                        ".." => depth -= 1,
                        "" | "." => {}
                        _ => depth += 1,
                    }
                    assert!(depth >= 0, "symlink {:?} -> {target:?} escapes", e.path);
                }
            }
            EntryKind::File { .. } => {}
        }
    }
}
