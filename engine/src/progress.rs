//! Progress reporting without a terminal dependency: the engine calls these
//! hooks, the CLI draws bars with them (or nothing, for `--json`).

pub trait Progress: Sync {
    /// A phase starts; `total` is in bytes (0 when unknown).
    fn begin(&self, _phase: &str, _total: u64) {}
    fn advance(&self, _bytes: u64) {}
    fn end(&self) {}
}

/// For callers that want no progress output.
pub struct Silent;

impl Progress for Silent {}
