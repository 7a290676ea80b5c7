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
//! directory descriptors only ([`crate::sys::fsx`]): nothing planted in them is
//! followed. Once the stop command has been run — even if it failed, since
//! it may have stopped part of the node — the start command runs whatever
//! happens next: an error, a lock never released, SIGINT/SIGTERM/SIGHUP
//! (deferred until then, see [`crate::sys::interrupt`]), even a panic.

use std::collections::{HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::commands::snapshot::cache::{LocalState, Stat};
use crate::commands::snapshot::command::Runner;
use crate::commands::snapshot::{self, SnapshotOptions, SnapshotReport, StagedView, RACY};
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::repo::{now_unix_ns, Repository};
use crate::sys::fsx::{self, DirFd, EntryType, Meta};
use crate::sys::interrupt;
use crate::sys::live;
use crate::sys::priority::Priority;

pub use crate::format::reserved::STAGE_DIR;

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
    /// Where the view is, for messages; it is read through `view`.
    pub dir: PathBuf,
    /// The view, as the descriptors the stage was built through.
    pub view: StagedView,
    /// Relative paths that are hard links to table files.
    pub hard_linked: HashSet<String>,
    /// Copied files whose content had settled before the node was stopped,
    /// with the original's stat (see `SnapshotOptions::origin`).
    pub origin: HashMap<String, Stat>,
    /// The height `height_cmd` printed.
    pub height: Option<u64>,
    pub report: StageReport,
    /// The source's canonical path (the snapshot's name for it).
    pub source: PathBuf,
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

/// The node's lifecycle around a snapshot (`--stop-cmd`, `--start-cmd`):
/// with one, the snapshot is staged; without, the node must be stopped
/// already.
#[derive(Debug, Clone)]
pub struct Lifecycle {
    pub stop_cmd: String,
    pub start_cmd: String,
    /// How long to wait, after the stop command, for the databases' locks.
    pub lock_timeout: Duration,
}

/// What [`take`] did.
#[derive(Debug)]
pub enum Taken {
    /// A snapshot of a node that was stopped already.
    Plain(SnapshotReport),
    /// A staged snapshot: the node stopped, frozen, started again.
    Staged(SnapshotReport, StageReport),
}

impl Taken {
    pub fn report(&self) -> &SnapshotReport {
        match self {
            Taken::Plain(r) | Taken::Staged(r, _) => r,
        }
    }

    /// When the snapshot was committed but the node could not be started
    /// again: what the operator must hear, loudly.
    pub fn node_not_restarted(&self) -> Option<String> {
        match self {
            Taken::Staged(_, staged) => staged
                .start_error
                .as_ref()
                .map(|e| format!("{e}: THE NODE IS NOT RUNNING (the snapshot was committed)")),
            Taken::Plain(_) => None,
        }
    }
}

/// A snapshot as the command line asks for it. The height is
/// `opts.height`, or what `height_cmd` prints: run now for a node that is
/// stopped already, and while the node is stopped for a staged snapshot
/// (so that it is the height of the data frozen).
pub fn take(
    repo: &Repository,
    mut opts: SnapshotOptions,
    height_cmd: Option<String>,
    runner: Runner,
    lifecycle: Option<Lifecycle>,
    state: Option<&LocalState>,
    progress: &dyn Progress,
) -> Result<Taken> {
    match lifecycle {
        None => {
            if let Some(cmd) = &height_cmd {
                opts.height = crate::commands::snapshot::command::height(&runner, cmd)?;
            }
            let report =
                crate::commands::snapshot::snapshot_with_state(repo, &opts, state, progress)?;
            Ok(Taken::Plain(report))
        }
        Some(l) => {
            let stage_opts = StageOptions {
                stop_cmd: l.stop_cmd,
                start_cmd: l.start_cmd,
                lock_timeout: l.lock_timeout,
                height_cmd,
                runner,
            };
            let (report, staged) = snapshot_staged(repo, &opts, &stage_opts, state, progress)?;
            Ok(Taken::Staged(report, staged))
        }
    }
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
    let staged = stage(opts, stage_opts)?;
    let source = staged.source.clone();
    // The node runs again: what is left (reading, compressing, uploading
    // the stage) yields to it.
    if opts.priority != Priority::Normal {
        crate::sys::priority::lower_or_warn();
    }
    let mut from_stage = opts.clone();
    from_stage.source = staged.dir.clone();
    from_stage.label = Some(source);
    from_stage.hard_linked = staged.hard_linked.clone();
    from_stage.origin = staged.origin.clone();
    from_stage.view = Some(staged.view.clone());
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
    // The source and the includes are opened now, with the node up, and
    // everything after the stop goes through these descriptors: the node's
    // user cannot swap a name for a link to redirect the freeze.
    let (root, source) = snapshot::open_source(snap)?;
    let roots = snapshot::roots(&root, &snap.includes)?;
    // What the snapshot would refuse, it refuses now, with the node up.
    let preview = snapshot::plan_roots(
        &SnapshotOptions {
            allow_live: true,
            ..snap.clone()
        },
        &root,
        source.clone(),
        roots.clone(),
    )?;
    let mut stage = prepare(&root, &source, &preview)?;

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
        Ok(_) => freeze(&root, &roots, opts, &runner, stopping_at, &mut stage),
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
fn prepare(root: &Arc<DirFd>, source: &Path, preview: &snapshot::SnapshotPlan) -> Result<Stage> {
    let source_dev = root.meta().map_err(Error::io("stat", source))?.dev;
    let mut homes: Vec<(String, DirFd, u64)> = vec![(
        String::new(),
        root.try_clone().map_err(Error::io("open", source))?,
        source_dev,
    )];
    let dirs = || preview.items.iter().filter(|i| i.is_dir());
    let dev_of: HashMap<&str, u64> = dirs().map(|i| (i.rel.as_str(), i.meta.dev)).collect();
    for item in dirs() {
        let parent_dev = match item.rel.rsplit_once('/') {
            Some((p, _)) => dev_of.get(p).copied().unwrap_or(source_dev),
            None => source_dev,
        };
        if item.meta.dev != parent_dev {
            homes.push((item.rel.clone(), preview.open_dir(item)?, item.meta.dev));
        }
    }
    let mut regions = Vec::new();
    for (rel, home, dev) in homes {
        let stage = claim(&home)?;
        regions.push(Region {
            rel,
            home,
            stage,
            dev,
        });
    }
    let main = Arc::new(
        regions[0]
            .stage
            .try_clone()
            .map_err(Error::io("open", source.join(STAGE_DIR)))?,
    );
    Ok(Stage {
        dir: source.join(STAGE_DIR),
        source: source.to_path_buf(),
        view: StagedView {
            root: main,
            regions: HashMap::new(),
        },
        hard_linked: HashSet::new(),
        origin: HashMap::new(),
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
    source: &Arc<DirFd>,
    roots: &[snapshot::Root],
    opts: &StageOptions,
    runner: &Runner,
    stopping_at: i64,
    stage: &mut Stage,
) -> Result<()> {
    let lock_wait = Instant::now();
    loop {
        interrupt::check()?;
        let mut live = Vec::new();
        for r in roots {
            if let Some(dir) = r.dir() {
                live.extend(live::find_in(dir)?);
            }
        }
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
        let h = crate::commands::snapshot::command::height(runner, cmd)?;
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
    view: DirFd,
    mode: u32,
    mtime_ns: i64,
}

fn close(dir: Open) -> Result<()> {
    dir.view
        .set_mtime(dir.mtime_ns)
        .and_then(|_| dir.view.set_mode(dir.mode))
        .map_err(Error::io("set mode and mtime of", dir.view.path()))
}

fn build(
    source: &Arc<DirFd>,
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
        let mut ancestors: Vec<(DirFd, Meta)> = Vec::new();
        if let Some((dirs, _)) = root.rel.rsplit_once('/') {
            let mut at = source
                .try_clone()
                .map_err(Error::io("open", source.path()))?;
            for part in dirs.split('/') {
                let meta = at
                    .stat(part)
                    .map_err(Error::io("stat", at.join(part)))?
                    .ok_or_else(|| Error::SourceChanged {
                        path: at.join(part),
                        detail: "it vanished".into(),
                    })?;
                at = at
                    .open_dir(part)
                    .map_err(Error::io("open", at.join(part)))?;
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
                view: dir,
                mode: meta.mode,
                mtime_ns: meta.mtime_ns,
            })?;
        }
    }
    Ok(())
}

/// Mirrors one root (an include, or the whole source) into the view
/// directory `parent` (the view of the root's parent directory), reading
/// the source only through the root's descriptor, one name at a time.
fn mirror(
    root: &snapshot::Root,
    parent: DirFd,
    settled_before_ns: i64,
    stage: &mut Stage,
) -> Result<()> {
    let main_dev = stage.regions[0].dev;
    match &root.kind {
        snapshot::RootKind::File { parent: from, name } => {
            let meta = from
                .stat(name)
                .map_err(Error::io("stat", from.join(name)))?
                .ok_or_else(|| Error::SourceChanged {
                    path: from.join(name),
                    detail: "it vanished".into(),
                })?;
            stage_file(
                from,
                name,
                &meta,
                &parent,
                &root.rel,
                settled_before_ns,
                stage,
            )
        }
        snapshot::RootKind::Dir(dir) => {
            let meta = dir.meta().map_err(Error::io("stat", dir.path()))?;
            // The directory's own view: the main stage for the source, a
            // directory of the parent's view for an include (or the stage of
            // its region, when it is on another filesystem).
            let view = if root.rel.is_empty() {
                parent
                    .try_clone()
                    .map_err(Error::io("open", parent.path()))?
            } else {
                let name = root.rel.rsplit('/').next().unwrap_or(&root.rel).to_string();
                view_dir(&parent, &name, &root.rel, meta.dev, main_dev, stage)?
            };
            let top = Open {
                view: view.try_clone().map_err(Error::io("open", view.path()))?,
                mode: if root.rel.is_empty() {
                    0o700
                } else {
                    meta.mode
                },
                mtime_ns: meta.mtime_ns,
            };
            mirror_dir(dir, &root.rel, view, meta.dev, settled_before_ns, stage)?;
            close(top)
        }
    }
}

/// The view of the source directory `name` (at `rel`) inside `view`: a new
/// directory, or — when it is on another filesystem than its parent — a
/// symlink to its region's own stage, which is returned.
fn view_dir(
    view: &DirFd,
    name: &str,
    rel: &str,
    dev: u64,
    parent_dev: u64,
    stage: &mut Stage,
) -> Result<DirFd> {
    let to = view.join(name);
    let region = stage
        .regions
        .iter()
        .find(|r| r.rel == rel && !rel.is_empty());
    match region {
        Some(r) if r.dev != parent_dev && r.dev == dev => {
            let target = r.home.join(STAGE_DIR);
            view.symlink(&target.to_string_lossy(), name)
                .map_err(Error::io("create symlink", &to))?;
            let region_view = r.stage.try_clone().map_err(Error::io("open", &target))?;
            stage.view.regions.insert(
                rel.to_string(),
                Arc::new(
                    region_view
                        .try_clone()
                        .map_err(Error::io("open", &target))?,
                ),
            );
            Ok(region_view)
        }
        _ => {
            view.create_dir(name).map_err(Error::io("create", &to))?;
            view.open_dir(name).map_err(Error::io("open", &to))
        }
    }
}

/// Mirrors the contents of the source directory `dir` (at `rel`, on
/// device `dev`) into `view`.
fn mirror_dir(
    dir: &DirFd,
    rel: &str,
    view: DirFd,
    dev: u64,
    settled_before_ns: i64,
    stage: &mut Stage,
) -> Result<()> {
    for name in dir
        .sorted_names()
        .map_err(Error::io("read directory", dir.path()))?
    {
        interrupt::check()?;
        if snapshot::is_reserved(&name) {
            continue;
        }
        let Some(meta) = dir
            .stat(&name)
            .map_err(Error::io("stat", dir.join(&name)))?
        else {
            continue;
        };
        let child_rel = if rel.is_empty() {
            name.clone()
        } else {
            format!("{rel}/{name}")
        };
        let to = view.join(&name);
        match meta.kind {
            EntryType::Dir => {
                let child = dir
                    .open_dir(&name)
                    .map_err(Error::io("open", dir.join(&name)))?;
                let child_view = view_dir(&view, &name, &child_rel, meta.dev, dev, stage)?;
                let done = Open {
                    view: child_view
                        .try_clone()
                        .map_err(Error::io("open", child_view.path()))?,
                    mode: meta.mode,
                    mtime_ns: meta.mtime_ns,
                };
                mirror_dir(
                    &child,
                    &child_rel,
                    child_view,
                    meta.dev,
                    settled_before_ns,
                    stage,
                )?;
                close(done)?;
            }
            EntryType::Symlink => {
                let target = dir
                    .read_link(&name)
                    .map_err(Error::io("read symlink", dir.join(&name)))?;
                view.symlink(&target.to_string_lossy(), &name)
                    .map_err(Error::io("create symlink", &to))?;
                view.set_link_mtime(&name, meta.mtime_ns)
                    .map_err(Error::io("set mtime of", &to))?;
            }
            EntryType::File => {
                stage_file(
                    dir,
                    &name,
                    &meta,
                    &view,
                    &child_rel,
                    settled_before_ns,
                    stage,
                )?;
            }
            // Sockets, fifos and devices are skipped by the snapshot too.
            EntryType::Other => {}
        }
    }
    Ok(())
}

/// Puts the source file `name` of `dir` into `view`: a hard link for a
/// table file (never rewritten once written), else a copy.
fn stage_file(
    dir: &DirFd,
    name: &str,
    meta: &Meta,
    view: &DirFd,
    rel: &str,
    settled_before_ns: i64,
    stage: &mut Stage,
) -> Result<()> {
    let to = view.join(name);
    if is_table(name) {
        match dir.link(name, view, name) {
            Ok(()) => {
                stage.report.files_linked += 1;
                stage.hard_linked.insert(rel.to_string());
                return Ok(());
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
    copy(dir, name, view, meta)?;
    let stat = Stat::from_meta(meta);
    // A file that changed while it was copied makes a torn copy: the node
    // is not as stopped as the stop command said.
    let after = dir
        .stat(name)
        .map_err(Error::io("stat", dir.join(name)))?
        .map(|m| Stat::from_meta(&m));
    if !after.is_some_and(|a| a.same(&stat, false)) {
        return Err(Error::SourceChanged {
            path: dir.join(name),
            detail: "changed while it was copied into the stage, after the stop command; is the node stopped?".into(),
        });
    }
    if stat.ctime_ns < settled_before_ns {
        stage.origin.insert(rel.to_string(), stat);
    }
    stage.report.files_copied += 1;
    stage.report.bytes_copied += meta.size;
    Ok(())
}

/// Copies into a new file of the view: never through an existing one,
/// which could be a hard link to the node's own file, and never from a
/// symlink planted in place of the source file.
fn copy(dir: &DirFd, name: &str, view: &DirFd, meta: &Meta) -> Result<()> {
    let from = dir.join(name);
    let mut src = dir.open_file(name).map_err(Error::io("open", &from))?;
    if Meta::of(&src).map_err(Error::io("stat", &from))?.ino != meta.ino {
        return Err(Error::SourceChanged {
            path: from,
            detail: "it was replaced after the stop command; is the node stopped?".into(),
        });
    }
    let to = view.join(name);
    let mut dst = view
        .create_file(name, 0o600)
        .map_err(Error::io("create in stage", &to))?;
    io::copy(&mut src, &mut dst).map_err(Error::io("copy to stage", &from))?;
    fsx::set_file_mode_and_mtime(&dst, meta.mode, meta.mtime_ns)
        .map_err(Error::io("set mode and mtime of", &to))
}
