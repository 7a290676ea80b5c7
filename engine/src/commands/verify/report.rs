//! What a verify is asked and what it finds: the options, the problems
//! and the report. Shared by the face, the plan and the history check.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::error::Error;
use crate::format::layout::SnapshotKey;
use crate::format::FormatError;
use crate::id::{ChunkId, Hash};
use crate::repo::sign::Trust;
use crate::store::Counts;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Quick,
    Full,
}

/// Which chunks a full check reads.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Subset {
    All,
    /// Slice `index` (1-based) of `of`: the chunks whose id, read as a
    /// little-endian `u64` from its first 8 bytes, is `index - 1` modulo
    /// `of`. A file's whole-file hash is checked in the slice of its first
    /// chunk.
    Slice {
        index: u32,
        of: u32,
    },
    /// A random share: the chunks whose keyed hash (BLAKE3 keyed by the
    /// seed) falls below `percent` % of the range.
    Share {
        percent: f64,
        seed: u64,
    },
}

impl Subset {
    pub fn contains(&self, id: &ChunkId) -> bool {
        match *self {
            Subset::All => true,
            Subset::Slice { index, of } => {
                let n = u64::from_le_bytes(id.0[..8].try_into().expect("8 bytes"));
                n % u64::from(of) == u64::from(index - 1)
            }
            Subset::Share { percent, seed } => {
                let mut key = [0u8; 32];
                key[..8].copy_from_slice(&seed.to_le_bytes());
                let h = blake3::keyed_hash(&key, &id.0);
                let n = u64::from_le_bytes(h.as_bytes()[..8].try_into().expect("8 bytes"));
                (n as f64) < percent / 100.0 * u64::MAX as f64
            }
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Subset::All => "all".into(),
            Subset::Slice { index, of } => format!("{index}/{of}"),
            Subset::Share { percent, seed } => format!("{percent}% (seed {seed})"),
        }
    }
}

impl std::str::FromStr for Subset {
    type Err = String;
    /// `I/N` or `P%`; a share gets a fresh seed unless set afterwards.
    fn from_str(s: &str) -> std::result::Result<Subset, String> {
        if let Some(p) = s.strip_suffix('%') {
            let percent: f64 = p
                .parse()
                .ok()
                .filter(|p: &f64| *p > 0.0 && *p <= 100.0)
                .ok_or_else(|| format!("{s:?}: a share is 0 < P <= 100, e.g. 5%"))?;
            let seed = std::hash::BuildHasher::hash_one(&std::hash::RandomState::new(), 0u8);
            return Ok(Subset::Share { percent, seed });
        }
        let (i, n) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?}: a subset is I/N (e.g. 3/24) or P% (e.g. 5%)"))?;
        let (index, of): (u32, u32) = (
            i.parse().map_err(|_| format!("{s:?}: I is not a number"))?,
            n.parse().map_err(|_| format!("{s:?}: N is not a number"))?,
        );
        if of == 0 || index == 0 || index > of {
            return Err(format!("{s:?}: I must be 1..=N"));
        }
        Ok(Subset::Slice { index, of })
    }
}

/// What a verify run does.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    pub level: Level,
    /// Chunk reads in flight for a full check (0: what the store suggests:
    /// one per CPU locally, tens over a network).
    pub jobs: usize,
    /// Which chunks a full check reads.
    pub subset: Subset,
    /// Walk each history's `parent` chain.
    pub chain: bool,
    /// Report each selected snapshot that no signature by one of these
    /// keys vouches for (and, with `chain`, each such forget record).
    pub trust: Option<std::sync::Arc<Trust>>,
}

impl From<Level> for VerifyOptions {
    fn from(level: Level) -> VerifyOptions {
        VerifyOptions {
            level,
            jobs: 0,
            subset: Subset::All,
            chain: false,
            trust: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProblemKind {
    Missing,
    Truncated,
    Corrupt,
    WrongSize,
    NeedsNewer,
    Unreadable,
    /// A `parent` that is neither a snapshot nor a forgotten one.
    BrokenChain,
    /// Two snapshots of one history claim the same parent.
    Fork,
    /// With trusted keys given: a snapshot (or forget record) that no
    /// trusted key's signature vouches for.
    Untrusted,
}

impl ProblemKind {
    pub fn name(self) -> &'static str {
        match self {
            ProblemKind::Missing => "missing",
            ProblemKind::Truncated => "truncated",
            ProblemKind::Corrupt => "corrupt",
            ProblemKind::WrongSize => "wrong-size",
            ProblemKind::NeedsNewer => "needs-newer",
            ProblemKind::Unreadable => "unreadable",
            ProblemKind::BrokenChain => "broken-chain",
            ProblemKind::Fork => "fork",
            ProblemKind::Untrusted => "untrusted",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    pub kind: ProblemKind,
    /// The snapshot's key (for damage in or below one snapshot).
    pub snapshot: Option<String>,
    pub path: Option<String>,
    pub chunk: Option<String>,
    pub detail: String,
    /// Further references to the same damaged chunk, not listed.
    pub more_refs: u64,
}

impl Problem {
    pub(super) fn of_snapshot(kind: ProblemKind, snapshot: String, detail: String) -> Problem {
        Problem {
            kind,
            snapshot: Some(snapshot),
            path: None,
            chunk: None,
            detail,
            more_refs: 0,
        }
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:", self.kind.name())?;
        if let Some(p) = &self.path {
            write!(f, " {p}")?;
        }
        if let Some(c) = &self.chunk {
            write!(f, " chunk {c}")?;
        }
        if let Some(s) = &self.snapshot {
            write!(f, " (snapshot {s})")?;
        }
        write!(f, ": {}", self.detail)?;
        if self.more_refs > 0 {
            write!(f, " [and {} more reference(s)]", self.more_refs)?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ChainReport {
    pub histories: u64,
    /// Parent links that resolve to a snapshot.
    pub links: u64,
    /// Parent links that resolve to a forget record.
    pub forgotten: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub level: &'static str,
    pub snapshots: u64,
    pub files: u64,
    /// Distinct chunks the selected snapshots reference.
    pub chunks: u64,
    /// Of those, checked: by the listing (quick) or by reading (full).
    pub chunks_checked: u64,
    pub bytes_checked: u64,
    /// Which chunks a full check read (`all`, `I/N`, `P% (seed S)`).
    pub subset: String,
    /// Share of the referenced chunks this run read and checked (full).
    pub coverage: f64,
    pub chain: Option<ChainReport>,
    pub problems: Vec<Problem>,
    /// What is not wrong but worth knowing: manifests present although
    /// forgotten (a forget raced a late commit: `forget ID` removes them),
    /// forget records that do not count.
    pub notes: Vec<String>,
    /// Store requests made, for stores that count them.
    pub requests: Option<Counts>,
    #[serde(skip)]
    pub duration: Duration,
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }

    /// Problems by kind, for monitoring.
    pub fn problem_counts(&self) -> BTreeMap<&'static str, u64> {
        let mut out = BTreeMap::new();
        for p in &self.problems {
            *out.entry(p.kind.name()).or_default() += 1;
        }
        out
    }
}

pub(crate) fn classify(e: &Error) -> ProblemKind {
    match e {
        Error::Missing { .. } => ProblemKind::Missing,
        Error::Format { cause, .. } => match cause {
            FormatError::Truncated(_) => ProblemKind::Truncated,
            FormatError::NeedsNewer { .. } => ProblemKind::NeedsNewer,
            _ => ProblemKind::Corrupt,
        },
        Error::BadChunk { cause, .. } => classify(cause),
        Error::FileHashMismatch { .. } => ProblemKind::Corrupt,
        _ => ProblemKind::Unreadable,
    }
}

/// A snapshot's place in its history.
pub(super) struct Link {
    pub(super) key: SnapshotKey,
    pub(super) host: String,
    pub(super) source: String,
    pub(super) parent: Option<Hash>,
}
