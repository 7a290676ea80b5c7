//! Every working name blocksnap creates in a restore target or a snapshot
//! source (FORMAT.md §8 and §10, "Restore" and "Cold sources"), in one
//! place. All start with [`RESERVED_PREFIX`]: a snapshot never records such
//! an entry, a seed walk skips them, and restore refuses a manifest that
//! holds one at the top level.

/// The prefix of every working name.
pub const RESERVED_PREFIX: &str = ".blocksnap-";

/// A staged snapshot's frozen view, inside the source it mirrors.
pub const STAGE_DIR: &str = ".blocksnap-stage";

/// A restore's publish journal in the target directory.
pub const JOURNAL: &str = ".blocksnap-publish.journal";

/// The journal while it is written (renamed to [`JOURNAL`] once synced).
pub const JOURNAL_TMP: &str = ".blocksnap-publish.journal.tmp";

/// The start of every restore staging directory's name.
pub const STAGING_PREFIX: &str = ".blocksnap-restore-";

/// The start of every directory of replaced entries.
pub const OLD_PREFIX: &str = ".blocksnap-old-";

/// Whether `name` (one path component) is one of blocksnap's working names.
pub fn is_reserved(name: &str) -> bool {
    name.starts_with(RESERVED_PREFIX)
}

/// A restore's staging directory: the whole snapshot id (hex) and the
/// address (or `noip`), so that a resume never mixes two snapshots or two
/// addresses.
pub fn staging_name(id_hex: &str, ip: Option<std::net::Ipv4Addr>) -> String {
    let ip = ip.map_or("noip".to_string(), |ip| ip.to_string());
    format!("{STAGING_PREFIX}{id_hex}-{ip}")
}

/// The directory a publish moves replaced entries into: the snapshot's
/// short id and the time.
pub fn old_name(short_id: &str, now_unix_ns: u64) -> String {
    format!("{OLD_PREFIX}{short_id}-{now_unix_ns}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_working_name_is_reserved() {
        for n in [
            STAGE_DIR,
            JOURNAL,
            JOURNAL_TMP,
            STAGING_PREFIX,
            OLD_PREFIX,
            &staging_name(&"ab".repeat(32), None),
            &old_name("abcdef012345", 1),
        ] {
            assert!(is_reserved(n), "{n}");
        }
        assert_eq!(
            staging_name("ff", Some(std::net::Ipv4Addr::new(10, 0, 0, 7))),
            ".blocksnap-restore-ff-10.0.0.7"
        );
    }
}
