//! The `blocksnap` command: parses arguments, calls the engine, prints.
//! Exit codes: 0 success, 1 the command failed, 2 bad usage, 3 verify found
//! damage.

mod output;

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use blocksnap::format::config::ChunkerParams;
use blocksnap::repo::Repository;
use blocksnap::store::{limited, CountingStore, LocalStore, Location, Store};
use blocksnap::{
    cache, chunking, command, compare, copy, demo, forget, ipnorm, list, metrics, nodegen, prune,
    restore, retention, sign, snapshot, stage, trusted, verify, Selector,
};
use clap::{Parser, Subcommand};

use output::{Bar, Out};

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

/// Which publishers to believe (restore, verify, list).
#[derive(clap::Args)]
struct TrustArg {
    /// Believe only snapshots signed by this minisign public key: its
    /// base64 line, or a file of keys (a .pub file; repeatable). `latest`
    /// then means the newest trusted snapshot.
    #[arg(
        long = "trust",
        value_name = "PUBKEY|FILE",
        env = "BLOCKSNAP_TRUST",
        value_delimiter = ','
    )]
    trust: Vec<String>,
}

impl TrustArg {
    fn load(&self) -> Result<Option<Arc<sign::Trust>>> {
        if self.trust.is_empty() {
            return Ok(None);
        }
        Ok(Some(Arc::new(sign::Trust::parse(&self.trust)?)))
    }
}

/// A secret key to sign with (snapshot, forget).
#[derive(clap::Args)]
struct SignArg {
    /// Sign with this minisign secret key (see `key generate`); an
    /// encrypted key reads its passphrase from BLOCKSNAP_KEY_PASSPHRASE.
    #[arg(long = "sign", value_name = "KEYFILE", env = "BLOCKSNAP_SIGN_KEY")]
    sign: Option<PathBuf>,
}

impl SignArg {
    fn load(&self) -> Result<Option<Arc<sign::Signer>>> {
        Ok(match &self.sign {
            Some(path) => Some(Arc::new(sign::Signer::load(path)?)),
            None => None,
        })
    }
}

#[derive(clap::Args)]
struct RepoArg {
    /// Repository: a local directory, or s3://BUCKET/PREFIX.
    #[arg(long, env = "BLOCKSNAP_REPO")]
    repo: String,
    /// S3-compatible endpoint URL (MinIO, Ceph, R2, Garage…); AWS when
    /// absent. Implies path-style addressing unless --virtual-hosted.
    #[arg(long, env = "BLOCKSNAP_S3_ENDPOINT", help_heading = "S3")]
    endpoint: Option<String>,
    /// Address the bucket in the host name even with --endpoint.
    #[arg(long, conflicts_with = "path_style", help_heading = "S3")]
    virtual_hosted: bool,
    /// Address the bucket in the URL path even on AWS.
    #[arg(long, help_heading = "S3")]
    path_style: bool,
    /// Bucket region (default: AWS_REGION, the profile, else us-east-1).
    #[arg(long, help_heading = "S3")]
    region: Option<String>,
    /// Send unsigned requests: read a public bucket without an account.
    /// Reads fall back to this by themselves when no credentials exist.
    #[arg(long, help_heading = "S3")]
    anonymous: bool,
    /// Credentials other than the standard chain's (copy's destination).
    #[arg(skip)]
    credentials: Option<(String, String)>,
    /// At most this many bytes per second written to the repository, e.g.
    /// 20MiB (K/M/G are powers of 1024, KB/MB/GB of 1000; a bare number is
    /// bytes per second).
    #[arg(long, env = "BLOCKSNAP_LIMIT_UPLOAD", value_name = "RATE", value_parser = limited::parse_rate, help_heading = "Bandwidth")]
    limit_upload: Option<u64>,
    /// At most this many bytes per second read from the repository.
    #[arg(long, env = "BLOCKSNAP_LIMIT_DOWNLOAD", value_name = "RATE", value_parser = limited::parse_rate, help_heading = "Bandwidth")]
    limit_download: Option<u64>,
}

/// Whether to run at low CPU and I/O priority (commands without a node
/// lifecycle: low or normal).
#[derive(clap::Args)]
struct PriorityArg {
    /// `low`: nice 19 and the lowest best-effort I/O level, for work on a
    /// host whose node is running.
    #[arg(long, default_value = "normal", value_parser = ["low", "normal"])]
    priority: String,
}

impl PriorityArg {
    fn apply(&self) {
        if self.priority == "low" {
            blocksnap::priority::lower_or_warn();
        }
    }
}

/// The destination of `copy`, with its own S3 settings.
#[derive(clap::Args)]
struct ToArg {
    /// The destination repository: a directory or s3://BUCKET/PREFIX. One
    /// that does not exist yet is created with the source's chunker and
    /// compression.
    #[arg(long = "to", value_name = "REPO")]
    to: String,
    /// The destination's S3-compatible endpoint (the source's --endpoint
    /// and BLOCKSNAP_S3_ENDPOINT do not apply to it).
    #[arg(long, help_heading = "S3 (destination)")]
    to_endpoint: Option<String>,
    /// The destination bucket's region.
    #[arg(long, help_heading = "S3 (destination)")]
    to_region: Option<String>,
    #[arg(
        long,
        conflicts_with = "to_virtual_hosted",
        help_heading = "S3 (destination)"
    )]
    to_path_style: bool,
    #[arg(long, help_heading = "S3 (destination)")]
    to_virtual_hosted: bool,
}

impl ToArg {
    /// As a repository argument; credentials from BLOCKSNAP_TO_AWS_ACCESS_KEY_ID
    /// and BLOCKSNAP_TO_AWS_SECRET_ACCESS_KEY when both are set, else the
    /// standard chain (the same as the source's).
    fn repo(&self) -> RepoArg {
        let var = |v: &str| std::env::var(v).ok().filter(|s| !s.is_empty());
        RepoArg {
            repo: self.to.clone(),
            endpoint: self.to_endpoint.clone(),
            virtual_hosted: self.to_virtual_hosted,
            path_style: self.to_path_style,
            region: self.to_region.clone(),
            anonymous: false,
            credentials: var("BLOCKSNAP_TO_AWS_ACCESS_KEY_ID")
                .zip(var("BLOCKSNAP_TO_AWS_SECRET_ACCESS_KEY")),
            limit_upload: None,
            limit_download: None,
        }
    }
}

/// What a command does with the repository: writers need credentials,
/// readers can do without them on a public bucket.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Access {
    Read,
    Write,
}

#[derive(clap::Args)]
struct CacheArg {
    /// Where local state lives: the stat cache and chunk index, and
    /// manifests already read (all safe to delete).
    /// Default: $XDG_CACHE_HOME/blocksnap or ~/.cache/blocksnap.
    #[arg(long, env = "BLOCKSNAP_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    /// Use no local state at all: read every manifest and (snapshot) every
    /// file, ask the store about every chunk.
    #[arg(long)]
    no_cache: bool,
}

impl CacheArg {
    fn base(&self) -> Option<PathBuf> {
        if self.no_cache {
            return None;
        }
        self.cache_dir.clone().or_else(cache::default_dir)
    }
}

#[derive(clap::Args)]
struct MetricsArg {
    /// Write the outcome to this Prometheus textfile (for node_exporter's
    /// textfile collector), atomically; commands and repositories can
    /// share one file.
    #[arg(long, value_name = "PATH")]
    metrics_file: Option<PathBuf>,
}

#[derive(clap::Args)]
struct JsonArg {
    /// Print a machine-readable JSON result instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Create an empty repository.
    Init {
        #[command(flatten)]
        repo: RepoArg,
        /// Average chunk size in KiB (min is a quarter, max four times).
        #[arg(long, default_value_t = chunking::DEFAULT_PARAMS.avg_size / 1024)]
        chunk_avg_kib: u32,
        /// zstd level for chunks that compress.
        #[arg(long, default_value_t = blocksnap::format::chunk::DEFAULT_ZSTD_LEVEL, allow_hyphen_values = true)]
        zstd_level: i32,
        #[command(flatten)]
        json: JsonArg,
    },
    /// Snapshot a (stopped) node's data directory at a block height.
    Snapshot {
        #[command(flatten)]
        repo: RepoArg,
        /// The data directory, e.g. /app/prep/data/loopchain.
        #[arg(long)]
        source: PathBuf,
        /// Block height the data is at. In a staged snapshot this is read
        /// before the node stops, so prefer --height-cmd there.
        #[arg(
            long,
            required_unless_present = "height_cmd",
            conflicts_with = "height_cmd"
        )]
        height: Option<u64>,
        /// Command that prints the block height the data is at, run while
        /// the node is stopped (after --stop-cmd and the lock wait; with no
        /// --stop-cmd, before reading). Gets BLOCKSNAP_SOURCE.
        #[arg(long, value_name = "CMD")]
        height_cmd: Option<String>,
        /// Free-form labels shown by `list`.
        #[arg(long = "tag")]
        tags: Vec<String>,
        /// Only these paths under the source (repeatable), e.g. .score_data.
        #[arg(long = "include")]
        includes: Vec<String>,
        /// The node's IPv4 address when paths hold several.
        #[arg(long)]
        ip: Option<String>,
        /// The node's name: with the source it names the snapshot's
        /// history (default: this machine's host name; set it in
        /// containers, whose host names change).
        #[arg(long, env = "BLOCKSNAP_HOST")]
        host: Option<String>,
        /// Parallelism, the one knob: at most N files chunked at once (never
        /// more than the CPUs) and N store writes in flight (default: one
        /// worker per CPU; 8 local writes, 32 S3 requests).
        #[arg(long, default_value_t = 0)]
        jobs: usize,
        #[command(flatten)]
        cache: CacheArg,
        /// Read and hash every file even when its stat is unchanged.
        #[arg(long)]
        rehash: bool,
        /// Snapshot even when a database under the source is open in a
        /// running process (the manifest records a warning).
        #[arg(long)]
        allow_live: bool,
        /// CPU and I/O priority: `auto` is low (nice 19, lowest best-effort
        /// I/O) while the node runs — after a staged snapshot's start
        /// command, or with --allow-live — and normal during downtime.
        #[arg(long, default_value = "auto", value_name = "auto|low|normal")]
        priority: blocksnap::priority::Priority,
        /// Staged snapshot: run this to stop the node, wait for its
        /// databases to close, freeze a view of the source, then run
        /// --start-cmd and snapshot the frozen view while the node runs.
        #[arg(long, requires = "start_cmd", value_name = "CMD")]
        stop_cmd: Option<String>,
        /// Starts the node again after a staged snapshot's freeze.
        #[arg(long, requires = "stop_cmd", value_name = "CMD")]
        start_cmd: Option<String>,
        /// Seconds to wait for the databases to close after --stop-cmd.
        #[arg(long, default_value_t = 120)]
        stop_timeout: u64,
        /// Seconds --stop-cmd, --start-cmd and --height-cmd may each run
        /// before they are killed.
        #[arg(long, default_value_t = 300)]
        cmd_timeout: u64,
        /// Pass this environment variable to the commands too (repeatable);
        /// by default they get only PATH, HOME, the locale and a few
        /// daemon sockets, not blocksnap's own environment.
        #[arg(long = "cmd-env", value_name = "VAR")]
        cmd_env: Vec<String>,
        #[command(flatten)]
        sign: SignArg,
        #[command(flatten)]
        metrics: MetricsArg,
        #[command(flatten)]
        json: JsonArg,
    },
    /// List snapshots: height, time, host, tags, files, size, bytes added.
    List {
        #[command(flatten)]
        repo: RepoArg,
        /// Only this node's snapshots.
        #[arg(long)]
        host: Option<String>,
        #[command(flatten)]
        trust: TrustArg,
        #[command(flatten)]
        cache: CacheArg,
        #[command(flatten)]
        json: JsonArg,
    },
    /// Restore a snapshot into a directory, for a node with the given IP.
    Restore {
        #[command(flatten)]
        repo: RepoArg,
        /// HEIGHT, `latest`, or a snapshot id prefix.
        snapshot: String,
        /// Among this node's snapshots only (e.g. its `latest`).
        #[arg(long)]
        host: Option<String>,
        #[arg(long)]
        target: PathBuf,
        /// The target node's IPv4 address, put back into path names.
        #[arg(long)]
        ip: Option<String>,
        /// Restore into a non-empty target, replacing the snapshot's
        /// top-level entries there and leaving everything else.
        #[arg(long)]
        force: bool,
        /// Parallel chunk fetches (default: one per CPU locally, 32 on S3).
        #[arg(long, default_value_t = 0)]
        jobs: usize,
        /// Restore setuid, setgid and world-writable modes as recorded
        /// (by default those bits are dropped).
        #[arg(long)]
        keep_special_modes: bool,
        /// Refuse a snapshot that would write more than this (e.g. 200GiB).
        #[arg(long, value_name = "SIZE", value_parser = parse_size)]
        max_size: Option<u64>,
        /// Restore even when a database under the target is open in a
        /// running process.
        #[arg(long)]
        allow_live: bool,
        /// Keep the entries a --force restore replaces, in a directory in
        /// the target that the output names, instead of deleting them.
        #[arg(long, requires = "force")]
        keep_old: bool,
        /// Also use the bytes of the files in this directory (repeatable:
        /// e.g. a copy of the node, or another node's data directory):
        /// every chunk taken from it is checked, nothing in it is changed.
        #[arg(long, value_name = "DIR")]
        reuse_from: Vec<PathBuf>,
        /// With --force: download everything instead of reusing the bytes of
        /// the entries being replaced.
        #[arg(long)]
        no_reuse: bool,
        /// Show the plan (what is kept, copied from local files, and
        /// downloaded) without writing anything.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        trust: TrustArg,
        #[command(flatten)]
        metrics: MetricsArg,
        #[command(flatten)]
        json: JsonArg,
    },
    /// Audit snapshots without restoring, or compare a directory with a
    /// snapshot (--dir); exit code 3 when damage or a difference is found.
    Verify {
        #[command(flatten)]
        repo: RepoArg,
        /// HEIGHT, `latest`, `all`, or a snapshot id prefix.
        snapshot: String,
        /// Among this node's snapshots only.
        #[arg(long)]
        host: Option<String>,
        /// Read and hash every chunk and file, not only check presence and size.
        #[arg(long)]
        full: bool,
        /// With --full, read only part of the chunks: `I/N` is slice I of
        /// N (running 1/N … N/N reads every chunk once), `P%` a random
        /// share (the seed is printed; repeat a run with --seed).
        #[arg(long, requires = "full", value_name = "I/N|P%")]
        subset: Option<verify::Subset>,
        /// The seed of a `P%` subset.
        #[arg(long, requires = "subset")]
        seed: Option<u64>,
        /// Check each history's parent links: a parent that is gone or
        /// replaced, and forks (always on with `all`).
        #[arg(long)]
        chain: bool,
        /// Compare this directory (a restore, or a stopped node's data
        /// directory) with the snapshot instead: only the manifest is read.
        #[arg(long, value_name = "PATH", conflicts_with_all = ["full", "chain"])]
        dir: Option<PathBuf>,
        /// With --dir: the node's IPv4 address, as restore would put it
        /// back into path names.
        #[arg(long, requires = "dir")]
        ip: Option<String>,
        /// With --dir: expect setuid, setgid and world-writable modes as
        /// recorded (as `restore --keep-special-modes` writes them).
        #[arg(long, requires = "dir")]
        keep_special_modes: bool,
        /// Parallel chunk reads for --full (default: one per CPU locally,
        /// 32 on S3).
        #[arg(long, default_value_t = 0)]
        jobs: usize,
        #[command(flatten)]
        priority: PriorityArg,
        #[command(flatten)]
        trust: TrustArg,
        #[command(flatten)]
        cache: CacheArg,
        #[command(flatten)]
        metrics: MetricsArg,
        #[command(flatten)]
        json: JsonArg,
    },
    /// What changed between two snapshots: added, removed and changed
    /// files, and how much of the second is new chunks.
    Diff {
        #[command(flatten)]
        repo: RepoArg,
        /// HEIGHT, `latest`, or a snapshot id prefix.
        from: String,
        /// HEIGHT, `latest`, or a snapshot id prefix.
        to: String,
        /// Among this node's snapshots only.
        #[arg(long)]
        host: Option<String>,
        #[command(flatten)]
        cache: CacheArg,
        #[command(flatten)]
        json: JsonArg,
    },
    /// Forget snapshots by a retention policy (per history: host and
    /// source), or by name. Their chunks stay until `prune`.
    Forget {
        #[command(flatten)]
        repo: RepoArg,
        /// Snapshots to forget by name (ids, heights, `latest`) instead of a
        /// policy.
        snapshots: Vec<String>,
        /// Keep the N newest.
        #[arg(long, value_name = "N")]
        keep_last: Option<retention::Count>,
        /// Keep those created within this long (e.g. 15d, 36h, 2w).
        #[arg(long, value_name = "DURATION", value_parser = retention::parse_duration)]
        keep_within: Option<std::time::Duration>,
        /// Keep the newest of each of the N newest hours that have one.
        #[arg(long, value_name = "N|unlimited")]
        keep_hourly: Option<retention::Count>,
        /// … days.
        #[arg(long, value_name = "N|unlimited")]
        keep_daily: Option<retention::Count>,
        /// … ISO weeks.
        #[arg(long, value_name = "N|unlimited")]
        keep_weekly: Option<retention::Count>,
        /// … months.
        #[arg(long, value_name = "N|unlimited")]
        keep_monthly: Option<retention::Count>,
        /// … years.
        #[arg(long, value_name = "N|unlimited")]
        keep_yearly: Option<retention::Count>,
        /// Keep snapshots with this tag (repeatable).
        #[arg(long = "keep-tag", value_name = "TAG")]
        keep_tags: Vec<String>,
        /// Keep one snapshot per N blocks of height (the lowest in each
        /// window of N), e.g. 43120 for one per ICON term.
        #[arg(long, value_name = "N")]
        keep_every_blocks: Option<u64>,
        /// Calendar buckets in UTC instead of local time.
        #[arg(long)]
        utc: bool,
        /// Only this node's snapshots.
        #[arg(long)]
        host: Option<String>,
        /// Show what would be kept and forgotten, and why; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Sign each forget record, so that a trusted history can tell this
        /// forget from a deletion.
        #[command(flatten)]
        sign: SignArg,
        /// With trusted keys a policy counts only the snapshots they signed
        /// (others are kept and not counted), and only signed forget
        /// records forget.
        #[command(flatten)]
        trust: TrustArg,
        /// A snapshot created more than this far ahead of this host's clock
        /// is not counted by a policy (default 10m).
        #[arg(long, value_name = "DURATION", value_parser = retention::parse_duration)]
        max_clock_skew: Option<std::time::Duration>,
        #[command(flatten)]
        cache: CacheArg,
        #[command(flatten)]
        json: JsonArg,
    },
    /// Repository size by kind of object, logical against stored bytes
    /// (dedup and compression), and per snapshot the bytes only it
    /// references (what forgetting it would free). One listing plus the
    /// manifests.
    Stats {
        #[command(flatten)]
        repo: RepoArg,
        #[command(flatten)]
        cache: CacheArg,
        #[command(flatten)]
        json: JsonArg,
    },
    /// Copy snapshots to another repository (e.g. a local tier to S3):
    /// only the chunks it lacks, object bytes unchanged, signatures too.
    /// Safe beside the destination's prune; re-run to resume.
    Copy {
        #[command(flatten)]
        repo: RepoArg,
        /// HEIGHT, `latest`, `all` or snapshot id prefixes.
        #[arg(required = true)]
        snapshots: Vec<String>,
        /// Only this node's snapshots.
        #[arg(long)]
        host: Option<String>,
        #[command(flatten)]
        to: ToArg,
        /// Parallel chunk transfers (default: the larger of the two
        /// stores' own: 32 with S3 at either end).
        #[arg(long, default_value_t = 0)]
        jobs: usize,
        #[command(flatten)]
        priority: PriorityArg,
        /// Show what would be copied; copy nothing.
        #[arg(long)]
        dry_run: bool,
        /// Signature objects by these keys are copied only if they verify;
        /// forget records at the destination count only if they signed them.
        #[command(flatten)]
        trust: TrustArg,
        #[command(flatten)]
        json: JsonArg,
    },
    /// Sign snapshots already in the repository (e.g. by a second key):
    /// by full id, or with --trust those a trusted key already signed.
    Sign {
        #[command(flatten)]
        repo: RepoArg,
        /// Full snapshot ids; with --trust also HEIGHT, `latest` (the newest
        /// trusted) or `all` (every trusted one).
        #[arg(required = true)]
        snapshots: Vec<String>,
        /// Only this node's snapshots.
        #[arg(long)]
        host: Option<String>,
        /// The minisign secret key to sign with.
        #[arg(long, value_name = "KEYFILE", env = "BLOCKSNAP_SIGN_KEY")]
        key: PathBuf,
        /// Co-sign only what a trusted key already signed.
        #[command(flatten)]
        trust: TrustArg,
        #[command(flatten)]
        json: JsonArg,
    },
    /// Signing keys.
    Key {
        #[command(subcommand)]
        action: KeyAction,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish,
    /// powershell) to standard output.
    Completions { shell: clap_complete::Shell },
    /// Write the manual pages: blocksnap.1 and one per command
    /// (blocksnap-restore.1, …) into DIR (default: print blocksnap.1).
    Man {
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// Delete the chunks no snapshot needs, safely beside other hosts'
    /// snapshots (space comes back one grace period after a snapshot is
    /// forgotten, or at once with --instant-delete on a single-writer
    /// repository).
    Prune {
        #[command(flatten)]
        repo: RepoArg,
        /// Report what would be deleted; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Condemn and delete in this one run. For a repository no other
        /// host writes to (refused when one did recently): a snapshot
        /// running meanwhile would refuse to commit.
        #[arg(long)]
        instant_delete: bool,
        /// How old unreferenced chunks must be, and how long a condemned
        /// round waits, before deletion. Every snapshot must reach its
        /// commit within this time of its start.
        #[arg(long, default_value = "1d", value_parser = retention::parse_duration)]
        grace: std::time::Duration,
        /// A sweep's lease (for tests).
        #[arg(long, default_value = "1h", value_parser = retention::parse_duration, hide = true)]
        lease: std::time::Duration,
        /// When an unclaimed pending commit expires (for tests).
        #[arg(long, default_value = "1h", value_parser = retention::parse_duration, hide = true)]
        pending_expiry: std::time::Duration,
        /// When the records of swept rounds are removed (for tests).
        #[arg(long, default_value = "7d", value_parser = retention::parse_duration, hide = true)]
        retire_after: std::time::Duration,
        /// This node's name, as its snapshots record it (default: the host
        /// name): --instant-delete refuses when other nodes wrote recently.
        #[arg(long, env = "BLOCKSNAP_HOST")]
        host: Option<String>,
        /// Parallel manifest reads (default: one per CPU locally, 32 on S3).
        #[arg(long, default_value_t = 0)]
        jobs: usize,
        #[command(flatten)]
        cache: CacheArg,
        #[command(flatten)]
        metrics: MetricsArg,
        #[command(flatten)]
        json: JsonArg,
    },
    /// Generate or advance an ICON-layout node directory (RocksDB databases).
    Generate {
        /// The `loopchain` data directory to create or advance.
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value = "10.0.0.7")]
        ip: Ipv4Addr,
        #[arg(long, default_value_t = 7)]
        seed: u64,
        /// Grow until the directory holds this many MiB.
        #[arg(long)]
        size_mib: Option<u64>,
        /// Then add this many blocks.
        #[arg(long, default_value_t = 0)]
        blocks: u64,
        #[command(flatten)]
        json: JsonArg,
    },
    /// Run the main job on generated data: snapshot, advance, snapshot,
    /// restore with another IP, verify, compare.
    Demo {
        /// Working directory (must not hold an earlier demo).
        #[arg(long, default_value = "blocksnap-demo")]
        dir: PathBuf,
        #[arg(long, default_value_t = 256)]
        size_mib: u64,
        #[arg(long, default_value_t = 1000)]
        blocks: u64,
        #[command(flatten)]
        json: JsonArg,
    },
}

#[derive(Subcommand)]
enum KeyAction {
    /// Write a new Ed25519 (minisign) key pair: NAME, the secret key (mode
    /// 0600, never printed), and NAME.pub, the public key to publish.
    Generate {
        #[arg(long, value_name = "NAME")]
        out: PathBuf,
        /// Encrypt the secret key with the passphrase in
        /// BLOCKSNAP_KEY_PASSPHRASE (minisign's scrypt form).
        #[arg(long)]
        encrypt: bool,
        #[command(flatten)]
        json: JsonArg,
    },
}

impl Command {
    /// Where this run's outcome goes, and the labels that name it.
    fn metrics(&self) -> Option<(PathBuf, metrics::Run)> {
        let (name, repo, source, arg) = match self {
            Command::Snapshot {
                repo,
                source,
                metrics,
                ..
            } => (
                "snapshot",
                repo,
                Some(source.display().to_string()),
                metrics,
            ),
            // A dry run restores nothing: it is no restore's outcome.
            Command::Restore { dry_run: true, .. } => return None,
            Command::Restore {
                repo,
                target,
                metrics,
                ..
            } => ("restore", repo, Some(target.display().to_string()), metrics),
            Command::Verify {
                repo, dir, metrics, ..
            } => (
                "verify",
                repo,
                dir.as_ref().map(|d| d.display().to_string()),
                metrics,
            ),
            Command::Prune { repo, metrics, .. } => ("prune", repo, None, metrics),
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

/// A command's exit code and what it measured.
#[derive(Default)]
struct Done {
    code: u8,
    figures: metrics::Figures,
}

impl Done {
    fn with(figures: metrics::Figures) -> Done {
        Done { code: 0, figures }
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

/// The manual pages, from the clap definitions: `blocksnap.1` and one page
/// per command. Without a directory, `blocksnap.1` goes to stdout.
fn write_man(out: Option<&std::path::Path>) -> Result<()> {
    let cmd = <Cli as clap::CommandFactory>::command();
    let Some(dir) = out else {
        clap_mangen::Man::new(cmd).render(&mut std::io::stdout())?;
        return Ok(());
    };
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let mut pages = vec![("blocksnap".to_string(), cmd.clone())];
    for sub in cmd.get_subcommands() {
        // A page's title is the command's name; the program ends here.
        let name: &'static str = format!("blocksnap-{}", sub.get_name()).leak();
        pages.push((name.to_string(), sub.clone().name(name)));
    }
    for (name, page) in pages {
        let path = dir.join(format!("{name}.1"));
        let mut body = Vec::new();
        clap_mangen::Man::new(page).render(&mut body)?;
        std::fs::write(&path, body).with_context(|| format!("write {}", path.display()))?;
    }
    Ok(())
}

/// A size in bytes: a number with an optional unit (K, M, G, T as powers
/// of 1024, also written KiB/MiB/GiB/TiB; KB, MB, GB, TB as powers of 1000).
fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (e.g. 500GiB, 20MiB, 1000000)"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => {
            return Err(format!(
                "{s:?}: unknown unit {unit:?} (use KiB, MiB, GiB, TiB)"
            ))
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// Opens the store `--repo` names. `jobs` (0: the store's default) bounds
/// the requests in flight on a network store.
fn open_store(arg: &RepoArg, access: Access, jobs: usize) -> Result<Arc<dyn Store>> {
    let store = open_unlimited(arg, access, jobs)?;
    let limits = limited::Limits {
        upload: arg.limit_upload,
        download: arg.limit_download,
    };
    Ok(match limits.is_none() {
        true => store,
        false => Arc::new(limited::LimitedStore::new(store, limits)),
    })
}

fn open_unlimited(arg: &RepoArg, access: Access, jobs: usize) -> Result<Arc<dyn Store>> {
    match arg.repo.parse::<Location>()? {
        Location::Local(path) => {
            if arg.anonymous {
                bail!("--anonymous applies to s3:// repositories only");
            }
            Ok(Arc::new(CountingStore::new(LocalStore::open(path))))
        }
        Location::S3 { bucket, prefix } => open_s3(arg, bucket, prefix, access, jobs),
    }
}

#[cfg(feature = "s3")]
fn open_s3(
    arg: &RepoArg,
    bucket: String,
    prefix: String,
    access: Access,
    jobs: usize,
) -> Result<Arc<dyn Store>> {
    use blocksnap_s3::{Auth, S3Options, S3Store};
    let opts = S3Options {
        bucket,
        prefix,
        endpoint: arg.endpoint.clone(),
        path_style: if arg.path_style {
            Some(true)
        } else if arg.virtual_hosted {
            Some(false)
        } else {
            None
        },
        region: arg.region.clone(),
        auth: match (arg.anonymous, access) {
            (true, _) => Auth::Anonymous,
            (false, Access::Read) => Auth::Auto,
            (false, Access::Write) => Auth::Required,
        },
        credentials: arg.credentials.clone(),
        parallelism: jobs,
        max_attempts: 0,
    };
    let store = S3Store::open(&opts)?;
    if store.is_anonymous() && !arg.anonymous {
        eprintln!(
            "blocksnap: no AWS credentials found; reading {} with unsigned requests",
            opts.url()
        );
    }
    Ok(Arc::new(store))
}

#[cfg(not(feature = "s3"))]
fn open_s3(
    arg: &RepoArg,
    _bucket: String,
    _prefix: String,
    _access: Access,
    _jobs: usize,
) -> Result<Arc<dyn Store>> {
    bail!(
        "repository {:?}: this blocksnap was built without S3 support (feature `s3`)",
        arg.repo
    )
}

/// The repository's local state, or none (with a warning) when it cannot
/// be had: a cache only ever saves time.
fn open_state(cache: &CacheArg, repo: &Repository) -> Option<cache::LocalState> {
    if cache.no_cache {
        return None;
    }
    let Some(base) = cache.base() else {
        eprintln!(
            "blocksnap: warning: no cache directory (set --cache-dir or HOME); reading everything"
        );
        return None;
    };
    match cache::LocalState::open(&base, repo) {
        Ok(s) => Some(s),
        Err(e) => {
            eprintln!("blocksnap: warning: {e}; snapshot without the cache");
            None
        }
    }
}

fn open_repo(arg: &RepoArg, access: Access, jobs: usize) -> Result<Repository> {
    Ok(Repository::open(open_store(arg, access, jobs)?)?)
}

/// The repository, keeping the manifests it reads in the cache directory.
fn open_cached(arg: &RepoArg, access: Access, jobs: usize, cache: &CacheArg) -> Result<Repository> {
    let r = open_repo(arg, access, jobs)?;
    Ok(match cache.base() {
        Some(base) => r.with_manifest_cache(&base),
        None => r,
    })
}

/// One snapshot named on the command line (not `all`).
fn one(
    r: &Repository,
    given: &str,
    host: Option<&str>,
) -> Result<blocksnap::format::layout::SnapshotKey> {
    one_trusted(r, given, host, None)
}

/// One snapshot; with trusted keys, one a trusted key signed (`latest`:
/// the newest such).
fn one_trusted(
    r: &Repository,
    given: &str,
    host: Option<&str>,
    trust: Option<&sign::Trust>,
) -> Result<blocksnap::format::layout::SnapshotKey> {
    let selector: Selector = given.parse()?;
    if selector == Selector::All {
        bail!("{given:?}: this takes one snapshot: HEIGHT, latest or an id prefix");
    }
    Ok(match trust {
        Some(t) => trusted::resolve_trusted(r, t, &selector, host)?,
        None => r.resolve_for(&selector, host)?[0],
    })
}

fn run(command: Command) -> Result<Done> {
    match command {
        Command::Init {
            repo,
            chunk_avg_kib,
            zstd_level,
            json,
        } => {
            let avg = chunk_avg_kib
                .checked_mul(1024)
                .context("--chunk-avg-kib too large")?;
            let params = ChunkerParams {
                min_size: avg / 4,
                avg_size: avg,
                max_size: avg.saturating_mul(4),
            };
            if let Ok(Location::Local(dir)) = repo.repo.parse::<Location>() {
                std::fs::create_dir_all(&dir)
                    .with_context(|| format!("create {}", dir.display()))?;
            }
            let r = Repository::init(open_store(&repo, Access::Write, 0)?, params, zstd_level)?;
            Out::new(json.json).init(&repo.repo, r.config());
        }
        Command::Snapshot {
            repo,
            source,
            height,
            tags,
            includes,
            ip,
            jobs,
            cache,
            rehash,
            allow_live,
            priority,
            stop_cmd,
            start_cmd,
            stop_timeout,
            height_cmd,
            cmd_timeout,
            cmd_env,
            host,
            sign,
            metrics: _,
            json,
        } => {
            // A bad key is found before anything is read or stopped.
            let signer = sign.load()?;
            let r = open_repo(&repo, Access::Write, jobs)?;
            let ip = ip.as_deref().map(ipnorm::parse_ip).transpose()?;
            let runner = command::Runner {
                timeout: std::time::Duration::from_secs(cmd_timeout),
                pass_env: cmd_env,
                set_env: vec![("BLOCKSNAP_SOURCE".into(), source.display().to_string())],
            };
            let staged = stop_cmd.is_some();
            let height = match (&height_cmd, height) {
                (Some(cmd), _) if !staged => command::height(&runner, cmd)?,
                (_, Some(h)) => h,
                // Staged: the height command runs while the node is stopped.
                _ => 0,
            };
            let opts = snapshot::SnapshotOptions {
                source,
                height,
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
            let state = open_state(&cache, &r);
            let bar = Bar::new(json.json);
            let out = Out::new(json.json);
            let report = match (stop_cmd, start_cmd) {
                (Some(stop_cmd), Some(start_cmd)) => {
                    let stage_opts = stage::StageOptions {
                        stop_cmd,
                        start_cmd,
                        lock_timeout: std::time::Duration::from_secs(stop_timeout),
                        height_cmd,
                        runner,
                    };
                    let (report, staged) =
                        stage::snapshot_staged(&r, &opts, &stage_opts, state.as_ref(), &bar)?;
                    out.staged_snapshot(&report, &staged);
                    if let Some(e) = staged.start_error {
                        bail!("{e}: THE NODE IS NOT RUNNING (the snapshot was committed)");
                    }
                    report
                }
                _ => {
                    let report = snapshot::snapshot_with_state(&r, &opts, state.as_ref(), &bar)?;
                    out.snapshot(&report);
                    report
                }
            };
            return Ok(Done::with(metrics::Figures {
                bytes_read: Some(report.bytes_read),
                bytes_new: Some(report.stats.new_stored_bytes),
                bytes_stored: Some(report.stats.logical_bytes),
                chunks: Some(report.stats.chunk_refs),
                height: Some(report.key.height),
                requests: report.requests,
                ..Default::default()
            }));
        }
        Command::List {
            repo,
            host,
            trust,
            cache,
            json,
        } => {
            let trust = trust.load()?;
            let r = open_cached(&repo, Access::Read, 0, &cache)?.with_trust(trust.clone());
            Out::new(json.json).list(&list::list(&r, host.as_deref(), trust.as_deref())?);
            if let Some(c) = r.store().request_counts() {
                tracing::info!(
                    "store requests: GET {}, HEAD {}, LIST {} ({} retries)",
                    c.get,
                    c.head,
                    c.list,
                    c.retries
                );
            }
        }
        Command::Restore {
            repo,
            snapshot,
            target,
            ip,
            force,
            jobs,
            keep_special_modes,
            max_size,
            allow_live,
            keep_old,
            reuse_from,
            no_reuse,
            dry_run,
            trust,
            host,
            metrics: _,
            json,
        } => {
            let trust = trust.load()?;
            let r = open_repo(&repo, Access::Read, jobs)?.with_trust(trust.clone());
            let key = one_trusted(&r, &snapshot, host.as_deref(), trust.as_deref())?;
            let opts = restore::RestoreOptions {
                target,
                ip,
                force,
                jobs,
                keep_special_modes,
                max_bytes: max_size,
                allow_live,
                keep_old,
                reuse_from,
                no_reuse,
            };
            let plan = restore::plan(&r, &key, &opts)?;
            if dry_run {
                Out::new(json.json).restore_plan(&plan);
                return Ok(Done::default());
            }
            let bar = Bar::new(json.json);
            let report = restore::restore(&r, &plan, &opts, &bar)?;
            Out::new(json.json).restore(&report);
            return Ok(Done::with(metrics::Figures {
                bytes_read: Some(report.bytes),
                bytes_stored: Some(report.bytes),
                chunks: Some(report.chunks_fetched),
                height: Some(report.key.height),
                requests: report.requests,
                ..Default::default()
            }));
        }
        Command::Verify {
            repo,
            snapshot,
            full,
            subset,
            seed,
            chain,
            dir,
            ip,
            keep_special_modes,
            jobs,
            priority,
            host,
            trust,
            cache,
            metrics: _,
            json,
        } => {
            priority.apply();
            let trust = trust.load()?;
            let r = open_cached(&repo, Access::Read, jobs, &cache)?.with_trust(trust.clone());
            let bar = Bar::new(json.json);
            if let Some(dir) = dir {
                let key = one_trusted(&r, &snapshot, host.as_deref(), trust.as_deref())?;
                let ip = ip.as_deref().map(ipnorm::parse_ip).transpose()?;
                let manifest = r.load_manifest(&key)?;
                let report = compare::dir(&manifest, &dir, ip, keep_special_modes, &bar)?;
                Out::new(json.json).compare(&key, &dir, &report);
                return Ok(Done {
                    code: if report.differences.is_empty() { 0 } else { 3 },
                    figures: metrics::Figures {
                        bytes_read: Some(report.bytes_hashed),
                        height: Some(key.height),
                        ..Default::default()
                    },
                });
            }
            let selector: Selector = snapshot.parse()?;
            let keys = match (&trust, &selector) {
                // The newest trusted one; with none, the newest, to be
                // reported as untrusted.
                (Some(t), Selector::Latest | Selector::Height(_)) => {
                    match trusted::resolve_trusted(&r, t, &selector, host.as_deref()) {
                        Ok(key) => vec![key],
                        Err(_) => r.resolve_for(&selector, host.as_deref())?,
                    }
                }
                _ => r.resolve_for(&selector, host.as_deref())?,
            };
            let subset = match (subset, seed) {
                (Some(verify::Subset::Share { percent, .. }), Some(seed)) => {
                    verify::Subset::Share { percent, seed }
                }
                (Some(verify::Subset::Slice { .. }), Some(_)) => {
                    bail!("--seed goes with a random share (--subset P%), not a slice")
                }
                (s, _) => s.unwrap_or(verify::Subset::All),
            };
            let opts = verify::VerifyOptions {
                level: if full {
                    verify::Level::Full
                } else {
                    verify::Level::Quick
                },
                jobs,
                subset,
                chain: chain || selector == Selector::All,
                trust,
            };
            let report = verify::verify(&r, &keys, opts, &bar)?;
            Out::new(json.json).verify(&report);
            return Ok(Done {
                code: if report.ok() { 0 } else { 3 },
                figures: metrics::Figures {
                    bytes_read: Some(report.bytes_checked),
                    chunks: Some(report.chunks_checked),
                    requests: report.requests,
                    problems: Some(
                        report
                            .problem_counts()
                            .into_iter()
                            .map(|(k, v)| (k.to_string(), v))
                            .collect(),
                    ),
                    ..Default::default()
                },
            });
        }
        Command::Diff {
            repo,
            from,
            to,
            host,
            cache,
            json,
        } => {
            let r = open_cached(&repo, Access::Read, 0, &cache)?;
            let a = one(&r, &from, host.as_deref())?;
            let b = one(&r, &to, host.as_deref())?;
            let report = compare::diff(&r.load_manifest(&a)?, &r.load_manifest(&b)?);
            Out::new(json.json).diff(&a, &b, &report);
        }
        Command::Forget {
            repo,
            snapshots,
            keep_last,
            keep_within,
            keep_hourly,
            keep_daily,
            keep_weekly,
            keep_monthly,
            keep_yearly,
            keep_tags,
            keep_every_blocks,
            utc,
            host,
            dry_run,
            sign,
            trust,
            max_clock_skew,
            cache,
            json,
        } => {
            let signer = sign.load()?;
            let trust = trust.load()?;
            let r = open_cached(&repo, Access::Write, 0, &cache)?.with_trust(trust.clone());
            let named = snapshots
                .iter()
                .map(|s| s.parse::<Selector>())
                .collect::<blocksnap::Result<Vec<_>>>()?;
            let opts = forget::ForgetOptions {
                policy: retention::Policy {
                    last: keep_last,
                    within: keep_within,
                    hourly: keep_hourly,
                    daily: keep_daily,
                    weekly: keep_weekly,
                    monthly: keep_monthly,
                    yearly: keep_yearly,
                    tags: keep_tags,
                    every_blocks: keep_every_blocks,
                },
                named,
                host,
                utc,
                by_host: std::env::var("BLOCKSNAP_HOST")
                    .ok()
                    .filter(|h| !h.is_empty())
                    .unwrap_or_else(blocksnap::repo::this_host),
                now_unix_ns: forget::now(),
                signer,
                trust,
                max_clock_skew: max_clock_skew.unwrap_or_default(),
            };
            let plan = forget::plan(&r, &opts)?;
            let out = Out::new(json.json);
            if dry_run {
                out.forget(&plan, None);
            } else {
                let bar = Bar::new(json.json);
                let report = forget::execute(&r, &plan, &opts, &bar)?;
                out.forget(&plan, Some(&report));
            }
        }
        Command::Prune {
            repo,
            dry_run,
            instant_delete,
            grace,
            lease,
            pending_expiry,
            retire_after,
            host,
            jobs,
            cache,
            metrics: _,
            json,
        } => {
            let access = if dry_run { Access::Read } else { Access::Write };
            let r = open_cached(&repo, access, jobs, &cache)?;
            let opts = prune::PruneOptions {
                grace,
                lease,
                pending_expiry,
                retire_after,
                instant: instant_delete,
                dry_run,
                host: host.unwrap_or_else(blocksnap::repo::this_host),
            };
            let bar = Bar::new(json.json);
            let report = prune::run(&r, &opts, &bar)?;
            Out::new(json.json).prune(&report);
            return Ok(Done::with(metrics::Figures {
                chunks: Some(report.swept.iter().map(|s| s.deleted).sum()),
                bytes_deleted: Some(report.swept.iter().map(|s| s.deleted_bytes).sum()),
                repository_bytes: Some(report.chunk_bytes),
                requests: report.requests,
                ..Default::default()
            }));
        }
        Command::Copy {
            repo,
            snapshots,
            host,
            to,
            jobs,
            priority,
            dry_run,
            trust,
            json,
        } => {
            priority.apply();
            let trust = trust.load()?;
            let src = open_repo(&repo, Access::Read, jobs)?.with_trust(trust.clone());
            // The source is read (downloads), the destination written.
            let dst_arg = RepoArg {
                limit_upload: repo.limit_upload,
                ..to.repo()
            };
            let dst_store = open_store(&dst_arg, Access::Write, jobs)?;
            let dst = match Repository::open(dst_store.clone()) {
                Err(blocksnap::Error::NoRepository { .. }) if !dry_run => {
                    if let Ok(Location::Local(dir)) = dst_arg.repo.parse::<Location>() {
                        std::fs::create_dir_all(&dir)
                            .with_context(|| format!("create {}", dir.display()))?;
                    }
                    let c = src.config();
                    Repository::init(dst_store, c.chunker, c.zstd_level)?
                }
                other => other?,
            }
            .with_trust(trust);
            let mut keys = Vec::new();
            for given in &snapshots {
                let selector: Selector = given.parse()?;
                keys.extend(src.resolve_for(&selector, host.as_deref())?);
            }
            let plan = copy::plan(&src, &dst, &keys)?;
            let out = Out::new(json.json);
            if dry_run {
                out.copy_plan(&plan);
                return Ok(Done::default());
            }
            let bar = Bar::new(json.json);
            let report = copy::execute(&src, &dst, &plan, &copy::CopyOptions { jobs }, &bar)?;
            out.copy(&report);
            if !report.not_copied.is_empty() {
                bail!(
                    "copied what could be, but not: {}",
                    report.not_copied.join("; ")
                );
            }
        }
        Command::Stats { repo, cache, json } => {
            let r = open_cached(&repo, Access::Read, 0, &cache)?;
            let bar = Bar::new(json.json);
            Out::new(json.json).stats(&repo.repo, &blocksnap::stats::stats(&r, &bar)?);
        }
        Command::Sign {
            repo,
            snapshots,
            host,
            key,
            trust,
            json,
        } => {
            let signer = sign::Signer::load(&key)?;
            let trust = trust.load()?;
            let r = open_repo(&repo, Access::Write, 0)?.with_trust(trust.clone());
            let selectors = snapshots
                .iter()
                .map(|s| s.parse::<Selector>())
                .collect::<blocksnap::Result<Vec<_>>>()?;
            let signed = trusted::sign_snapshots(
                &r,
                &signer,
                &selectors,
                host.as_deref(),
                trust.as_deref(),
            )?;
            Out::new(json.json).signed(&signed, signer.key_id());
        }
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "blocksnap", &mut std::io::stdout());
        }
        Command::Man { out } => write_man(out.as_deref())?,
        Command::Key {
            action: KeyAction::Generate { out, encrypt, json },
        } => {
            let passphrase = if encrypt {
                Some(std::env::var(sign::PASSPHRASE_ENV).with_context(|| {
                    format!(
                        "--encrypt takes the passphrase from {}",
                        sign::PASSPHRASE_ENV
                    )
                })?)
            } else {
                None
            };
            let (id, public) = sign::generate(&out, passphrase)?;
            Out::new(json.json).key_generated(&out, id, &public);
        }
        Command::Generate {
            dir,
            ip,
            seed,
            size_mib,
            blocks,
            json,
        } => {
            let mut node = nodegen::Node::open(&dir, ip, seed)?;
            if let Some(mib) = size_mib {
                node.grow_to(mib << 20)?;
            }
            node.advance(blocks)?;
            let height = node.height();
            drop(node);
            Out::new(json.json).generated(&dir, height, nodegen::du(&dir)?);
        }
        Command::Demo {
            dir,
            size_mib,
            blocks,
            json,
        } => {
            let opts = demo::DemoOptions {
                dir,
                size_bytes: size_mib << 20,
                advance_blocks: blocks,
                source_ip: Ipv4Addr::new(10, 0, 0, 7),
                target_ip: Ipv4Addr::new(10, 0, 0, 8),
                chunker: chunking::DEFAULT_PARAMS,
                zstd_level: blocksnap::format::chunk::DEFAULT_ZSTD_LEVEL,
            };
            let bar = Bar::new(json.json);
            let report = demo::run(&opts, &bar)?;
            Out::new(json.json).demo(&report);
            if !report.verify.ok() || !report.differences.is_empty() {
                return Ok(Done {
                    code: 3,
                    ..Default::default()
                });
            }
        }
    }
    Ok(Done::default())
}
