//! How results look: text for people, JSON for scripts, progress bars only
//! on a terminal.

use std::io::IsTerminal;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use blocksnap::compare::{DiffReport, DifferenceKind, DirReport};
use blocksnap::copy::{CopyPlan, CopyReport};
use blocksnap::demo::DemoReport;

fn forgotten_there(n: usize) -> String {
    format!("{n} snapshot(s) the destination has forgotten were not copied back")
}

/// Said when a copy's two repositories chunk or compress differently.
const CONFIG_DIFFERS: &str = "the destination chunks or compresses differently: the copied \
     snapshots are intact, but the destination's own snapshots will not share chunks with them";
use blocksnap::error::printable;
use blocksnap::forget::{ForgetPlan, ForgetReport};
use blocksnap::format::config::RepoConfig;
use blocksnap::format::layout::SnapshotKey;
use blocksnap::list::Listed;
use blocksnap::progress::Progress;
use blocksnap::prune::PruneReport;
use blocksnap::restore::{RestorePlan, RestoreReport};
use blocksnap::sign::KeyId;
use blocksnap::snapshot::SnapshotReport;
use blocksnap::stage::StageReport;
use blocksnap::stats::Stats;
use blocksnap::store::Counts;
use blocksnap::verify::VerifyReport;
use indicatif::{HumanBytes, ProgressBar, ProgressStyle};

/// `--quiet`: text output is left out, except verify's problem lines (and
/// JSON, which was asked for); errors and warnings go to stderr anyway.
static QUIET: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

pub fn set_quiet(quiet: bool) {
    QUIET.store(quiet, std::sync::atomic::Ordering::Relaxed);
}

fn quiet() -> bool {
    QUIET.load(std::sync::atomic::Ordering::Relaxed)
}

/// `println!` unless `--quiet`.
macro_rules! say {
    ($($arg:tt)*) => {
        if !quiet() {
            std::println!($($arg)*);
        }
    };
}
use serde_json::json;

pub struct Bar {
    enabled: bool,
    bar: Mutex<Option<ProgressBar>>,
}

impl Bar {
    pub fn new(json: bool) -> Bar {
        Bar {
            enabled: !json && !quiet() && std::io::stderr().is_terminal(),
            bar: Mutex::new(None),
        }
    }
}

impl Progress for Bar {
    fn begin(&self, phase: &str, total: u64) {
        if !self.enabled {
            return;
        }
        let bar = ProgressBar::new(total);
        bar.set_style(
            ProgressStyle::with_template(
                "{msg:>9} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar.set_message(phase.to_string());
        *self.bar.lock().expect("bar lock") = Some(bar);
    }
    fn advance(&self, bytes: u64) {
        if let Some(bar) = self.bar.lock().expect("bar lock").as_ref() {
            bar.inc(bytes);
        }
    }
    fn end(&self) {
        if let Some(bar) = self.bar.lock().expect("bar lock").take() {
            bar.finish_and_clear();
        }
    }
}

pub struct Out {
    json: bool,
}

fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

fn time(ns: u64) -> String {
    jiff::Timestamp::from_nanosecond(i128::from(ns))
        .map(|t| t.strftime("%Y-%m-%d %H:%M:%SZ").to_string())
        .unwrap_or_else(|_| format!("{ns}ns"))
}

impl Out {
    pub fn new(json: bool) -> Out {
        Out { json }
    }

    fn emit(&self, value: serde_json::Value) {
        std::println!(
            "{}",
            serde_json::to_string_pretty(&value).expect("JSON values serialise")
        );
    }

    pub fn init(&self, location: &str, config: &RepoConfig) {
        let c = config.chunker;
        if self.json {
            self.emit(json!({
                "repo": location, "id": config.id.to_hex(),
                "chunker": {"min": c.min_size, "avg": c.avg_size, "max": c.max_size},
                "zstd_level": config.zstd_level,
            }));
        } else {
            say!(
                "created repository {location} (chunks {}/{}/{}, zstd level {})",
                HumanBytes(c.min_size.into()),
                HumanBytes(c.avg_size.into()),
                HumanBytes(c.max_size.into()),
                config.zstd_level
            );
        }
    }

    pub fn snapshot(&self, r: &SnapshotReport) {
        if self.json {
            self.emit(snapshot_json(r));
            return;
        }
        say!(
            "snapshot {} at height {}: {} files, {} in {} entries",
            r.key.id.short(),
            r.key.height,
            r.stats.files,
            HumanBytes(r.stats.logical_bytes),
            r.entries
        );
        say!(
            "  added {} new chunks ({} stored), reused {} of {} chunk references, {:.2}s",
            r.stats.new_chunks,
            HumanBytes(r.stats.new_stored_bytes),
            r.reused_chunk_refs,
            r.stats.chunk_refs,
            r.duration.as_secs_f64()
        );
        say!(
            "  read {} ({} files unchanged since the last snapshot were not read)",
            HumanBytes(r.bytes_read),
            r.files_from_cache
        );
        if let Some(ip) = r.normalised_ip {
            say!(
                "  node address {ip} stored as {}",
                blocksnap::ipnorm::PLACEHOLDER
            );
        }
        if let Some(h) = &r.chain_head {
            say!(
                "  last block {} (block version {}), hash {}, read from the database",
                h.height,
                h.version,
                hex(&h.hash)
            );
        }
        for w in &r.warnings {
            say!("  warning: {}", printable(w));
        }
        print_requests(r.requests);
    }

    pub fn import(&self, name: &str, r: &blocksnap::import::ImportReport) {
        if self.json {
            return;
        }
        say!(
            "{name}: snapshot {} at height {}: {} files, {} ({:?} archive of {}), {:.2}s",
            &r.snapshot[..12],
            r.height,
            r.files,
            HumanBytes(r.logical_bytes),
            r.compression,
            HumanBytes(r.archive_bytes),
            r.duration.as_secs_f64()
        );
        say!(
            "  added {} new chunks ({} stored), reused {} chunk references",
            r.new_chunks,
            HumanBytes(r.new_stored_bytes),
            r.reused_chunk_refs
        );
        if let Some(ip) = r.normalised_ip {
            say!(
                "  node address {ip} stored as {}",
                blocksnap::ipnorm::PLACEHOLDER
            );
        }
    }

    pub fn index(&self, location: &str, index: &blocksnap::format::index::Index) {
        let snapshots = index
            .under(blocksnap::format::layout::SNAPSHOTS_PREFIX)
            .count();
        if self.json {
            self.emit(json!({
                "repo": location, "objects": index.objects.len(), "snapshots": snapshots,
                "created_unix_ns": index.created_unix_ns,
            }));
        } else {
            say!(
                "published the index of {location}: {} objects ({snapshots} snapshots); a mirror \
                 of the repository's files can now be read with --repo https://…",
                index.objects.len()
            );
        }
    }

    pub fn site(&self, written: &str, r: &blocksnap::site::SiteReport) {
        if self.json {
            self.emit(json!({"page": written, "snapshots": r.snapshots, "bytes": r.bytes}));
        } else {
            say!(
                "wrote {written}: {} snapshots, {}",
                r.snapshots,
                HumanBytes(r.bytes)
            );
        }
    }

    /// After a listing through a mirror: how old its index is.
    pub fn mirror_index(&self, index: &blocksnap::repo::MirrorIndex) {
        if self.json {
            // The listing is the JSON document; this goes to stderr.
            eprintln!(
                "{}",
                serde_json::to_string(&json!({"mirror_index": index}))
                    .expect("JSON values serialise")
            );
            return;
        }
        let age = blocksnap::repo::now_unix_ns().saturating_sub(index.created_unix_ns);
        let signed = match (index.trusted_by, index.signed) {
            (Some(k), _) => format!(", signed by trusted key {k}"),
            (None, true) => ", signed (give --trust to check it)".into(),
            (None, false) => ", unsigned".into(),
        };
        say!(
            "mirror index written {} ({} ago), {} objects{signed}; snapshots taken since are not listed until the mirror serves a newer index",
            time(index.created_unix_ns),
            indicatif::HumanDuration(std::time::Duration::from_nanos(age)),
            index.objects
        );
    }

    pub fn import_skipped(&self, name: &str, height: u64) {
        if !self.json {
            say!("{name}: height {height} is imported already; skipped");
        }
    }

    /// With --json, every import's report at the end (one array).
    pub fn imports(&self, reports: &[blocksnap::import::ImportReport]) {
        if self.json {
            self.emit(json!(reports));
        }
    }

    pub fn staged_snapshot(&self, r: &SnapshotReport, s: &StageReport) {
        if self.json {
            let mut v = snapshot_json(r);
            v["stage"] = json!(s);
            self.emit(v);
            return;
        }
        say!(
            "node downtime {:.2}s (waiting for locks {:.2}s, staging {:.2}s: {} table files linked, {} files copied, {})",
            s.downtime.as_secs_f64(),
            s.lock_wait.as_secs_f64(),
            s.staging.as_secs_f64(),
            s.files_linked,
            s.files_copied,
            HumanBytes(s.bytes_copied)
        );
        // A failed start command is the caller's error to report, once.
        self.snapshot(r);
    }

    pub fn list(&self, items: &[Listed]) {
        if self.json {
            self.emit(json!(items));
            return;
        }
        say!(
            "{:>12}  {:<12}  {:<20}  {:<16}  {:>7}  {:>10}  {:>10}  tags",
            "height",
            "id",
            "time",
            "host",
            "files",
            "size",
            "added"
        );
        for l in items {
            let signed = match (l.signed_by.is_empty(), l.trusted) {
                (_, Some(true)) => "  trusted".to_string(),
                (_, Some(false)) => "  UNTRUSTED".to_string(),
                (true, None) => String::new(),
                (false, None) => format!(
                    "  signed by {}",
                    l.signed_by
                        .iter()
                        .map(|k| k.to_string())
                        .collect::<Vec<_>>()
                        .join(",")
                ),
            };
            let block = match l.info.as_ref().and_then(|i| i.block.as_deref()) {
                Some(b) => format!("  block {}", &b[..16.min(b.len())]),
                None => String::new(),
            };
            match (&l.info, &l.error) {
                (Some(i), _) => say!(
                    "{:>12}  {:<12}  {:<20}  {:<16}  {:>7}  {:>10}  {:>10}  {}{signed}{block}",
                    l.height,
                    &l.id[..12],
                    time(l.created_unix_ns),
                    printable(if i.host.is_empty() { "-" } else { &i.host }),
                    i.files,
                    HumanBytes(i.logical_bytes).to_string(),
                    HumanBytes(i.new_stored_bytes).to_string(),
                    printable(&i.tags.join(","))
                ),
                (None, e) => say!(
                    "{:>12}  {:<12}  {:<20}  unreadable: {}",
                    l.height,
                    &l.id[..12],
                    time(l.created_unix_ns),
                    printable(e.as_deref().unwrap_or("?"))
                ),
            }
        }
    }

    pub fn restore(&self, r: &RestoreReport) {
        if self.json {
            self.emit(restore_json(r));
        } else {
            say!(
                "restored snapshot {} (height {}) to {}: {} files, {}, {} chunks fetched and checked, {} files resumed, {:.2}s",
                r.key.id.short(),
                r.key.height,
                r.target.display(),
                r.files,
                HumanBytes(r.bytes),
                r.chunks_fetched,
                r.files_resumed,
                r.duration.as_secs_f64()
            );
            if r.seeds.files_read > 0 {
                say!(
                    "  from local files: {} kept whole ({} files), {} copied; downloaded {} ({} stored); {} read from {} seed files",
                    HumanBytes(r.bytes_kept),
                    r.files_kept,
                    HumanBytes(r.bytes_copied),
                    HumanBytes(r.bytes_downloaded),
                    HumanBytes(r.stored_bytes_downloaded),
                    HumanBytes(r.seeds.bytes_read),
                    r.seeds.files_read
                );
            }
            if let Some(j) = &r.completed_interrupted {
                say!("  first completed an interrupted restore found in the target ({j})");
            }
            if r.modes_stripped > 0 {
                say!(
                    "  {} entries restored without their setuid, setgid or world-write bits (--keep-special-modes keeps them)",
                    r.modes_stripped
                );
            }
            if let Some(old) = &r.old_entries {
                say!("  the entries it replaced are kept in {}", old.display());
            }
            print_requests(r.requests);
        }
    }

    pub fn copy_plan(&self, p: &CopyPlan) {
        if self.json {
            self.emit(json!({
                "dry_run": true,
                "snapshots": p.snapshots().iter().map(|k| k.key()).collect::<Vec<_>>(),
                "already_there": p.present.iter().map(|k| k.key()).collect::<Vec<_>>(),
                "forgotten_there": p.forgotten_there.iter().map(|k| k.key()).collect::<Vec<_>>(),
                "chunks": p.chunks(),
                "chunk_bytes": p.chunk_bytes,
                "chunks_present": p.chunks_present,
                "signatures": p.signatures(),
                "config_differs": p.config_differs,
            }));
            return;
        }
        say!(
            "would copy {} snapshot(s) ({} already there): {} chunks, {} ({} chunks already there), {} signature(s)",
            p.snapshots().len(),
            p.present.len(),
            p.chunks(),
            HumanBytes(p.chunk_bytes),
            p.chunks_present,
            p.signatures()
        );
        if p.config_differs {
            say!("  {CONFIG_DIFFERS}");
        }
        if !p.forgotten_there.is_empty() {
            say!("  {}", forgotten_there(p.forgotten_there.len()));
        }
    }

    pub fn copy(&self, r: &CopyReport) {
        if self.json {
            let mut v = json!(r);
            v["seconds"] = json!(secs(r.duration));
            self.emit(v);
            return;
        }
        say!(
            "copied {} snapshot(s) ({} already there): {} chunks, {} ({} chunks already there), {} signature(s), {:.2}s",
            r.copied.len(),
            r.already_there.len(),
            r.chunks_copied,
            HumanBytes(r.chunk_bytes_copied),
            r.chunks_present,
            r.signatures_copied,
            r.duration.as_secs_f64()
        );
        if r.config_differs {
            say!("  {CONFIG_DIFFERS}");
        }
        if !r.forgotten_there.is_empty() {
            say!("  {}", forgotten_there(r.forgotten_there.len()));
        }
        for n in &r.not_copied {
            say!("  {}", printable(n));
        }
        if let Some(c) = r.source_requests {
            say!("  source: {}", requests_line(c));
        }
        if let Some(c) = r.destination_requests {
            say!("  destination: {}", requests_line(c));
        }
    }

    pub fn stats(&self, repo: &str, s: &Stats) {
        if self.json {
            self.emit(json!(s));
            return;
        }
        say!(
            "repository {}: {} objects, {}",
            printable(repo),
            s.total.count,
            HumanBytes(s.total.bytes)
        );
        for (kind, o) in &s.by_kind {
            say!(
                "  {:<12} {:>9} objects  {:>11}",
                printable(kind),
                o.count,
                HumanBytes(o.bytes).to_string()
            );
        }
        say!(
            "{} snapshots restore {} in all; they reference {} distinct chunks holding {} ({:.1}x dedup), stored in {} ({:.2}x compression)",
            s.snapshots.len(),
            HumanBytes(s.logical_bytes),
            s.referenced.count,
            HumanBytes(s.referenced_raw_bytes),
            s.dedup_ratio,
            HumanBytes(s.referenced.bytes),
            s.compression_ratio
        );
        say!(
            "{} chunks ({}) are referenced by no snapshot: prune reclaims them",
            s.unreferenced.count,
            HumanBytes(s.unreferenced.bytes)
        );
        for u in &s.unreadable {
            say!("unreadable: {}", printable(u));
        }
        if !s.snapshots.is_empty() {
            say!(
                "{:>12}  {:<12}  {:<20}  {:<16}  {:>10}  only its own (freed by forgetting it)",
                "height",
                "id",
                "time",
                "host",
                "size"
            );
        }
        for p in &s.snapshots {
            let id = p.key.rsplit('-').next().unwrap_or("");
            say!(
                "{:>12}  {:<12}  {:<20}  {:<16}  {:>10}  {}",
                p.height,
                &id[..12.min(id.len())],
                time(p.created_unix_ns),
                printable(if p.host.is_empty() { "-" } else { &p.host }),
                HumanBytes(p.logical_bytes).to_string(),
                HumanBytes(p.unique_stored_bytes)
            );
        }
    }

    pub fn signed(&self, signed: &[blocksnap::trusted::SignedSnapshot], by: KeyId) {
        if self.json {
            self.emit(json!({
                "key_id": by,
                "signed": signed,
            }));
            return;
        }
        for s in signed {
            say!(
                "signed snapshot {} (height {}, host {}, source {}, {} files, {}) with key {by}",
                s.key.id.short(),
                s.key.height,
                printable(if s.host.is_empty() { "-" } else { &s.host }),
                printable(&s.source),
                s.files,
                HumanBytes(s.logical_bytes)
            );
        }
    }

    pub fn key_generated(&self, secret: &std::path::Path, id: KeyId, public: &str) {
        if self.json {
            self.emit(json!({
                "key_id": id,
                "secret_key": secret,
                "public_key": public,
            }));
            return;
        }
        say!(
            "key {id}: secret key in {} (keep it private), public key in {}.pub:",
            secret.display(),
            secret.display()
        );
        say!("{public}");
    }

    /// A restore's plan (`restore --dry-run`): nothing was written.
    pub fn restore_plan(&self, p: &RestorePlan) {
        let seeds = p.seeds.as_ref().map(|s| s.stats).unwrap_or_default();
        if self.json {
            self.emit(json!({
                "dry_run": true,
                "id": p.key.id.to_hex(),
                "height": p.key.height,
                "target": p.target,
                "entries": p.manifest.entries.len(),
                "bytes": p.bytes,
                "bytes_to_write": p.bytes_to_write,
                "free_bytes": p.free_bytes,
                "modes_stripped": p.modes_stripped,
                "reuse": p.reuse,
                "seeds": seeds,
                "completes_interrupted": p.pending.as_ref().map(|j| &j.staging),
            }));
            return;
        }
        say!(
            "would restore snapshot {} (height {}) to {}: {} entries, {}; {} to write, {} free",
            p.key.id.short(),
            p.key.height,
            p.target.display(),
            p.manifest.entries.len(),
            HumanBytes(p.bytes),
            HumanBytes(p.bytes_to_write),
            HumanBytes(p.free_bytes)
        );
        if seeds.files_read > 0 {
            say!(
                "  from local files: {} kept whole ({} files), {} copied; {} read from {} seed files",
                HumanBytes(p.reuse.bytes_kept),
                p.reuse.files_kept,
                HumanBytes(p.reuse.bytes_copied),
                HumanBytes(seeds.bytes_read),
                seeds.files_read
            );
        }
        say!(
            "  to download: {} ({} stored)",
            HumanBytes(p.reuse.bytes_to_download),
            HumanBytes(p.reuse.stored_bytes_to_download)
        );
        if let Some(j) = &p.pending {
            say!(
                "  would first complete an interrupted restore found in the target ({})",
                j.staging
            );
        }
        if p.modes_stripped > 0 {
            say!(
                "  {} entries would lose their setuid, setgid or world-write bits (--keep-special-modes keeps them)",
                p.modes_stripped
            );
        }
    }

    pub fn verify(&self, r: &VerifyReport) {
        if self.json {
            let mut v = json!(r);
            v["ok"] = json!(r.ok());
            v["seconds"] = json!(secs(r.duration));
            self.emit(v);
            return;
        }
        for p in &r.problems {
            // A problem is printed even with --quiet: it is what cron mails.
            std::println!("{}", printable(&p.to_string()));
        }
        let mut scope = format!(
            "{} check of {} snapshot(s), {} files, {} chunks",
            r.level, r.snapshots, r.files, r.chunks
        );
        if r.level == "full" {
            scope.push_str(&format!(
                "; read {} chunks ({:.1}% of them, subset {}), {} hashed",
                r.chunks_checked,
                r.coverage * 100.0,
                r.subset,
                HumanBytes(r.bytes_checked)
            ));
        }
        if let Some(c) = &r.chain {
            scope.push_str(&format!(
                "; chain: {} histories, {} links, {} to forgotten snapshots",
                c.histories, c.links, c.forgotten
            ));
        }
        for n in &r.notes {
            say!("note: {}", printable(n));
        }
        // The verdict is the last line (requests: --json, --metrics-file).
        say!(
            "{}: {} problem(s); {scope}; {:.2}s",
            if r.ok() { "OK" } else { "DAMAGED" },
            r.problems.len(),
            r.duration.as_secs_f64()
        );
    }

    pub fn compare(&self, key: &SnapshotKey, dir: &Path, r: &DirReport) {
        if self.json {
            let mut v = json!(r);
            v["snapshot"] = json!(key.key());
            v["dir"] = json!(dir);
            v["same"] = json!(r.differences.is_empty());
            v["seconds"] = json!(secs(r.duration));
            self.emit(v);
            return;
        }
        for d in &r.differences {
            say!("{}", printable(&d.to_string()));
        }
        let secs = r.duration.as_secs_f64();
        say!(
            "{}: {} difference(s) between {} and snapshot {} at height {}; {} files, {} hashed in {secs:.2}s ({}/s)",
            if r.differences.is_empty() { "SAME" } else { "DIFFERENT" },
            r.differences.len(),
            printable(&dir.display().to_string()),
            key.id.short(),
            key.height,
            r.files,
            HumanBytes(r.bytes_hashed),
            HumanBytes((r.bytes_hashed as f64 / secs.max(1e-9)) as u64),
        );
    }

    pub fn diff(&self, a: &SnapshotKey, b: &SnapshotKey, r: &DiffReport) {
        if self.json {
            let mut v = json!(r);
            v["from"] = json!(a.key());
            v["to"] = json!(b.key());
            self.emit(v);
            return;
        }
        for d in &r.differences {
            let sign = match d.kind {
                DifferenceKind::Extra => "+",
                DifferenceKind::Missing => "-",
                DifferenceKind::Changed => "M",
            };
            say!("{sign} {}  {}", printable(&d.path), printable(&d.detail));
        }
        let count = |k| r.differences.iter().filter(|d| d.kind == k).count();
        say!(
            "{} -> {}: {} added, {} removed, {} changed, {} unchanged files; {} new chunks ({}, {} stored) that height {} does not have",
            a.height,
            b.height,
            count(DifferenceKind::Extra),
            count(DifferenceKind::Missing),
            count(DifferenceKind::Changed),
            r.unchanged,
            r.new_chunks,
            HumanBytes(r.new_bytes),
            HumanBytes(r.new_stored_bytes),
            a.height,
        );
    }

    pub fn forget(&self, plan: &ForgetPlan, report: Option<&ForgetReport>) {
        if self.json {
            let mut v = json!({"dry_run": report.is_none(), "decisions": plan.decisions, "unreadable": plan.unreadable, "not_counted": plan.not_counted});
            if let Some(r) = report {
                v["forgotten"] = json!(r.forgotten);
                v["kept"] = json!(r.kept);
                v["requests"] = json!(r.requests);
            }
            self.emit(v);
            return;
        }
        for d in &plan.decisions {
            say!(
                "{:<6}  {:>12}  {:<12}  {:<20}  {:<16}  {}",
                if d.keep { "keep" } else { "forget" },
                d.height,
                &d.key[d.key.len() - 64..][..12],
                time(d.created_unix_ns),
                printable(if d.host.is_empty() { "-" } else { &d.host }),
                printable(&d.reasons.join(", "))
            );
        }
        for u in &plan.unreadable {
            say!("unreadable (kept): {}", printable(u));
        }
        for n in &plan.not_counted {
            say!("not counted (kept): {}", printable(n));
        }
        let forget = plan.forgotten().count();
        match report {
            None => say!(
                "dry run: would forget {forget} of {} snapshot(s); nothing changed",
                plan.decisions.len()
            ),
            Some(r) => {
                say!(
                    "forgot {} snapshot(s), kept {}; run `blocksnap prune` to reclaim their chunks",
                    r.forgotten,
                    r.kept
                );
                print_requests(r.requests);
            }
        }
    }

    pub fn prune(&self, r: &PruneReport) {
        if self.json {
            let mut v = json!(r);
            v["seconds"] = json!(secs(r.duration));
            self.emit(v);
            return;
        }
        let verb = if r.dry_run { "would delete" } else { "deleted" };
        say!(
            "{} snapshot(s) reference {} of {} chunk objects ({})",
            r.snapshots,
            r.referenced_chunks,
            r.chunks,
            HumanBytes(r.chunk_bytes)
        );
        for s in &r.swept {
            say!(
                "  round {}: {verb} {} chunk(s), {} ({} condemned, {} referenced again and kept)",
                s.round,
                s.deleted,
                HumanBytes(s.deleted_bytes),
                s.condemned,
                s.spared
            );
        }
        if let Some(round) = r.condemned_round {
            say!(
                "  round {round}: condemned {} unreferenced chunk(s), {}{}",
                r.condemned,
                HumanBytes(r.condemned_bytes),
                if r.swept.iter().any(|s| s.round == round) {
                    String::new()
                } else {
                    "; deleted by a prune after the grace period".to_string()
                }
            );
        }
        if !r.waiting_rounds.is_empty() {
            say!(
                "  waiting for their grace period: round(s) {}",
                r.waiting_rounds
                    .iter()
                    .map(|n| n.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        if r.pending_promoted + r.pending_expired + r.pending_kept > 0 {
            say!(
                "  pending commits: {} completed, {} expired, {} in progress",
                r.pending_promoted,
                r.pending_expired,
                r.pending_kept
            );
        }
        if r.rounds_retired > 0 {
            say!("  retired the records of {} old round(s)", r.rounds_retired);
        }
        if r.stale_files > 0 {
            say!(
                "  removed {} stale temporary file(s), {}",
                r.stale_files,
                HumanBytes(r.stale_bytes)
            );
        }
        say!(
            "  {:.2}s{}",
            r.duration.as_secs_f64(),
            if r.dry_run {
                " (dry run: nothing changed)"
            } else {
                ""
            }
        );
        print_requests(r.requests);
    }

    pub fn generated(&self, dir: &Path, height: u64, bytes: u64) {
        if self.json {
            self.emit(json!({"dir": dir, "height": height, "bytes": bytes}));
        } else {
            say!(
                "node data at {} is at height {height}, {}",
                dir.display(),
                HumanBytes(bytes)
            );
        }
    }

    pub fn demo(&self, d: &DemoReport) {
        if self.json {
            self.emit(json!({
                "generate_seconds": secs(d.generate),
                "source_bytes": d.source_bytes,
                "first": snapshot_json(&d.first),
                "advance_seconds": secs(d.advance),
                "second": snapshot_json(&d.second),
                "restore": restore_json(&d.restore),
                "verify": d.verify,
                "repo_bytes": d.repo_bytes,
                "differences": d.differences,
            }));
            return;
        }
        let dedup =
            d.second.stats.logical_bytes as f64 / d.second.stats.new_stored_bytes.max(1) as f64;
        say!(
            "blocksnap demo in {}",
            d.repo.parent().unwrap_or(&d.repo).display()
        );
        say!(
            "  generated ICON node data      {:>10}  {:>7.2}s  {}",
            HumanBytes(d.source_bytes).to_string(),
            d.generate.as_secs_f64(),
            d.source.display()
        );
        say!(
            "  snapshot 1 (height {:>6})    {:>10}  {:>7.2}s  stored {} in {} new chunks",
            d.first.key.height,
            HumanBytes(d.first.stats.logical_bytes).to_string(),
            d.first.duration.as_secs_f64(),
            HumanBytes(d.first.stats.new_stored_bytes),
            d.first.stats.new_chunks
        );
        say!(
            "  advanced the node             {:>10}  {:>7.2}s",
            "",
            d.advance.as_secs_f64()
        );
        say!(
            "  snapshot 2 (height {:>6})    {:>10}  {:>7.2}s  stored {} in {} new chunks ({dedup:.0}x less than a full copy)",
            d.second.key.height,
            HumanBytes(d.second.stats.logical_bytes).to_string(),
            d.second.duration.as_secs_f64(),
            HumanBytes(d.second.stats.new_stored_bytes),
            d.second.stats.new_chunks
        );
        say!(
            "  restore latest as 10.0.0.8    {:>10}  {:>7.2}s  {} chunks checked",
            HumanBytes(d.restore.bytes).to_string(),
            d.restore.duration.as_secs_f64(),
            d.restore.chunks_fetched
        );
        say!(
            "  verify --full all             {:>10}  {:>7.2}s  {} problem(s)",
            HumanBytes(d.verify.bytes_checked).to_string(),
            d.verify.duration.as_secs_f64(),
            d.verify.problems.len()
        );
        say!(
            "  repository size               {:>10}",
            HumanBytes(d.repo_bytes).to_string()
        );
        if d.differences.is_empty() {
            say!("  restored tree is byte-identical to the source (IP 10.0.0.7 -> 10.0.0.8 in the block DB's name)");
        } else {
            say!(
                "  restored tree DIFFERS from the source at: {}",
                d.differences.join(", ")
            );
        }
    }
}

/// What the command asked of the store, so an operator can price it.
fn print_requests(requests: Option<Counts>) {
    if let Some(c) = requests {
        say!("  store requests: {}", requests_line(c));
    }
}

fn requests_line(c: Counts) -> String {
    format!(
        "{} PUT, {} GET, {} HEAD, {} LIST, {} DELETE ({} of them retries)",
        c.put, c.get, c.head, c.list, c.delete, c.retries
    )
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn snapshot_json(r: &SnapshotReport) -> serde_json::Value {
    json!({
        "height": r.key.height, "id": r.key.id.to_hex(), "key": r.key.key(),
        "files": r.stats.files, "entries": r.entries, "logical_bytes": r.stats.logical_bytes,
        "chunk_refs": r.stats.chunk_refs, "new_chunks": r.stats.new_chunks,
        "new_stored_bytes": r.stats.new_stored_bytes, "reused_chunk_refs": r.reused_chunk_refs,
        "bytes_read": r.bytes_read, "files_from_cache": r.files_from_cache,
        "chunk_index": r.index,
        "normalised_ip": r.normalised_ip.map(|ip| ip.to_string()),
        "warnings": r.warnings, "requests": r.requests, "seconds": secs(r.duration),
        "chain_head": r.chain_head,
    })
}

fn restore_json(r: &RestoreReport) -> serde_json::Value {
    let mut v = json!(r);
    v["height"] = json!(r.key.height);
    v["id"] = json!(r.key.id.to_hex());
    v["seconds"] = json!(secs(r.duration));
    v
}
