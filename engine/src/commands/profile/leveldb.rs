//! A LevelDB database (goleveldb's, goloop's default backend; plyvel's,
//! loopchain's) read without writing a byte of it.
//!
//! `rusty-leveldb` reads goleveldb's tables, manifests and journals, but
//! opening a database writes: it rotates `LOG`, takes `LOCK`, appends to
//! the manifest and the journal it reuses, and may flush the replayed
//! journal to a new table and delete the old one. [`ReadOnlyEnv`] gives it
//! a file system in which every read of a file the database holds comes
//! from the directory (through its descriptor, never following a link,
//! regular files only) and every write, rename, delete and lock stays in
//! memory: the directory — often a snapshot's frozen view, whose bytes are
//! what the snapshot stores — is never touched. Memory: the files it
//! writes (a replayed journal, at most the write buffer) and a copy of the
//! manifest and journal it appends to.

use std::cell::RefCell;
use std::collections::HashSet;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use rusty_leveldb::env::{Env, FileLock, Logger, RandomAccess};
use rusty_leveldb::{MemEnv, Options, Status, StatusCode, DB};

use crate::sys::fsx::{DirFd, EntryType};

/// The database directory as `rusty-leveldb` sees it: reads from `dir`,
/// writes to memory.
pub(crate) struct ReadOnlyEnv {
    dir: DirFd,
    /// The path the database is opened at (a name, nothing is looked up
    /// by it).
    root: PathBuf,
    mem: MemEnv,
    /// Files of the directory deleted (or renamed away) in the overlay.
    deleted: RefCell<HashSet<String>>,
}

fn status(code: StatusCode, msg: String) -> Status {
    Status::new(code, &msg)
}

impl ReadOnlyEnv {
    fn name<'p>(&self, p: &'p Path) -> rusty_leveldb::Result<&'p str> {
        p.strip_prefix(&self.root)
            .ok()
            .and_then(|n| n.to_str())
            .filter(|n| !n.is_empty() && !n.contains('/'))
            .ok_or_else(|| {
                status(
                    StatusCode::InvalidArgument,
                    format!("{} is not a file of the database", p.display()),
                )
            })
    }

    /// Whether the directory holds `name` (a regular file) and the overlay
    /// has not deleted it.
    fn on_disk(&self, name: &str) -> rusty_leveldb::Result<Option<u64>> {
        if self.deleted.borrow().contains(name) {
            return Ok(None);
        }
        Ok(self
            .dir
            .stat(name)?
            .filter(|m| m.kind == EntryType::File)
            .map(|m| m.size))
    }

    fn disk_file(&self, name: &str) -> rusty_leveldb::Result<std::fs::File> {
        match self.on_disk(name)? {
            Some(_) => Ok(self.dir.open_file(name)?),
            None => Err(status(
                StatusCode::NotFound,
                format!("{}: no such file", self.dir.join(name).display()),
            )),
        }
    }

    /// Copies a file of the directory into the overlay (before appending).
    fn copy_up(&self, p: &Path, name: &str) -> rusty_leveldb::Result<()> {
        let mut bytes = Vec::new();
        self.disk_file(name)?.read_to_end(&mut bytes)?;
        self.mem.open_writable_file(p)?.write_all(&bytes)?;
        Ok(())
    }
}

impl Env for ReadOnlyEnv {
    fn open_sequential_file(&self, p: &Path) -> rusty_leveldb::Result<Box<dyn Read>> {
        if self.mem.exists(p)? {
            return self.mem.open_sequential_file(p);
        }
        Ok(Box::new(self.disk_file(self.name(p)?)?))
    }

    fn open_random_access_file(&self, p: &Path) -> rusty_leveldb::Result<Box<dyn RandomAccess>> {
        if self.mem.exists(p)? {
            return self.mem.open_random_access_file(p);
        }
        Ok(Box::new(self.disk_file(self.name(p)?)?))
    }

    fn open_writable_file(&self, p: &Path) -> rusty_leveldb::Result<Box<dyn Write>> {
        let name = self.name(p)?.to_string();
        self.deleted.borrow_mut().insert(name);
        self.mem.open_writable_file(p)
    }

    fn open_appendable_file(&self, p: &Path) -> rusty_leveldb::Result<Box<dyn Write>> {
        let name = self.name(p)?.to_string();
        if !self.mem.exists(p)? && self.on_disk(&name)?.is_some() {
            self.copy_up(p, &name)?;
        }
        self.deleted.borrow_mut().insert(name);
        self.mem.open_appendable_file(p)
    }

    fn exists(&self, p: &Path) -> rusty_leveldb::Result<bool> {
        if p == self.root || self.mem.exists(p)? {
            return Ok(true);
        }
        Ok(self.on_disk(self.name(p)?)?.is_some())
    }

    fn children(&self, p: &Path) -> rusty_leveldb::Result<Vec<PathBuf>> {
        if p != self.root {
            return Ok(Vec::new());
        }
        let deleted = self.deleted.borrow();
        let mut out: Vec<PathBuf> = self
            .dir
            .sorted_names()?
            .into_iter()
            .filter(|n| !deleted.contains(n))
            .map(PathBuf::from)
            .collect();
        for c in self.mem.children(p)? {
            if !out.contains(&c) {
                out.push(c);
            }
        }
        Ok(out)
    }

    fn size_of(&self, p: &Path) -> rusty_leveldb::Result<usize> {
        if self.mem.exists(p)? {
            return self.mem.size_of(p);
        }
        match self.on_disk(self.name(p)?)? {
            Some(n) => Ok(n as usize),
            None => Err(status(
                StatusCode::NotFound,
                format!("{}: no such file", p.display()),
            )),
        }
    }

    fn delete(&self, p: &Path) -> rusty_leveldb::Result<()> {
        let name = self.name(p)?.to_string();
        if self.mem.exists(p)? {
            self.mem.delete(p)?;
        }
        self.deleted.borrow_mut().insert(name);
        Ok(())
    }

    fn mkdir(&self, _: &Path) -> rusty_leveldb::Result<()> {
        Ok(())
    }

    fn rmdir(&self, _: &Path) -> rusty_leveldb::Result<()> {
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> rusty_leveldb::Result<()> {
        let (from_name, to_name) = (self.name(from)?.to_string(), self.name(to)?.to_string());
        if !self.mem.exists(from)? {
            self.copy_up(from, &from_name)?;
        }
        self.mem.rename(from, to)?;
        let mut deleted = self.deleted.borrow_mut();
        deleted.insert(from_name);
        deleted.insert(to_name);
        Ok(())
    }

    fn lock(&self, p: &Path) -> rusty_leveldb::Result<FileLock> {
        self.mem.lock(p)
    }

    fn unlock(&self, l: FileLock) -> rusty_leveldb::Result<()> {
        self.mem.unlock(l)
    }

    fn new_logger(&self, _: &Path) -> rusty_leveldb::Result<Logger> {
        Ok(Logger::new(Box::new(io::sink())))
    }

    fn micros(&self) -> u64 {
        self.mem.micros()
    }

    fn sleep_for(&self, micros: u32) {
        self.mem.sleep_for(micros)
    }
}

/// Opens the LevelDB database in `dir` for reading, writing nothing to
/// it. `label` names it in messages.
pub(crate) fn open(dir: DirFd, label: &Path) -> crate::error::Result<DB> {
    let root = PathBuf::from("/blocksnap-readonly-db");
    let env = ReadOnlyEnv {
        dir,
        root: root.clone(),
        mem: MemEnv::new(),
        deleted: RefCell::new(HashSet::new()),
    };
    let opts = Options {
        env: Rc::new(Box::new(env)),
        log: Some(Rc::new(RefCell::new(rusty_leveldb::infolog::Logger(
            Box::new(io::sink()),
        )))),
        create_if_missing: false,
        paranoid_checks: true,
        ..Options::default()
    };
    DB::open(&root, opts).map_err(|e| {
        crate::error::Error::Refused(format!(
            "{}: not a LevelDB database blocksnap can read: {e}",
            label.display()
        ))
    })
}
