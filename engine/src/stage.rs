//! Staged snapshots: the node is down for seconds, not for the upload.
//!
//! Stop the node, wait until no database under the source is open, freeze
//! a view of the source beside it on the same filesystem, start the node,
//! then snapshot the frozen view while the node runs. LevelDB and RocksDB
//! never modify a table file (`*.ldb`, `*.sst`) once written and never
//! reuse a file number, so those are hard-linked: a later compaction that
//! deletes one only removes the node's name for it. Everything else —
//! `MANIFEST-*`, `CURRENT`, `*.log`, `LOG`, `OPTIONS-*` and any file that is
//! not a table — is copied, because the node appends to or replaces it.
//! Where a hard link is impossible (another filesystem, a filesystem
//! without links), the file is copied and the report says so.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, UNIX_EPOCH};

use crate::cache::{LocalState, Stat};
use crate::error::{Error, Result};
use crate::live;
use crate::progress::Progress;
use crate::repo::{now_unix_ns, Repository};
use crate::snapshot::{self, SnapshotOptions, SnapshotReport, RACY};

#[derive(Debug, Clone)]
pub struct StageOptions {
    /// Shell command that stops the node (run with `sh -c`).
    pub stop_cmd: String,
    /// Shell command that starts it again.
    pub start_cmd: String,
    /// How long to wait, after the stop command, for the databases' locks
    /// to be released.
    pub lock_timeout: Duration,
}

/// A frozen view of the source. Removed when dropped, on success or not.
pub struct Stage {
    /// The staged copy; its relative paths are the source's.
    pub dir: PathBuf,
    /// Relative paths that are hard links to table files.
    pub hard_linked: HashSet<String>,
    /// Copied files whose content had settled before the node was stopped,
    /// with the original's stat (see `SnapshotOptions::origin`).
    pub origin: HashMap<String, Stat>,
    pub report: StageReport,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct StageReport {
    /// From running the stop command to the start command's return.
    #[serde(serialize_with = "seconds")]
    pub downtime: Duration,
    /// Of the downtime, the time spent waiting for locks to be released.
    #[serde(serialize_with = "seconds")]
    pub lock_wait: Duration,
    /// Of the downtime, the time spent building the stage.
    #[serde(serialize_with = "seconds")]
    pub staging: Duration,
    pub files_linked: u64,
    pub files_copied: u64,
    pub bytes_copied: u64,
    /// Table files copied because a hard link was impossible, and why.
    pub link_fallbacks: u64,
    pub link_fallback_reason: Option<String>,
    /// Set when the start command failed: the node is not running.
    pub start_error: Option<String>,
}

fn seconds<S: serde::Serializer>(d: &Duration, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_f64((d.as_secs_f64() * 1000.0).round() / 1000.0)
}

impl Stage {
    /// Removes the stage now, so that a failure can be reported: a stage
    /// left behind holds links to table files the node has since deleted,
    /// and keeps their space in use.
    pub fn remove(mut self) -> Result<()> {
        let root = self.root();
        self.dir = PathBuf::new();
        remove_stage(&root)
    }

    fn root(&self) -> PathBuf {
        self.dir.parent().map(Path::to_path_buf).unwrap_or_default()
    }
}

impl Drop for Stage {
    fn drop(&mut self) {
        // After `remove`, or on the way out of an error.
        if !self.dir.as_os_str().is_empty() {
            let _ = remove_stage(&self.root());
        }
    }
}

/// Removes a stage directory, read-only directories copied from the source
/// included.
fn remove_stage(root: &Path) -> Result<()> {
    if fs::symlink_metadata(root).is_err() {
        return Ok(());
    }
    for e in walkdir::WalkDir::new(root).into_iter().flatten() {
        if e.file_type().is_dir() {
            let _ = fs::set_permissions(e.path(), fs::Permissions::from_mode(0o700));
        }
    }
    fs::remove_dir_all(root).map_err(Error::io("remove stage", root))
}

/// Stops the node, stages the source, starts the node, and snapshots the
/// stage under the source's own name. The stage is removed before this
/// returns, whatever happened. A failed start command does not stop the
/// snapshot; it is in the returned report, for the caller to fail loudly.
pub fn snapshot_staged(
    repo: &Repository,
    opts: &SnapshotOptions,
    stage_opts: &StageOptions,
    state: Option<&LocalState>,
    progress: &dyn Progress,
) -> Result<(SnapshotReport, StageReport)> {
    let source = fs::canonicalize(&opts.source).map_err(Error::io("open source", &opts.source))?;
    let staged = stage(&source, &opts.includes, stage_opts)?;
    let mut from_stage = opts.clone();
    from_stage.source = staged.dir.clone();
    from_stage.label = Some(source);
    from_stage.hard_linked = staged.hard_linked.clone();
    from_stage.origin = staged.origin.clone();
    let result = snapshot::snapshot_with_state(repo, &from_stage, state, progress);
    let report = staged.report.clone();
    let removed = staged.remove();
    let mut snap = match result {
        Ok(s) => s,
        Err(e) => {
            return Err(match report.start_error {
                Some(start) => {
                    Error::Refused(format!("{e}; and the {start}: THE NODE IS NOT RUNNING"))
                }
                None => e,
            })
        }
    };
    if let Err(e) = removed {
        snap.warnings
            .push(format!("{e}: remove it by hand, it holds disk space"));
    }
    if let Some(reason) = &report.link_fallback_reason {
        snap.warnings.push(format!(
            "{} table files were copied, not hard-linked: {reason}",
            report.link_fallbacks
        ));
    }
    Ok((snap, report))
}

/// Where the stage of `source` lives: beside it, so on the same filesystem.
pub fn stage_root(source: &Path) -> Result<PathBuf> {
    let name = source.file_name().ok_or_else(|| {
        Error::Refused(format!("source {} has no directory name", source.display()))
    })?;
    let parent = source
        .parent()
        .expect("a path with a file name has a parent");
    Ok(parent.join(format!(".{}.blocksnap-stage", name.to_string_lossy())))
}

/// Runs a stop or start command with `sh -c`. Its output goes to an
/// unnamed temporary file, not a pipe: a start command that leaves the node
/// running in the background (`node &`) hands it our descriptors, and
/// reading a pipe to its end would wait for the node to exit.
fn run(what: &'static str, cmd: &str) -> std::result::Result<(), String> {
    let could_not = |e: std::io::Error| format!("{what} command {cmd:?} could not run: {e}");
    let mut output = tempfile::tempfile().map_err(could_not)?;
    let status = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stdin(Stdio::null())
        .stdout(output.try_clone().map_err(could_not)?)
        .stderr(output.try_clone().map_err(could_not)?)
        .status()
        .map_err(could_not)?;
    if status.success() {
        return Ok(());
    }
    let mut text = String::new();
    let _ = output
        .seek(SeekFrom::Start(0))
        .and_then(|_| output.take(64 * 1024).read_to_string(&mut text));
    let tail = text
        .trim_end()
        .lines()
        .rev()
        .take(5)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect::<Vec<_>>()
        .join(" | ");
    Err(format!(
        "{what} command {cmd:?} failed ({status}){}",
        if tail.is_empty() {
            String::new()
        } else {
            format!(": {tail}")
        }
    ))
}

/// Stops the node, stages `source` (only `includes` when given), starts
/// the node. Everything that can be checked is checked before the stop
/// command runs. Once it has succeeded, the start command runs whatever
/// happens next (an error, a lock never released, even a panic), so the
/// node is not left down; a failed start command is reported in
/// [`StageReport::start_error`] and the stage is still returned, so that
/// the snapshot is not lost.
pub fn stage(source: &Path, includes: &[String], opts: &StageOptions) -> Result<Stage> {
    let source = fs::canonicalize(source).map_err(Error::io("open source", source))?;
    let roots = include_roots(&source, includes)?;
    let root = stage_root(&source)?;
    // A stage left by a run that was killed: nothing in it is worth keeping.
    remove_stage(&root)?;
    fs::create_dir(&root).map_err(Error::io("create stage", &root))?;
    let mut stage = Stage {
        dir: root.join(source.file_name().expect("checked by stage_root")),
        hard_linked: HashSet::new(),
        origin: HashMap::new(),
        report: StageReport::default(),
    };

    let started = Instant::now();
    let stopping_at = now_unix_ns() as i64;
    run("stop", &opts.stop_cmd).map_err(Error::Refused)?;
    let mut restart = Restart(Some(opts.start_cmd.clone()));
    let frozen = freeze(&source, &roots, opts, stopping_at, &mut stage);
    let start = restart.now();
    stage.report.downtime = started.elapsed();
    match frozen {
        Ok(()) => {
            stage.report.start_error = start.err();
            Ok(stage)
        }
        Err(e) => Err(Error::Refused(match start {
            Ok(()) => format!("{e}; nothing was snapshotted, and the start command was run"),
            Err(s) => format!("{e}; nothing was snapshotted, and the {s}: THE NODE IS NOT RUNNING"),
        })),
    }
}

/// Runs the start command once: when asked, or else when dropped.
struct Restart(Option<String>);

impl Restart {
    fn now(&mut self) -> std::result::Result<(), String> {
        match self.0.take() {
            Some(cmd) => run("start", &cmd),
            None => Ok(()),
        }
    }
}

impl Drop for Restart {
    fn drop(&mut self) {
        if let Err(e) = self.now() {
            eprintln!("blocksnap: ERROR: {e}: THE NODE IS NOT RUNNING");
        }
    }
}

/// The relative roots to stage: the checked includes without duplicates or
/// includes inside other includes (a second pass over a file would find its
/// link already there), or the whole source.
fn include_roots(source: &Path, includes: &[String]) -> Result<Vec<PathBuf>> {
    let mut incs = Vec::new();
    for inc in includes {
        incs.push(snapshot::checked_include(source, inc)?.to_string());
    }
    incs.sort();
    incs.dedup();
    let nested = |i: &String| {
        incs.iter()
            .any(|o| o != i && i.starts_with(o.as_str()) && i.as_bytes()[o.len()] == b'/')
    };
    let mut roots: Vec<PathBuf> = incs
        .iter()
        .filter(|i| !nested(i))
        .map(PathBuf::from)
        .collect();
    if roots.is_empty() {
        roots.push(PathBuf::new());
    }
    Ok(roots)
}

/// With the node stopped: waits for its locks to be released, then builds
/// the stage.
fn freeze(
    source: &Path,
    roots: &[PathBuf],
    opts: &StageOptions,
    stopping_at: i64,
    stage: &mut Stage,
) -> Result<()> {
    let lock_wait = Instant::now();
    loop {
        let live = live::find(source)?;
        if live.is_empty() {
            break;
        }
        if lock_wait.elapsed() > opts.lock_timeout {
            let names: Vec<String> = live.iter().map(|l| l.to_string()).collect();
            return Err(Error::Refused(format!(
                "databases still open {} s after the stop command: {}",
                opts.lock_timeout.as_secs(),
                names.join("; ")
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    stage.report.lock_wait = lock_wait.elapsed();
    let staging = Instant::now();
    let dir = stage.dir.clone();
    let built = build(
        source,
        &dir,
        roots,
        stopping_at - RACY.as_nanos() as i64,
        stage,
    );
    stage.report.staging = staging.elapsed();
    built
}

fn is_table(name: &str) -> bool {
    name.ends_with(".ldb") || name.ends_with(".sst")
}

fn build(
    source: &Path,
    dir: &Path,
    roots: &[PathBuf],
    settled_before_ns: i64,
    stage: &mut Stage,
) -> Result<()> {
    let roots = roots.iter().map(|r| source.join(r));
    // Directories get their modes and times last, deepest first, so that
    // a read-only directory does not block its own contents.
    let mut dirs: Vec<(PathBuf, fs::Metadata)> = Vec::new();
    let root_meta = fs::metadata(source).map_err(Error::io("stat", source))?;
    fs::create_dir_all(dir).map_err(Error::io("create", dir))?;
    dirs.push((dir.to_path_buf(), root_meta));
    for start in roots {
        // The include's ancestors, as directories.
        let rel_start = start.strip_prefix(source).unwrap_or(Path::new(""));
        for ancestor in rel_start.ancestors().skip(1) {
            if ancestor.as_os_str().is_empty() {
                continue;
            }
            let (from, to) = (source.join(ancestor), dir.join(ancestor));
            if !to.exists() {
                let meta = fs::symlink_metadata(&from).map_err(Error::io("stat", &from))?;
                fs::create_dir_all(&to).map_err(Error::io("create", &to))?;
                dirs.push((to, meta));
            }
        }
        for entry in walkdir::WalkDir::new(&start).follow_links(false) {
            let entry = entry.map_err(|e| Error::Io {
                op: "walk",
                path: e.path().unwrap_or(&start).to_path_buf(),
                source: e.into(),
            })?;
            let Ok(rel) = entry.path().strip_prefix(source) else {
                continue;
            };
            if rel.as_os_str().is_empty() {
                continue;
            }
            let to = dir.join(rel);
            let meta = entry.metadata().map_err(|e| Error::Io {
                op: "stat",
                path: entry.path().to_path_buf(),
                source: e.into(),
            })?;
            let ft = meta.file_type();
            if ft.is_dir() {
                fs::create_dir(&to).map_err(Error::io("create", &to))?;
                dirs.push((to, meta));
            } else if ft.is_symlink() {
                let target =
                    fs::read_link(entry.path()).map_err(Error::io("read symlink", entry.path()))?;
                std::os::unix::fs::symlink(target, &to)
                    .map_err(Error::io("create symlink", &to))?;
                crate::restore::set_link_mtime(
                    &to,
                    meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
                )?;
            } else if ft.is_file() {
                let name = entry.file_name().to_string_lossy();
                if is_table(&name) {
                    match fs::hard_link(entry.path(), &to) {
                        Ok(()) => {
                            stage.report.files_linked += 1;
                            stage.hard_linked.insert(rel.to_string_lossy().into_owned());
                            continue;
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                            return Err(Error::io("link into stage", &to)(e));
                        }
                        // Another filesystem, no permission, too many links.
                        Err(e) => {
                            stage.report.link_fallbacks += 1;
                            stage.report.link_fallback_reason.get_or_insert_with(|| {
                                format!("hard link {} failed ({e}); copied instead", to.display())
                            });
                        }
                    }
                }
                copy(entry.path(), &to, &meta)?;
                let stat = Stat::of(&meta);
                // A file that changed while it was copied makes a torn
                // copy: the node is not as stopped as the stop command said.
                let after =
                    fs::symlink_metadata(entry.path()).map_err(Error::io("stat", entry.path()))?;
                if !Stat::of(&after).same(&stat, false) {
                    return Err(Error::SourceChanged {
                        path: entry.path().to_path_buf(),
                        detail: "changed while it was copied into the stage, after the stop command; is the node stopped?".into(),
                    });
                }
                if stat.ctime_ns < settled_before_ns {
                    stage
                        .origin
                        .insert(rel.to_string_lossy().into_owned(), stat);
                }
                stage.report.files_copied += 1;
                stage.report.bytes_copied += meta.len();
            }
            // Sockets, fifos and devices are skipped by the snapshot too.
        }
    }
    // Times first: a mode without read permission would stop the open
    // that sets them.
    for (path, meta) in dirs.iter().rev() {
        let f = fs::File::open(path).map_err(Error::io("open", path))?;
        set_mtime(&f, path, meta)?;
        fs::set_permissions(path, fs::Permissions::from_mode(meta.mode() & 0o7777))
            .map_err(Error::io("set mode of", path))?;
    }
    Ok(())
}

/// Copies into a new file: never through an existing one, which could be a
/// hard link to the node's own file.
fn copy(from: &Path, to: &Path, meta: &fs::Metadata) -> Result<()> {
    let mut src = fs::File::open(from).map_err(Error::io("open", from))?;
    let mut dst = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(to)
        .map_err(Error::io("create in stage", to))?;
    std::io::copy(&mut src, &mut dst).map_err(Error::io("copy to stage", from))?;
    set_mtime(&dst, to, meta)?;
    dst.set_permissions(fs::Permissions::from_mode(meta.mode() & 0o7777))
        .map_err(Error::io("set mode of", to))
}

fn set_mtime(f: &fs::File, path: &Path, meta: &fs::Metadata) -> Result<()> {
    let mtime = UNIX_EPOCH
        + Duration::new(
            meta.mtime().max(0) as u64,
            meta.mtime_nsec().clamp(0, 999_999_999) as u32,
        );
    f.set_times(fs::FileTimes::new().set_modified(mtime))
        .map_err(Error::io("set mtime of", path))
}
