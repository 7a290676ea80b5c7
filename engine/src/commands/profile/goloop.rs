//! The last block a goloop database committed, read from the database
//! itself (icon-project/goloop `block/manager.go`, `common/db/bucket.go`):
//!
//! 1. `"C" ‖ "block.lastHeight"` → the height, goloop-RLP of an int64;
//! 2. `"H" ‖ RLP(height)` → the block's 32-byte hash;
//! 3. `"S" ‖ hash` → the header, an RLP list `[version, height, …]`; for a
//!    version 2 header, SHA3-256 of it is the hash.
//!
//! goloop writes all three in the batch that finalizes a block, so a
//! database whose keys disagree is not at a block boundary, and a snapshot
//! of it is refused.

use std::path::Path;

use serde::Serialize;
use sha3::Digest;

use super::leveldb;
use crate::error::{Error, Result};
use crate::sys::fsx::DirFd;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ChainHead {
    pub height: u64,
    #[serde(serialize_with = "hex")]
    pub hash: [u8; 32],
    /// The header's block version (1: a block migrated from ICON 1).
    pub version: u64,
}

fn hex<S: serde::Serializer>(h: &[u8; 32], s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&::hex::encode(h))
}

/// One RLP item of `b`: (payload, is_list, rest).
fn item(b: &[u8]) -> Option<(&[u8], bool, &[u8])> {
    let (&first, rest) = b.split_first()?;
    let (len, off, list) = match first {
        0x00..=0x7f => return Some((&b[..1], false, rest)),
        0x80..=0xb7 => (usize::from(first - 0x80), 0, false),
        0xb8..=0xbf => (0, usize::from(first - 0xb7), false),
        0xc0..=0xf7 => (usize::from(first - 0xc0), 0, true),
        0xf8..=0xff => (0, usize::from(first - 0xf7), true),
    };
    let (len, rest) = if off > 0 {
        if off > 8 || rest.len() < off {
            return None;
        }
        let n = rest[..off]
            .iter()
            .fold(0u64, |a, &x| (a << 8) | u64::from(x));
        (usize::try_from(n).ok()?, &rest[off..])
    } else {
        (len, rest)
    };
    if rest.len() < len {
        return None;
    }
    Some((&rest[..len], list, &rest[len..]))
}

/// goloop's integer bytes: minimal big-endian two's complement; only
/// non-negative values are heights.
fn uint(payload: &[u8]) -> Option<u64> {
    if payload.len() > 9 || payload.first().is_some_and(|b| b & 0x80 != 0) {
        return None;
    }
    let digits = match payload {
        [0, rest @ ..] if payload.len() == 9 => rest,
        p if p.len() <= 8 => p,
        _ => return None,
    };
    Some(digits.iter().fold(0u64, |a, &x| (a << 8) | u64::from(x)))
}

/// goloop's RLP of a height.
fn rlp_height(h: u64) -> Vec<u8> {
    let mut digits: Vec<u8> = h
        .to_be_bytes()
        .into_iter()
        .skip_while(|&b| b == 0)
        .collect();
    if digits.first().is_none_or(|b| b & 0x80 != 0) {
        digits.insert(0, 0);
    }
    match digits.as_slice() {
        [b] if *b < 0x80 => vec![*b],
        d => {
            let mut out = vec![0x80 + d.len() as u8];
            out.extend_from_slice(d);
            out
        }
    }
}

/// Reads the last committed block of the goloop database in `db_dir`
/// (`<chain>/db/<nid>`), writing nothing (see [`leveldb`]).
pub fn last_block(db_dir: DirFd, label: &Path) -> Result<ChainHead> {
    let mut db = leveldb::open(db_dir, label)?;
    let boundary = |why: String| {
        Error::Refused(format!(
            "{}: the database is not at a block boundary ({why}); stop the node (or take a staged \
             snapshot) so that it closes its database after a block",
            label.display()
        ))
    };
    let last = db
        .get(b"Cblock.lastHeight")
        .ok_or_else(|| boundary("it records no last block height: Cblock.lastHeight".into()))?;
    let height = item(&last)
        .filter(|(_, list, rest)| !list && rest.is_empty())
        .and_then(|(p, _, _)| uint(p))
        .ok_or_else(|| boundary(format!("Cblock.lastHeight holds {}", ::hex::encode(&last))))?;
    let mut key = b"H".to_vec();
    key.extend(rlp_height(height));
    let hash: [u8; 32] = db
        .get(&key)
        .and_then(|h| h.as_ref().try_into().ok())
        .ok_or_else(|| boundary(format!("no 32-byte hash of block {height}")))?;
    let mut key = b"S".to_vec();
    key.extend_from_slice(&hash);
    let header = db.get(&key).ok_or_else(|| {
        boundary(format!(
            "no header for block {height} ({})",
            ::hex::encode(hash)
        ))
    })?;
    let fields = item(&header)
        .filter(|(_, list, rest)| *list && rest.is_empty())
        .map(|(p, _, _)| p)
        .ok_or_else(|| boundary(format!("the header of block {height} is not an RLP list")))?;
    let (version, rest) = item(fields)
        .and_then(|(p, _, r)| Some((uint(p)?, r)))
        .ok_or_else(|| boundary(format!("the header of block {height} has no version")))?;
    let recorded = item(rest).and_then(|(p, _, _)| uint(p));
    if recorded != Some(height) {
        return Err(boundary(format!(
            "block {height}'s header records height {recorded:?}"
        )));
    }
    if version >= 2 {
        let digest: [u8; 32] = sha3::Sha3_256::digest(&header).into();
        if digest != hash {
            return Err(boundary(format!(
                "block {height}'s header does not hash to {}",
                ::hex::encode(hash)
            )));
        }
    }
    Ok(ChainHead {
        height,
        hash,
        version,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heights_encode_as_goloop_does() {
        // icon-project/goloop intconv.Int64ToBytes, then RLP.
        assert_eq!(rlp_height(0), [0x00]);
        assert_eq!(rlp_height(1), [0x01]);
        assert_eq!(rlp_height(127), [0x7f]);
        assert_eq!(rlp_height(128), [0x82, 0x00, 0x80]);
        assert_eq!(rlp_height(1000), [0x82, 0x03, 0xe8]);
        assert_eq!(rlp_height(80_000_000), [0x84, 0x04, 0xc4, 0xb4, 0x00]);
        for h in [0, 5, 127, 128, 255, 256, 80_000_000, u64::MAX >> 1] {
            let b = rlp_height(h);
            let (p, list, rest) = item(&b).unwrap();
            assert!(!list && rest.is_empty());
            assert_eq!(uint(p), Some(h), "{h}");
        }
        assert_eq!(uint(&[0xff]), None, "negative");
    }
}
