//! Staged snapshots: the node is down for seconds, not for the upload.
//!
//! Stop the node, wait until no database under the source is open, freeze
//! a view of the source on the same filesystem, start the node, then
//! snapshot the frozen view while the node runs. LevelDB and RocksDB never
//! modify a table file (`*.ldb`, `*.sst`) once written and never reuse a
//! file number, so those are hard-linked: a later compaction that deletes
//! one only removes the node's name for it. Everything else — `MANIFEST-*`,
//! `CURRENT`, `*.log`, `LOG` and any file that is not a table — is copied,
//! because the node appends to or replaces it.
//!
//! **Where the view lives.** Hard links cannot cross filesystems, so the
//! view is built *inside* the directory it mirrors: `<source>/.blocksnap-stage`
//! (on the source's filesystem even when the source is a mount point of its
//! own). A part of the source on another filesystem — a mount point below
//! the source, or an `--include` that is a symlink to another disk — is a
//! region of its own with its own `.blocksnap-stage` inside it, which the
//! main view links to (the snapshot follows exactly those links, recording
//! directories). So every table file is hard-linked wherever it lives; a
//! copy happens only where a link is refused (no permission, too many
//! links), and the report says so.
//!
//! **Safety.** Everything that can be checked is checked before the stop
//! command runs: the source is walked and checked as the snapshot will
//! check it, and every stage directory is created (or a leftover of a
//! killed run reclaimed: it must be a real directory owned by this user) and
//! locked with `flock`, so that a second staged snapshot of the same source
//! is refused before it stops anything. Stages are built and removed through
//! directory descriptors only ([`crate::fsx`]): nothing planted in them is
//! followed. Once the stop command has been run — even if it failed, since
//! it may have stopped part of the node — the start command runs whatever
//! happens next: an error, a lock never released, SIGINT/SIGTERM/SIGHUP
//! (deferred until then, see [`crate::interrupt`]), even a panic.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::cache::{LocalState, Stat};
use crate::command::Runner;
use crate::error::{Error, Result};
use crate::fsx::{self, DirFd, EntryType};
use crate::interrupt;
use crate::live;
use crate::priority::Priority;
use crate::progress::Progress;
use crate::repo::{now_unix_ns, Repository};
use crate::snapshot::{self, SnapshotOptions, SnapshotReport, RACY};

/// The name of a stage directory inside the directory it mirrors.
pub const STAGE_DIR: &str = ".blocksnap-stage";

#[derive(Debug, Clone)]
pub struct StageOptions {
    /// Shell command that stops the node (run with `sh -c`).
    pub stop_cmd: String,
    /// Shell command that starts it again.
    pub start_cmd: String,
    /// How long to wait, after the stop command, for the databases' locks
    /// to be released.
    pub lock_timeout: Duration,
    /// Prints the node's block height; run while the node is stopped (after
    /// its locks are released), so the snapshot carries the height of the
    /// data it holds. `None`: the height in the snapshot options.
    pub height_cmd: Option<String>,
    /// How the commands run: deadline and environment.
    pub runner: Runner,
}

impl StageOptions {
    pub fn new(stop_cmd: impl Into<String>, start_cmd: impl Into<String>) -> StageOptions {
        StageOptions {
            stop_cmd: stop_cmd.into(),
            start_cmd: start_cmd.into(),
            lock_timeout: Duration::from_secs(120),
            height_cmd: None,
            runner: Runner::default(),
        }
    }
}

/// A frozen view of the source. Removed when dropped, on success or not.
pub struct Stage {
    /// The view; its relative paths are the source's.
    pub dir: PathBuf,
    /// Relative paths that are hard links to table files.
    pub hard_linked: HashSet<String>,
    /// Copied files whose content had settled before the node was stopped,
    /// with the original's stat (see `SnapshotOptions::origin`).
    pub origin: HashMap<String, Stat>,
    /// Relative paths where the view links to another region's view.
    pub dir_links: HashSet<String>,
    /// The height `height_cmd` printed.
    pub height: Option<u64>,
    pub report: StageReport,
    regions: Vec<Region>,
}

/// One filesystem's part of the view.
struct Region {
    /// Where the region starts in the source ("" for the source itself).
    rel: String,
    /// The directory the region mirrors.
    home: DirFd,
    /// `<home>/.blocksnap-stage`, locked for as long as the stage lives.
    stage: DirFd,
    dev: u64,
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
    /// Filesystems the view spans (1 unless parts of the source are mounted
    /// or linked from elsewhere).
    pub regions: u64,
    /// Table files copied because a hard link was impossible, and why.
    pub link_fallbacks: u64,
    pub link_fallback_reason: Option<String>,
    /// The height the height command printed.
    pub height: Option<u64>,
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
        let regions = std::mem::take(&mut self.regions);
        let mut first = Ok(());
        for r in regions {
            if let Err(e) = remove_region(r) {
                if first.is_ok() {
                    first = Err(e);
                }
            }
        }
        first
    }
}

impl Drop for Stage {
    fn drop(&mut self) {
        for r in std::mem::take(&mut self.regions) {
            let _ = remove_region(r);
        }
    }
}

/// Empties and removes a region's stage directory while still holding its
/// lock (a second run that opened the old directory finds it deleted and
/// fails; it never shares it).
fn remove_region(r: Region) -> Result<()> {
    r.home
        .remove(STAGE_DIR)
        .map_err(Error::io("remove stage", r.home.join(STAGE_DIR)))?;
    drop(r.stage);
    Ok(())
}

/// Where the stage of `source` lives.
pub fn stage_root(source: &Path) -> Result<PathBuf> {
    Ok(source.join(STAGE_DIR))
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
    let staged = stage(opts, stage_opts)?;
    // The node runs again: what is left (reading, compressing, uploading
    // the stage) yields to it.
    if opts.priority != Priority::Normal {
        crate::priority::lower_or_warn();
    }
    let mut from_stage = opts.clone();
    from_stage.source = staged.dir.clone();
    from_stage.label = Some(source);
    from_stage.hard_linked = staged.hard_linked.clone();
    from_stage.origin = staged.origin.clone();
    from_stage.dir_links = staged.dir_links.clone();
    if let Some(h) = staged.height {
        from_stage.height = h;
    }
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

/// Stops the node, stages the source (only the includes when given), starts
/// the node. Everything that can be checked is checked before the stop
/// command runs. Once it has run, the start command runs whatever happens
/// next; a failed start command is reported in [`StageReport::start_error`]
/// and the stage is still returned, so that the snapshot is not lost.
pub fn stage(snap: &SnapshotOptions, opts: &StageOptions) -> Result<Stage> {
    let source = fs::canonicalize(&snap.source).map_err(Error::io("open source", &snap.source))?;
    // What the snapshot would refuse, it refuses now, with the node up.
    let preview = snapshot::plan(&SnapshotOptions {
        source: source.clone(),
        allow_live: true,
        ..snap.clone()
    })?;
    let roots = snapshot::roots(&source, &snap.includes)?;
    let mut stage = prepare(&source, &preview)?;

    let runner = Runner {
        set_env: vec![(
            "BLOCKSNAP_SOURCE".to_string(),
            source.to_string_lossy().into_owned(),
        )],
        ..opts.runner.clone()
    };
    let started = Instant::now();
    let stopping_at = now_unix_ns() as i64;
    let critical = interrupt::Critical::enter();
    let mut restart = Restart(Some((runner.clone(), opts.start_cmd.clone())));
    let frozen = match runner.run("stop", &opts.stop_cmd) {
        Ok(_) => freeze(&source, &roots, opts, &runner, stopping_at, &mut stage),
        Err(e) => Err(Error::Refused(format!(
            "{e}; the start command was run anyway, in case the stop command stopped part of the node"
        ))),
    };
    let start = restart.now();
    drop(critical);
    stage.report.downtime = started.elapsed();
    tracing::info!(
        "node down for {:.2} s (stop, lock wait, freeze, start)",
        stage.report.downtime.as_secs_f64()
    );
    let frozen = frozen.and_then(|()| interrupt::check());
    match frozen {
        Ok(()) => {
            stage.report.start_error = start.err();
            Ok(stage)
        }
        Err(e) => {
            let then = match start {
                Ok(()) => "nothing was snapshotted, and the start command was run".to_string(),
                Err(s) => format!("nothing was snapshotted, and the {s}: THE NODE IS NOT RUNNING"),
            };
            Err(match e {
                Error::Interrupted { signal } => Error::Refused(format!(
                    "interrupted by {}; {then}",
                    interrupt::name(signal)
                )),
                e if e.to_string().contains("start command was run anyway") => {
                    Error::Refused(format!("{e}; nothing was snapshotted"))
                }
                e => Error::Refused(format!("{e}; {then}")),
            })
        }
    }
}

/// Runs the start command once: when asked, or else when dropped.
struct Restart(Option<(Runner, String)>);

impl Restart {
    fn now(&mut self) -> std::result::Result<(), String> {
        match self.0.take() {
            Some((runner, cmd)) => runner.run("start", &cmd).map(|_| ()),
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

/// Before the stop: finds the filesystems the included tree spans, and
/// claims an empty, locked stage directory in each.
fn prepare(source: &Path, preview: &snapshot::SnapshotPlan) -> Result<Stage> {
    let source_dev = fs::metadata(source)
        .map_err(Error::io("stat", source))?
        .dev();
    let mut homes: Vec<(String, PathBuf, u64)> =
        vec![(String::new(), source.to_path_buf(), source_dev)];
    let dev_of: HashMap<&str, u64> = preview
        .items
        .iter()
        .filter(|i| i.meta.is_dir() && i.link.is_none())
        .map(|i| (i.rel.as_str(), i.meta.dev()))
        .collect();
    for item in preview
        .items
        .iter()
        .filter(|i| i.meta.is_dir() && i.link.is_none())
    {
        let parent_dev = match item.rel.rsplit_once('/') {
            Some((p, _)) => dev_of.get(p).copied().unwrap_or(source_dev),
            None => source_dev,
        };
        if item.meta.dev() != parent_dev {
            homes.push((item.rel.clone(), item.abs.clone(), item.meta.dev()));
        }
    }
    let mut regions = Vec::new();
    for (rel, path, dev) in homes {
        let home = DirFd::open(&path).map_err(Error::io("open", &path))?;
        let stage = claim(&home)?;
        regions.push(Region {
            rel,
            home,
            stage,
            dev,
        });
    }
    Ok(Stage {
        dir: source.join(STAGE_DIR),
        hard_linked: HashSet::new(),
        origin: HashMap::new(),
        dir_links: HashSet::new(),
        height: None,
        report: StageReport {
            regions: regions.len() as u64,
            ..StageReport::default()
        },
        regions,
    })
}

/// Creates (or reclaims) `<home>/.blocksnap-stage`, locks it and empties it.
fn claim(home: &DirFd) -> Result<DirFd> {
    let path = home.join(STAGE_DIR);
    match home.create_dir(STAGE_DIR) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let m = home.stat(STAGE_DIR).map_err(Error::io("stat", &path))?;
            match m {
                Some(m) if m.kind == EntryType::Dir && m.is_mine() => {}
                _ => {
                    return Err(Error::Refused(format!(
                    "{} exists and is not a stage directory blocksnap created (not a directory, \
                         or owned by another user); remove it before a staged snapshot",
                    path.display()
                )))
                }
            }
        }
        Err(e) => {
            return Err(Error::Refused(format!(
                "cannot create the stage {} ({e}); a staged snapshot needs to write there — \
                 snapshot without --stop-cmd (with the node stopped) instead",
                path.display()
            )))
        }
    }
    let stage = home.open_dir(STAGE_DIR).map_err(Error::io("open", &path))?;
    if !stage.try_lock().map_err(Error::io("lock", &path))? {
        return Err(Error::Refused(format!(
            "another staged snapshot is using {}; try again when it has finished",
            path.display()
        )));
    }
    for name in stage.names().map_err(Error::io("read", &path))? {
        stage
            .remove(&name)
            .map_err(Error::io("clear stage", path.join(&name)))?;
    }
    Ok(stage)
}

/// With the node stopped: waits for its locks to be released, asks for the
/// height, then builds the stage.
fn freeze(
    source: &Path,
    roots: &[snapshot::Root],
    opts: &StageOptions,
    runner: &Runner,
    stopping_at: i64,
    stage: &mut Stage,
) -> Result<()> {
    let lock_wait = Instant::now();
    loop {
        interrupt::check()?;
        let live = roots
            .iter()
            .map(|r| live::find(&r.abs))
            .collect::<Result<Vec<_>>>()?
            .concat();
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
    if let Some(cmd) = &opts.height_cmd {
        let h = crate::command::height(runner, cmd)?;
        stage.height = Some(h);
        stage.report.height = Some(h);
    }
    let staging = Instant::now();
    let built = build(source, roots, stopping_at - RACY.as_nanos() as i64, stage);
    stage.report.staging = staging.elapsed();
    built
}

fn is_table(name: &str) -> bool {
    name.ends_with(".ldb") || name.ends_with(".sst")
}

/// A directory being mirrored: its view, and what to set on it when its
/// subtree is done.
struct Open {
    depth: usize,
    view: DirFd,
    mode: u32,
    mtime_ns: i64,
    dev: u64,
}

fn mtime_of(meta: &fs::Metadata) -> i64 {
    meta.mtime()
        .saturating_mul(1_000_000_000)
        .saturating_add(meta.mtime_nsec())
}

fn close(dir: Open) -> Result<()> {
    dir.view
        .set_mtime(dir.mtime_ns)
        .and_then(|_| dir.view.set_mode(dir.mode))
        .map_err(Error::io("set mode and mtime of", dir.view.path()))
}

fn build(
    source: &Path,
    roots: &[snapshot::Root],
    settled_before_ns: i64,
    stage: &mut Stage,
) -> Result<()> {
    let main = stage.regions[0]
        .stage
        .try_clone()
        .map_err(Error::io("open", &stage.dir))?;
    for root in roots {
        // The include's ancestors, as directories in the main view.
        let mut parent = main.try_clone().map_err(Error::io("open", &stage.dir))?;
        let mut ancestors: Vec<(DirFd, fs::Metadata)> = Vec::new();
        if let Some((dirs, _)) = root.rel.rsplit_once('/') {
            let mut rel = String::new();
            for part in dirs.split('/') {
                rel = if rel.is_empty() {
                    part.to_string()
                } else {
                    format!("{rel}/{part}")
                };
                let meta = fs::symlink_metadata(source.join(&rel))
                    .map_err(Error::io("stat", source.join(&rel)))?;
                parent = parent
                    .ensure_dir(part)
                    .map_err(Error::io("create", parent.join(part)))?;
                ancestors.push((
                    parent
                        .try_clone()
                        .map_err(Error::io("open", parent.path()))?,
                    meta,
                ));
            }
        }
        mirror(root, parent, settled_before_ns, stage)?;
        for (dir, meta) in ancestors.into_iter().rev() {
            close(Open {
                depth: 0,
                view: dir,
                mode: meta.mode() & 0o7777,
                mtime_ns: mtime_of(&meta),
                dev: meta.dev(),
            })?;
        }
    }
    Ok(())
}

/// Mirrors one root (an include, or the whole source) into the view
/// directory `parent` (the view of the root's parent directory).
fn mirror(
    root: &snapshot::Root,
    parent: DirFd,
    settled_before_ns: i64,
    stage: &mut Stage,
) -> Result<()> {
    let main_dev = stage.regions[0].dev;
    let mut open: Vec<Open> = Vec::new();
    let mut it = walkdir::WalkDir::new(&root.abs)
        .follow_links(false)
        .follow_root_links(true)
        .into_iter();
    while let Some(entry) = it.next() {
        interrupt::check()?;
        let entry = entry.map_err(|e| Error::Io {
            op: "walk",
            path: e.path().unwrap_or(&root.abs).to_path_buf(),
            cause: e.into(),
        })?;
        let depth = entry.depth();
        while open.last().is_some_and(|o| o.depth >= depth) {
            close(open.pop().expect("checked"))?;
        }
        let below = entry
            .path()
            .strip_prefix(&root.abs)
            .unwrap_or(Path::new(""));
        let rel = match (root.rel.is_empty(), below.as_os_str().is_empty()) {
            (true, true) => {
                // The source itself: its view is the main stage directory.
                let meta = fs::metadata(entry.path()).map_err(Error::io("stat", entry.path()))?;
                open.push(Open {
                    depth,
                    view: parent
                        .try_clone()
                        .map_err(Error::io("open", parent.path()))?,
                    mode: 0o700,
                    mtime_ns: mtime_of(&meta),
                    dev: main_dev,
                });
                continue;
            }
            (true, false) => below.to_string_lossy().into_owned(),
            (false, true) => root.rel.clone(),
            (false, false) => format!("{}/{}", root.rel, below.to_string_lossy()),
        };
        if depth > 0 && snapshot::is_reserved(entry.file_name()) {
            if entry.file_type().is_dir() {
                it.skip_current_dir();
            }
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        let (view, dev) = match open.last() {
            Some(o) => (
                o.view
                    .try_clone()
                    .map_err(Error::io("open", o.view.path()))?,
                o.dev,
            ),
            None => (
                parent
                    .try_clone()
                    .map_err(Error::io("open", parent.path()))?,
                main_dev,
            ),
        };
        let meta = if depth == 0 {
            fs::metadata(entry.path())
        } else {
            fs::symlink_metadata(entry.path())
        }
        .map_err(Error::io("stat", entry.path()))?;
        let ft = meta.file_type();
        let to = view.join(&name);
        if ft.is_dir() {
            let region = stage
                .regions
                .iter()
                .find(|r| r.rel == rel && !rel.is_empty());
            let child = match region {
                // Another filesystem: link to its own stage, fill that.
                Some(r) if r.dev != dev => {
                    let target = r.home.join(STAGE_DIR);
                    view.symlink(&target.to_string_lossy(), &name)
                        .map_err(Error::io("create symlink", &to))?;
                    stage.dir_links.insert(rel.clone());
                    r.stage.try_clone().map_err(Error::io("open", &target))?
                }
                _ => {
                    view.create_dir(&name).map_err(Error::io("create", &to))?;
                    view.open_dir(&name).map_err(Error::io("open", &to))?
                }
            };
            open.push(Open {
                depth,
                view: child,
                mode: meta.mode() & 0o7777,
                mtime_ns: mtime_of(&meta),
                dev: meta.dev(),
            });
        } else if ft.is_symlink() {
            let target =
                fs::read_link(entry.path()).map_err(Error::io("read symlink", entry.path()))?;
            view.symlink(&target.to_string_lossy(), &name)
                .map_err(Error::io("create symlink", &to))?;
            view.set_link_mtime(&name, mtime_of(&meta))
                .map_err(Error::io("set mtime of", &to))?;
        } else if ft.is_file() {
            if is_table(&name) {
                match view.link_from(entry.path(), &name) {
                    Ok(()) => {
                        stage.report.files_linked += 1;
                        stage.hard_linked.insert(rel);
                        continue;
                    }
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                        return Err(Error::io("link into stage", &to)(e));
                    }
                    // No permission, too many links.
                    Err(e) => {
                        stage.report.link_fallbacks += 1;
                        stage.report.link_fallback_reason.get_or_insert_with(|| {
                            format!("hard link {} failed ({e}); copied instead", to.display())
                        });
                    }
                }
            }
            copy(entry.path(), &view, &name, &meta)?;
            let stat = Stat::of(&meta);
            // A file that changed while it was copied makes a torn copy:
            // the node is not as stopped as the stop command said.
            let after =
                fs::symlink_metadata(entry.path()).map_err(Error::io("stat", entry.path()))?;
            if !Stat::of(&after).same(&stat, false) {
                return Err(Error::SourceChanged {
                    path: entry.path().to_path_buf(),
                    detail: "changed while it was copied into the stage, after the stop command; is the node stopped?".into(),
                });
            }
            if stat.ctime_ns < settled_before_ns {
                stage.origin.insert(rel, stat);
            }
            stage.report.files_copied += 1;
            stage.report.bytes_copied += meta.len();
        }
        // Sockets, fifos and devices are skipped by the snapshot too.
    }
    while let Some(o) = open.pop() {
        close(o)?;
    }
    Ok(())
}

/// Copies into a new file of the view: never through an existing one,
/// which could be a hard link to the node's own file, and never from a
/// symlink planted in place of the source file.
fn copy(from: &Path, view: &DirFd, name: &str, meta: &fs::Metadata) -> Result<()> {
    let mut src = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(from)
        .map_err(Error::io("open", from))?;
    let to = view.join(name);
    let mut dst = view
        .create_file(name, 0o600)
        .map_err(Error::io("create in stage", &to))?;
    io::copy(&mut src, &mut dst).map_err(Error::io("copy to stage", from))?;
    fsx::set_file_mode_and_mtime(&dst, meta.mode() & 0o7777, mtime_of(meta))
        .map_err(Error::io("set mode and mtime of", &to))
}
