//! BLAKE3 digests as names.
//!
//! One type serves chunk ids (hash of the uncompressed chunk bytes), whole-file
//! hashes and snapshot ids (hash of the manifest object). On the wire it is
//! the 32 raw digest bytes; in object keys and messages it is lowercase hex.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

#[derive(
    Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, arbitrary::Arbitrary,
)]
pub struct Hash(pub [u8; 32]);

/// A chunk is named by the BLAKE3 hash of its uncompressed bytes.
pub type ChunkId = Hash;

impl Hash {
    pub fn of(bytes: &[u8]) -> Hash {
        Hash(*blake3::hash(bytes).as_bytes())
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The first 12 hex digits: enough to tell snapshots apart in a listing.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..6])
    }
}

impl From<blake3::Hash> for Hash {
    fn from(h: blake3::Hash) -> Hash {
        Hash(*h.as_bytes())
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({})", self.to_hex())
    }
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a 64-digit lowercase hex BLAKE3 hash")]
pub struct BadHash(pub String);

impl FromStr for Hash {
    type Err = BadHash;
    fn from_str(s: &str) -> Result<Hash, BadHash> {
        let bad = || BadHash(s.to_string());
        if s.len() != 64 || s.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|_| bad())?;
        Ok(Hash(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_rejects_bad_input() {
        let h = Hash::of(b"blocksnap");
        assert_eq!(h.to_hex().parse::<Hash>().unwrap(), h);
        assert!("abc".parse::<Hash>().is_err());
        assert!(h.to_hex().to_uppercase().parse::<Hash>().is_err());
        assert!("zz".repeat(32).parse::<Hash>().is_err());
    }
}
