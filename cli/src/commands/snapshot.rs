//! `blocksnap snapshot`: its arguments and its run.

use std::path::PathBuf;

use anyhow::{bail, Result};
use blocksnap::{command, ipnorm, snapshot, stage};

use crate::args::*;
use crate::metrics;
use crate::open::*;
use crate::outcome::Done;
use crate::output::{Bar, Out};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub repo: RepoArg,
    /// The data directory, e.g. /app/prep/data/loopchain.
    #[arg(long)]
    pub source: PathBuf,
    /// Block height the data is at. In a staged snapshot this is read
    /// before the node stops, so prefer --height-cmd there. A goloop
    /// node's height is read from its database (and, when given, must
    /// agree with it).
    #[arg(long, conflicts_with = "height_cmd")]
    pub height: Option<u64>,
    /// Command that prints the block height the data is at, run while
    /// the node is stopped (after --stop-cmd and the lock wait; with no
    /// --stop-cmd, before reading). Gets BLOCKSNAP_SOURCE.
    #[arg(long, value_name = "CMD")]
    pub height_cmd: Option<String>,
    /// Free-form labels shown by `list`.
    #[arg(long = "tag")]
    pub tags: Vec<String>,
    /// Only these paths under the source (repeatable), e.g. .score_data.
    #[arg(long = "include")]
    pub includes: Vec<String>,
    /// The node's software: icon1 (loopchain: .score_data, .storage) or
    /// goloop (ICON 2: each chain's config.json, genesis.zip, db/,
    /// contract/, wal/, never cache/ or tmp/). Default: told from the
    /// source's shape, and reported.
    #[arg(long, value_name = "icon1|goloop")]
    pub profile: Option<blocksnap::profile::Profile>,
    /// The node's IPv4 address when paths hold several.
    #[arg(long)]
    pub ip: Option<String>,
    /// The node's name: with the source it names the snapshot's
    /// history (default: this machine's host name; set it in
    /// containers, whose host names change).
    #[arg(long, env = "BLOCKSNAP_HOST")]
    pub host: Option<String>,
    /// Parallelism, the one knob: at most N files chunked at once (never
    /// more than the CPUs) and N store writes in flight (default: one
    /// worker per CPU; 8 local writes, 32 S3 requests).
    #[arg(long, default_value_t = 0)]
    pub jobs: usize,
    #[command(flatten)]
    pub cache: CacheArg,
    /// Read and hash every file even when its stat is unchanged.
    #[arg(long)]
    pub rehash: bool,
    /// Snapshot even when a database under the source is open in a
    /// running process (the manifest records a warning).
    #[arg(long)]
    pub allow_live: bool,
    /// CPU and I/O priority: `auto` is low (nice 19, lowest best-effort
    /// I/O) while the node runs — after a staged snapshot's start
    /// command, or with --allow-live — and normal during downtime.
    #[arg(long, default_value = "auto", value_name = "auto|low|normal")]
    pub priority: blocksnap::priority::Priority,
    /// Staged snapshot: run this to stop the node, wait for its
    /// databases to close, freeze a view of the source, then run
    /// --start-cmd and snapshot the frozen view while the node runs.
    #[arg(long, requires = "start_cmd", value_name = "CMD")]
    pub stop_cmd: Option<String>,
    /// Starts the node again after a staged snapshot's freeze.
    #[arg(long, requires = "stop_cmd", value_name = "CMD")]
    pub start_cmd: Option<String>,
    /// Staged snapshot of a goloop node through its admin socket: the
    /// chain is stopped and its database released (a manual backup), then
    /// taken back and started (`blocksnap goloop release|resume`), instead
    /// of --stop-cmd/--start-cmd.
    #[arg(long, value_name = "SOCKET", conflicts_with_all = ["stop_cmd", "start_cmd"])]
    pub goloop_admin: Option<PathBuf>,
    /// The chain --goloop-admin stops and starts (id or channel).
    #[arg(long, default_value = "0x1", requires = "goloop_admin")]
    pub goloop_chain: String,
    /// Seconds to wait for the databases to close after --stop-cmd.
    #[arg(long, default_value_t = 120)]
    pub stop_timeout: u64,
    /// Seconds --stop-cmd, --start-cmd and --height-cmd may each run
    /// before they are killed.
    #[arg(long, default_value_t = 300)]
    pub cmd_timeout: u64,
    /// Pass this environment variable to the commands too (repeatable);
    /// by default they get only PATH, HOME, the locale and a few
    /// daemon sockets, not blocksnap's own environment.
    #[arg(long = "cmd-env", value_name = "VAR")]
    pub cmd_env: Vec<String>,
    #[command(flatten)]
    pub sign: SignArg,
    #[command(flatten)]
    pub metrics: MetricsArg,
    #[command(flatten)]
    pub json: JsonArg,
}

pub fn run(args: Args) -> Result<Done> {
    let Args {
        repo,
        source,
        height,
        tags,
        includes,
        profile,
        ip,
        jobs,
        cache,
        rehash,
        allow_live,
        priority,
        stop_cmd,
        start_cmd,
        goloop_admin,
        goloop_chain,
        stop_timeout,
        height_cmd,
        cmd_timeout,
        cmd_env,
        host,
        sign,
        metrics: _,
        json,
    } = args;
    // A bad key is found before anything is read or stopped.
    let signer = sign.load()?;
    let r = open_repo(&repo, Access::Write, jobs)?.with_signer(signer.clone());
    let ip = ip.as_deref().map(ipnorm::parse_ip).transpose()?;
    let runner = command::Runner {
        timeout: std::time::Duration::from_secs(cmd_timeout),
        pass_env: cmd_env,
        set_env: vec![("BLOCKSNAP_SOURCE".into(), source.display().to_string())],
    };
    let mut opts = snapshot::SnapshotOptions {
        source,
        // With --height-cmd, what it prints (see stage::take).
        height: height.unwrap_or(0),
        host: host.unwrap_or_default(),
        tags,
        includes,
        ip,
        jobs,
        rehash,
        allow_live,
        signer,
        priority,
        ..Default::default()
    };
    // The profile decides what a snapshot takes unless --include says.
    let settled = snapshot::settle_profile(&opts, profile)?;
    let goloop = settled.profile == blocksnap::profile::Profile::Goloop;
    if height.is_none() && height_cmd.is_none() && !goloop {
        bail!("--height or --height-cmd is required (a goloop node's height is read from its database)");
    }
    opts.height_from_db = goloop;
    if opts.includes.is_empty() {
        opts.includes = settled.includes.clone();
    }
    if !json.json {
        tracing::info!("profile {:?} ({})", settled.profile, settled.why);
    }
    if settled.profile == blocksnap::profile::Profile::Goloop {
        eprintln!(
            "blocksnap: profile goloop ({}): taking {}",
            settled.why,
            opts.includes.join(", ")
        );
    }
    // The admin API through this very binary, as the lifecycle's commands:
    // the staged snapshot's guarantees hold unchanged.
    let (stop_cmd, start_cmd) = match &goloop_admin {
        Some(socket) => {
            let exe = std::env::current_exe()?;
            let call = |op: &str| {
                format!(
                    "{} goloop {op} --socket {} --chain {} --timeout {}",
                    shell_word(&exe.to_string_lossy()),
                    shell_word(&socket.to_string_lossy()),
                    shell_word(&goloop_chain),
                    stop_timeout
                )
            };
            (Some(call("release")), Some(call("resume")))
        }
        None => (stop_cmd, start_cmd),
    };
    let lifecycle = match (stop_cmd, start_cmd) {
        (Some(stop_cmd), Some(start_cmd)) => Some(stage::Lifecycle {
            stop_cmd,
            start_cmd,
            lock_timeout: std::time::Duration::from_secs(stop_timeout),
        }),
        _ => None,
    };
    let state = open_state(&cache, &r);
    let bar = Bar::new(json.json);
    let out = Out::new(json.json);
    let taken = stage::take(
        &r,
        opts,
        height_cmd,
        runner,
        lifecycle,
        state.as_ref(),
        &bar,
    )?;
    match &taken {
        stage::Taken::Plain(report) => out.snapshot(report),
        stage::Taken::Staged(report, staged) => out.staged_snapshot(report, staged),
    }
    if let Some(message) = taken.node_not_restarted() {
        bail!("{message}");
    }
    let report = taken.report();
    Ok(Done::with(metrics::Figures {
        bytes_read: Some(report.bytes_read),
        bytes_new: Some(report.stats.new_stored_bytes),
        bytes_stored: Some(report.stats.logical_bytes),
        chunks: Some(report.stats.chunk_refs),
        height: Some(report.key.height),
        requests: report.requests,
        ..Default::default()
    }))
}

/// `s` as one word for `sh -c`.
fn shell_word(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}
