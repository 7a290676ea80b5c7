//! `import`: a tarball (the old backup script's `PRep_BH…tar.gz`, or any
//! tar of a node's data directory) committed as a snapshot without
//! extracting it: [`plan`] settles what the snapshot will be called (its
//! height and time from the options or the archive's name), [`execute`]
//! streams the archive's entries through the snapshot's own chunker and
//! chunk writer, then commits the manifest by the snapshot's rules.
//!
//! Because the chunks are cut exactly as a snapshot of the extracted tree
//! would cut them, an imported history dedups with itself and with later
//! snapshots of the same node.
//!
//! Nothing is written but chunk objects and, once the whole archive has
//! been read and checked, the manifest: an archive that is hostile (a name
//! that is absolute or climbs, a device file, a hard link to something it
//! does not hold, a symlink a restore would refuse, the same name twice)
//! or broken (a truncated or corrupt compressed stream, an entry shorter
//! than its header says, a missing end-of-archive marker, bytes after it)
//! is refused with the entry named, and nothing is committed.

mod archive;
mod execute;

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

pub use self::archive::Compression;
pub use self::execute::execute;
use crate::error::{Error, Result};

/// The directory the old script archived (`BACKUP_TARGET_DIR`): the
/// default name of an imported history's source, so that snapshots taken
/// later with `--source /app/prep/data/loopchain` continue it.
pub const DEFAULT_SOURCE: &str = "/app/prep/data/loopchain";

#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// The archive's file name, for the height and time it carries and
    /// for messages (stdin has none).
    pub name: Option<String>,
    /// The block height; `None`: from the name.
    pub height: Option<u64>,
    /// When the archive was made (ns since the epoch); `None`: from the
    /// name.
    pub created_unix_ns: Option<u64>,
    /// The history's source name; empty: [`DEFAULT_SOURCE`].
    pub source: String,
    /// The node's name; empty: this machine's host name.
    pub host: String,
    pub tags: Vec<String>,
    /// The node's address, when the archive's paths hold more than one.
    pub ip: Option<Ipv4Addr>,
    /// Chunk workers (0: one per CPU) and store writes in flight.
    pub jobs: usize,
    pub signer: Option<Arc<crate::repo::sign::Signer>>,
}

/// What [`plan`] settled before a byte of the archive is read.
#[derive(Debug, Clone, Serialize)]
pub struct ImportPlan {
    pub height: u64,
    pub created_unix_ns: u64,
    pub source: String,
    /// Where the height and time came from.
    pub named_by: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ImportReport {
    pub snapshot: String,
    pub height: u64,
    pub created_unix_ns: u64,
    pub compression: Compression,
    /// Bytes of the archive as given (compressed).
    pub archive_bytes: u64,
    pub entries: u64,
    pub files: u64,
    pub logical_bytes: u64,
    pub new_chunks: u64,
    pub new_stored_bytes: u64,
    pub reused_chunk_refs: u64,
    pub normalised_ip: Option<Ipv4Addr>,
    pub warnings: Vec<String>,
    #[serde(serialize_with = "seconds")]
    pub duration: Duration,
}

fn seconds<S: serde::Serializer>(d: &Duration, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// The height and time an archive's name carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NameHints {
    pub height: u64,
    /// The name's date and time (minutes), read as UTC.
    pub created_unix_ns: u64,
}

/// Reads `<service>_BH<height>_data-<YYYYMMDD>_<HHMM>.tar[.gz|.zst]`, the
/// old script's names (`PRep_BH42_data-20240101_0300.tar.gz`); the
/// directories before the file name are ignored.
pub fn name_hints(name: &str) -> Option<NameHints> {
    let file = name.rsplit('/').next()?;
    let at = file.rfind("_BH")?;
    let rest = &file[at + 3..];
    let digits = |s: &str, n: usize| -> Option<u64> {
        let d = s.get(..n)?;
        d.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| d.parse().ok())?
    };
    let height_len = rest.bytes().take_while(u8::is_ascii_digit).count();
    let height = digits(rest, height_len)?;
    let rest = rest[height_len..].strip_prefix("_data-")?;
    let (y, mo, d) = (
        digits(rest, 4)?,
        digits(rest.get(4..)?, 2)?,
        digits(rest.get(6..)?, 2)?,
    );
    let rest = rest.get(8..)?.strip_prefix('_')?;
    let (h, mi) = (digits(rest, 2)?, digits(rest.get(2..)?, 2)?);
    if !rest.get(4..)?.starts_with(".tar") {
        return None;
    }
    let when = jiff::civil::DateTime::new(
        i16::try_from(y).ok()?,
        i8::try_from(mo).ok()?,
        i8::try_from(d).ok()?,
        i8::try_from(h).ok()?,
        i8::try_from(mi).ok()?,
        0,
        0,
    )
    .ok()?;
    let ts = when.to_zoned(jiff::tz::TimeZone::UTC).ok()?.timestamp();
    let ns = u64::try_from(ts.as_nanosecond()).ok()?;
    Some(NameHints {
        height,
        created_unix_ns: ns,
    })
}

/// Settles the snapshot's height, time and source: given, or read from
/// the archive's name; refused when neither says.
pub fn plan(opts: &ImportOptions) -> Result<ImportPlan> {
    let hints = opts.name.as_deref().and_then(name_hints);
    let what = opts.name.as_deref().unwrap_or("standard input");
    let (height, by_height) = match (opts.height, hints) {
        (Some(h), _) => (h, "--height"),
        (None, Some(n)) => (n.height, "the archive's name"),
        (None, None) => {
            return Err(Error::Refused(format!(
                "{what}: no --height given, and the name is not the old script's \
                 <service>_BH<height>_data-<YYYYMMDD>_<HHMM>.tar.gz"
            )))
        }
    };
    let (created_unix_ns, by_time) = match (opts.created_unix_ns, hints) {
        (Some(t), _) => (t, "--time"),
        (None, Some(n)) => (n.created_unix_ns, "the archive's name (UTC)"),
        (None, None) => {
            return Err(Error::Refused(format!(
                "{what}: no --time given, and the name does not carry the archive's date"
            )))
        }
    };
    let source = if opts.source.is_empty() {
        DEFAULT_SOURCE.to_string()
    } else {
        opts.source.clone()
    };
    Ok(ImportPlan {
        height,
        created_unix_ns,
        source,
        named_by: format!("height from {by_height}, time from {by_time}"),
    })
}

/// [`plan`] then [`execute`]: `input` is the archive, plain or compressed.
pub fn import(
    repo: &crate::repo::Repository,
    input: impl std::io::Read,
    opts: &ImportOptions,
    progress: &dyn crate::progress::Progress,
) -> Result<ImportReport> {
    let plan = plan(opts)?;
    execute(repo, &plan, opts, input, progress)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_old_scripts_names_give_height_and_time() {
        let n = name_hints("s3://b/PRep/20240102/PRep_BH12345_data-20240102_0330.tar.gz").unwrap();
        assert_eq!(n.height, 12345);
        // 2024-01-02T03:30:00Z
        assert_eq!(n.created_unix_ns, 1_704_166_200 * 1_000_000_000);
        assert!(name_hints("x_BH7_data-20240102_0330.tar").is_some());
        for bad in [
            "PRep_BH_data-20240102_0330.tar.gz",
            "PRep_BH1_data-20241302_0330.tar.gz",
            "PRep_BH1_data-20240230_0330.tar.gz",
            "PRep_BH1_data-20240102_2561.tar.gz",
            "PRep_BH1_data-20240102_0330.zip",
            "PRep_BH1_data-2024010_0330.tar.gz",
            "backup.tar.gz",
        ] {
            assert_eq!(name_hints(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_plan_needs_a_height_and_a_time() {
        let opts = ImportOptions {
            name: Some("node.tar.gz".into()),
            ..ImportOptions::default()
        };
        let e = plan(&opts).unwrap_err().to_string();
        assert!(e.contains("node.tar.gz") && e.contains("--height"), "{e}");
        let opts = ImportOptions {
            height: Some(5),
            created_unix_ns: Some(9),
            ..opts
        };
        let p = plan(&opts).unwrap();
        assert_eq!((p.height, p.created_unix_ns), (5, 9));
        assert_eq!(p.source, DEFAULT_SOURCE);
    }
}
