//! The `blocksnap` command: parses arguments, calls the engine, prints.
//! Exit codes: 0 success, 1 the command failed, 2 bad usage, 3 verify found
//! damage.

mod args;
mod commands;
mod metrics;
mod open;
mod outcome;
mod output;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

use outcome::Done;

#[derive(Parser)]
#[command(
    name = "blocksnap",
    version,
    about = "Incremental, verified snapshots of blockchain node databases"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Print only errors (and verify's problem lines): for cron.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,
    /// Log what happens to stderr: -v steps, -vv decisions (retries, slow
    /// requests, cache and staging), -vvv everything. RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
}

/// Logs to stderr: off unless -v or RUST_LOG asks, so the default output is
/// unchanged.
fn init_logs(verbose: u8) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let level = match verbose {
        0 => "off",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.is_empty() => EnvFilter::new(spec),
        // Our crates at the asked level; the SDK's chatter one below.
        _ => EnvFilter::new(format!(
            "{level},aws_config=warn,aws_smithy_runtime=warn,aws_sdk_s3=warn,hyper=warn,rustls=warn"
        )),
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(true)
        .try_init();
}

#[derive(Subcommand)]
enum Command {
    /// Create an empty repository.
    Init(commands::init::Args),
    /// Snapshot a (stopped) node's data directory at a block height.
    Snapshot(commands::snapshot::Args),
    /// List snapshots: height, time, host, tags, files, size, bytes added.
    List(commands::list::Args),
    /// Restore a snapshot into a directory, for a node with the given IP.
    Restore(commands::restore::Args),
    /// Audit snapshots without restoring, or compare a directory with a
    /// snapshot (--dir); exit code 3 when damage or a difference is found.
    Verify(commands::verify::Args),
    /// What changed between two snapshots: added, removed and changed
    /// files, and how much of the second is new chunks.
    Diff(commands::diff::Args),
    /// Write a snapshot as one tar archive (plain, gzip or zstd) laid out
    /// as the node's data directory, to a new file or standard output.
    Dump(commands::dump::Args),
    /// Commit tarballs as snapshots without extracting them: one archive
    /// (file, stdin, s3://), or a directory or prefix of the old backup
    /// script's archives in height order.
    Import(commands::import::Args),
    /// Publish the repository's index, through which a static web server
    /// or CDN serving the repository's files is read (`--repo
    /// https://…`); every writer keeps it current from then on.
    Index(commands::index::Args),
    /// goloop's admin API: release a chain's database for a snapshot, or
    /// take it back and start the chain.
    Goloop(commands::goloop::Args),
    /// Write the repository's public page (index.html, no script, no
    /// external asset): every snapshot with its restore command, and the
    /// repository's size over time. Publishes the index too.
    Site(commands::site::Args),
    /// Forget snapshots by a retention policy (per history: host and
    /// source), or by name. Their chunks stay until `prune`.
    Forget(commands::forget::Args),
    /// Repository size by kind of object, logical against stored bytes
    /// (dedup and compression), and per snapshot the bytes only it
    /// references (what forgetting it would free). One listing plus the
    /// manifests.
    Stats(commands::stats::Args),
    /// Copy snapshots to another repository (e.g. a local tier to S3):
    /// only the chunks it lacks, object bytes unchanged, signatures too.
    /// Safe beside the destination's prune; re-run to resume.
    Copy(commands::copy::Args),
    /// Sign snapshots already in the repository (e.g. by a second key):
    /// by full id, or with --trust those a trusted key already signed.
    Sign(commands::sign::Args),
    /// Signing keys.
    Key(commands::key::Args),
    /// Print a shell completion script (bash, zsh, fish, elvish,
    /// powershell) to standard output.
    Completions(commands::completions::Args),
    /// Write the manual pages: blocksnap.1 and one per command
    /// (blocksnap-restore.1, …) into DIR (default: print blocksnap.1).
    Man(commands::man::Args),
    /// Delete the chunks no snapshot needs, safely beside other hosts'
    /// snapshots (space comes back one grace period after a snapshot is
    /// forgotten, or at once with --instant-delete on a single-writer
    /// repository).
    Prune(commands::prune::Args),
    /// Generate or advance an ICON-layout node directory (RocksDB databases).
    Generate(commands::generate::Args),
    /// Run the main job on generated data: snapshot, advance, snapshot,
    /// restore with another IP, verify, compare.
    Demo(commands::demo::Args),
}

impl Command {
    /// Where this run's outcome goes, and the labels that name it.
    fn metrics(&self) -> Option<(PathBuf, metrics::Run)> {
        let (name, repo, source, arg) = match self {
            Command::Snapshot(a) => (
                "snapshot",
                &a.repo,
                Some(a.source.display().to_string()),
                &a.metrics,
            ),
            // A dry run restores nothing: it is no restore's outcome.
            Command::Restore(a) if a.dry_run => return None,
            Command::Restore(a) => (
                "restore",
                &a.repo,
                Some(a.target.display().to_string()),
                &a.metrics,
            ),
            Command::Verify(a) => (
                "verify",
                &a.repo,
                a.dir.as_ref().map(|d| d.display().to_string()),
                &a.metrics,
            ),
            Command::Prune(a) => ("prune", &a.repo, None, &a.metrics),
            _ => return None,
        };
        let path = arg.metrics_file.clone()?;
        Some((
            path,
            metrics::Run {
                command: name.into(),
                repo: repo.repo.clone(),
                source,
                ..Default::default()
            },
        ))
    }
}

/// glibc gives threads that allocate at once arenas of their own (up to
/// eight per core), and each arena keeps the chunk buffers freed in it:
/// with tens of store threads that retained memory was most of a
/// restore's resident set. Two arenas: S3 restore of 1 GiB, peak RSS 153
/// → 99 MiB at the same speed (benches/s3.sh). Set before any thread
/// starts.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes glibc's allocator settings; no thread
    // allocates concurrently yet.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

fn main() -> ExitCode {
    limit_malloc_arenas();
    let cli = Cli::parse();
    output::set_quiet(cli.quiet);
    init_logs(cli.verbose);
    if let Err(e) = blocksnap::interrupt::install() {
        eprintln!("blocksnap: warning: signals will not stop work cleanly: {e}");
    }
    let metrics = cli.command.metrics();
    let started = std::time::Instant::now();
    let result = run(cli.command);
    if let Some((path, mut m)) = metrics {
        m.duration_seconds = started.elapsed().as_secs_f64();
        m.finished_unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        if let Ok(done) = &result {
            m.success = done.code == 0;
            m.figures = done.figures.clone();
        }
        if let Err(e) = m.write(&path) {
            eprintln!(
                "blocksnap: warning: metrics not written: {}",
                blocksnap::error::printable(&e.to_string())
            );
        }
    }
    match result {
        Ok(done) => ExitCode::from(done.code),
        Err(e) => {
            eprintln!(
                "blocksnap: error: {}",
                blocksnap::error::printable(&format!("{e:#}"))
            );
            // A run cut short by a signal exits as the shell expects.
            match blocksnap::interrupt::received() {
                Some(sig) => ExitCode::from((128 + sig) as u8),
                None => ExitCode::from(1),
            }
        }
    }
}

fn run(command: Command) -> Result<Done> {
    match command {
        Command::Init(args) => commands::init::run(args),
        Command::Snapshot(args) => commands::snapshot::run(args),
        Command::List(args) => commands::list::run(args),
        Command::Restore(args) => commands::restore::run(args),
        Command::Verify(args) => commands::verify::run(args),
        Command::Diff(args) => commands::diff::run(args),
        Command::Forget(args) => commands::forget::run(args),
        Command::Prune(args) => commands::prune::run(args),
        Command::Copy(args) => commands::copy::run(args),
        Command::Stats(args) => commands::stats::run(args),
        Command::Sign(args) => commands::sign::run(args),
        Command::Key(args) => commands::key::run(args),
        Command::Completions(args) => {
            commands::completions::run(args, <Cli as clap::CommandFactory>::command())
        }
        Command::Man(args) => commands::man::run(args, <Cli as clap::CommandFactory>::command()),
        Command::Dump(args) => commands::dump::run(args),
        Command::Import(args) => commands::import::run(args),
        Command::Index(args) => commands::index::run(args),
        Command::Goloop(args) => commands::goloop::run(args),
        Command::Site(args) => commands::site::run(args),
        Command::Generate(args) => commands::generate::run(args),
        Command::Demo(args) => commands::demo::run(args),
    }
}
