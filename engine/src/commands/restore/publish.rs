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
//!
//! Only what this user made is trusted: a journal, a staging directory or an
//! old-entries directory owned by anyone else (planted by another user who
//! can write to the target) is refused, never acted on.

use std::io::{Read, Write};

use crate::error::{Error, Result};
use std::path::PathBuf;

use crate::sys::fsx::{DirFd, EntryType};
use crate::sys::testhook;

use crate::format::reserved::JOURNAL_TMP;
pub use crate::format::reserved::{JOURNAL, RESERVED_PREFIX};
const MAGIC: &str = "blocksnap-publish 2";
/// Largest journal read back: names are at most 255 bytes (hex: 510), and
/// a manifest holds at most 4 M entries.
const MAX_JOURNAL_BYTES: u64 = 4 << 30;

/// One top-level entry to move.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Move {
    pub name: String,
    /// For a directory: the mode and mtime it gets once in place (it stays
    /// writable until then, so that it can be renamed by a user other than
    /// root: renaming a directory rewrites its `..`).
    pub dir_mode: Option<(u32, i64)>,
}

/// What one publish moves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Journal {
    /// Directory (in the target) holding the new entries.
    pub staging: String,
    /// Directory (in the target) that receives the replaced entries.
    pub old: String,
    /// Keep the replaced entries (in `old`) after the publish.
    pub keep_old: bool,
    /// Top-level entries to move, in order.
    pub entries: Vec<Move>,
}

impl Journal {
    /// Text, one field per line, names in hex (a name may hold a newline),
    /// closed by a BLAKE3 of everything before.
    pub fn encode(&self) -> String {
        let mut body = format!(
            "{MAGIC}\nstaging {}\nold {}\nkeep_old {}\n",
            hex::encode(&self.staging),
            hex::encode(&self.old),
            u8::from(self.keep_old)
        );
        for e in &self.entries {
            match e.dir_mode {
                Some((mode, mtime)) => body.push_str(&format!(
                    "entry {} {mode:o} {mtime}\n",
                    hex::encode(&e.name)
                )),
                None => body.push_str(&format!("entry {} - -\n", hex::encode(&e.name))),
            }
        }
        let sum = blake3::hash(body.as_bytes());
        format!("{body}end {}\n", sum.to_hex())
    }

    pub fn decode(text: &str) -> std::result::Result<Journal, String> {
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
            return Err("not a blocksnap publish journal of this version".into());
        }
        let field = |line: Option<&str>, name: &str| -> std::result::Result<String, String> {
            line.and_then(|l| l.strip_prefix(name))
                .and_then(|l| l.strip_prefix(' '))
                .map(str::to_string)
                .ok_or(format!("no {name} line"))
        };
        let name = |h: &str| -> std::result::Result<String, String> {
            String::from_utf8(hex::decode(h).map_err(|_| "a name is not hex")?)
                .map_err(|_| "a name is not UTF-8".to_string())
        };
        let staging = name(&field(lines.next(), "staging")?)?;
        let old = name(&field(lines.next(), "old")?)?;
        let keep_old = field(lines.next(), "keep_old")? == "1";
        let mut entries = Vec::new();
        for line in lines {
            let rest = field(Some(line), "entry")?;
            let parts: Vec<&str> = rest.split(' ').collect();
            let [n, mode, mtime] = parts[..] else {
                return Err("bad entry line".into());
            };
            let dir_mode = match (mode, mtime) {
                ("-", "-") => None,
                (m, t) => Some((
                    u32::from_str_radix(m, 8).map_err(|_| "bad mode")?,
                    t.parse::<i64>().map_err(|_| "bad mtime")?,
                )),
            };
            entries.push(Move {
                name: name(n)?,
                dir_mode,
            });
        }
        let j = Journal {
            staging,
            old,
            keep_old,
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
            if !single(&e.name) || e.name.starts_with(RESERVED_PREFIX) {
                return Err(format!("{:?} is not a top-level entry name", e.name));
            }
            if e.dir_mode.is_some_and(|(m, _)| m & !0o7777 != 0) {
                return Err(format!("{:?}: mode beyond 0o7777", e.name));
            }
        }
        Ok(())
    }
}

fn io_err(op: &'static str, dir: &DirFd, name: &str) -> impl FnOnce(std::io::Error) -> Error {
    let path = dir.join(name);
    move |cause| Error::Io { op, path, cause }
}

fn refuse_foreign(dir: &DirFd, name: &str, what: &str) -> Error {
    Error::Refused(format!(
        "{}: {what} that this user did not create (another owner, or hard-linked); \
         blocksnap does not act on it: inspect the target and remove it by hand",
        dir.join(name).display()
    ))
}

/// Removes a temporary journal a crash left before anything moved (it
/// never counts: only the renamed journal does). Not for a dry run.
pub fn remove_stale_journal(target: &DirFd) -> Result<()> {
    target
        .remove(JOURNAL_TMP)
        .map_err(io_err("remove", target, JOURNAL_TMP))?;
    Ok(())
}

/// The journal of an interrupted publish in `target`, if there is one.
/// Reads only: a restore's plan (and so its dry run) calls it.
pub fn pending(target: &DirFd) -> Result<Option<Journal>> {
    match target
        .stat(JOURNAL)
        .map_err(io_err("stat", target, JOURNAL))?
    {
        None => return Ok(None),
        Some(m) if m.kind == EntryType::File && m.is_mine() && m.nlink == 1 => {}
        Some(_) => return Err(refuse_foreign(target, JOURNAL, "a publish journal")),
    }
    let f = target
        .open_file(JOURNAL)
        .map_err(io_err("open", target, JOURNAL))?;
    let mut text = String::new();
    f.take(MAX_JOURNAL_BYTES)
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

/// Records `journal`, then performs it with the staging directory this
/// process built and still holds open (never reopened by name, so a
/// directory swapped in under that name is not what gets published). On
/// return every entry is in place and the journal is gone.
pub fn publish(target: &DirFd, staging: &DirFd, journal: &Journal) -> Result<()> {
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
    complete_with(target, staging, journal)
}

/// Finishes an interrupted publish found by [`pending`]: its staging and
/// old directories must be this user's.
pub fn complete(target: &DirFd, journal: &Journal) -> Result<()> {
    let staging_there = target
        .stat(&journal.staging)
        .map_err(io_err("stat", target, &journal.staging))?
        .is_some();
    if staging_there {
        let staging = mine(target, &journal.staging, "a staging directory")?;
        return complete_with(target, &staging, journal);
    }
    // The staging directory goes only after every entry was moved into
    // place and synced (see `complete_with`), so without it only the
    // leftovers and the journal remain to be removed — once every entry is
    // confirmed in place.
    for e in &journal.entries {
        if target
            .stat(&e.name)
            .map_err(io_err("stat", target, &e.name))?
            .is_none()
        {
            return Err(Error::Refused(format!(
                "{}: restored entry missing, and the interrupted restore's staging directory is \
                 gone; inspect the target and remove {JOURNAL} by hand",
                target.join(&e.name).display()
            )));
        }
    }
    if target
        .stat(&journal.old)
        .map_err(io_err("stat", target, &journal.old))?
        .is_some()
    {
        mine(target, &journal.old, "directory of replaced entries")?;
    }
    finish(target, journal)
}

/// A directory in `target` that this user owns, entered without following
/// links.
fn mine(target: &DirFd, name: &str, what: &str) -> Result<DirFd> {
    match target.stat(name).map_err(io_err("stat", target, name))? {
        Some(m) if m.kind == EntryType::Dir && m.is_mine() => {
            target.open_dir(name).map_err(io_err("open", target, name))
        }
        None => Err(Error::Refused(format!(
            "{}: the interrupted restore's {what} is gone; inspect the target and remove {} by hand",
            target.join(name).display(),
            JOURNAL
        ))),
        Some(_) => Err(refuse_foreign(target, name, what)),
    }
}

fn complete_with(target: &DirFd, staging: &DirFd, journal: &Journal) -> Result<()> {
    let old = match target
        .stat(&journal.old)
        .map_err(io_err("stat", target, &journal.old))?
    {
        None => {
            target
                .create_dir(&journal.old)
                .map_err(io_err("create", target, &journal.old))?;
            target
                .open_dir(&journal.old)
                .map_err(io_err("open", target, &journal.old))?
        }
        Some(_) => mine(target, &journal.old, "directory of replaced entries")?,
    };
    for e in &journal.entries {
        let name = e.name.as_str();
        if staging
            .stat(name)
            .map_err(io_err("stat", staging, name))?
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
            staging,
            name,
        ))?;
        testhook::point("publish-move");
    }
    // Directories get their own mode and mtime once they are in place
    // (repeating this after a crash is harmless).
    for e in &journal.entries {
        if let Some((mode, mtime)) = e.dir_mode {
            let d = target
                .open_dir(&e.name)
                .map_err(io_err("open", target, &e.name))?;
            d.set_mtime(mtime)
                .and_then(|_| d.set_mode(mode))
                .map_err(io_err("set mode and mtime of", target, &e.name))?;
        }
    }
    for dir in [&old, staging, target] {
        dir.sync().map_err(io_err("fsync", dir, "."))?;
    }
    testhook::point("publish-synced");
    // The replaced entries and the emptied staging directory go while the
    // journal still stands: a crash after the journal's removal (durable)
    // can then leave no directory of replaced entries behind for good (a
    // whole previous database on a node), since in the target directory
    // the removals come first. A crash before it leaves the journal, and
    // the next run repeats what is left.
    finish(target, journal)
}

/// The last step of a publish: the leftovers, then the journal.
fn finish(target: &DirFd, journal: &Journal) -> Result<()> {
    remove_leftovers(target, journal)?;
    target
        .unlink(JOURNAL)
        .map_err(io_err("remove", target, JOURNAL))?;
    target.sync().map_err(io_err("fsync", target, "."))?;
    Ok(())
}

/// Removes the emptied staging directory and the directory of replaced
/// entries, unless the journal keeps it (`--keep-old`).
fn remove_leftovers(target: &DirFd, journal: &Journal) -> Result<()> {
    let gone = |name: &str| target.remove(name).map_err(io_err("remove", target, name));
    gone(&journal.staging)?;
    if !journal.keep_old {
        gone(&journal.old)?;
    }
    target.sync().map_err(io_err("fsync", target, "."))
}

/// After a publish: where the replaced entries are, when the journal kept
/// them (and there were any); an empty kept directory is removed.
pub fn kept_old(target: &DirFd, journal: &Journal) -> Result<Option<PathBuf>> {
    if !journal.keep_old {
        return Ok(None);
    }
    match target.open_dir(&journal.old) {
        Ok(old) if !old.names().unwrap_or_default().is_empty() => {
            Ok(Some(target.join(&journal.old)))
        }
        Ok(_) => {
            target
                .remove(&journal.old)
                .map_err(io_err("remove", target, &journal.old))?;
            Ok(None)
        }
        Err(_) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_round_trips_and_refuses_damage_and_foreign_names() {
        let j = Journal {
            staging: ".blocksnap-restore-x".into(),
            old: ".blocksnap-old-x".into(),
            keep_old: true,
            entries: vec![
                Move {
                    name: ".score_data".into(),
                    dir_mode: Some((0o755, -5)),
                },
                Move {
                    name: "a\nentry log".into(),
                    dir_mode: None,
                },
            ],
        };
        let text = j.encode();
        assert_eq!(Journal::decode(&text).unwrap(), j);
        assert!(Journal::decode(&text.replace(" 755 ", " 777 ")).is_err());
        let bad = Journal {
            entries: vec![Move {
                name: "../etc".into(),
                dir_mode: None,
            }],
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
