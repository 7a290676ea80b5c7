//! The operator's files: shell completions and manual pages generated from
//! the clap definitions, and the systemd units in contrib/systemd checked by
//! `systemd-analyze verify` (with the pages they cite installed, and the
//! binary path pointed at the one just built).

use std::path::Path;
use std::process::Command;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_blocksnap")
}

#[test]
fn completions_are_generated_for_every_shell() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = Command::new(bin())
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success(), "{shell}");
        let text = String::from_utf8(out.stdout).unwrap();
        for word in [
            "snapshot",
            "restore",
            "verify",
            "forget",
            "prune",
            "reuse-from",
            "trust",
        ] {
            assert!(text.contains(word), "{shell} completion lacks {word}");
        }
    }
    // bash accepts its script.
    let out = Command::new(bin())
        .args(["completions", "bash"])
        .output()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("blocksnap.bash");
    std::fs::write(&script, &out.stdout).unwrap();
    let status = Command::new("bash")
        .arg("-n")
        .arg(&script)
        .status()
        .unwrap();
    assert!(status.success());
}

/// The pages: one for blocksnap and one per command, each a roff page that
/// `man` renders, naming the command's options.
fn man_pages(dir: &Path) {
    let status = Command::new(bin())
        .args(["man", "--out"])
        .arg(dir)
        .status()
        .unwrap();
    assert!(status.success());
    for page in [
        "blocksnap",
        "blocksnap-restore",
        "blocksnap-verify",
        "blocksnap-snapshot",
    ] {
        let body = std::fs::read_to_string(dir.join(format!("{page}.1"))).unwrap();
        assert!(
            body.starts_with(".ie") || body.contains(".TH"),
            "{page}: not roff"
        );
    }
    let restore = std::fs::read_to_string(dir.join("blocksnap-restore.1")).unwrap();
    assert!(
        restore.contains("reuse\\-from"),
        "restore page lacks --reuse-from"
    );
}

#[test]
fn systemd_units_pass_systemd_analyze_verify() {
    let Some(analyze) = ["/usr/bin/systemd-analyze", "/bin/systemd-analyze"]
        .into_iter()
        .find(|p| Path::new(p).is_file())
    else {
        assert!(std::env::var_os("CI").is_none(), "CI installs systemd");
        eprintln!("systemd-analyze not installed: the units are not checked here");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let man = dir.path().join("man/man1");
    man_pages(&man);
    let units = Path::new(env!("CARGO_MANIFEST_DIR")).join("../contrib/systemd");
    let mut names = Vec::new();
    for e in std::fs::read_dir(&units).unwrap() {
        let path = e.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !(name.ends_with(".service") || name.ends_with(".timer")) {
            continue;
        }
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("/usr/local/bin/blocksnap", bin());
        std::fs::write(dir.path().join(&name), text).unwrap();
        names.push(name);
    }
    assert_eq!(names.len(), 8, "{names:?}");
    let out = Command::new(analyze)
        .arg("verify")
        .args(names.iter().map(|n| dir.path().join(n)))
        .env("MANPATH", dir.path().join("man"))
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success() && said.trim().is_empty(), "{said}");
    // Stopping the snapshot unit signals blocksnap, which restarts the node.
    let snapshot = std::fs::read_to_string(units.join("blocksnap-snapshot.service")).unwrap();
    assert!(snapshot.contains("KillMode=mixed"));
}
