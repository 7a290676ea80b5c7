//! The on-disk format: every byte the repository holds is produced and
//! checked here, and nowhere else.
//!
//! This module is deliberately free of RocksDB, the AWS SDK and any I/O so
//! that the fuzz targets build it in minutes. `format-spec/FORMAT.md` is the
//! written twin of this code; the test vectors in `format-spec/vectors/` pin
//! the bytes so that neither can drift without a failing test.
//!
//! Repository bytes are untrusted: every decoder checks lengths against the
//! limits in [`limits`] before allocating, never panics, and reports corrupt,
//! truncated and needs-a-newer-blocksnap as different [`FormatError`]s.

pub mod chunk;
pub mod config;
pub mod envelope;
pub mod forget;
pub mod index;
pub mod layout;
pub mod limits;
pub mod manifest;
pub mod path;
pub mod prune;
pub mod reserved;

pub use envelope::{Codec, Kind, FORMAT_VERSION, MAGIC};

/// Why repository bytes were rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("truncated: {0}")]
    Truncated(String),
    #[error("corrupt: {0}")]
    Corrupt(String),
    #[error(
        "written by a newer blocksnap (format version {found}, this build reads up to {supported}): upgrade blocksnap"
    )]
    NeedsNewer { found: u8, supported: u8 },
    #[error("limit exceeded: {limit} is {value}, at most {max} allowed")]
    Limit {
        limit: &'static str,
        value: u64,
        max: u64,
    },
    #[error("unsafe path {path:?}: {reason}")]
    UnsafePath { path: String, reason: &'static str },
}

impl FormatError {
    pub(crate) fn corrupt(msg: impl Into<String>) -> FormatError {
        FormatError::Corrupt(msg.into())
    }

    pub(crate) fn check_limit(
        limit: &'static str,
        value: u64,
        max: u64,
    ) -> Result<(), FormatError> {
        if value > max {
            return Err(FormatError::Limit { limit, value, max });
        }
        Ok(())
    }
}

/// bincode 2 configuration for manifest and config bodies: little-endian
/// and fixed-width integers, so the spec can give every field's width.
fn wire_config() -> bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Fixint,
    bincode::config::NoLimit,
> {
    bincode::config::standard()
        .with_little_endian()
        .with_fixed_int_encoding()
}

fn decode_limited<T: serde::de::DeserializeOwned, const LIMIT: usize>(
    body: &[u8],
) -> Result<(T, usize), bincode::error::DecodeError> {
    bincode::serde::decode_from_slice(body, wire_config().with_limit::<LIMIT>())
}

/// Decodes a bincode body that must use every byte.
///
/// bincode checks every claimed length against a limit before it allocates,
/// and counts the claims cumulatively. The limit is a type parameter, so the
/// smallest tier of at least 16 times the body's length is chosen: decoded
/// structures take up to a few times their wire size, and a tiny hostile
/// body claiming a huge string cannot make the reader allocate more than
/// 16 times its own size (plus 4 MiB).
pub(crate) fn decode_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, FormatError> {
    const MIB: usize = 1 << 20;
    let decoded = match body.len() {
        n if n <= MIB / 4 => decode_limited::<T, { 4 * MIB }>(body),
        n if n <= 4 * MIB => decode_limited::<T, { 64 * MIB }>(body),
        n if n <= 64 * MIB => decode_limited::<T, { 1024 * MIB }>(body),
        _ => decode_limited::<T, { 4096 * MIB }>(body),
    };
    let (value, used) = decoded.map_err(|e| match e {
        bincode::error::DecodeError::UnexpectedEnd { additional } => {
            FormatError::Truncated(format!("body ends {additional} byte(s) early"))
        }
        bincode::error::DecodeError::LimitExceeded => FormatError::Limit {
            limit: "decoded size (16 x the body)",
            value: body.len() as u64,
            max: limits::MAX_MANIFEST_BYTES,
        },
        other => FormatError::Corrupt(format!("body does not decode: {other}")),
    })?;
    if used != body.len() {
        return Err(FormatError::corrupt(format!(
            "{} unexpected byte(s) after the body",
            body.len() - used
        )));
    }
    Ok(value)
}

pub(crate) fn encode_body<T: serde::Serialize>(value: &T) -> Vec<u8> {
    bincode::serde::encode_to_vec(value, wire_config())
        .expect("encoding plain structs into a Vec cannot fail")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Operators read these; scripts may match on them. Keep them stable.
    #[test]
    fn errors_print_what_and_why() {
        let cases = [
            (FormatError::Truncated("header promises 40 bytes after it, only 3 present".into()), "truncated: header promises 40 bytes after it, only 3 present"),
            (FormatError::corrupt("not a blocksnap object (bad magic)"), "corrupt: not a blocksnap object (bad magic)"),
            (
                FormatError::NeedsNewer { found: 2, supported: 1 },
                "written by a newer blocksnap (format version 2, this build reads up to 1): upgrade blocksnap",
            ),
            (
                FormatError::Limit { limit: "entries", value: 5_000_000, max: limits::MAX_ENTRIES },
                "limit exceeded: entries is 5000000, at most 4000000 allowed",
            ),
            (FormatError::UnsafePath { path: "../x".into(), reason: "`.` or `..` component" }, "unsafe path \"../x\": `.` or `..` component"),
        ];
        for (error, text) in cases {
            assert_eq!(error.to_string(), text);
        }
        let wrapped = crate::error::Error::Format {
            key: "chunks/ab/ab12".into(),
            cause: FormatError::Truncated("x".into()),
        };
        assert_eq!(wrapped.to_string(), "chunks/ab/ab12: truncated: x");
        let missing = crate::error::Error::Missing {
            key: "snapshots/1".into(),
        };
        assert_eq!(
            missing.to_string(),
            "missing object snapshots/1 in the repository"
        );
    }
}
