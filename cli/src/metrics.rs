//! Monitoring through node_exporter's textfile collector: a command run
//! with `--metrics-file PATH` writes its outcome there in the Prometheus
//! text format, atomically (a temporary file in the same directory, then a
//! rename), so the collector never reads half a file.
//!
//! Every sample is labelled with the command, the repository and (where
//! there is one) the source. Several commands and repositories may share
//! one file: a run replaces only the samples with its own labels and keeps
//! the others, under a lock on the directory so that two runs finishing at
//! once do not lose each other's update. A failed run records its failure
//! and keeps the last success time it finds in the file, so that an alert
//! on "no success for two hours" counts from the real last success.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use blocksnap::error::{Error, Result};
use blocksnap::store::Counts;

/// What a run measured; absent figures are not written.
#[derive(Debug, Clone, Default)]
pub struct Figures {
    pub bytes_read: Option<u64>,
    pub bytes_new: Option<u64>,
    pub bytes_stored: Option<u64>,
    pub chunks: Option<u64>,
    /// The snapshot's block height (snapshot, restore).
    pub height: Option<u64>,
    /// Stored bytes deleted (prune).
    pub bytes_deleted: Option<u64>,
    /// Stored bytes of every chunk in the repository (prune).
    pub repository_bytes: Option<u64>,
    pub requests: Option<Counts>,
    /// Problems by kind (verify): every kind is written, found or not.
    pub problems: Option<BTreeMap<String, u64>>,
}

/// One run's outcome.
#[derive(Debug, Clone, Default)]
pub struct Run {
    pub command: String,
    pub repo: String,
    pub source: Option<String>,
    pub success: bool,
    pub finished_unix: f64,
    pub duration_seconds: f64,
    pub figures: Figures,
}

/// Every metric this module writes, with its help text, in file order.
const METRICS: &[(&str, &str)] = &[
    ("last_success_timestamp_seconds", "When the command last succeeded (Unix time)."),
    ("last_run_timestamp_seconds", "When the command last ran (Unix time)."),
    ("last_run_success", "1 if the last run succeeded, 0 if it failed."),
    ("duration_seconds", "How long the last run took."),
    ("bytes_read", "Bytes the last run read from the source (snapshot) or the repository (restore, verify)."),
    ("bytes_new", "Stored bytes of the chunks the last snapshot added to the repository."),
    ("bytes_stored", "Bytes of data the last run's snapshots hold (uncompressed)."),
    ("chunks", "Chunks the last run referenced (snapshot), fetched (restore), checked (verify) or deleted (prune)."),
    ("height", "Block height of the last run's snapshot."),
    ("bytes_deleted", "Stored bytes the last prune deleted."),
    ("repository_bytes", "Stored bytes of all chunks in the repository, as the last prune listed them."),
    ("requests", "Store requests the last run made, by kind."),
    ("problems", "Problems the last verify found, by kind."),
];

/// Every kind of problem verify reports, so that each has a sample.
pub const PROBLEM_KINDS: &[&str] = &[
    "missing",
    "truncated",
    "corrupt",
    "wrong-size",
    "needs-newer",
    "unreadable",
    "broken-chain",
    "fork",
];

/// Escapes a label value (backslash, double quote, newline).
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Run {
    /// The labels that identify this run's samples.
    fn identity(&self) -> String {
        let mut l = format!(
            "command=\"{}\",repo=\"{}\"",
            label(&self.command),
            label(&self.repo)
        );
        if let Some(s) = &self.source {
            l.push_str(&format!(",source=\"{}\"", label(s)));
        }
        l
    }

    /// This run's samples: (metric, extra labels, value).
    fn samples(&self, last_success: Option<f64>) -> Vec<(&'static str, String, f64)> {
        let mut out = Vec::new();
        let last = if self.success {
            Some(self.finished_unix)
        } else {
            last_success
        };
        if let Some(t) = last {
            out.push(("last_success_timestamp_seconds", String::new(), t));
        }
        out.push((
            "last_run_timestamp_seconds",
            String::new(),
            self.finished_unix,
        ));
        out.push((
            "last_run_success",
            String::new(),
            f64::from(u8::from(self.success)),
        ));
        out.push(("duration_seconds", String::new(), self.duration_seconds));
        let f = &self.figures;
        for (name, v) in [
            ("bytes_read", f.bytes_read),
            ("bytes_new", f.bytes_new),
            ("bytes_stored", f.bytes_stored),
            ("chunks", f.chunks),
            ("height", f.height),
            ("bytes_deleted", f.bytes_deleted),
            ("repository_bytes", f.repository_bytes),
        ] {
            if let Some(v) = v {
                out.push((name, String::new(), v as f64));
            }
        }
        if let Some(c) = f.requests {
            for (kind, v) in [
                ("put", c.put),
                ("get", c.get),
                ("head", c.head),
                ("list", c.list),
                ("delete", c.delete),
                ("retry", c.retries),
            ] {
                out.push(("requests", format!(",kind=\"{kind}\""), v as f64));
            }
        }
        if let Some(p) = &f.problems {
            for k in PROBLEM_KINDS {
                let v = p.get(*k).copied().unwrap_or(0);
                out.push(("problems", format!(",kind=\"{k}\""), v as f64));
            }
        }
        out
    }

    /// The whole file: this run's samples merged with the other runs'
    /// samples found in `existing`, each metric once with its HELP and
    /// TYPE lines.
    pub fn render(&self, existing: &str) -> String {
        let id = self.identity();
        // Ours: a sample whose labels start with our identity, followed by
        // the end of the labels or a `kind`.
        let ours = |line: &str| {
            METRICS.iter().any(|(name, _)| {
                line.strip_prefix("blocksnap_")
                    .and_then(|l| l.strip_prefix(name))
                    .and_then(|l| l.strip_prefix('{'))
                    .and_then(|l| l.strip_prefix(id.as_str()))
                    .is_some_and(|rest| rest.starts_with('}') || rest.starts_with(",kind=\""))
            })
        };
        let last_success = existing
            .lines()
            .filter(|l| ours(l))
            .find(|l| l.starts_with("blocksnap_last_success_timestamp_seconds{"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok());
        let mut by_metric: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for line in existing.lines() {
            if line.starts_with('#') || line.trim().is_empty() || ours(line) {
                continue;
            }
            let Some(name) = METRICS.iter().map(|(n, _)| *n).find(|n| {
                line.strip_prefix("blocksnap_")
                    .and_then(|l| l.strip_prefix(n))
                    .is_some_and(|l| l.starts_with('{'))
            }) else {
                // Not a metric of ours (another version's): dropped.
                continue;
            };
            by_metric.entry(name).or_default().push(line.to_string());
        }
        for (name, extra, v) in self.samples(last_success) {
            by_metric
                .entry(name)
                .or_default()
                .push(format!("blocksnap_{name}{{{id}{extra}}} {v}"));
        }
        let mut out = String::new();
        for (name, help) in METRICS {
            let Some(lines) = by_metric.get(name) else {
                continue;
            };
            out.push_str(&format!(
                "# HELP blocksnap_{name} {help}\n# TYPE blocksnap_{name} gauge\n"
            ));
            for l in lines {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }

    /// Writes this run into the file at `path`: atomically, under a lock
    /// on its directory, keeping other runs' samples.
    ///
    /// The directory is often writable by a group other users belong to
    /// (node_exporter's textfile directory), while blocksnap runs as root:
    /// the file found there is read without following a symlink, and the
    /// new file's mode is set on its descriptor, never by its name (a name
    /// in that directory can be swapped for a link to a root-only file).
    pub fn write(&self, path: &Path) -> Result<()> {
        self.write_racing(path, &|_| {})
    }

    /// [`Run::write`], calling `race` with the temporary file's path just
    /// before its mode is set: what another user of the directory could do
    /// there, for tests.
    fn write_racing(&self, path: &Path, race: &dyn Fn(&Path)) -> Result<()> {
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let lock = std::fs::File::open(dir).map_err(Error::io("open", dir))?;
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| Error::io("lock", dir)(e.into()))?;
        let existing = read_existing(path)?;
        let text = self.render(&existing);
        let mut tmp = tempfile::Builder::new()
            .prefix(".blocksnap-metrics")
            .tempfile_in(dir)
            .map_err(Error::io("create metrics file in", dir))?;
        tmp.write_all(text.as_bytes())
            .and_then(|_| tmp.as_file().sync_all())
            .map_err(Error::io("write", tmp.path().to_path_buf()))?;
        race(tmp.path());
        // Readable by node_exporter, which often runs as another user.
        rustix::fs::fchmod(tmp.as_file(), rustix::fs::Mode::from_raw_mode(0o644))
            .map_err(|e| Error::io("chmod", tmp.path().to_path_buf())(e.into()))?;
        tmp.persist(path)
            .map_err(|e| Error::io("rename metrics file to", path)(e.error))?;
        Ok(())
    }
}

/// The metrics file as it is, or nothing: opened without following a
/// symlink, and only if it is a regular file (a link or a fifo planted at
/// its name is replaced by the new file, never read).
fn read_existing(path: &Path) -> Result<String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path);
    let mut f = match opened {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(String::new()),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Ok(String::new()),
        Err(e) => return Err(Error::io("read", path)(e)),
    };
    if !f.metadata().map_err(Error::io("stat", path))?.is_file() {
        return Ok(String::new());
    }
    let mut text = String::new();
    match f.read_to_string(&mut text) {
        Ok(_) => Ok(text),
        // Not ours (binary): replaced.
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => Ok(String::new()),
        Err(e) => Err(Error::io("read", path)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(command: &str, success: bool, at: f64) -> Run {
        Run {
            command: command.into(),
            repo: "s3://b/p".into(),
            source: Some("/data \"x\"".into()),
            success,
            finished_unix: at,
            ..Run::default()
        }
    }

    #[test]
    fn a_failure_keeps_the_last_success_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blocksnap.prom");
        run("snapshot", true, 1000.0).write(&path).unwrap();
        run("snapshot", false, 2000.0).write(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let id = "command=\"snapshot\",repo=\"s3://b/p\",source=\"/data \\\"x\\\"\"";
        assert!(
            text.contains(&format!(
                "blocksnap_last_success_timestamp_seconds{{{id}}} 1000\n"
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!("blocksnap_last_run_success{{{id}}} 0\n")),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "blocksnap_last_run_timestamp_seconds{{{id}}} 2000\n"
            )),
            "{text}"
        );
        assert_eq!(
            text.matches("# TYPE blocksnap_last_run_success gauge")
                .count(),
            1
        );
    }

    #[test]
    fn commands_sharing_a_file_keep_each_others_samples() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blocksnap.prom");
        let mut v = run("verify", true, 10.0);
        v.source = None;
        v.figures.problems = Some(BTreeMap::from([("missing".to_string(), 2)]));
        v.write(&path).unwrap();
        run("snapshot", true, 20.0).write(&path).unwrap();
        run("snapshot", true, 30.0).write(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains(
                "blocksnap_problems{command=\"verify\",repo=\"s3://b/p\",kind=\"missing\"} 2\n"
            ),
            "{text}"
        );
        assert_eq!(
            text.matches("blocksnap_last_run_timestamp_seconds{")
                .count(),
            2,
            "{text}"
        );
        assert!(
            !text.contains("} 20\n"),
            "the older snapshot run was replaced: {text}"
        );
        assert_eq!(
            text.matches("# HELP blocksnap_last_run_timestamp_seconds")
                .count(),
            1
        );
    }

    /// Another user of the textfile directory swaps the temporary file for
    /// a link to a root-only file between its write and its chmod (#20.4),
    /// and plants a link at the metrics file's own name: neither the
    /// victim's mode nor its bytes reach anyone.
    #[test]
    fn links_planted_in_the_directory_are_never_followed() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("secret");
        std::fs::write(
            &victim,
            "blocksnap_last_run_success{command=\"x\",repo=\"y\"} 42\n",
        )
        .unwrap();
        std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
        let path = dir.path().join("blocksnap.prom");
        std::os::unix::fs::symlink(&victim, &path).unwrap();
        let swap = |tmp: &Path| {
            std::fs::remove_file(tmp).unwrap();
            std::os::unix::fs::symlink(&victim, tmp).unwrap();
        };
        run("snapshot", true, 1.0)
            .write_racing(&path, &swap)
            .unwrap();
        let mode = std::fs::metadata(&victim).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the victim's mode was changed through a link");
        run("snapshot", true, 2.0).write(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            !text.contains("} 42"),
            "the victim's lines were copied: {text}"
        );
        assert!(std::fs::symlink_metadata(&path).unwrap().is_file());
    }
}
