//! The engine's error type.
//!
//! Every variant names what it is about (object key, source or target path,
//! chunk id, height) so that a message printed to an operator is enough to find
//! the damaged thing. Missing, corrupt, needs-a-newer-blocksnap and plain I/O
//! failures are distinct variants: monitoring treats them differently.

use std::io;
use std::path::PathBuf;

use crate::format::FormatError;
use crate::id::ChunkId;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{op} {path}: {cause}")]
    Io {
        op: &'static str,
        path: PathBuf,

        cause: io::Error,
    },

    #[error("store: {op} {key}: {cause}")]
    Store {
        op: &'static str,
        key: String,

        cause: io::Error,
    },

    #[error("missing object {key} in the repository")]
    Missing { key: String },

    /// Repository bytes that do not decode: corrupt, truncated, hostile, or
    /// written by a newer blocksnap (see [`FormatError`]).
    #[error("{key}: {cause}")]
    Format { key: String, cause: FormatError },

    #[error("no repository at {location}: run `blocksnap init --repo {location}` first")]
    NoRepository { location: String },

    #[error("a repository already exists at {location}")]
    RepositoryExists { location: String },

    #[error("no snapshot matches {selector:?} in the repository")]
    NoSnapshot { selector: String },

    #[error("invalid snapshot selector {given:?}: expected a block height, `latest` or `all`")]
    BadSelector { given: String },

    #[error("source {path} is not a directory")]
    SourceNotDir { path: PathBuf },

    #[error("--include {path:?} does not exist under the source directory")]
    IncludeMissing { path: String },

    #[error(
        "{path} changed while it was read ({detail}); no snapshot was written: \
         snapshot a stopped node or a frozen copy"
    )]
    SourceChanged { path: PathBuf, detail: String },

    /// The message is the whole story: no `source`, so that it is printed
    /// once.
    #[error("{0}")]
    Ip(crate::ipnorm::IpError),

    #[error("restore target {path} is not empty: choose an empty directory or pass --force to replace the snapshot's top-level entries in it")]
    TargetNotEmpty { path: PathBuf },

    #[error("{path}: chunk {chunk} (at offset {offset}): {cause}")]
    BadChunk {
        path: String,
        chunk: ChunkId,
        offset: u64,

        cause: Box<Error>,
    },

    #[error("{path}: restored bytes hash to {actual}, the manifest says {expected}")]
    FileHashMismatch {
        path: String,
        expected: String,
        actual: String,
    },

    #[error(
        "database open in a running process: {}; stop the node (or use --stop-cmd/--start-cmd), \
         or pass --allow-live to snapshot it anyway (the manifest records that)",
        dbs.join("; ")
    )]
    LiveDatabase { dbs: Vec<String> },

    #[error("{0}")]
    Refused(String),

    #[error("interrupted by {}; stopped cleanly", signal_name(*signal))]
    Interrupted { signal: i32 },
}

impl From<crate::ipnorm::IpError> for Error {
    fn from(e: crate::ipnorm::IpError) -> Error {
        Error::Ip(e)
    }
}

/// `s` with every control character (newline, escape, carriage return…)
/// written as an escape, for printing names that come from a repository or
/// a file system: a crafted path must not rewrite the operator's terminal.
pub fn printable(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return s.into();
    }
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect::<String>()
        .into()
}

impl Error {
    /// The mapping of an I/O failure of `op` on `path`:
    /// `.map_err(Error::io("open", &path))?` reads as prose.
    pub fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Error {
        let path = path.into();
        move |cause| Error::Io { op, path, cause }
    }

    pub(crate) fn format(key: impl Into<String>) -> impl FnOnce(FormatError) -> Error {
        let key = key.into();
        move |cause| Error::Format { key, cause }
    }

    /// True when the error means "the object is not there" rather than
    /// "it is there but wrong" or "the store could not be reached".
    pub fn is_missing(&self) -> bool {
        match self {
            Error::Missing { .. } => true,
            Error::BadChunk { cause, .. } => cause.is_missing(),
            _ => false,
        }
    }
}

/// The conventional name of a signal, for messages.
pub fn signal_name(signal: i32) -> &'static str {
    match signal {
        libc::SIGINT => "SIGINT",
        libc::SIGTERM => "SIGTERM",
        libc::SIGHUP => "SIGHUP",
        _ => "a signal",
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn control_characters_are_escaped_for_printing() {
        assert_eq!(super::printable("plain/path.ldb"), "plain/path.ldb");
        assert_eq!(
            super::printable("a\rblocksnap: OK\x1b[K\nb"),
            "a\\rblocksnap: OK\\u{1b}[K\\nb"
        );
    }
}
