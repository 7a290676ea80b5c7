//! `blocksnap import`: tarballs (the old backup script's archives) committed
//! as snapshots — one archive, or a directory or S3 prefix of them in
//! height order.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use blocksnap::import::{self, ImportOptions, ImportReport};
use blocksnap::ipnorm;
use blocksnap::repo::Repository;

use crate::args::*;
use crate::open::*;
use crate::outcome::Done;
use crate::output::{Bar, Out};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub repo: RepoArg,
    /// The archive: a file, `-` (standard input), `s3://BUCKET/KEY`, or a
    /// directory or `s3://BUCKET/PREFIX/` of the old script's archives
    /// (`…_BH<height>_data-<YYYYMMDD>_<HHMM>.tar.gz`), imported in height
    /// order, those already imported skipped. tar, tar.gz or tar.zst.
    #[arg(long = "tar", value_name = "FILE|DIR|-|s3://…")]
    pub tar: String,
    /// The block height (default: from the archive's name).
    #[arg(long)]
    pub height: Option<u64>,
    /// When the archive was made: RFC 3339 (`2024-01-02T03:30:00Z`) or
    /// Unix seconds (default: from the archive's name, read as UTC).
    #[arg(long, value_parser = parse_time)]
    pub time: Option<u64>,
    /// The history's source name: the directory the archives were made
    /// of, so that later snapshots with the same --source continue it.
    #[arg(long, default_value = import::DEFAULT_SOURCE)]
    pub source: String,
    /// The node's name, with the source the history's name (default: this
    /// machine's host name).
    #[arg(long, env = "BLOCKSNAP_HOST")]
    pub host: Option<String>,
    /// Free-form labels shown by `list`.
    #[arg(long = "tag")]
    pub tags: Vec<String>,
    /// The node's IPv4 address when the archive's paths hold several.
    #[arg(long)]
    pub ip: Option<String>,
    /// Chunk workers (at most the CPUs) and store writes in flight.
    #[arg(long, default_value_t = 0)]
    pub jobs: usize,
    #[command(flatten)]
    pub sign: SignArg,
    #[command(flatten)]
    pub json: JsonArg,
}

fn parse_time(s: &str) -> std::result::Result<u64, String> {
    if let Ok(secs) = s.parse::<u64>() {
        return secs
            .checked_mul(1_000_000_000)
            .ok_or_else(|| format!("{s}: too far in the future"));
    }
    let t: jiff::Timestamp = s
        .parse()
        .map_err(|e| format!("{s:?}: neither Unix seconds nor an RFC 3339 time ({e})"))?;
    u64::try_from(t.as_nanosecond()).map_err(|_| format!("{s}: before 1970"))
}

/// One archive to import: where it is and how to read it.
enum Archive {
    Stdin,
    File(PathBuf),
    #[cfg(feature = "s3")]
    S3 {
        store: std::sync::Arc<blocksnap_s3::S3Store>,
        key: String,
        url: String,
    },
}

impl Archive {
    fn name(&self) -> Option<String> {
        match self {
            Archive::Stdin => None,
            Archive::File(p) => Some(p.display().to_string()),
            #[cfg(feature = "s3")]
            Archive::S3 { url, .. } => Some(url.clone()),
        }
    }

    fn import(&self, r: &Repository, opts: &ImportOptions, bar: &Bar) -> Result<ImportReport> {
        Ok(match self {
            Archive::Stdin => import::import(r, std::io::stdin().lock(), opts, bar)?,
            Archive::File(p) => {
                let f = std::fs::File::open(p).with_context(|| format!("open {}", p.display()))?;
                import::import(r, f, opts, bar)?
            }
            #[cfg(feature = "s3")]
            Archive::S3 { store, key, .. } => {
                use blocksnap::store::ranged::RangedReader;
                use blocksnap::store::Store;
                let Some(size) = store.size(key)? else {
                    bail!("{}: no such object", self.name().unwrap_or_default());
                };
                let (store, key) = (store.clone(), key.clone());
                let reader = RangedReader::new(
                    size,
                    Box::new(move |offset, len| store.get_range(&key, offset, len)),
                );
                import::import(r, reader, opts, bar)?
            }
        })
    }
}

pub fn run(args: Args) -> Result<Done> {
    let signer = args.sign.load()?;
    let r = open_repo(&args.repo, Access::Write, args.jobs)?.with_signer(signer.clone());
    let ip = args.ip.as_deref().map(ipnorm::parse_ip).transpose()?;
    let (archives, many) = archives(&args)?;
    if many && (args.height.is_some() || args.time.is_some()) {
        bail!("--height and --time name one archive; a directory's archives carry their own");
    }
    let json = args.json.json;
    let bar = Bar::new(json);
    let out = Out::new(json);
    let imported: Vec<(u64, u64)> = r
        .snapshots()?
        .iter()
        .map(|k| (k.height, k.created_unix_ns))
        .collect();
    let mut reports = Vec::new();
    for a in &archives {
        let opts = ImportOptions {
            name: a.name(),
            height: args.height,
            created_unix_ns: args.time,
            source: args.source.clone(),
            host: args.host.clone().unwrap_or_default(),
            tags: args.tags.clone(),
            ip,
            jobs: args.jobs,
            signer: signer.clone(),
        };
        let plan = import::plan(&opts)?;
        if many && imported.contains(&(plan.height, plan.created_unix_ns)) {
            out.import_skipped(opts.name.as_deref().unwrap_or("-"), plan.height);
            continue;
        }
        let report = a.import(&r, &opts, &bar)?;
        out.import(opts.name.as_deref().unwrap_or("standard input"), &report);
        reports.push(report);
    }
    out.imports(&reports);
    let mut figures = crate::metrics::Figures::default();
    if let Some(last) = reports.last() {
        figures.height = Some(last.height);
        figures.bytes_new = Some(reports.iter().map(|r| r.new_stored_bytes).sum());
        figures.bytes_read = Some(reports.iter().map(|r| r.archive_bytes).sum());
    }
    Ok(Done::with(figures))
}

/// The archives `--tar` names, in the order to import them, and whether it
/// named a directory or prefix of them.
fn archives(args: &Args) -> Result<(Vec<Archive>, bool)> {
    let given = args.tar.as_str();
    if given == "-" {
        return Ok((vec![Archive::Stdin], false));
    }
    if given.starts_with("s3://") {
        return s3_archives(args);
    }
    let path = Path::new(given);
    let meta = path
        .symlink_metadata()
        .with_context(|| format!("{given}: cannot stat"))?;
    if !meta.is_dir() {
        return Ok((vec![Archive::File(path.to_path_buf())], false));
    }
    let mut found = Vec::new();
    for e in std::fs::read_dir(path).with_context(|| format!("read {given}"))? {
        let e = e.with_context(|| format!("read {given}"))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if !e.file_type()?.is_file() {
            continue;
        }
        if let Some(h) = import::name_hints(&name) {
            found.push(((h.height, h.created_unix_ns), Archive::File(e.path())));
        }
    }
    if found.is_empty() {
        bail!("{given}: holds no archive named as the old script names them (…_BH<height>_data-<YYYYMMDD>_<HHMM>.tar.gz)");
    }
    found.sort_by_key(|(k, _)| *k);
    Ok((found.into_iter().map(|(_, a)| a).collect(), true))
}

#[cfg(feature = "s3")]
fn s3_archives(args: &Args) -> Result<(Vec<Archive>, bool)> {
    use blocksnap::store::{Location, Store};
    let given = args.tar.as_str();
    let Location::S3 { bucket, prefix } = given.parse::<Location>()? else {
        unreachable!("an s3:// location")
    };
    let one = !given.ends_with('/')
        && [".tar", ".tar.gz", ".tgz", ".tar.zst", ".tzst"]
            .iter()
            .any(|s| given.ends_with(s));
    if one {
        // The object's key is the prefix's last segment.
        let whole = prefix.trim_end_matches('/');
        let (dir, key) = match whole.rsplit_once('/') {
            Some((d, k)) => (format!("{d}/"), k.to_string()),
            None => (String::new(), whole.to_string()),
        };
        let store = s3_store(&args.repo, bucket, dir, Access::Read, args.jobs)?;
        return Ok((
            vec![Archive::S3 {
                store: std::sync::Arc::new(store),
                key,
                url: given.to_string(),
            }],
            false,
        ));
    }
    let store = std::sync::Arc::new(s3_store(
        &args.repo,
        bucket.clone(),
        prefix.clone(),
        Access::Read,
        args.jobs,
    )?);
    let mut found = Vec::new();
    for o in store.list("")? {
        if let Some(h) = import::name_hints(&o.key) {
            found.push((
                (h.height, h.created_unix_ns),
                Archive::S3 {
                    store: store.clone(),
                    url: format!("s3://{bucket}/{prefix}{}", o.key),
                    key: o.key,
                },
            ));
        }
    }
    if found.is_empty() {
        bail!("{given}: holds no archive named as the old script names them (…_BH<height>_data-<YYYYMMDD>_<HHMM>.tar.gz)");
    }
    found.sort_by_key(|(k, _)| *k);
    Ok((found.into_iter().map(|(_, a)| a).collect(), true))
}

#[cfg(not(feature = "s3"))]
fn s3_archives(args: &Args) -> Result<(Vec<Archive>, bool)> {
    bail!(
        "{}: this blocksnap was built without S3 support (feature `s3`)",
        args.tar
    )
}
