//! The public snapshot page (issue #24), rendered by a real browser:
//! headless Chromium loads it from a real web server serving the
//! repository; the test reads the DOM Chromium built (every snapshot
//! listed with its restore command, the size plot drawn, a hostile host
//! name shown as text and never as markup) and keeps a screenshot as an
//! artifact of the run.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use blocksnap::chunking::DEFAULT_PARAMS;
use blocksnap::progress::Silent;
use blocksnap::sign::{self, Signer, Trust};
use blocksnap::site::{self, SiteOptions};
use blocksnap::snapshot::{self, SnapshotOptions};
use blocksnap::store::LocalStore;
use blocksnap::Repository;
use common::webserver::WebServer;

/// Chromium, or `None` (skipped) outside CI when it is missing.
fn chromium() -> Option<PathBuf> {
    let bin =
        PathBuf::from(std::env::var("BLOCKSNAP_CHROMIUM").unwrap_or_else(|_| "chromium".into()));
    let found = Command::new(&bin)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if found {
        return Some(bin);
    }
    let msg = format!(
        "{} not found (.ci/run installs Debian's chromium)",
        bin.display()
    );
    assert!(
        !common::s3server::in_ci(),
        "{msg}; under CI=true the browser test must run"
    );
    eprintln!("SKIPPED: {msg}");
    None
}

fn headless(bin: &Path, profile: &Path, args: &[&str], url: &str) -> std::process::Output {
    Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .output()
        .unwrap()
}

/// Where the screenshot is kept: `$BLOCKSNAP_ARTIFACTS`, else beside the
/// build (`$CARGO_TARGET_DIR/artifacts`), else the temp directory.
fn artifacts() -> PathBuf {
    let dir = std::env::var_os("BLOCKSNAP_ARTIFACTS")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("CARGO_TARGET_DIR").map(|d| PathBuf::from(d).join("artifacts"))
        })
        .unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn the_page_renders_in_a_real_browser_with_every_snapshot_and_its_command() {
    let Some(browser) = chromium() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("repo");
    std::fs::create_dir_all(&dir).unwrap();
    let repo = Repository::init(Arc::new(LocalStore::open(&dir)), DEFAULT_PARAMS, 1).unwrap();
    let key_file = tmp.path().join("a.key");
    let (_, public) = sign::generate(&key_file, None).unwrap();
    let signer = Arc::new(Signer::load(&key_file).unwrap());
    let source = common::node(tmp.path(), 2);
    let hostile = "<script>alert(1)</script><img src=x onerror=alert(2)>";
    let mut keys = Vec::new();
    for (i, host) in ["prep-1", "prep-1", hostile].into_iter().enumerate() {
        let opts = SnapshotOptions {
            source: source.clone(),
            height: 100 * (i as u64 + 1),
            host: host.into(),
            created_unix_ns: Some(1_700_000_000_000_000_000 + i as u64 * 86_400_000_000_000),
            signer: (i == 1).then(|| signer.clone()),
            ..Default::default()
        };
        keys.push(snapshot::snapshot(&repo, &opts, &Silent).unwrap().key);
        common::advance(&source, 20);
    }
    let Some(web) = WebServer::serve(&dir) else {
        return;
    };
    let opts = SiteOptions {
        url: web.url.clone(),
        title: "ICON P-Rep snapshots".into(),
        trust: Some(Arc::new(Trust::parse(&[public]).unwrap())),
        now_unix_ns: 1_700_500_000_000_000_000,
    };
    let (_, report) = site::site(&repo, &opts).unwrap();
    assert_eq!(report.snapshots, 3);

    let page = format!("{}/{}", web.url, site::PAGE_KEY);
    let profile = tmp.path().join("chromium");
    let out = headless(&browser, &profile, &["--dump-dom"], &page);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dom = String::from_utf8(out.stdout).unwrap();
    assert!(dom.contains("<h1>ICON P-Rep snapshots</h1>"), "{dom}");
    for k in &keys {
        let id = k.id.to_hex();
        assert!(
            dom.contains(&format!("data-id=\"{id}\"")),
            "{id} not listed: {dom}"
        );
        let command = format!(
            "blocksnap restore --repo {} {} --ip YOUR.NODE.IP --target /app/prep/data/loopchain",
            web.url,
            &id[..12]
        );
        assert!(dom.contains(&command), "no restore command for {id}: {dom}");
    }
    assert_eq!(dom.matches("<tr data-id=").count(), 3);
    // The signed snapshot is shown trusted, the others unsigned.
    assert_eq!(dom.matches(">trusted<").count(), 1, "{dom}");
    // The plot: one point per snapshot.
    let plot = dom
        .split("<polyline")
        .nth(1)
        .expect("a polyline in the plot");
    let points = plot
        .split("points=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    assert_eq!(points.split(' ').count(), 3, "{points}");
    // The hostile host is text: the browser built no script or image from it.
    assert!(!dom.contains("<script"), "{dom}");
    assert!(!dom.contains("<img"), "{dom}");
    assert!(
        dom.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{dom}"
    );

    // A screenshot, kept.
    let shot = artifacts().join("site.png");
    let _ = std::fs::remove_file(&shot);
    let out = headless(
        &browser,
        &profile,
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1280,900",
        ],
        &page,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );
    eprintln!("screenshot of the page: {}", shot.display());
}
