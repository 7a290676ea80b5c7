//! Publishing a staged set of top-level entries into a directory, so that a
//! crash at any point leaves something a re-run completes, never a mix of
//! old and new that looks finished.
//!
//! A restore stages the snapshot's tree in `<target>/<staging>/` (same
//! filesystem, so every move below is a `rename`). Publishing moves each
//! top-level entry `N` of the snapshot from the staging directory to the
//! target, after moving the target's own `N`, if any, aside into
//! `<target>/<old>/`. Nothing is deleted until every new entry is in place.
//!
//! The set of moves is recorded first in a journal,
//! `<target>/.blocksnap-publish.journal`, written to a temporary name,
//! fsynced and renamed into place, so a visible journal is always whole.
//! While it exists the target is "being published": blocksnap finishes the
//! moves (roll forward: the staged tree was complete and checked before the
//! journal was written) before anything else touches the target, and a
//! snapshot of such a directory is refused. Each move is idempotent to
//! repeat: an entry still in staging is moved (its old namesake first), an
//! entry already moved is left alone. FORMAT.md §10 gives the argument.

use std::io::{Read, Write};

use crate::error::{Error, Result};
use crate::fsx::DirFd;
use crate::testhook;

/// The journal's name in the target directory.
pub const JOURNAL: &str = ".blocksnap-publish.journal";
const JOURNAL_TMP: &str = ".blocksnap-publish.journal.tmp";
const MAGIC: &str = "blocksnap-publish 1";

/// Every name blocksnap itself creates in a restore target or a source
/// starts with this; a snapshot never records such a top-level entry, and
/// a manifest that holds one is refused by restore.
pub const RESERVED_PREFIX: &str = ".blocksnap-";

/// What one publish moves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Journal {
    /// Directory (in the target) holding the new entries.
    pub staging: String,
    /// Directory (in the target) that receives the replaced entries.
    pub old: String,
    /// Top-level names to move, in order.
    pub entries: Vec<String>,
}

impl Journal {
    fn encode(&self) -> String {
        let mut body = format!("{MAGIC}\nstaging {}\nold {}\n", self.staging, self.old);
        for e in &self.entries {
            body.push_str(&format!("entry {e}\n"));
        }
        let sum = blake3::hash(body.as_bytes());
        format!("{body}end {}\n", sum.to_hex())
    }

    fn decode(text: &str) -> std::result::Result<Journal, String> {
        let (body, end) = text
            .trim_end_matches('\n')
            .rsplit_once('\n')
            .ok_or("too short")?;
        let body = format!("{body}\n");
        let sum = end.strip_prefix("end ").ok_or("no end line")?;
        if blake3::hash(body.as_bytes()).to_hex().as_str() != sum {
            return Err("checksum does not match".into());
        }
        let mut lines = body.lines();
        if lines.next() != Some(MAGIC) {
            return Err("not a blocksnap publish journal".into());
        }
        let field = |line: Option<&str>, name: &str| -> std::result::Result<String, String> {
            let value = line
                .and_then(|l| l.strip_prefix(name))
                .and_then(|l| l.strip_prefix(' '))
                .ok_or(format!("no {name} line"))?;
            Ok(value.to_string())
        };
        let staging = field(lines.next(), "staging")?;
        let old = field(lines.next(), "old")?;
        let mut entries = Vec::new();
        for line in lines {
            entries.push(field(Some(line), "entry")?);
        }
        let j = Journal {
            staging,
            old,
            entries,
        };
        j.check()?;
        Ok(j)
    }

    /// Names must be single components, and the two directories ours.
    fn check(&self) -> std::result::Result<(), String> {
        let single = |n: &str| {
            !n.is_empty() && n != "." && n != ".." && !n.contains('/') && !n.contains('\0')
        };
        for dir in [&self.staging, &self.old] {
            if !single(dir) || !dir.starts_with(RESERVED_PREFIX) {
                return Err(format!("{dir:?} is not a blocksnap working directory"));
            }
        }
        for e in &self.entries {
            if !single(e) || e.starts_with(RESERVED_PREFIX) {
                return Err(format!("{e:?} is not a top-level entry name"));
            }
        }
        Ok(())
    }
}

fn io_err(op: &'static str, dir: &DirFd, name: &str) -> impl FnOnce(std::io::Error) -> Error {
    let path = dir.join(name);
    move |cause| Error::Io { op, path, cause }
}

/// The journal of an interrupted publish in `target`, if there is one. A
/// leftover temporary journal (a crash before anything moved) is removed.
pub fn pending(target: &DirFd) -> Result<Option<Journal>> {
    target
        .remove(JOURNAL_TMP)
        .map_err(io_err("remove", target, JOURNAL_TMP))?;
    let mut f = match target.open_file(JOURNAL) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err("open", target, JOURNAL)(e)),
    };
    let mut text = String::new();
    Read::by_ref(&mut f)
        .take(1 << 20)
        .read_to_string(&mut text)
        .map_err(io_err("read", target, JOURNAL))?;
    Journal::decode(&text).map(Some).map_err(|why| {
        Error::Refused(format!(
            "{}: unreadable publish journal ({why}); it records an interrupted restore: \
             inspect the directory and remove the journal by hand",
            target.join(JOURNAL).display()
        ))
    })
}

/// Records `journal`, then performs it. On return every entry is in place,
/// the replaced ones are in `journal.old`, and the journal is gone.
pub fn publish(target: &DirFd, journal: &Journal) -> Result<()> {
    journal.check().map_err(Error::Refused)?;
    target
        .remove(JOURNAL_TMP)
        .map_err(io_err("remove", target, JOURNAL_TMP))?;
    let mut f =
        target
            .create_file(JOURNAL_TMP, 0o600)
            .map_err(io_err("create", target, JOURNAL_TMP))?;
    f.write_all(journal.encode().as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(io_err("write", target, JOURNAL_TMP))?;
    drop(f);
    target
        .rename(JOURNAL_TMP, target, JOURNAL, false)
        .map_err(io_err("rename", target, JOURNAL))?;
    target.sync().map_err(io_err("fsync", target, "."))?;
    testhook::point("publish-journal");
    complete(target, journal)
}

/// Performs (or finishes) the moves a journal records, then removes it.
pub fn complete(target: &DirFd, journal: &Journal) -> Result<()> {
    let staging =
        target
            .open_dir(&journal.staging)
            .map_err(io_err("open", target, &journal.staging))?;
    let old = target
        .ensure_dir(&journal.old)
        .map_err(io_err("create", target, &journal.old))?;
    for name in &journal.entries {
        if staging
            .stat(name)
            .map_err(io_err("stat", &staging, name))?
            .is_none()
        {
            // Moved by an earlier, interrupted run.
            if target
                .stat(name)
                .map_err(io_err("stat", target, name))?
                .is_none()
            {
                return Err(Error::Refused(format!(
                    "{}: restored entry vanished while it was published",
                    target.join(name).display()
                )));
            }
            continue;
        }
        if target
            .stat(name)
            .map_err(io_err("stat", target, name))?
            .is_some()
        {
            target
                .rename(name, &old, name, false)
                .map_err(io_err("move aside", target, name))?;
            testhook::point("publish-aside");
        }
        staging.rename(name, target, name, false).map_err(io_err(
            "move into place",
            &staging,
            name,
        ))?;
        testhook::point("publish-move");
    }
    for dir in [&old, &staging, target] {
        dir.sync().map_err(io_err("fsync", dir, "."))?;
    }
    target
        .unlink(JOURNAL)
        .map_err(io_err("remove", target, JOURNAL))?;
    target.sync().map_err(io_err("fsync", target, "."))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_round_trips_and_refuses_damage_and_foreign_names() {
        let j = Journal {
            staging: ".blocksnap-restore-x".into(),
            old: ".blocksnap-old-x".into(),
            entries: vec![".score_data".into(), ".storage".into()],
        };
        let text = j.encode();
        assert_eq!(Journal::decode(&text).unwrap(), j);
        assert!(Journal::decode(&text.replace(".storage", ".storagf")).is_err());
        let bad = Journal {
            entries: vec!["../etc".into()],
            ..j.clone()
        };
        assert!(Journal::decode(&bad.encode()).is_err());
        let bad = Journal {
            old: "etc".into(),
            ..j
        };
        assert!(Journal::decode(&bad.encode()).is_err());
    }
}
