//! Forget records: `forgotten/<snapshot id>`, written before a forgotten
//! snapshot's manifest is deleted, so that the history's hash chain can
//! tell "forgotten by a retention policy or an operator" from "removed or
//! replaced" (FORMAT.md §10, "Forget"). A record keeps what the chain walk
//! needs to step over the gap: the snapshot's key, history and parent.

use serde::{Deserialize, Serialize};

use super::envelope::{self, Kind};
use super::layout::SnapshotKey;
use super::{limits, FormatError};
use crate::id::Hash;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, arbitrary::Arbitrary)]
pub struct ForgetRecord {
    /// The forgotten snapshot's key (`snapshots/…`), whose last field is
    /// its id; the record's own key repeats the id.
    pub snapshot: String,
    pub host: String,
    pub source: String,
    pub height: u64,
    /// The forgotten manifest's `parent`: the chain continues through it.
    pub parent: Option<Hash>,
    /// When it was forgotten (the forgetting host's clock).
    pub forgotten_unix_ns: u64,
    /// Who forgot it (`--host` of the `forget` run).
    pub by_host: String,
    /// Why: the policy that no longer kept it, or "named".
    pub reason: String,
}

impl ForgetRecord {
    pub fn encode(&self) -> Vec<u8> {
        envelope::seal(Kind::ForgetRecord, 2, &super::encode_body(self))
    }

    pub fn decode(bytes: &[u8]) -> Result<ForgetRecord, FormatError> {
        let (_, body) = envelope::open(bytes, Kind::ForgetRecord, limits::MAX_RECORD_BYTES)?;
        let r: ForgetRecord = super::decode_body(body)?;
        r.key()?;
        for label in [&r.host, &r.source, &r.by_host, &r.reason] {
            FormatError::check_limit("label length", label.len() as u64, limits::MAX_LABEL_BYTES)?;
        }
        Ok(r)
    }

    /// The forgotten snapshot's key, parsed.
    pub fn key(&self) -> Result<SnapshotKey, FormatError> {
        SnapshotKey::parse(&self.snapshot)
    }
}
