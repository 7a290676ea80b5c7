//! Object keys: where each object lives in a repository (a directory or an
//! S3 prefix).
//!
//! ```text
//! config                                    the repository config
//! chunks/<h0h1>/<64 hex>                    a chunk, named by its id
//! snapshots/<height:020>-<created:020>-<64 hex>   a manifest
//! epochs/<n:020>                            a sweep began (body: "<round> <plan stamp>")
//! forgotten/<64 hex>                        a forget record (v2)
//! pending/<64 hex>-<32 hex>                 a manifest being committed, one attempt's (v2)
//! pending/<64 hex>-<32 hex>.fate            "commit <secret>" or "expire" (v2)
//! pending/<64 hex>[.fate]                   the same, as the first v2 release named them
//! prune/<round:020>.plan                    a round's condemned chunks (v2)
//! prune/<round:020>.sweep-<attempt:04>      a sweep attempt began (v2)
//! prune/<round:020>.done-<attempt:04>       that attempt finished the round (v2)
//! ```
//! Snapshot keys sort lexicographically by height, then by commit time, so a
//! plain listing is the history in order; the last field is the manifest
//! object's own BLAKE3, which the reader checks against the bytes it gets.

use super::FormatError;
use crate::id::{ChunkId, Hash};

pub const CONFIG_KEY: &str = "config";
pub const CHUNKS_PREFIX: &str = "chunks/";
pub const SNAPSHOTS_PREFIX: &str = "snapshots/";
/// Prune epochs: `epochs/{n:020}`. Whoever deletes chunks first writes the
/// next epoch, so that clients' chunk indexes know to re-check (§10).
pub const EPOCHS_PREFIX: &str = "epochs/";

pub const FORGOTTEN_PREFIX: &str = "forgotten/";
/// Signatures (`crate::repo::sign`): `signatures/<snapshot id>/<key id>[.forget]`.
pub const SIGNATURES_PREFIX: &str = "signatures/";
pub const PENDING_PREFIX: &str = "pending/";
pub const PRUNE_PREFIX: &str = "prune/";

pub fn forgotten_key(id: &Hash) -> String {
    format!("{FORGOTTEN_PREFIX}{}", id.to_hex())
}

/// One attempt at committing a manifest: 16 bytes of BLAKE3 of a secret
/// only its writer knows until it claims the commit (FORMAT.md §10,
/// "Writers"), so that a claim can be told from an object planted first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Attempt(pub [u8; 16]);

impl Attempt {
    /// The attempt named by `secret`.
    pub fn of(secret: &[u8; 32]) -> Attempt {
        let h = blake3::hash(secret);
        let mut a = [0u8; 16];
        a.copy_from_slice(&h.as_bytes()[..16]);
        Attempt(a)
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    fn parse(s: &str) -> Option<Attempt> {
        if s.len() != 32
            || !s
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return None;
        }
        let mut a = [0u8; 16];
        hex::decode_to_slice(s, &mut a).ok()?;
        Some(Attempt(a))
    }
}

/// `pending/<id>-<attempt>`: an attempt's pending manifest.
pub fn pending_key(id: &Hash, attempt: &Attempt) -> String {
    format!("{PENDING_PREFIX}{}-{}", id.to_hex(), attempt.to_hex())
}

/// `pending/<id>-<attempt>.fate`: who decided that attempt's fate.
pub fn fate_key(id: &Hash, attempt: &Attempt) -> String {
    format!("{}.fate", pending_key(id, attempt))
}

/// `pending/<id>`: a pending manifest as the first version 2 release named
/// it (one per snapshot, not per attempt). Read by prune, never written.
pub fn legacy_pending_key(id: &Hash) -> String {
    format!("{PENDING_PREFIX}{}", id.to_hex())
}

pub fn legacy_fate_key(id: &Hash) -> String {
    format!("{PENDING_PREFIX}{}.fate", id.to_hex())
}

/// What a key under `pending/` is: the snapshot id, the attempt (`None`:
/// a legacy key), and whether it is the fate rather than the manifest.
pub fn parse_pending_key(key: &str) -> Option<(Hash, Option<Attempt>, bool)> {
    let rest = key.strip_prefix(PENDING_PREFIX)?;
    let (name, fate) = match rest.strip_suffix(".fate") {
        Some(n) => (n, true),
        None => (rest, false),
    };
    match name.split_once('-') {
        Some((id, a)) => Some((id.parse().ok()?, Some(Attempt::parse(a)?), fate)),
        None => Some((name.parse().ok()?, None, fate)),
    }
}

/// The objects of one prune round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoundObject {
    Plan,
    Sweep(u32),
    /// The sweep attempt of that number finished.
    Done(u32),
}

pub fn round_key(round: u64, what: RoundObject) -> String {
    match what {
        RoundObject::Plan => format!("{PRUNE_PREFIX}{round:020}.plan"),
        RoundObject::Sweep(n) => format!("{PRUNE_PREFIX}{round:020}.sweep-{n:04}"),
        RoundObject::Done(n) => format!("{PRUNE_PREFIX}{round:020}.done-{n:04}"),
    }
}

pub fn parse_round_key(key: &str) -> Option<(u64, RoundObject)> {
    let rest = key.strip_prefix(PRUNE_PREFIX)?;
    let (digits, what) = rest.split_once('.')?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let round = digits.parse().ok()?;
    let what = match what {
        "plan" => RoundObject::Plan,
        s => {
            let (kind, n) = s.split_once('-')?;
            if n.len() != 4 || !n.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let n = n.parse().ok()?;
            match kind {
                "sweep" => RoundObject::Sweep(n),
                "done" => RoundObject::Done(n),
                _ => return None,
            }
        }
    };
    Some((round, what))
}

pub fn epoch_key(n: u64) -> String {
    format!("{EPOCHS_PREFIX}{n:020}")
}

pub fn parse_epoch_key(key: &str) -> Option<u64> {
    let digits = key.strip_prefix(EPOCHS_PREFIX)?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

pub fn chunk_key(id: &ChunkId) -> String {
    let hex = id.to_hex();
    format!("{CHUNKS_PREFIX}{}/{hex}", &hex[..2])
}

/// Parses a chunk key back to its id (for listings and prune).
pub fn parse_chunk_key(key: &str) -> Option<ChunkId> {
    let rest = key.strip_prefix(CHUNKS_PREFIX)?;
    let (fan, hex) = rest.split_once('/')?;
    let id: ChunkId = hex.parse().ok()?;
    (fan == &hex[..2]).then_some(id)
}

/// Identifies one snapshot: what its key says about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SnapshotKey {
    pub height: u64,
    pub created_unix_ns: u64,
    pub id: Hash,
}

impl SnapshotKey {
    pub fn key(&self) -> String {
        format!(
            "{SNAPSHOTS_PREFIX}{:020}-{:020}-{}",
            self.height,
            self.created_unix_ns,
            self.id.to_hex()
        )
    }

    pub fn parse(key: &str) -> Result<SnapshotKey, FormatError> {
        let bad = || FormatError::corrupt(format!("{key:?} is not a snapshot key"));
        let rest = key.strip_prefix(SNAPSHOTS_PREFIX).ok_or_else(bad)?;
        let mut parts = rest.split('-');
        let (Some(h), Some(t), Some(id), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        let digits = |s: &str| s.len() == 20 && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(h) || !digits(t) {
            return Err(bad());
        }
        Ok(SnapshotKey {
            height: h.parse().map_err(|_| bad())?,
            created_unix_ns: t.parse().map_err(|_| bad())?,
            id: id.parse().map_err(|_| bad())?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_sort_by_height_then_time() {
        let a = SnapshotKey {
            height: 9,
            created_unix_ns: 5,
            id: Hash::of(b"a"),
        };
        let b = SnapshotKey {
            height: 10,
            created_unix_ns: 1,
            id: Hash::of(b"b"),
        };
        assert_eq!(SnapshotKey::parse(&a.key()).unwrap(), a);
        assert!(a.key() < b.key());
        assert!(SnapshotKey::parse("snapshots/1-2-3").is_err());
        assert!(SnapshotKey::parse(&format!("{}-x", a.key())).is_err());
        let id = Hash::of(b"c");
        assert_eq!(parse_chunk_key(&chunk_key(&id)), Some(id));
        assert_eq!(parse_chunk_key("chunks/zz/abc"), None);
        for what in [
            RoundObject::Plan,
            RoundObject::Sweep(3),
            RoundObject::Done(3),
        ] {
            assert_eq!(parse_round_key(&round_key(42, what)), Some((42, what)));
        }
        assert_eq!(parse_round_key("prune/42.plan"), None);
        assert_eq!(parse_round_key(&format!("prune/{:020}.done", 42)), None);
        let a = Attempt::of(&[7; 32]);
        assert_eq!(
            parse_pending_key(&fate_key(&id, &a)),
            Some((id, Some(a), true))
        );
        assert_eq!(
            parse_pending_key(&pending_key(&id, &a)),
            Some((id, Some(a), false))
        );
        assert_eq!(
            parse_pending_key(&legacy_fate_key(&id)),
            Some((id, None, true))
        );
        assert_eq!(
            parse_pending_key(&legacy_pending_key(&id)),
            Some((id, None, false))
        );
        assert_eq!(
            parse_pending_key(&format!("{}-XYZ", legacy_pending_key(&id))),
            None
        );
    }
}
