//! The repository config object: written once by `init`, never overwritten.
//! It fixes the chunker parameters and zstd level for every snapshot, so that
//! snapshots from any host cut identical data at identical boundaries and
//! therefore dedup against each other.

use serde::{Deserialize, Serialize};

use super::envelope::{self, Kind};
use super::{limits, FormatError};
use crate::id::Hash;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, arbitrary::Arbitrary)]
pub struct RepoConfig {
    /// Random-ish id telling repositories apart (local caches key on it).
    pub id: Hash,
    pub created_unix_ns: u64,
    pub chunker: ChunkerParams,
    pub zstd_level: i32,
}

/// FastCDC (2020 variant, normalisation level 1) parameters in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, arbitrary::Arbitrary)]
pub struct ChunkerParams {
    pub min_size: u32,
    pub avg_size: u32,
    pub max_size: u32,
}

impl ChunkerParams {
    /// The parameters around an average size: min a quarter of it, max
    /// four times (what `init --chunk-avg-kib` takes).
    pub fn around(avg_size: u32) -> ChunkerParams {
        ChunkerParams {
            min_size: avg_size / 4,
            avg_size,
            max_size: avg_size.saturating_mul(4),
        }
    }

    /// The bounds the `fastcdc` crate's v2020 chunker accepts.
    pub fn validate(&self) -> Result<(), FormatError> {
        let ok = (64..=1 << 20).contains(&self.min_size)
            && (256..=4 << 20).contains(&self.avg_size)
            && (1024..=limits::MAX_CHUNK_BYTES as u32).contains(&self.max_size)
            && self.min_size <= self.avg_size
            && self.avg_size <= self.max_size
            // FastCDC derives its masks from the sizes and asserts they are even.
            && [self.min_size, self.avg_size, self.max_size].iter().all(|s| s % 2 == 0);
        if ok {
            Ok(())
        } else {
            Err(FormatError::corrupt(format!(
                "chunker parameters {}/{}/{} are not even sizes with min 64..=1MiB <= avg 256..=4MiB <= max 1KiB..=16MiB",
                self.min_size, self.avg_size, self.max_size
            )))
        }
    }
}

impl RepoConfig {
    pub fn encode(&self) -> Vec<u8> {
        // The config layout is version 1's: older readers read it too.
        envelope::seal(Kind::Config, 1, &super::encode_body(self))
    }

    pub fn decode(bytes: &[u8]) -> Result<RepoConfig, FormatError> {
        let (_, body) = envelope::open(bytes, Kind::Config, limits::MAX_CONFIG_BYTES)?;
        let config: RepoConfig = super::decode_body(body)?;
        config.chunker.validate()?;
        if !(-7..=22).contains(&config.zstd_level) {
            return Err(FormatError::corrupt(format!(
                "zstd level {} out of range",
                config.zstd_level
            )));
        }
        Ok(config)
    }
}
