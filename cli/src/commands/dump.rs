//! `blocksnap dump`: a snapshot as one tar archive, to a file or stdout.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use blocksnap::{dump, ipnorm};

use crate::args::*;
use crate::open::*;
use crate::outcome::Done;
use crate::output::Bar;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub repo: RepoArg,
    /// HEIGHT, `latest`, or a snapshot id prefix.
    pub snapshot: String,
    /// The node's IPv4 address, put back into the block database's
    /// directory name (without it, the name keeps CHANGEIP).
    #[arg(long)]
    pub ip: Option<String>,
    /// tar, tar.gz or tar.zst.
    #[arg(long, default_value = "tar", value_parser = parse_format)]
    pub format: dump::Compression,
    /// The archive to write (a new file; `-`: standard output).
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
    /// Keep setuid, setgid and world-write bits (a restore drops them).
    #[arg(long)]
    pub keep_special_modes: bool,
    /// Chunk fetches in flight (default: what the store suggests).
    #[arg(long, default_value_t = 0)]
    pub jobs: usize,
    /// Among this node's snapshots only.
    #[arg(long)]
    pub host: Option<String>,
    #[command(flatten)]
    pub trust: TrustArg,
}

fn parse_format(s: &str) -> std::result::Result<dump::Compression, String> {
    s.parse()
}

pub fn run(args: Args) -> Result<Done> {
    let trust = args.trust.load()?;
    let r = open_repo(&args.repo, Access::Read, args.jobs)?.with_trust(trust.clone());
    let key = one_trusted(&r, &args.snapshot, args.host.as_deref(), trust.as_deref())?;
    let opts = dump::DumpOptions {
        ip: args.ip.as_deref().map(ipnorm::parse_ip).transpose()?,
        compression: args.format,
        jobs: args.jobs,
        keep_special_modes: args.keep_special_modes,
    };
    let bar = Bar::new(false);
    let report = if args.output.as_os_str() == "-" {
        let stdout = std::io::stdout();
        let mut out = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
        let report = dump::dump(&r, &key, &opts, &mut out, &bar)?;
        out.flush().context("write standard output")?;
        report
    } else {
        // Written beside its name and renamed into place once whole: a
        // failed dump leaves no file that looks like an archive.
        let path = &args.output;
        if path.symlink_metadata().is_ok() {
            bail!("{}: exists; dump writes a new file", path.display());
        }
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let mut tmp = tempfile::Builder::new()
            .prefix(".blocksnap-dump-")
            .tempfile_in(&dir)
            .with_context(|| format!("create a file in {}", dir.display()))?;
        let report = {
            let mut out = std::io::BufWriter::with_capacity(1 << 20, tmp.as_file_mut());
            let report = dump::dump(&r, &key, &opts, &mut out, &bar)?;
            out.flush()
                .with_context(|| format!("write {}", path.display()))?;
            report
        };
        tmp.as_file()
            .sync_all()
            .with_context(|| format!("sync {}", path.display()))?;
        tmp.persist_noclobber(path)
            .map_err(|e| e.error)
            .with_context(|| format!("create {}", path.display()))?;
        report
    };
    eprintln!(
        "blocksnap: dumped {} ({} entries, {} files, {} bytes of content, {} chunks) as {} bytes",
        report.snapshot,
        report.entries,
        report.files,
        report.bytes,
        report.chunks_fetched,
        report.archive_bytes
    );
    Ok(Done::default())
}
