//! Which snapshots a `verify` checks and how, from what the command line
//! asks: read-only (it lists and, under trust, reads signatures).

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::format::layout::SnapshotKey;
use crate::repo::sign::Trust;
use crate::repo::trusted;
use crate::repo::{Repository, Selector};

use super::report::{Level, Subset, VerifyOptions};

/// A `verify SNAPSHOT` as asked.
#[derive(Debug, Clone)]
pub struct Request {
    pub selector: Selector,
    /// Only this host's snapshots (for `latest` and heights).
    pub host: Option<String>,
    /// Read every chunk (or the subset), not only list them.
    pub full: bool,
    pub subset: Option<Subset>,
    /// The seed of a random share (`--subset P%`).
    pub seed: Option<u64>,
    /// Walk the histories' parent chains (implied by `all`).
    pub chain: bool,
    pub jobs: usize,
    pub trust: Option<Arc<Trust>>,
}

/// The snapshots to check, and the options to check them with. Under
/// trust, `latest` or a height is the newest trusted snapshot — or, with
/// none, the newest, which the check then reports as untrusted.
pub fn plan(repo: &Repository, req: Request) -> Result<(Vec<SnapshotKey>, VerifyOptions)> {
    let host = req.host.as_deref();
    let keys = match (&req.trust, &req.selector) {
        (Some(t), Selector::Latest | Selector::Height(_)) => {
            match trusted::resolve_trusted(repo, t, &req.selector, host) {
                Ok(key) => vec![key],
                Err(_) => repo.resolve_for(&req.selector, host)?,
            }
        }
        _ => repo.resolve_for(&req.selector, host)?,
    };
    let subset = match (req.subset, req.seed) {
        (Some(Subset::Share { percent, .. }), Some(seed)) => Subset::Share { percent, seed },
        (Some(Subset::Slice { .. }), Some(_)) => {
            return Err(Error::Refused(
                "--seed goes with a random share (--subset P%), not a slice".into(),
            ))
        }
        (s, _) => s.unwrap_or(Subset::All),
    };
    let opts = VerifyOptions {
        level: if req.full { Level::Full } else { Level::Quick },
        jobs: req.jobs,
        subset,
        chain: req.chain || req.selector == Selector::All,
        trust: req.trust,
    };
    Ok((keys, opts))
}
