//! The source as a snapshot reads it: the roots (the source or its
//! includes), and a walk through directory descriptors that never follows
//! a link the node's user made and skips blocksnap's own working entries.

use std::collections::HashMap;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::format::path as mpath;
use crate::format::reserved;
use crate::sys::fsx::{self, DirFd, EntryType, Meta};
use crate::sys::interrupt;

use super::options::Item;

/// Where a walk starts: the source itself (`rel` empty) or an include.
#[derive(Debug, Clone)]
pub(crate) struct Root {
    pub rel: String,
    pub kind: RootKind,
}

#[derive(Debug, Clone)]
pub(crate) enum RootKind {
    /// A directory, open: the source, an include, or the directory an
    /// include's symlink leads to (followed once, recorded as a directory).
    Dir(Arc<DirFd>),
    /// An include that is a regular file, in its parent directory.
    File { parent: Arc<DirFd>, name: String },
}

impl Root {
    /// The directory the walk of this root reads.
    pub(crate) fn dir(&self) -> Option<&Arc<DirFd>> {
        match &self.kind {
            RootKind::Dir(d) => Some(d),
            RootKind::File { .. } => None,
        }
    }
}

/// The walk's roots: the whole source, or the checked includes without
/// duplicates and without includes inside other includes, each opened from
/// the source's descriptor. An include's ancestors must be real
/// directories; the include itself may be a directory, a regular file, or
/// a symlink to a directory — followed only when it belongs to root or to
/// the user blocksnap runs as, and resolved by the same rule (a link the
/// node's user made is never followed: it could lead to root-only files).
pub(crate) fn roots(source: &Arc<DirFd>, includes: &[String]) -> Result<Vec<Root>> {
    if includes.is_empty() {
        return Ok(vec![Root {
            rel: String::new(),
            kind: RootKind::Dir(source.clone()),
        }]);
    }
    let mut incs = Vec::new();
    for inc in includes {
        let inc = inc.trim_end_matches('/').trim_start_matches("./");
        mpath::check(inc).map_err(Error::format(format!("--include {inc}")))?;
        incs.push(inc.to_string());
    }
    incs.sort();
    incs.dedup();
    let nested = |i: &String| {
        incs.iter()
            .any(|o| o != i && i.starts_with(o.as_str()) && i.as_bytes()[o.len()] == b'/')
    };
    let mut out = Vec::new();
    for inc in incs.iter().filter(|i| !nested(i)) {
        let (parent_rel, name) = match inc.rsplit_once('/') {
            Some((p, n)) => (Some(p), n),
            None => (None, inc.as_str()),
        };
        let parent = match parent_rel {
            None => source.clone(),
            Some(p) => Arc::new(source.open_path(p).map_err(|e| {
                if e.raw_os_error() == Some(libc::ENOENT) {
                    Error::IncludeMissing { path: inc.clone() }
                } else {
                    Error::Refused(format!(
                        "--include {inc}: {p} is not a directory under the source (a symlink is followed only when it is the include itself): {e}"
                    ))
                }
            })?),
        };
        let meta = parent
            .stat(name)
            .map_err(Error::io("stat", parent.join(name)))?
            .ok_or_else(|| Error::IncludeMissing { path: inc.clone() })?;
        let kind = match meta.kind {
            EntryType::Dir => RootKind::Dir(Arc::new(
                parent
                    .open_dir(name)
                    .map_err(Error::io("open", parent.join(name)))?,
            )),
            EntryType::File => RootKind::File {
                parent,
                name: name.to_string(),
            },
            EntryType::Symlink => {
                let at = parent.join(name);
                if meta.uid != 0 && meta.uid != fsx::euid() {
                    return Err(Error::Refused(format!(
                        "--include {inc}: {} is a symlink owned by uid {}, neither root nor the user \
                         blocksnap runs as: not followed (whoever owns it could point it at any file)",
                        at.display(),
                        meta.uid
                    )));
                }
                let target = parent
                    .read_link(name)
                    .map_err(Error::io("read symlink", &at))?;
                let dir = parent.open_trusted_from(&target).map_err(|e| {
                    Error::Refused(format!(
                        "--include {inc}: {} -> {} does not lead to a directory by links of root or \
                         this user only: {e}",
                        at.display(),
                        target.display()
                    ))
                })?;
                RootKind::Dir(Arc::new(dir))
            }
            EntryType::Other => {
                return Err(Error::Refused(format!(
                    "--include {inc}: not a directory, a regular file or a symlink to a directory"
                )))
            }
        };
        out.push(Root {
            rel: inc.clone(),
            kind,
        });
    }
    Ok(out)
}

/// Whether a name is one of blocksnap's own working entries (a stage, a
/// restore's staging directory or journal), which no snapshot records.
pub(crate) fn is_reserved(name: &str) -> bool {
    name.starts_with(reserved::RESERVED_PREFIX)
}

/// Walks the roots through descriptors, never following a symlink except
/// where a root is one (opened above) and the `regions` a stage made (whose
/// descriptors it gives). Regular files, directories and symlinks are
/// returned (manifest paths still to be set), with the directories they
/// are read through; other kinds are skipped with one warning.
pub(super) fn walk(
    source: &Arc<DirFd>,
    roots: Vec<Root>,
    regions: Option<&HashMap<String, Arc<DirFd>>>,
    warnings: &mut Vec<String>,
) -> Result<(Vec<Item>, Vec<Arc<DirFd>>)> {
    let mut found: Vec<Item> = Vec::new();
    let mut skipped: Vec<String> = Vec::new();
    let mut leftovers: Vec<String> = Vec::new();
    let mut bases: Vec<Arc<DirFd>> = vec![source.clone()];
    found.extend(include_ancestors(source, &roots)?);
    // (base index, its path below the source) still to walk.
    let mut queue: Vec<(usize, String)> = Vec::new();
    for root in roots {
        match root.kind {
            RootKind::File { parent, name } => {
                let meta = parent
                    .stat(&name)
                    .map_err(Error::io("stat", parent.join(&name)))?
                    .ok_or_else(|| Error::IncludeMissing {
                        path: root.rel.clone(),
                    })?;
                bases.push(parent.clone());
                found.push(Item {
                    path: String::new(),
                    abs: parent.join(&name),
                    rel: root.rel,
                    meta,
                    link: None,
                    base: bases.len() - 1,
                    dir: String::new(),
                    name,
                });
            }
            RootKind::Dir(_) if root.rel.is_empty() => queue.push((0, String::new())),
            RootKind::Dir(dir) => {
                // The include itself: a directory entry with the metadata of
                // the directory it is (or its link leads to), read through
                // its own descriptor (an empty name: the base itself).
                let meta = Meta::of(dir.as_fd()).map_err(Error::io("stat", dir.path()))?;
                bases.push(dir);
                found.push(Item {
                    path: String::new(),
                    abs: source.join(&root.rel),
                    rel: root.rel.clone(),
                    meta,
                    link: None,
                    base: bases.len() - 1,
                    dir: String::new(),
                    name: String::new(),
                });
                queue.push((bases.len() - 1, root.rel));
            }
        }
    }
    while let Some((base, prefix)) = queue.pop() {
        let dir = bases[base].clone();
        let mut visit = |e: &fsx::Walked<'_>| -> Result<bool> {
            interrupt::check()?;
            let rel = if prefix.is_empty() {
                e.rel.clone()
            } else {
                format!("{prefix}/{}", e.rel)
            };
            let below = mpath::parent(&e.rel).unwrap_or("").to_string();
            if is_reserved(&e.name) {
                if e.name != crate::format::reserved::STAGE_DIR {
                    leftovers.push(rel);
                }
                return Ok(false);
            }
            let abs = dir.join(&e.rel);
            let item =
                |meta: Meta, link: Option<String>, base: usize, dir: String, name: String| Item {
                    path: String::new(),
                    rel: rel.clone(),
                    abs: abs.clone(),
                    meta,
                    link,
                    base,
                    dir,
                    name,
                };
            match e.meta.kind {
                EntryType::Symlink => {
                    if let Some(region) = regions.and_then(|r| r.get(&rel)) {
                        let meta =
                            Meta::of(region.as_fd()).map_err(Error::io("stat", region.path()))?;
                        bases.push(region.clone());
                        let b = bases.len() - 1;
                        found.push(item(meta, None, b, String::new(), String::new()));
                        queue.push((b, rel.clone()));
                        return Ok(false);
                    }
                    let target = e
                        .dir
                        .read_link(&e.name)
                        .map_err(Error::io("read symlink", &abs))?;
                    let target = target.to_str().ok_or_else(|| {
                        Error::Refused(format!("{}: symlink target is not UTF-8", abs.display()))
                    })?;
                    found.push(item(
                        e.meta,
                        Some(target.to_string()),
                        base,
                        below,
                        e.name.clone(),
                    ));
                    Ok(false)
                }
                EntryType::File | EntryType::Dir => {
                    found.push(item(e.meta, None, base, below, e.name.clone()));
                    Ok(true)
                }
                EntryType::Other => {
                    skipped.push(rel);
                    Ok(false)
                }
            }
        };
        fsx::walk(&dir, "", &mut visit)?;
    }
    warnings.extend(walk_warnings(&skipped, &leftovers));
    Ok((found, bases))
}

/// The ancestors of each include, as directory entries (an include
/// `a/b/c` records `a` and `a/b` too, with their own metadata).
fn include_ancestors(source: &Arc<DirFd>, roots: &[Root]) -> Result<Vec<Item>> {
    let mut found = Vec::new();
    for root in roots {
        // The include's ancestors become directory entries.
        let mut ancestor = mpath::parent(&root.rel);
        while let Some(dir) = ancestor {
            let (parent, name) = match dir.rsplit_once('/') {
                Some((p, n)) => (p.to_string(), n.to_string()),
                None => (String::new(), dir.to_string()),
            };
            let at = if parent.is_empty() {
                source.clone()
            } else {
                Arc::new(
                    source
                        .open_path(&parent)
                        .map_err(Error::io("open", source.join(&parent)))?,
                )
            };
            let meta = at
                .stat(&name)
                .map_err(Error::io("stat", at.join(&name)))?
                .ok_or_else(|| Error::IncludeMissing {
                    path: dir.to_string(),
                })?;
            found.push(Item {
                path: String::new(),
                rel: dir.to_string(),
                abs: source.join(dir),
                meta,
                link: None,
                base: 0,
                dir: parent,
                name,
            });
            ancestor = mpath::parent(dir);
        }
    }
    Ok(found)
}

/// What a walk skipped, said once each.
fn walk_warnings(skipped: &[String], leftovers: &[String]) -> Vec<String> {
    let mut warnings = Vec::new();
    if !skipped.is_empty() {
        warnings.push(format!(
            "skipped {} entr{} that {} not a regular file, directory or symlink: {}",
            skipped.len(),
            if skipped.len() == 1 { "y" } else { "ies" },
            if skipped.len() == 1 { "is" } else { "are" },
            sample(skipped)
        ));
    }
    if !leftovers.is_empty() {
        warnings.push(format!(
            "skipped blocksnap's own working entries (left by an interrupted run?): {}",
            sample(leftovers)
        ));
    }
    warnings
}

/// Up to five names, and how many more.
pub(crate) fn sample(names: &[String]) -> String {
    let mut s = names.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
    if names.len() > 5 {
        s.push_str(&format!(" and {} more", names.len() - 5));
    }
    s
}
