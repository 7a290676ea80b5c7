//! Option groups several commands share, flattened into each command's
//! arguments once.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Result;
use blocksnap::store::limited;
use blocksnap::{cache, sign};

/// Which publishers to believe (restore, verify, list).
#[derive(clap::Args)]
pub(crate) struct TrustArg {
    /// Believe only snapshots signed by this minisign public key: its
    /// base64 line, or a file of keys (a .pub file; repeatable). `latest`
    /// then means the newest trusted snapshot.
    #[arg(
        long = "trust",
        value_name = "PUBKEY|FILE",
        env = "BLOCKSNAP_TRUST",
        value_delimiter = ','
    )]
    pub(crate) trust: Vec<String>,
}

impl TrustArg {
    pub(crate) fn load(&self) -> Result<Option<Arc<sign::Trust>>> {
        if self.trust.is_empty() {
            return Ok(None);
        }
        Ok(Some(Arc::new(sign::Trust::parse(&self.trust)?)))
    }
}

/// A secret key to sign with (snapshot, forget).
#[derive(clap::Args)]
pub(crate) struct SignArg {
    /// Sign with this minisign secret key (see `key generate`); an
    /// encrypted key reads its passphrase from BLOCKSNAP_KEY_PASSPHRASE.
    #[arg(long = "sign", value_name = "KEYFILE", env = "BLOCKSNAP_SIGN_KEY")]
    pub(crate) sign: Option<PathBuf>,
}

impl SignArg {
    pub(crate) fn load(&self) -> Result<Option<Arc<sign::Signer>>> {
        Ok(match &self.sign {
            Some(path) => Some(Arc::new(sign::Signer::load(path)?)),
            None => None,
        })
    }
}

#[derive(clap::Args)]
pub(crate) struct RepoArg {
    /// Repository: a local directory, or s3://BUCKET/PREFIX.
    #[arg(long, env = "BLOCKSNAP_REPO")]
    pub(crate) repo: String,
    /// S3-compatible endpoint URL (MinIO, Ceph, R2, Garage…); AWS when
    /// absent. Implies path-style addressing unless --virtual-hosted.
    #[arg(long, env = "BLOCKSNAP_S3_ENDPOINT", help_heading = "S3")]
    pub(crate) endpoint: Option<String>,
    /// Address the bucket in the host name even with --endpoint.
    #[arg(long, conflicts_with = "path_style", help_heading = "S3")]
    pub(crate) virtual_hosted: bool,
    /// Address the bucket in the URL path even on AWS.
    #[arg(long, help_heading = "S3")]
    pub(crate) path_style: bool,
    /// Bucket region (default: AWS_REGION, the profile, else us-east-1).
    #[arg(long, help_heading = "S3")]
    pub(crate) region: Option<String>,
    /// Send unsigned requests: read a public bucket without an account.
    /// Reads fall back to this by themselves when no credentials exist.
    #[arg(long, help_heading = "S3")]
    pub(crate) anonymous: bool,
    /// Credentials other than the standard chain's (copy's destination).
    #[arg(skip)]
    pub(crate) credentials: Option<(String, String)>,
    /// At most this many bytes per second written to the repository, e.g.
    /// 20MiB (K/M/G are powers of 1024, KB/MB/GB of 1000; a bare number is
    /// bytes per second).
    #[arg(long, env = "BLOCKSNAP_LIMIT_UPLOAD", value_name = "RATE", value_parser = limited::parse_rate, help_heading = "Bandwidth")]
    pub(crate) limit_upload: Option<u64>,
    /// At most this many bytes per second read from the repository.
    #[arg(long, env = "BLOCKSNAP_LIMIT_DOWNLOAD", value_name = "RATE", value_parser = limited::parse_rate, help_heading = "Bandwidth")]
    pub(crate) limit_download: Option<u64>,
}

/// Whether to run at low CPU and I/O priority (commands without a node
/// lifecycle: low or normal).
#[derive(clap::Args)]
pub(crate) struct PriorityArg {
    /// `low`: nice 19 and the lowest best-effort I/O level, for work on a
    /// host whose node is running.
    #[arg(long, default_value = "normal", value_parser = ["low", "normal"])]
    pub(crate) priority: String,
}

impl PriorityArg {
    pub(crate) fn apply(&self) {
        if self.priority == "low" {
            blocksnap::priority::lower_or_warn();
        }
    }
}

/// The destination of `copy`, with its own S3 settings.
#[derive(clap::Args)]
pub(crate) struct ToArg {
    /// The destination repository: a directory or s3://BUCKET/PREFIX. One
    /// that does not exist yet is created with the source's chunker and
    /// compression.
    #[arg(long = "to", value_name = "REPO")]
    pub(crate) to: String,
    /// The destination's S3-compatible endpoint (the source's --endpoint
    /// and BLOCKSNAP_S3_ENDPOINT do not apply to it).
    #[arg(long, help_heading = "S3 (destination)")]
    pub(crate) to_endpoint: Option<String>,
    /// The destination bucket's region.
    #[arg(long, help_heading = "S3 (destination)")]
    pub(crate) to_region: Option<String>,
    #[arg(
        long,
        conflicts_with = "to_virtual_hosted",
        help_heading = "S3 (destination)"
    )]
    pub(crate) to_path_style: bool,
    #[arg(long, help_heading = "S3 (destination)")]
    pub(crate) to_virtual_hosted: bool,
}

impl ToArg {
    /// As a repository argument; credentials from BLOCKSNAP_TO_AWS_ACCESS_KEY_ID
    /// and BLOCKSNAP_TO_AWS_SECRET_ACCESS_KEY when both are set, else the
    /// standard chain (the same as the source's).
    pub(crate) fn repo(&self) -> RepoArg {
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
pub(crate) enum Access {
    Read,
    Write,
}

#[derive(clap::Args)]
pub(crate) struct CacheArg {
    /// Where local state lives: the stat cache and chunk index, and
    /// manifests already read (all safe to delete).
    /// Default: $XDG_CACHE_HOME/blocksnap or ~/.cache/blocksnap.
    #[arg(long, env = "BLOCKSNAP_CACHE_DIR")]
    pub(crate) cache_dir: Option<PathBuf>,
    /// Use no local state at all: read every manifest and (snapshot) every
    /// file, ask the store about every chunk.
    #[arg(long)]
    pub(crate) no_cache: bool,
}

impl CacheArg {
    pub(crate) fn base(&self) -> Option<PathBuf> {
        if self.no_cache {
            return None;
        }
        self.cache_dir.clone().or_else(cache::default_dir)
    }
}

#[derive(clap::Args)]
pub(crate) struct MetricsArg {
    /// Write the outcome to this Prometheus textfile (for node_exporter's
    /// textfile collector), atomically; commands and repositories can
    /// share one file.
    #[arg(long, value_name = "PATH")]
    pub(crate) metrics_file: Option<PathBuf>,
}

#[derive(clap::Args)]
pub(crate) struct JsonArg {
    /// Print a machine-readable JSON result instead of text.
    #[arg(long)]
    pub(crate) json: bool,
}

/// A size in bytes: a number with an optional unit (K, M, G, T as powers
/// of 1024, also written KiB/MiB/GiB/TiB; KB, MB, GB, TB as powers of 1000).
pub(crate) fn parse_size(s: &str) -> Result<u64, String> {
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
