//! Is a database under the source open in a running process?
//!
//! LevelDB and RocksDB (C++) hold their `LOCK` file with an `fcntl` record
//! lock; goleveldb (ICON 2's goloop) with `flock`. On Linux neither kind of
//! lock sees the other, and the file exists whether or not anyone holds it,
//! so each `LOCK` is probed both ways:
//! - `fcntl(F_OFD_GETLK)` asks whether a write lock would conflict. Open
//!   file description locks conflict with classic `fcntl` locks even when
//!   this very process holds them, so a database opened by the caller is
//!   seen too.
//! - `flock(LOCK_SH | LOCK_NB)` fails with `EWOULDBLOCK` when another open
//!   file holds an exclusive `flock`; a lock taken here is released at once.
//!
//! Nothing is written and no lock is kept.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::sys::fsx::{DirFd, EntryType};

/// How a database's `LOCK` is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holder {
    /// A classic or OFD `fcntl` lock (C++ LevelDB, RocksDB), by this pid
    /// when the kernel says (-1 for OFD locks).
    Fcntl { pid: i32 },
    /// An exclusive `flock` (goleveldb).
    Flock,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveDb {
    /// The database directory (the `LOCK` file's parent).
    pub dir: PathBuf,
    pub holder: Holder,
}

impl std::fmt::Display for LiveDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.holder {
            Holder::Fcntl { pid } if pid > 0 => write!(
                f,
                "{} (LOCK held with fcntl by process {pid})",
                self.dir.display()
            ),
            Holder::Fcntl { .. } => write!(f, "{} (LOCK held with fcntl)", self.dir.display()),
            Holder::Flock => write!(f, "{} (LOCK held with flock)", self.dir.display()),
        }
    }
}

/// Probes one `LOCK` file. `None`: nobody holds it.
pub fn probe(lock: &Path) -> Result<Option<Holder>> {
    use std::os::unix::fs::OpenOptionsExt;
    // Non-blocking and not following a link: a fifo or a link planted (or
    // swapped in) at the name must not hang the probe or redirect it.
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
        .open(lock)
    {
        Ok(f) if f.metadata().is_ok_and(|m| m.is_file()) => f,
        Ok(_) => return Ok(None),
        // A symlink at the name: not a database's lock.
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Ok(None),
        // Gone since the walk: nobody can hold it.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(Error::Io {
                op: "open to probe",
                path: lock.to_path_buf(),
                cause: e,
            })
        }
    };
    probe_file(&file, lock)
}

/// Probes an open `LOCK` file (`lock` names it in messages).
pub fn probe_file(file: &std::fs::File, lock: &Path) -> Result<Option<Holder>> {
    let fd = file.as_raw_fd();
    // SAFETY: `flock` is a plain C struct for which all-zero is valid.
    let mut query: libc::flock = unsafe { std::mem::zeroed() };
    query.l_type = libc::F_WRLCK as libc::c_short;
    query.l_whence = libc::SEEK_SET as libc::c_short;
    // SAFETY: fd is open for the duration of the call and `query` is a
    // valid, exclusively borrowed flock struct.
    let r = unsafe { libc::fcntl(fd, libc::F_OFD_GETLK, &mut query) };
    if r != 0 {
        return Err(Error::Io {
            op: "probe the fcntl lock of",
            path: lock.to_path_buf(),
            cause: std::io::Error::last_os_error(),
        });
    }
    if query.l_type != libc::F_UNLCK as libc::c_short {
        return Ok(Some(Holder::Fcntl { pid: query.l_pid }));
    }
    // SAFETY: fd is open; flock takes no pointers.
    let r = unsafe { libc::flock(fd, libc::LOCK_SH | libc::LOCK_NB) };
    if r != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            return Ok(Some(Holder::Flock));
        }
        return Err(Error::Io {
            op: "probe the flock of",
            path: lock.to_path_buf(),
            cause: e,
        });
    }
    // SAFETY: as above; releases the shared lock just taken.
    unsafe { libc::flock(fd, libc::LOCK_UN) };
    Ok(None)
}

/// Every database under `root` whose `LOCK` is held.
pub fn find(root: &Path) -> Result<Vec<LiveDb>> {
    let dir = DirFd::open(root).map_err(Error::io("open", root))?;
    find_in(&dir)
}

/// Every database below the open directory `root` (or in it) whose `LOCK`
/// is held: walked and opened through descriptors, never through a link.
pub fn find_in(root: &DirFd) -> Result<Vec<LiveDb>> {
    let mut live = Vec::new();
    crate::sys::fsx::walk(root, "", &mut |e| {
        crate::sys::interrupt::check()?;
        if e.meta.kind == EntryType::File && e.name == "LOCK" {
            // A link, a fifo, or a name gone since the listing: no
            // database's lock.
            if let Ok(file) = e.dir.open_file(&e.name) {
                if let Some(holder) = probe_file(&file, &e.dir.join(&e.name))? {
                    live.push(LiveDb {
                        dir: e.dir.path().to_path_buf(),
                        holder,
                    });
                }
            }
        }
        Ok(e.meta.kind == EntryType::Dir)
    })?;
    Ok(live)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;

    #[test]
    fn flock_and_fcntl_holders_are_both_seen() {
        let dir = tempfile::tempdir().unwrap();
        let lock = dir.path().join("LOCK");
        std::fs::write(&lock, b"").unwrap();
        assert_eq!(probe(&lock).unwrap(), None, "an unheld LOCK is not live");

        let held = File::open(&lock).unwrap();
        // SAFETY: valid fd.
        assert_eq!(unsafe { libc::flock(held.as_raw_fd(), libc::LOCK_EX) }, 0);
        assert_eq!(probe(&lock).unwrap(), Some(Holder::Flock));
        drop(held);
        assert_eq!(probe(&lock).unwrap(), None);

        let held = std::fs::OpenOptions::new().write(true).open(&lock).unwrap();
        // SAFETY: zeroed flock is valid; fd open.
        let mut l: libc::flock = unsafe { std::mem::zeroed() };
        l.l_type = libc::F_WRLCK as libc::c_short;
        l.l_whence = libc::SEEK_SET as libc::c_short;
        assert_eq!(
            unsafe { libc::fcntl(held.as_raw_fd(), libc::F_SETLK, &l) },
            0
        );
        assert!(matches!(probe(&lock).unwrap(), Some(Holder::Fcntl { .. })));
        drop(held);
        assert_eq!(probe(&lock).unwrap(), None);
        assert!(find(dir.path()).unwrap().is_empty());

        // A fifo (or a symlink) named LOCK is no database's lock, and the
        // probe does not wait for a writer to open it.
        std::fs::remove_file(&lock).unwrap();
        let c = std::ffi::CString::new(lock.to_string_lossy().into_owned()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        assert_eq!(probe(&lock).unwrap(), None);
        std::fs::remove_file(&lock).unwrap();
        std::os::unix::fs::symlink("/dev/zero", &lock).unwrap();
        assert_eq!(probe(&lock).unwrap(), None);
    }
}
