//! Prune plans: `prune/<round>.plan`, the chunks one round of prune has
//! condemned (FORMAT.md §10, "Prune"). A later run sweeps them (deletes those
//! still unreferenced); writers check, before they commit, that no round
//! swept while they ran deleted a chunk they reuse.

use serde::{Deserialize, Serialize};

use super::envelope::{self, Kind};
use super::{limits, FormatError};
use crate::id::ChunkId;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, arbitrary::Arbitrary)]
pub struct PrunePlan {
    pub round: u64,
    /// When it was written (the pruning host's clock; informational: every
    /// decision uses the store's own times).
    pub created_unix_ns: u64,
    /// The pruning host.
    pub host: String,
    /// Condemned chunk ids, sorted and unique.
    pub chunks: Vec<ChunkId>,
}

impl PrunePlan {
    pub fn encode(&self) -> Vec<u8> {
        envelope::seal(Kind::PrunePlan, 2, &super::encode_body(self))
    }

    pub fn decode(bytes: &[u8]) -> Result<PrunePlan, FormatError> {
        let (_, body) = envelope::open(bytes, Kind::PrunePlan, limits::MAX_PLAN_BYTES)?;
        let p: PrunePlan = super::decode_body(body)?;
        FormatError::check_limit("label length", p.host.len() as u64, limits::MAX_LABEL_BYTES)?;
        if p.chunks.windows(2).any(|w| w[0] >= w[1]) {
            return Err(FormatError::corrupt(
                "prune plan's chunks are not sorted and unique",
            ));
        }
        Ok(p)
    }
}
