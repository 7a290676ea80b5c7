//! Power-loss crash states of a real run, in the spirit of ALICE (OSDI '14).
//!
//! A command runs under `strace`, which records every system call that
//! changes a file or a directory (with the bytes written). The calls are
//! replayed on a model of the directories the run touches, starting from
//! an image of them taken before the run; the model knows which inode each
//! name holds, so links, renames and unlinks of open files are followed.
//!
//! **Persistence model** (FORMAT.md §10, "Persistence model"): ext4's
//! `data=ordered`, taken conservatively —
//! - what a file's write or truncation changes (and a change of its mode or
//!   mtime) is durable once that file is fsynced (`fsync`, `fdatasync`);
//!   until then it may be lost, and the last write that is kept may be cut
//!   at a 4 KiB boundary;
//! - a directory operation (a name created, linked, renamed, removed) is
//!   durable once that directory is fsynced; until then, per directory, an
//!   in-order prefix of its operations survives (a rename between two
//!   directories survives in both or in neither);
//! - `syncfs` and `sync` make everything durable.
//!
//! A crash state is the image after a prefix of the run, with each file's
//! and each directory's not yet durable operations cut in one of the ways
//! the model allows; [`States`] yields them one deviation at a time, and
//! duplicates are dropped by content. [`materialize`] writes a state back
//! onto the real directories, for the test to check what the next run of
//! blocksnap makes of it.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

/// An inode of the model.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub enum Node {
    /// Shared until written: images of crash states are cloned often.
    File {
        data: std::sync::Arc<Vec<u8>>,
    },
    Dir {
        entries: BTreeMap<String, usize>,
    },
    Link {
        target: String,
    },
}

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct Inode {
    pub node: Node,
    pub mode: u32,
    pub mtime_ns: i64,
}

/// The directories a run may change, as inodes. `roots[i]` is the inode of
/// the root at `paths[i]`.
#[derive(Clone, Debug)]
pub struct Image {
    pub paths: Vec<PathBuf>,
    pub roots: Vec<usize>,
    pub inodes: Vec<Inode>,
}

/// What one recorded call does to the model, by inode number.
#[derive(Clone, Debug)]
pub enum Op {
    /// A name in a directory comes to hold an inode (created, linked, or a
    /// symlink made).
    Add {
        dir: usize,
        name: String,
        ino: usize,
    },
    Remove {
        dir: usize,
        name: String,
    },
    Rename {
        from: usize,
        old: String,
        to: usize,
        new: String,
    },
    Write {
        ino: usize,
        off: u64,
        data: Vec<u8>,
    },
    Truncate {
        ino: usize,
        len: u64,
    },
    Mode {
        ino: usize,
        mode: u32,
    },
    Mtime {
        ino: usize,
        ns: i64,
    },
    /// A new inode (its first name comes with an `Add`).
    New {
        ino: usize,
        node: Node,
        mode: u32,
    },
    Fsync {
        ino: usize,
    },
    SyncAll,
}

impl Op {
    /// The inodes whose durability governs this op: a file's for its data,
    /// the directory's (or both) for a name.
    fn groups(&self) -> Vec<usize> {
        match self {
            Op::Add { dir, .. } | Op::Remove { dir, .. } => vec![*dir],
            Op::Rename { from, to, .. } if from == to => vec![*from],
            Op::Rename { from, to, .. } => vec![*from, *to],
            Op::Write { ino, .. }
            | Op::Truncate { ino, .. }
            | Op::Mode { ino, .. }
            | Op::Mtime { ino, .. } => vec![*ino],
            Op::New { .. } | Op::Fsync { .. } | Op::SyncAll => vec![],
        }
    }
}

/// Takes the image of `paths` (each a directory) as they are now.
pub fn capture(paths: &[PathBuf]) -> Image {
    let mut img = Image {
        paths: paths.to_vec(),
        roots: Vec::new(),
        inodes: Vec::new(),
    };
    let mut by_ino: HashMap<(u64, u64), usize> = HashMap::new();
    for p in paths {
        let root = capture_dir(&mut img, &mut by_ino, p);
        img.roots.push(root);
    }
    img
}

fn capture_dir(img: &mut Image, seen: &mut HashMap<(u64, u64), usize>, path: &Path) -> usize {
    let m = std::fs::symlink_metadata(path).unwrap();
    let key = (m.dev(), m.ino());
    if let Some(&i) = seen.get(&key) {
        return i;
    }
    let node = if m.is_dir() {
        let mut entries = BTreeMap::new();
        let id = img.inodes.len();
        img.inodes.push(Inode {
            node: Node::Dir {
                entries: BTreeMap::new(),
            },
            mode: m.permissions().mode() & 0o7777,
            mtime_ns: mtime(&m),
        });
        seen.insert(key, id);
        let mut names: Vec<_> = std::fs::read_dir(path)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        for n in names {
            let child = capture_dir(img, seen, &path.join(&n));
            entries.insert(n, child);
        }
        img.inodes[id].node = Node::Dir { entries };
        return id;
    } else if m.file_type().is_symlink() {
        Node::Link {
            target: std::fs::read_link(path)
                .unwrap()
                .to_string_lossy()
                .into_owned(),
        }
    } else if m.is_file() {
        Node::File {
            data: std::sync::Arc::new(std::fs::read(path).unwrap()),
        }
    } else {
        Node::File {
            data: Default::default(),
        }
    };
    let id = img.inodes.len();
    img.inodes.push(Inode {
        node,
        mode: m.permissions().mode() & 0o7777,
        mtime_ns: mtime(&m),
    });
    seen.insert(key, id);
    id
}

fn mtime(m: &std::fs::Metadata) -> i64 {
    m.mtime() * 1_000_000_000 + m.mtime_nsec()
}

/// A recorded run: the image before it and the ops it made, in order.
pub struct Run {
    pub before: Image,
    pub ops: Vec<Op>,
    /// Calls that touched the roots in a way the model does not follow
    /// (a test fails on any: the model would be wrong).
    pub unmodelled: Vec<String>,
    pub status: std::process::ExitStatus,
    pub stderr: String,
}

/// Whether `strace` is here (under `CI=true` its absence fails the test).
pub fn have_strace() -> bool {
    Command::new("strace")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success())
}

const TRACED: &str = "trace=open,openat,creat,write,pwrite64,writev,pwritev,pwritev2,\
copy_file_range,sendfile,ftruncate,truncate,fsync,fdatasync,syncfs,sync,close,\
mkdir,mkdirat,unlink,unlinkat,rmdir,link,linkat,rename,renameat,renameat2,symlink,symlinkat,\
fchmod,fchmodat,chmod,utimensat,dup,dup2,dup3,fcntl";

/// Runs `cmd` under strace and replays what it did to `roots`.
pub fn record(cmd: Command, roots: &[PathBuf], work: &Path) -> Run {
    // A root the run will create is there, empty, before it.
    for r in roots {
        std::fs::create_dir_all(r).unwrap();
    }
    let before = capture(roots);
    let trace = work.join(format!(
        "strace-{}.txt",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    let program = cmd.get_program().to_owned();
    let args: Vec<_> = cmd.get_args().map(|a| a.to_owned()).collect();
    let mut st = Command::new("strace");
    st.args([
        "-f", "-qq", "-yy", "-xx", "-s", "16777216", "-e", TRACED, "-o",
    ])
    .arg(&trace)
    .arg(&program)
    .args(&args);
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => st.env(k, v),
            None => st.env_remove(k),
        };
    }
    if let Some(d) = cmd.get_current_dir() {
        st.current_dir(d);
    }
    let out = st.output().expect("run strace");
    let text = std::fs::read(&trace).expect("strace wrote its trace");
    if let Some(keep) = std::env::var_os("BLOCKSNAP_KEEP_TRACE") {
        let _ = std::fs::copy(&trace, keep);
    }
    let _ = std::fs::remove_file(&trace);
    let (ops, unmodelled) = replay(&before, &String::from_utf8_lossy(&text));
    Run {
        before,
        ops,
        unmodelled,
        status: out.status,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// One call from the trace: name, arguments as text, return value and the
/// path strace gives a returned descriptor.
#[derive(Debug)]
pub struct Call {
    pub name: String,
    pub args: Vec<String>,
    ret: i64,
    ret_path: Option<String>,
}

/// Decodes a `-xx` string (`"\x61\x62"`) or annotation to bytes.
fn unhex(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len() / 4);
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() + 1 && b.get(i + 1) == Some(&b'x') {
            let h = std::str::from_utf8(&b[i + 2..i + 4]).unwrap();
            out.push(u8::from_str_radix(h, 16).unwrap());
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

/// The string argument `"..."` decoded; `None` for NULL or anything else.
fn string_arg(a: &str) -> Option<Vec<u8>> {
    let a = a.trim();
    let inner = a.strip_prefix('"')?;
    let end = inner.rfind('"')?;
    Some(unhex(&inner[..end]))
}

/// The path of a descriptor argument `3</path>` or `AT_FDCWD</cwd>`.
fn fd_path(a: &str) -> Option<String> {
    let start = a.find('<')?;
    let end = a.rfind('>')?;
    let p = String::from_utf8_lossy(&unhex(&a[start + 1..end])).into_owned();
    Some(p)
}

fn fd_num(a: &str) -> Option<i64> {
    let n = a.split('<').next()?.trim();
    n.parse().ok()
}

/// Splits a call's argument list at top-level commas.
fn split_args(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut in_str = false;
    let mut cur = String::new();
    let mut prev = ' ';
    for c in s.chars() {
        if in_str {
            cur.push(c);
            if c == '"' && prev != '\\' {
                in_str = false;
            }
            prev = c;
            continue;
        }
        match c {
            '"' => {
                in_str = true;
                cur.push(c);
            }
            '[' | '{' | '(' | '<' => {
                depth += 1;
                cur.push(c);
            }
            ']' | '}' | ')' | '>' => {
                depth -= 1;
                cur.push(c);
            }
            ',' if depth == 0 => {
                out.push(cur.trim().to_string());
                cur.clear();
            }
            _ => cur.push(c),
        }
        prev = c;
    }
    if !cur.trim().is_empty() {
        out.push(cur.trim().to_string());
    }
    out
}

/// Parses the trace into completed calls, joining `unfinished` and
/// `resumed` halves by thread.
pub fn calls(trace: &str) -> Vec<Call> {
    let mut pending: HashMap<String, String> = HashMap::new();
    let mut out = Vec::new();
    for line in trace.lines() {
        let Some((tid, rest)) = line.split_once(' ') else {
            continue;
        };
        let rest = rest.trim_start();
        if rest.starts_with("---") || rest.starts_with("+++") {
            continue;
        }
        let full = if let Some(head) = rest.strip_suffix(" <unfinished ...>") {
            pending.insert(tid.to_string(), head.to_string());
            continue;
        } else if rest.starts_with("<... ") {
            let Some(after) = rest.find(" resumed>") else {
                continue;
            };
            let tail = &rest[after + " resumed>".len()..];
            match pending.remove(tid) {
                Some(head) => format!("{head}{tail}"),
                None => continue,
            }
        } else {
            rest.to_string()
        };
        let Some(open) = full.find('(') else { continue };
        let name = full[..open].to_string();
        // The argument list ends at the last `)` followed by ` = ` (strace
        // pads resumed calls with spaces before the `=`).
        let Some(eq) = full
            .rmatch_indices(')')
            .map(|(i, _)| i)
            .find(|&i| full[i + 1..].trim_start().starts_with("= "))
        else {
            continue;
        };
        let args = split_args(&full[open + 1..eq]);
        let ret_text = full[eq + 1..].trim_start()[2..].trim();
        let num = ret_text.split(['<', ' ']).next().unwrap_or("-1");
        let ret = if let Some(h) = num.strip_prefix("0x") {
            i64::from_str_radix(h, 16).unwrap_or(-1)
        } else {
            num.parse().unwrap_or(-1)
        };
        let ret_path = if ret >= 0 && ret_text.contains('<') {
            fd_path(ret_text)
        } else {
            None
        };
        out.push(Call {
            name,
            args,
            ret,
            ret_path,
        });
    }
    out
}

/// The model while a trace is replayed: the image, the names, descriptors.
struct Replay<'a> {
    img: Image,
    fds: HashMap<i64, (usize, u64, bool)>,
    ops: Vec<Op>,
    unmodelled: Vec<String>,
    roots: &'a [PathBuf],
}

impl Replay<'_> {
    /// The root a path lies in, and its components below it.
    fn under(&self, path: &str) -> Option<(usize, Vec<String>)> {
        let p = Path::new(path.trim_end_matches(" (deleted)"));
        for (i, r) in self.roots.iter().enumerate() {
            if let Ok(rel) = p.strip_prefix(r) {
                let parts = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                return Some((i, parts));
            }
        }
        None
    }

    /// The inode at `parts` below root `r`, not following links.
    fn lookup(&self, r: usize, parts: &[String]) -> Option<usize> {
        let mut at = self.img.roots[r];
        for p in parts {
            match &self.img.inodes[at].node {
                Node::Dir { entries } => at = *entries.get(p)?,
                _ => return None,
            }
        }
        Some(at)
    }

    /// (directory inode, name) of a path under a root.
    fn parent(&self, path: &str) -> Option<(usize, String)> {
        let (r, parts) = self.under(path)?;
        let (name, dirs) = parts.split_last()?;
        Some((self.lookup(r, dirs)?, name.clone()))
    }

    /// The absolute path a call names: `dirfd` annotation plus a name.
    fn at(dirfd: &str, name: &[u8]) -> String {
        let name = String::from_utf8_lossy(name).into_owned();
        if name.starts_with('/') {
            return name;
        }
        let base = fd_path(dirfd).unwrap_or_default();
        if name.is_empty() {
            base
        } else {
            format!("{}/{name}", base.trim_end_matches('/'))
        }
    }

    fn apply(&mut self, op: Op) {
        apply(&mut self.img, &op);
        self.ops.push(op);
    }

    /// The inode behind a descriptor argument.
    fn fd_ino(&self, a: &str) -> Option<usize> {
        if let Some(n) = fd_num(a) {
            if let Some((ino, _, _)) = self.fds.get(&n) {
                return Some(*ino);
            }
        }
        let p = fd_path(a)?;
        let (r, parts) = self.under(&p)?;
        self.lookup(r, &parts)
    }

    fn new_inode(&mut self, node: Node, mode: u32) -> usize {
        let ino = self.img.inodes.len();
        let op = Op::New { ino, node, mode };
        self.apply(op);
        ino
    }

    /// Applies one call; `false` when a name or descriptor it needs is not
    /// in the model yet (threads' calls reach the trace in a slightly
    /// different order than they took effect): the caller retries it.
    fn call(&mut self, c: &Call) -> bool {
        if c.ret < 0 {
            return true;
        }
        let a = &c.args;
        let touches = |s: &Replay<'_>, p: &str| s.under(p).is_some();
        match c.name.as_str() {
            "open" | "openat" | "creat" => {
                let (path, flags) = if c.name == "openat" {
                    (
                        Self::at(&a[0], &string_arg(&a[1]).unwrap_or_default()),
                        a[2].clone(),
                    )
                } else if c.name == "creat" {
                    (
                        Self::at("", &string_arg(&a[0]).unwrap_or_default()),
                        "O_CREAT|O_TRUNC".into(),
                    )
                } else {
                    (
                        Self::at("", &string_arg(&a[0]).unwrap_or_default()),
                        a[1].clone(),
                    )
                };
                let path = c.ret_path.clone().unwrap_or(path);
                if !touches(self, &path) {
                    return true;
                }
                let (r, parts) = self.under(&path).unwrap();
                let ino = match self.lookup(r, &parts) {
                    Some(i) => i,
                    None if flags.contains("O_CREAT") => {
                        let Some((dir, name)) = self.parent(&path) else {
                            return false;
                        };
                        let mode = a
                            .last()
                            .and_then(|m| u32::from_str_radix(m.trim_start_matches('0'), 8).ok())
                            .unwrap_or(0o644);
                        let ino = self.new_inode(
                            Node::File {
                                data: Default::default(),
                            },
                            mode & !0o022,
                        );
                        self.apply(Op::Add { dir, name, ino });
                        ino
                    }
                    None => return false,
                };
                if flags.contains("O_TRUNC")
                    && matches!(self.img.inodes[ino].node, Node::File { .. })
                {
                    self.apply(Op::Truncate { ino, len: 0 });
                }
                self.fds.insert(c.ret, (ino, 0, flags.contains("O_APPEND")));
            }
            "close" => {
                if let Some(n) = fd_num(&a[0]) {
                    self.fds.remove(&n);
                }
            }
            "dup" | "dup2" | "dup3" | "fcntl" => {
                if c.name == "fcntl" && !a[1].contains("F_DUPFD") {
                    return true;
                }
                if let (Some(n), Some(entry)) = (
                    fd_num(&a[0]),
                    fd_num(&a[0]).and_then(|n| self.fds.get(&n).copied()),
                ) {
                    let _ = n;
                    self.fds.insert(c.ret, entry);
                }
            }
            "write" | "writev" | "pwrite64" | "pwritev" | "pwritev2" => {
                let Some(ino) = self.fd_ino(&a[0]) else {
                    return true;
                };
                let data: Vec<u8> = if c.name.ends_with('v') || c.name == "pwritev2" {
                    // [{iov_base="...", iov_len=N}, ...]
                    let mut d = Vec::new();
                    for part in a[1].split("iov_base=").skip(1) {
                        d.extend(
                            string_arg(part.split(", iov_len").next().unwrap_or(""))
                                .unwrap_or_default(),
                        );
                    }
                    d
                } else {
                    string_arg(&a[1]).unwrap_or_default()
                };
                let n = (c.ret as usize).min(data.len());
                let data = data[..n].to_vec();
                let off = if c.name.starts_with('p') {
                    a[3].trim().parse().unwrap_or(0)
                } else {
                    let fdn = fd_num(&a[0]).unwrap_or(-1);
                    let size = match &self.img.inodes[ino].node {
                        Node::File { data } => data.len() as u64,
                        _ => 0,
                    };
                    match self.fds.get_mut(&fdn) {
                        Some((_, off, append)) => {
                            let at = if *append { size } else { *off };
                            *off = at + n as u64;
                            at
                        }
                        None => size,
                    }
                };
                self.apply(Op::Write { ino, off, data });
            }
            "copy_file_range" | "sendfile" => {
                let (src, dst) = if c.name == "sendfile" {
                    (&a[1], &a[0])
                } else {
                    (&a[0], &a[2])
                };
                let Some(dst_ino) = self.fd_ino(dst) else {
                    return true;
                };
                let n = c.ret as usize;
                let src_n = fd_num(src).unwrap_or(-1);
                let src_off = self.fds.get(&src_n).map_or(0, |e| e.1);
                let bytes = match self.fd_ino(src).map(|i| &self.img.inodes[i].node) {
                    Some(Node::File { data }) => {
                        let s = (src_off as usize).min(data.len());
                        data[s..(s + n).min(data.len())].to_vec()
                    }
                    _ => {
                        // From outside the roots: read the real file.
                        let p = fd_path(src).unwrap_or_default();
                        let all = std::fs::read(&p).unwrap_or_default();
                        let s = (src_off as usize).min(all.len());
                        all[s..(s + n).min(all.len())].to_vec()
                    }
                };
                if let Some(e) = self.fds.get_mut(&src_n) {
                    e.1 += n as u64;
                }
                let dst_n = fd_num(dst).unwrap_or(-1);
                let off = self.fds.get(&dst_n).map_or(0, |e| e.1);
                if let Some(e) = self.fds.get_mut(&dst_n) {
                    e.1 += n as u64;
                }
                self.apply(Op::Write {
                    ino: dst_ino,
                    off,
                    data: bytes,
                });
            }
            "ftruncate" => {
                let Some(ino) = self.fd_ino(&a[0]) else {
                    return true;
                };
                let len = a[1].trim().parse().unwrap_or(0);
                self.apply(Op::Truncate { ino, len });
            }
            "fsync" | "fdatasync" => match self.fd_ino(&a[0]) {
                Some(ino) => self.apply(Op::Fsync { ino }),
                None => return !self.fd_under(&a[0]),
            },
            "syncfs" | "sync" => self.apply(Op::SyncAll),
            "mkdir" | "mkdirat" => {
                let (path, mode) = if c.name == "mkdirat" {
                    (
                        Self::at(&a[0], &string_arg(&a[1]).unwrap_or_default()),
                        &a[2],
                    )
                } else {
                    (Self::at("", &string_arg(&a[0]).unwrap_or_default()), &a[1])
                };
                if !touches(self, &path) {
                    return true;
                }
                let Some((dir, name)) = self.parent(&path) else {
                    return false;
                };
                let mode =
                    u32::from_str_radix(mode.trim().trim_start_matches('0'), 8).unwrap_or(0o755);
                let ino = self.new_inode(
                    Node::Dir {
                        entries: BTreeMap::new(),
                    },
                    mode & !0o022,
                );
                self.apply(Op::Add { dir, name, ino });
            }
            "unlink" | "unlinkat" | "rmdir" => {
                let path = if c.name == "unlinkat" {
                    Self::at(&a[0], &string_arg(&a[1]).unwrap_or_default())
                } else {
                    Self::at("", &string_arg(&a[0]).unwrap_or_default())
                };
                if !touches(self, &path) {
                    return true;
                }
                match self.parent(&path) {
                    Some((dir, name)) => self.apply(Op::Remove { dir, name }),
                    None => return false,
                }
            }
            "link" | "linkat" => {
                let (old, new) = if c.name == "linkat" {
                    (
                        Self::at(&a[0], &string_arg(&a[1]).unwrap_or_default()),
                        Self::at(&a[2], &string_arg(&a[3]).unwrap_or_default()),
                    )
                } else {
                    (
                        Self::at("", &string_arg(&a[0]).unwrap_or_default()),
                        Self::at("", &string_arg(&a[1]).unwrap_or_default()),
                    )
                };
                if !touches(self, &new) {
                    return true;
                }
                let ino = match self.under(&old) {
                    Some((r, parts)) => self.lookup(r, &parts),
                    None => None,
                };
                let (Some(ino), Some((dir, name))) = (ino, self.parent(&new)) else {
                    return false;
                };
                self.apply(Op::Add { dir, name, ino });
            }
            "rename" | "renameat" | "renameat2" => {
                let (old, new) = if c.name == "rename" {
                    (
                        Self::at("", &string_arg(&a[0]).unwrap_or_default()),
                        Self::at("", &string_arg(&a[1]).unwrap_or_default()),
                    )
                } else {
                    (
                        Self::at(&a[0], &string_arg(&a[1]).unwrap_or_default()),
                        Self::at(&a[2], &string_arg(&a[3]).unwrap_or_default()),
                    )
                };
                if c.name == "renameat2" && a.get(4).is_some_and(|f| f.contains("EXCHANGE")) {
                    self.unmodelled.push(format!("{c:?}"));
                    return true;
                }
                match (self.parent(&old), self.parent(&new)) {
                    (Some((from, old)), Some((to, new))) => {
                        self.apply(Op::Rename { from, old, to, new })
                    }
                    (None, None) if self.under(&old).is_none() && self.under(&new).is_none() => {}
                    _ => return false,
                }
            }
            "symlink" | "symlinkat" => {
                let target =
                    String::from_utf8_lossy(&string_arg(&a[0]).unwrap_or_default()).into_owned();
                let path = if c.name == "symlinkat" {
                    Self::at(&a[1], &string_arg(&a[2]).unwrap_or_default())
                } else {
                    Self::at("", &string_arg(&a[1]).unwrap_or_default())
                };
                if !touches(self, &path) {
                    return true;
                }
                let Some((dir, name)) = self.parent(&path) else {
                    return false;
                };
                let ino = self.new_inode(Node::Link { target }, 0o777);
                self.apply(Op::Add { dir, name, ino });
            }
            "fchmod" => {
                let Some(ino) = self.fd_ino(&a[0]) else {
                    return true;
                };
                let mode = u32::from_str_radix(a[1].trim().trim_start_matches('0'), 8).unwrap_or(0);
                self.apply(Op::Mode { ino, mode });
            }
            "chmod" | "fchmodat" => {
                let (path, mode) = if c.name == "fchmodat" {
                    (
                        Self::at(&a[0], &string_arg(&a[1]).unwrap_or_default()),
                        &a[2],
                    )
                } else {
                    (Self::at("", &string_arg(&a[0]).unwrap_or_default()), &a[1])
                };
                let Some((r, parts)) = self.under(&path) else {
                    return true;
                };
                if let Some(ino) = self.lookup(r, &parts) {
                    let mode =
                        u32::from_str_radix(mode.trim().trim_start_matches('0'), 8).unwrap_or(0);
                    self.apply(Op::Mode { ino, mode });
                }
            }
            "utimensat" => {
                let ino = if a[1].trim() == "NULL" {
                    self.fd_ino(&a[0])
                } else {
                    let path = Self::at(&a[0], &string_arg(&a[1]).unwrap_or_default());
                    self.under(&path)
                        .and_then(|(r, parts)| self.lookup(r, &parts))
                };
                let Some(ino) = ino else { return true };
                // [{tv_sec=A, tv_nsec=B}, {tv_sec=C, tv_nsec=D}]: the second is mtime.
                let times = &a[2];
                let Some(m) = times.split("}, {").nth(1) else {
                    return true;
                };
                if m.contains("UTIME_OMIT") {
                    return true;
                }
                let num = |k: &str| -> i64 {
                    m.split(k)
                        .nth(1)
                        .and_then(|t| {
                            t.trim_start_matches('=')
                                .split(|c: char| !(c.is_ascii_digit() || c == '-'))
                                .next()
                        })
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0)
                };
                let ns = num("tv_sec") * 1_000_000_000 + num("tv_nsec");
                self.apply(Op::Mtime { ino, ns });
            }
            _ => {}
        }
        true
    }

    /// Whether a descriptor argument names a path under the roots.
    fn fd_under(&self, a: &str) -> bool {
        fd_path(a).is_some_and(|p| self.under(&p).is_some())
    }
}

fn replay(before: &Image, trace: &str) -> (Vec<Op>, Vec<String>) {
    let roots = before.paths.clone();
    let mut r = Replay {
        img: before.clone(),
        fds: HashMap::new(),
        ops: Vec::new(),
        unmodelled: Vec::new(),
        roots: &roots,
    };
    // Calls that need a name or a descriptor the model does not have yet
    // wait until a later call made it (a thread's call printed before
    // another's that took effect first); any left at the end are reported.
    let mut waiting: Vec<Call> = Vec::new();
    for c in calls(trace) {
        if !r.call(&c) {
            waiting.push(c);
            continue;
        }
        let mut progress = true;
        while progress && !waiting.is_empty() {
            progress = false;
            let mut still = Vec::new();
            for w in waiting.drain(..) {
                if r.call(&w) {
                    progress = true;
                } else {
                    still.push(w);
                }
            }
            waiting = still;
        }
    }
    r.unmodelled
        .extend(waiting.iter().map(|c| format!("never resolved: {c:?}")));
    (r.ops, r.unmodelled)
}

/// Applies one op to an image.
pub fn apply(img: &mut Image, op: &Op) {
    match op {
        Op::New { ino, node, mode } => {
            while img.inodes.len() <= *ino {
                img.inodes.push(Inode {
                    node: Node::File {
                        data: Default::default(),
                    },
                    mode: 0,
                    mtime_ns: 0,
                });
            }
            img.inodes[*ino] = Inode {
                node: node.clone(),
                mode: *mode,
                mtime_ns: 0,
            };
        }
        Op::Add { dir, name, ino } => {
            if let Node::Dir { entries } = &mut img.inodes[*dir].node {
                entries.insert(name.clone(), *ino);
            }
        }
        Op::Remove { dir, name } => {
            if let Node::Dir { entries } = &mut img.inodes[*dir].node {
                entries.remove(name);
            }
        }
        Op::Rename { from, old, to, new } => {
            let ino = match &mut img.inodes[*from].node {
                Node::Dir { entries } => entries.remove(old),
                _ => None,
            };
            if let (Some(ino), Node::Dir { entries }) = (ino, &mut img.inodes[*to].node) {
                entries.insert(new.clone(), ino);
            }
        }
        Op::Write { ino, off, data } => {
            if let Node::File { data: d } = &mut img.inodes[*ino].node {
                let d = std::sync::Arc::make_mut(d);
                let end = *off as usize + data.len();
                if d.len() < end {
                    d.resize(end, 0);
                }
                d[*off as usize..end].copy_from_slice(data);
            }
        }
        Op::Truncate { ino, len } => {
            if let Node::File { data } = &mut img.inodes[*ino].node {
                std::sync::Arc::make_mut(data).resize(*len as usize, 0);
            }
        }
        Op::Mode { ino, mode } => img.inodes[*ino].mode = *mode,
        Op::Mtime { ino, ns } => img.inodes[*ino].mtime_ns = *ns,
        Op::Fsync { .. } | Op::SyncAll => {}
    }
}

/// How a crash state deviates from "everything the run did up to here".
#[derive(Clone, Debug)]
pub struct Crash {
    /// Ops `0..at` happened before the crash.
    pub at: usize,
    /// Not-yet-durable ops of one inode's group that were lost: those from
    /// this position in its pending list on (`None`: none lost, or all
    /// pending ops lost when `all_pending_lost`).
    pub group: Option<(usize, usize)>,
    pub all_pending_lost: bool,
    /// The first lost write is kept, cut at this many bytes (a 4 KiB
    /// multiple).
    pub torn: Option<usize>,
}

impl Run {
    /// The image of a crash state.
    pub fn state(&self, crash: &Crash) -> Image {
        // Which ops are durable at `crash.at`.
        let mut durable = vec![false; crash.at];
        let mut last_sync_all = None;
        let mut last_fsync: HashMap<usize, usize> = HashMap::new();
        for (i, op) in self.ops[..crash.at].iter().enumerate() {
            match op {
                Op::SyncAll => last_sync_all = Some(i),
                Op::Fsync { ino } => {
                    last_fsync.insert(*ino, i);
                }
                _ => {}
            }
        }
        for (i, op) in self.ops[..crash.at].iter().enumerate() {
            let groups = op.groups();
            durable[i] = groups.is_empty()
                || last_sync_all.is_some_and(|s| s > i)
                || groups
                    .iter()
                    .all(|g| last_fsync.get(g).is_some_and(|s| *s > i));
        }
        // The pending ops of each group, in order.
        let mut pending: HashMap<usize, Vec<usize>> = HashMap::new();
        for (i, op) in self.ops[..crash.at].iter().enumerate() {
            if !durable[i] {
                for g in op.groups() {
                    pending.entry(g).or_default().push(i);
                }
            }
        }
        let mut lost: HashSet<usize> = HashSet::new();
        if crash.all_pending_lost {
            lost.extend(pending.values().flatten());
        }
        let mut torn_at = None;
        if let Some((g, from)) = crash.group {
            if let Some(list) = pending.get(&g) {
                lost.extend(list.iter().skip(from));
                if crash.torn.is_some() {
                    torn_at = list.get(from).copied();
                }
            }
        }
        let mut img = self.before.clone();
        for (i, op) in self.ops[..crash.at].iter().enumerate() {
            if Some(i) == torn_at {
                if let (Op::Write { ino, off, data }, Some(cut)) = (op, crash.torn) {
                    apply(
                        &mut img,
                        &Op::Write {
                            ino: *ino,
                            off: *off,
                            data: data[..cut.min(data.len())].to_vec(),
                        },
                    );
                }
                continue;
            }
            if !lost.contains(&i) {
                apply(&mut img, op);
            }
        }
        img
    }

    /// Every crash state the model allows, one deviation at a time: at each
    /// op, everything so far, nothing not yet durable, and for each inode
    /// with pending ops each shorter prefix of them (a write cut at 4 KiB).
    pub fn crashes(&self) -> Vec<Crash> {
        let mut out = Vec::new();
        let mut pending: HashMap<usize, usize> = HashMap::new();
        let mut since_sync: Vec<usize> = Vec::new();
        for at in 1..=self.ops.len() {
            let op = &self.ops[at - 1];
            match op {
                Op::SyncAll => {
                    pending.clear();
                    since_sync.clear();
                }
                Op::Fsync { ino } => {
                    pending.remove(ino);
                }
                _ => {
                    for g in op.groups() {
                        *pending.entry(g).or_default() += 1;
                    }
                }
            }
            out.push(Crash {
                at,
                group: None,
                all_pending_lost: false,
                torn: None,
            });
            out.push(Crash {
                at,
                group: None,
                all_pending_lost: true,
                torn: None,
            });
            let mut groups: Vec<_> = pending.iter().map(|(g, n)| (*g, *n)).collect();
            groups.sort();
            for (g, n) in groups {
                for from in 0..n {
                    out.push(Crash {
                        at,
                        group: Some((g, from)),
                        all_pending_lost: false,
                        torn: None,
                    });
                }
                if let Op::Write { ino, data, .. } = op {
                    if *ino == g && data.len() > 4096 {
                        out.push(Crash {
                            at,
                            group: Some((g, n - 1)),
                            all_pending_lost: false,
                            torn: Some(4096),
                        });
                    }
                }
            }
        }
        out
    }
}

/// A digest of what an image shows under its roots (names, contents,
/// modes, mtimes, links; hard links by which names share an inode).
pub fn digest(img: &Image) -> blake3::Hash {
    let mut h = blake3::Hasher::new();
    let mut seen: HashMap<usize, usize> = HashMap::new();
    fn walk(
        img: &Image,
        ino: usize,
        h: &mut blake3::Hasher,
        seen: &mut HashMap<usize, usize>,
        depth: usize,
    ) {
        if depth > 64 {
            return;
        }
        let n = seen.len();
        let first = *seen.entry(ino).or_insert(n);
        h.update(&(first as u64).to_le_bytes());
        let i = &img.inodes[ino];
        h.update(&i.mode.to_le_bytes());
        h.update(&i.mtime_ns.to_le_bytes());
        match &i.node {
            Node::File { data } => {
                h.update(b"f");
                h.update(&(data.len() as u64).to_le_bytes());
                h.update(&data[..]);
            }
            Node::Link { target } => {
                h.update(b"l");
                h.update(target.as_bytes());
            }
            Node::Dir { entries } => {
                h.update(b"d");
                for (name, child) in entries {
                    h.update(name.as_bytes());
                    h.update(b"\0");
                    walk(img, *child, h, seen, depth + 1);
                }
                h.update(b"/");
            }
        }
    }
    for &r in &img.roots {
        walk(img, r, &mut h, &mut seen, 0);
    }
    h.finalize()
}

/// Writes an image onto its real directories: each root is emptied and
/// filled with what the image holds there.
pub fn materialize(img: &Image) {
    for (path, &root) in img.paths.iter().zip(&img.roots) {
        if path.exists() {
            for e in std::fs::read_dir(path).unwrap() {
                let p = e.unwrap().path();
                let m = std::fs::symlink_metadata(&p).unwrap();
                if m.is_dir() {
                    make_writable(&p);
                    std::fs::remove_dir_all(&p).unwrap();
                } else {
                    std::fs::remove_file(&p).unwrap();
                }
            }
        } else {
            std::fs::create_dir_all(path).unwrap();
        }
        let mut made: HashMap<usize, PathBuf> = HashMap::new();
        let mut dirs: Vec<(PathBuf, u32, i64)> = Vec::new();
        fill(img, root, path, &mut made, &mut dirs, 0);
        let i = &img.inodes[root];
        dirs.push((path.clone(), i.mode, i.mtime_ns));
        // Deepest first, so that a read-only parent is set last.
        dirs.sort_by_key(|(p, _, _)| std::cmp::Reverse(p.components().count()));
        for (p, mode, mtime) in dirs {
            set_mtime(&p, mtime, false);
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        }
    }
}

fn make_writable(p: &Path) {
    for e in walkdir::WalkDir::new(p).into_iter().flatten() {
        if e.file_type().is_dir() {
            let _ = std::fs::set_permissions(e.path(), std::fs::Permissions::from_mode(0o700));
        }
    }
}

fn fill(
    img: &Image,
    dir: usize,
    at: &Path,
    made: &mut HashMap<usize, PathBuf>,
    dirs: &mut Vec<(PathBuf, u32, i64)>,
    depth: usize,
) {
    let Node::Dir { entries } = &img.inodes[dir].node else {
        return;
    };
    if depth > 64 {
        return;
    }
    for (name, &child) in entries {
        let p = at.join(name);
        let i = &img.inodes[child];
        match &i.node {
            Node::Dir { .. } => {
                if made.contains_key(&child) {
                    continue; // a directory in two places: once only
                }
                made.insert(child, p.clone());
                std::fs::create_dir(&p).unwrap();
                fill(img, child, &p, made, dirs, depth + 1);
                dirs.push((p, i.mode, i.mtime_ns));
            }
            Node::Link { target } => {
                std::os::unix::fs::symlink(target, &p).unwrap();
                set_mtime(&p, i.mtime_ns, true);
            }
            Node::File { data } => {
                if let Some(first) = made.get(&child) {
                    std::fs::hard_link(first, &p).unwrap();
                    continue;
                }
                std::fs::write(&p, &**data).unwrap();
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(i.mode)).unwrap();
                set_mtime(&p, i.mtime_ns, false);
                made.insert(child, p);
            }
        }
    }
}

fn set_mtime(p: &Path, ns: i64, nofollow: bool) {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    let times = [
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        libc::timespec {
            tv_sec: ns.div_euclid(1_000_000_000),
            tv_nsec: ns.rem_euclid(1_000_000_000),
        },
    ];
    let flags = if nofollow {
        libc::AT_SYMLINK_NOFOLLOW
    } else {
        0
    };
    // SAFETY: a valid NUL-terminated path and two timespecs.
    unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), flags) };
}
