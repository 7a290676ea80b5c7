//! Directory handles that never follow a symlink they did not create.
//!
//! Restore, staging and the local store create and remove entries in
//! directories that other parties can write to: a restore target holds
//! whatever an earlier, interrupted run left; a stage sits in the node's
//! data directory; a repository directory may be shared by several hosts.
//! A path string is re-resolved by the kernel on every call, so a symlink
//! planted between a check and a write redirects the write. Everything here
//! therefore works on an open directory file descriptor ([`DirFd`]) and one
//! name at a time (the `*at` system calls):
//!
//! - a child directory is entered with `O_DIRECTORY | O_NOFOLLOW`, so a
//!   symlink (or anything but a directory) in its place is an error, never
//!   a detour;
//! - files are created with `O_CREAT | O_EXCL | O_NOFOLLOW` (nothing
//!   existing is opened, truncated or followed) and opened for reading with
//!   `O_NOFOLLOW`, and their type is checked on the open descriptor;
//! - modes and times are set on open descriptors (`fchmod`, `futimens`),
//!   a symlink's own time with `AT_SYMLINK_NOFOLLOW`;
//! - removal walks directories through descriptors and unlinks names, so a
//!   symlink found inside is removed, not followed.
//!
//! Only the root a caller opens with [`DirFd::open`] (a path the operator
//! gave) is resolved the ordinary way.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Timespec, Timestamps};

/// An open directory and the path it was reached by (for messages only: no
/// call resolves that path again).
#[derive(Debug)]
pub struct DirFd {
    fd: OwnedFd,
    path: PathBuf,
}

/// What an entry is, from `fstatat` without following it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryType {
    File,
    Dir,
    Symlink,
    Other,
}

/// The parts of a `stat` the callers use.
#[derive(Debug, Clone, Copy)]
pub struct Meta {
    pub kind: EntryType,
    pub size: u64,
    /// Bytes allocated on disk (less than `size` for a sparse file).
    pub allocated: u64,
    pub mode: u32,
    pub uid: u32,
    pub nlink: u64,
    pub dev: u64,
    pub ino: u64,
    /// Modification time, ns since the Unix epoch.
    pub mtime_ns: i64,
    /// Status change time (set by the kernel on every write, chmod or
    /// link; no user can set it), ns since the Unix epoch.
    pub ctime_ns: i64,
}

impl Meta {
    /// Owned by this process's effective user.
    pub fn is_mine(&self) -> bool {
        self.uid == euid()
    }
}

impl Meta {
    /// The metadata of an open file or directory.
    pub fn of(fd: impl AsFd) -> io::Result<Meta> {
        Ok(meta(&rustix::fs::fstat(fd)?))
    }
}

/// This process's effective user id.
pub fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// Whether a symlink owned by `uid` may be followed when resolving a path
/// the operator gave: only links of the superuser or of the user blocksnap
/// runs as (a link another user planted in a shared directory is not).
fn trusted_owner(uid: u32) -> bool {
    uid == 0 || uid == euid()
}

/// Most symlinks one trusted resolution follows (the kernel's own limit).
const MAX_HOPS: usize = 40;

// `st_nlink` is u64 on x86_64 and u32 elsewhere: the cast is for the others.
#[allow(clippy::unnecessary_cast)]
fn meta(st: &rustix::fs::Stat) -> Meta {
    let ft = FileType::from_raw_mode(st.st_mode);
    Meta {
        kind: match ft {
            FileType::RegularFile => EntryType::File,
            FileType::Directory => EntryType::Dir,
            FileType::Symlink => EntryType::Symlink,
            _ => EntryType::Other,
        },
        size: st.st_size.max(0) as u64,
        allocated: (st.st_blocks as u64).saturating_mul(512),
        mode: st.st_mode & 0o7777,
        uid: st.st_uid,
        nlink: st.st_nlink as u64,
        dev: st.st_dev,
        ino: st.st_ino,
        mtime_ns: (st.st_mtime as i64)
            .saturating_mul(1_000_000_000)
            .saturating_add(st.st_mtime_nsec as i64),
        ctime_ns: (st.st_ctime as i64)
            .saturating_mul(1_000_000_000)
            .saturating_add(st.st_ctime_nsec as i64),
    }
}

/// Refuses anything but one plain path component: every method below takes
/// a single name, so that no kernel path walk happens inside a call.
fn component(name: &str) -> io::Result<&str> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name:?} is not a single path component"),
        ));
    }
    Ok(name)
}

/// Nanoseconds since the epoch as a timespec (negative times included).
pub fn timespec(ns: i64) -> Timespec {
    Timespec {
        tv_sec: ns.div_euclid(1_000_000_000),
        tv_nsec: ns.rem_euclid(1_000_000_000) as _,
    }
}

/// Times that leave atime alone and set mtime.
fn mtime_only(ns: i64) -> Timestamps {
    Timestamps {
        last_access: Timespec {
            tv_sec: 0,
            tv_nsec: rustix::fs::UTIME_OMIT,
        },
        last_modification: timespec(ns),
    }
}

impl DirFd {
    /// Opens the directory at `path`, resolving it the ordinary way: for a
    /// root the operator named (which may itself be a symlink on purpose).
    pub fn open(path: &Path) -> io::Result<DirFd> {
        let fd = rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(DirFd {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// Opens the directory at `path` (made absolute against the current
    /// directory) by walking it from `/` one component at a time, following
    /// a symlink only when it belongs to the superuser or to this user, so
    /// that a link another user planted in a shared parent (`/tmp`, a
    /// world-writable data directory) cannot redirect a restore. With
    /// `create`, missing directories are made (mode 0777 less the umask),
    /// like `mkdir -p`.
    pub fn open_trusted(path: &Path, create: bool) -> io::Result<DirFd> {
        let abs = std::path::absolute(path)?;
        let mut dir = DirFd::open(Path::new("/"))?;
        dir.resolve_trusted(&abs, create)?;
        dir.path = abs;
        Ok(dir)
    }

    /// The directory `path` leads to from this one (from `/` when it is
    /// absolute), resolved as [`DirFd::open_trusted`] does: a symlink on
    /// the way is followed only when it belongs to the superuser or to this
    /// user. For a symlink's target read from this directory.
    pub fn open_trusted_from(&self, path: &Path) -> io::Result<DirFd> {
        let mut dir = if path.is_absolute() {
            DirFd::open(Path::new("/"))?
        } else {
            self.try_clone()?
        };
        dir.resolve_trusted(path, false)?;
        dir.path = self.path.join(path);
        Ok(dir)
    }

    /// Walks `path` from this directory one component at a time (see
    /// [`DirFd::open_trusted`]), leaving `self` at the directory it leads
    /// to.
    fn resolve_trusted(&mut self, path: &Path, create: bool) -> io::Result<()> {
        let root = || DirFd::open(Path::new("/"));
        let mut dir = self.try_clone()?;
        let mut queue: std::collections::VecDeque<std::ffi::OsString> = path
            .components()
            .filter_map(|c| match c {
                std::path::Component::Normal(n) => Some(n.to_os_string()),
                std::path::Component::ParentDir => Some("..".into()),
                _ => None,
            })
            .collect();
        let mut hops = 0;
        while let Some(part) = queue.pop_front() {
            let name = part.to_str().ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidInput, "path component is not UTF-8")
            })?;
            if name == ".." {
                let fd = rustix::fs::openat(
                    &dir.fd,
                    "..",
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                    Mode::empty(),
                )?;
                dir = DirFd {
                    fd,
                    path: dir.path.parent().unwrap_or(Path::new("/")).to_path_buf(),
                };
                continue;
            }
            match dir.stat(name)? {
                Some(m) if m.kind == EntryType::Dir => dir = dir.open_dir(name)?,
                Some(m) if m.kind == EntryType::Symlink => {
                    if !trusted_owner(m.uid) {
                        return Err(io::Error::new(
                            io::ErrorKind::PermissionDenied,
                            format!(
                                "{} is a symlink owned by uid {}, neither root nor this user: not followed",
                                dir.join(name).display(),
                                m.uid
                            ),
                        ));
                    }
                    hops += 1;
                    if hops > MAX_HOPS {
                        return Err(rustix::io::Errno::LOOP.into());
                    }
                    let target = dir.read_link(name)?;
                    let mut parts: Vec<std::ffi::OsString> = target
                        .components()
                        .filter_map(|c| match c {
                            std::path::Component::Normal(n) => Some(n.to_os_string()),
                            std::path::Component::ParentDir => Some("..".into()),
                            _ => None,
                        })
                        .collect();
                    if target.is_absolute() {
                        dir = root()?;
                    }
                    while let Some(p) = parts.pop() {
                        queue.push_front(p);
                    }
                }
                Some(_) => return Err(rustix::io::Errno::NOTDIR.into()),
                None if create => {
                    match rustix::fs::mkdirat(&dir.fd, name, Mode::from_raw_mode(0o777)) {
                        Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                        Err(e) => return Err(e.into()),
                    }
                    dir = dir.open_dir(name)?;
                }
                None => return Err(rustix::io::Errno::NOENT.into()),
            }
        }
        *self = dir;
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A second handle on the same open directory.
    pub fn try_clone(&self) -> io::Result<DirFd> {
        Ok(DirFd {
            fd: self.fd.try_clone()?,
            path: self.path.clone(),
        })
    }

    /// The path of `name` in this directory, for messages.
    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Enters the child directory `name`; a symlink or non-directory there
    /// is an error (`ELOOP`/`ENOTDIR`), never followed.
    pub fn open_dir(&self, name: &str) -> io::Result<DirFd> {
        let fd = rustix::fs::openat(
            &self.fd,
            component(name)?,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(DirFd {
            fd,
            path: self.join(name),
        })
    }

    /// Enters a relative `/`-separated path one component at a time.
    pub fn open_path(&self, rel: &str) -> io::Result<DirFd> {
        let mut parts = rel.split('/');
        let first = parts.next().unwrap_or("");
        let mut dir = self.open_dir(first)?;
        for part in parts {
            dir = dir.open_dir(part)?;
        }
        Ok(dir)
    }

    /// Creates the directory `name` (mode 0700 until the caller sets its
    /// own); `AlreadyExists` when anything is there.
    pub fn create_dir(&self, name: &str) -> io::Result<()> {
        rustix::fs::mkdirat(&self.fd, component(name)?, Mode::from_raw_mode(0o700))?;
        Ok(())
    }

    /// The directory `name`, created if absent. Whatever else stands at the
    /// name (a file, a symlink, a fifo) is removed first: the caller owns
    /// this directory and trusts nothing found in it.
    pub fn ensure_dir(&self, name: &str) -> io::Result<DirFd> {
        match self.create_dir(name) {
            Ok(()) => return self.open_dir(name),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        match self.stat(name)? {
            Some(m) if m.kind == EntryType::Dir => self.open_dir(name),
            _ => {
                self.remove(name)?;
                self.create_dir(name)?;
                self.open_dir(name)
            }
        }
    }

    /// Creates a new regular file for writing. Fails with `AlreadyExists`
    /// when any entry, a dangling symlink included, has the name.
    pub fn create_file(&self, name: &str, mode: u32) -> io::Result<File> {
        let fd = rustix::fs::openat(
            &self.fd,
            component(name)?,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(mode),
        )?;
        Ok(File::from(fd))
    }

    /// Opens an existing regular file for reading; a symlink is `ELOOP`, and
    /// anything that is not a regular file is refused after the open.
    pub fn open_file(&self, name: &str) -> io::Result<File> {
        let fd = rustix::fs::openat(
            &self.fd,
            component(name)?,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let st = rustix::fs::fstat(&fd)?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            return Err(io::Error::other(format!(
                "{} is not a regular file",
                self.join(name).display()
            )));
        }
        // O_NONBLOCK only kept a fifo from blocking the open.
        rustix::fs::fcntl_setfl(&fd, OFlags::empty())?;
        Ok(File::from(fd))
    }

    /// The entry `name` without following it; `None` when absent.
    pub fn stat(&self, name: &str) -> io::Result<Option<Meta>> {
        match rustix::fs::statat(&self.fd, component(name)?, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(meta(&st))),
            Err(rustix::io::Errno::NOENT) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// This directory's own metadata.
    pub fn meta(&self) -> io::Result<Meta> {
        Ok(meta(&rustix::fs::fstat(&self.fd)?))
    }

    pub fn symlink(&self, target: &str, name: &str) -> io::Result<()> {
        rustix::fs::symlinkat(target, &self.fd, component(name)?)?;
        Ok(())
    }

    pub fn read_link(&self, name: &str) -> io::Result<PathBuf> {
        let target = rustix::fs::readlinkat(&self.fd, component(name)?, Vec::new())?;
        Ok(PathBuf::from(OsStr::from_bytes(target.as_bytes())))
    }

    /// Sets a symlink's own mtime (atime untouched).
    pub fn set_link_mtime(&self, name: &str, mtime_ns: i64) -> io::Result<()> {
        rustix::fs::utimensat(
            &self.fd,
            component(name)?,
            &mtime_only(mtime_ns),
            AtFlags::SYMLINK_NOFOLLOW,
        )?;
        Ok(())
    }

    /// Hard-links `name` here as `new_name` in `to`; `AlreadyExists` when
    /// the new name is taken (nothing is replaced).
    pub fn link(&self, name: &str, to: &DirFd, new_name: &str) -> io::Result<()> {
        rustix::fs::linkat(
            &self.fd,
            component(name)?,
            &to.fd,
            component(new_name)?,
            AtFlags::empty(),
        )?;
        Ok(())
    }

    /// Hard-links the file at `from` (a path outside any directory this
    /// module guards, e.g. a node's table file; its last component is not
    /// followed) as `name` here.
    pub fn link_from(&self, from: &Path, name: &str) -> io::Result<()> {
        rustix::fs::linkat(
            rustix::fs::CWD,
            from,
            &self.fd,
            component(name)?,
            AtFlags::empty(),
        )?;
        Ok(())
    }

    /// Moves `name` to `to/new_name`. With `replace` false the move fails
    /// with `AlreadyExists` rather than replace anything.
    pub fn rename(&self, name: &str, to: &DirFd, new_name: &str, replace: bool) -> io::Result<()> {
        let flags = if replace {
            rustix::fs::RenameFlags::empty()
        } else {
            rustix::fs::RenameFlags::NOREPLACE
        };
        rustix::fs::renameat_with(
            &self.fd,
            component(name)?,
            &to.fd,
            component(new_name)?,
            flags,
        )?;
        Ok(())
    }

    /// Unlinks a file or symlink; `Ok(false)` when nothing was there.
    pub fn unlink(&self, name: &str) -> io::Result<bool> {
        match rustix::fs::unlinkat(&self.fd, component(name)?, AtFlags::empty()) {
            Ok(()) => Ok(true),
            Err(rustix::io::Errno::NOENT) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Removes the entry `name` and, for a directory, everything below it,
    /// without following any symlink: links are unlinked, directories are
    /// entered through descriptors (and made writable first, so read-only
    /// directories copied from a source do not stop their own removal).
    /// A directory on another filesystem (a mount point) is never entered:
    /// removing it is an error. `Ok(false)` when nothing was there.
    pub fn remove(&self, name: &str) -> io::Result<bool> {
        let Some(m) = self.stat(name)? else {
            return Ok(false);
        };
        if m.kind != EntryType::Dir {
            return self.unlink(name);
        }
        if m.dev != self.meta()?.dev {
            return Err(io::Error::other(format!(
                "{} is a mount point: not removed",
                self.join(name).display()
            )));
        }
        let dir = self.open_dir(name)?;
        if m.mode & 0o700 != 0o700 {
            rustix::fs::fchmod(&dir.fd, Mode::from_raw_mode(0o700))?;
        }
        for child in dir.names()? {
            dir.remove(&child)?;
        }
        drop(dir);
        match rustix::fs::unlinkat(&self.fd, name, AtFlags::REMOVEDIR) {
            Ok(()) => Ok(true),
            Err(rustix::io::Errno::NOENT) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// The names in this directory (not `.` and `..`), unsorted. Names that
    /// are not UTF-8 are returned lossily converted: callers only remove or
    /// compare them.
    pub fn names(&self) -> io::Result<Vec<String>> {
        let mut out = Vec::new();
        for entry in rustix::fs::Dir::read_from(&self.fd)? {
            let entry = entry?;
            let name = entry.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            out.push(String::from_utf8_lossy(name).into_owned());
        }
        Ok(out)
    }

    /// The names in this directory in byte order; a name that is not UTF-8
    /// is an `InvalidData` error naming it (what a snapshot cannot record).
    pub fn sorted_names(&self) -> io::Result<Vec<String>> {
        let mut out = Vec::new();
        for entry in rustix::fs::Dir::read_from(&self.fd)? {
            let entry = entry?;
            let name = entry.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            match std::str::from_utf8(name) {
                Ok(n) => out.push(n.to_string()),
                Err(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "{}: file name is not UTF-8",
                            self.join(&String::from_utf8_lossy(name)).display()
                        ),
                    ))
                }
            }
        }
        out.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        Ok(out)
    }

    /// Sets this directory's permission bits.
    pub fn set_mode(&self, mode: u32) -> io::Result<()> {
        rustix::fs::fchmod(&self.fd, Mode::from_raw_mode(mode))?;
        Ok(())
    }

    /// Sets this directory's mtime (atime untouched).
    pub fn set_mtime(&self, mtime_ns: i64) -> io::Result<()> {
        rustix::fs::futimens(&self.fd, &mtime_only(mtime_ns))?;
        Ok(())
    }

    /// `fsync` of the directory: its entries are durable.
    pub fn sync(&self) -> io::Result<()> {
        rustix::fs::fsync(&self.fd)?;
        Ok(())
    }

    /// `syncfs`: everything on this directory's filesystem is durable.
    pub fn syncfs(&self) -> io::Result<()> {
        rustix::fs::syncfs(&self.fd)?;
        Ok(())
    }

    /// Free bytes and inodes for an unprivileged writer, and the longest
    /// name allowed, on this directory's filesystem.
    pub fn space(&self) -> io::Result<Space> {
        let s = rustix::fs::fstatvfs(&self.fd)?;
        Ok(Space {
            bytes: s.f_bavail.saturating_mul(s.f_frsize),
            // 0 total inodes: a filesystem that allocates them on demand.
            inodes: if s.f_files == 0 { u64::MAX } else { s.f_favail },
            name_max: s.f_namemax,
        })
    }

    /// Takes an exclusive `flock` on this directory without waiting;
    /// `Ok(false)` when another open file holds one. Released when the
    /// handle is dropped.
    pub fn try_lock(&self) -> io::Result<bool> {
        match rustix::fs::flock(
            &self.fd,
            rustix::fs::FlockOperation::NonBlockingLockExclusive,
        ) {
            Ok(()) => Ok(true),
            Err(rustix::io::Errno::WOULDBLOCK) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// One entry met by [`walk`]: its path relative to the walk's root, its
/// name in `dir` (its parent, open), and its metadata (not following it).
pub struct Walked<'d> {
    pub rel: String,
    pub dir: &'d DirFd,
    pub name: String,
    pub meta: Meta,
}

/// Walks the tree below `root` depth first, names in byte order, through
/// directory descriptors only: no symlink is ever followed, and a
/// directory is entered with `O_NOFOLLOW | O_DIRECTORY`, so a name swapped
/// for a link between the listing and the descent is an error, not a
/// detour. `visit` sees every entry; for a directory it returns whether to
/// descend. `base` prefixes every `rel` (the root's own path in a larger
/// tree, or empty). Holds one descriptor per level.
pub fn walk(
    root: &DirFd,
    base: &str,
    visit: &mut dyn FnMut(&Walked<'_>) -> crate::error::Result<bool>,
) -> crate::error::Result<()> {
    use crate::error::Error;
    let join = |dir: &str, name: &str| {
        if dir.is_empty() {
            name.to_string()
        } else {
            format!("{dir}/{name}")
        }
    };
    for name in root
        .sorted_names()
        .map_err(Error::io("read directory", root.path()))?
    {
        let Some(meta) = root
            .stat(&name)
            .map_err(Error::io("stat", root.join(&name)))?
        else {
            continue; // gone since the listing
        };
        let entry = Walked {
            rel: join(base, &name),
            dir: root,
            name,
            meta,
        };
        if visit(&entry)? && meta.kind == EntryType::Dir {
            let child = root
                .open_dir(&entry.name)
                .map_err(Error::io("open directory", root.join(&entry.name)))?;
            walk(&child, &entry.rel, visit)?;
        }
    }
    Ok(())
}

/// What a filesystem has room for.
#[derive(Debug, Clone, Copy)]
pub struct Space {
    pub bytes: u64,
    pub inodes: u64,
    pub name_max: u64,
}

/// Sets a file's permission bits and mtime through its open descriptor.
pub fn set_file_mode_and_mtime(f: &File, mode: u32, mtime_ns: i64) -> io::Result<()> {
    rustix::fs::fchmod(f, Mode::from_raw_mode(mode))?;
    rustix::fs::futimens(f, &mtime_only(mtime_ns))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_follows_a_planted_symlink() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("victim"), b"keep").unwrap();
        let root = tmp.path().join("root");
        std::fs::create_dir(&root).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("d")).unwrap();
        std::os::unix::fs::symlink(outside.join("victim"), root.join("f")).unwrap();

        let dir = DirFd::open(&root).unwrap();
        assert!(dir.open_dir("d").is_err(), "entered a symlinked directory");
        assert!(dir.open_path("d/x").is_err());
        assert_eq!(
            dir.create_file("f", 0o644).unwrap_err().kind(),
            io::ErrorKind::AlreadyExists
        );
        assert!(dir.open_file("f").is_err(), "read through a symlink");
        assert_eq!(dir.stat("d").unwrap().unwrap().kind, EntryType::Symlink);
        // ensure_dir replaces what it finds; remove unlinks links.
        let d = dir.ensure_dir("d").unwrap();
        d.create_file("new", 0o600).unwrap();
        assert!(!outside.join("new").exists());
        assert!(dir.remove("f").unwrap());
        assert_eq!(std::fs::read(outside.join("victim")).unwrap(), b"keep");

        // A tree with a read-only directory and a link out is removed
        // without touching the link's target.
        let t = dir.ensure_dir("tree").unwrap();
        let sub = t.ensure_dir("ro").unwrap();
        sub.symlink(outside.to_str().unwrap(), "out").unwrap();
        sub.create_file("x", 0o644).unwrap();
        sub.set_mode(0o500).unwrap();
        assert!(dir.remove("tree").unwrap());
        assert!(!root.join("tree").exists());
        assert_eq!(std::fs::read(outside.join("victim")).unwrap(), b"keep");
        assert!(!dir.remove("tree").unwrap());
        assert!(component("a/b").is_err() && component("..").is_err());
    }
}
