//! Running the operator's commands (stop, start, height) for a staged
//! snapshot.
//!
//! - Each runs as `sh -c CMD` in a process group of its own, so that a
//!   Ctrl-C at the terminal reaches blocksnap alone, which then decides what
//!   happens (it runs the start command; see [`crate::sys::interrupt`]), instead
//!   of also killing a half-done stop command.
//! - Each has a deadline; a command that overruns it gets SIGTERM, then
//!   SIGKILL five seconds later, and the run is a failure that says so.
//! - Each gets a small, documented environment ([`ENV_KEPT`] plus what the
//!   operator names), not blocksnap's own: the AWS credentials blocksnap
//!   holds are no business of a `docker stop`.
//! - Output goes to unnamed temporary files, not pipes: a start command that
//!   leaves the node running in the background (`node &`) hands it our
//!   descriptors, and reading a pipe to its end would wait for the node.

use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Variables passed through from blocksnap's environment (when set): what a
/// shell, `docker`, `systemctl` and `sudo` need to find programs, the user,
/// the locale and their daemons.
pub const ENV_KEPT: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "LANG",
    "LANGUAGE",
    "LC_ALL",
    "TZ",
    "TMPDIR",
    "TERM",
    "DOCKER_HOST",
    "DOCKER_CONFIG",
    "DOCKER_CONTEXT",
    "XDG_RUNTIME_DIR",
    "DBUS_SESSION_BUS_ADDRESS",
];

/// How to run the operator's commands.
#[derive(Debug, Clone)]
pub struct Runner {
    /// Longest a command may run.
    pub timeout: Duration,
    /// Further variables to pass through by name (`--cmd-env`).
    pub pass_env: Vec<String>,
    /// Variables blocksnap sets for the command (e.g. `BLOCKSNAP_SOURCE`).
    pub set_env: Vec<(String, String)>,
}

impl Default for Runner {
    fn default() -> Self {
        Runner {
            timeout: Duration::from_secs(300),
            pass_env: Vec::new(),
            set_env: Vec::new(),
        }
    }
}

impl Runner {
    /// Runs `cmd`; returns its standard output when it exits with status 0,
    /// and otherwise a message naming the command, the status or the
    /// timeout, and the last lines it printed.
    pub fn run(&self, what: &str, cmd: &str) -> Result<String, String> {
        let started = std::time::Instant::now();
        tracing::info!("running the {what} command {cmd:?}");
        let result = self.run_once(what, cmd);
        match &result {
            Ok(_) => tracing::info!(
                "{what} command finished in {:.2} s",
                started.elapsed().as_secs_f64()
            ),
            Err(e) => tracing::info!("{e}"),
        }
        result
    }

    fn run_once(&self, what: &str, cmd: &str) -> Result<String, String> {
        let could_not = |e: std::io::Error| format!("{what} command {cmd:?} could not run: {e}");
        let mut stdout = tempfile::tempfile().map_err(could_not)?;
        let mut stderr = tempfile::tempfile().map_err(could_not)?;
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(cmd)
            .env_clear()
            .stdin(Stdio::null())
            .stdout(stdout.try_clone().map_err(could_not)?)
            .stderr(stderr.try_clone().map_err(could_not)?)
            .process_group(0);
        for name in ENV_KEPT
            .iter()
            .copied()
            .chain(self.pass_env.iter().map(String::as_str))
            .chain(std::iter::once("LC_CTYPE"))
        {
            if let Some(v) = std::env::var_os(name) {
                command.env(name, v);
            }
        }
        for (k, v) in &self.set_env {
            command.env(k, v);
        }
        let mut child = command.spawn().map_err(could_not)?;
        let deadline = Instant::now() + self.timeout;
        let status = loop {
            match child.try_wait().map_err(could_not)? {
                Some(status) => break Some(status),
                None if Instant::now() >= deadline => break None,
                None => std::thread::sleep(Duration::from_millis(20)),
            }
        };
        let read = |f: &mut std::fs::File| {
            let mut text = String::new();
            let _ = f
                .seek(SeekFrom::Start(0))
                .and_then(|_| f.take(64 * 1024).read_to_string(&mut text));
            text
        };
        let failure = match status {
            Some(s) if s.success() => return Ok(read(&mut stdout)),
            Some(s) => format!("failed ({s})"),
            None => {
                kill_group(&mut child);
                format!(
                    "did not finish within {} s and was killed",
                    self.timeout.as_secs()
                )
            }
        };
        let text = read(&mut stderr) + &read(&mut stdout);
        let tail = text
            .trim_end()
            .lines()
            .rev()
            .take(5)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join(" | ");
        Err(format!(
            "{what} command {cmd:?} {failure}{}",
            if tail.is_empty() {
                String::new()
            } else {
                format!(": {tail}")
            }
        ))
    }
}

/// Runs a height command and parses what it prints (surrounding white
/// space allowed) as a block height.
pub fn height(runner: &Runner, cmd: &str) -> crate::error::Result<u64> {
    let out = runner
        .run("height", cmd)
        .map_err(crate::error::Error::Refused)?;
    out.trim().parse::<u64>().map_err(|_| {
        crate::error::Error::Refused(format!(
            "height command {cmd:?} printed {:?}, not a block height",
            out.trim().chars().take(80).collect::<String>()
        ))
    })
}

/// SIGTERM to the command's process group, SIGKILL five seconds later.
fn kill_group(child: &mut std::process::Child) {
    let pgid = child.id() as libc::pid_t;
    // SAFETY: kill takes plain integers; a negative pid names the group
    // this child leads (process_group(0) above).
    unsafe { libc::kill(-pgid, libc::SIGTERM) };
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // SAFETY: as above.
    unsafe { libc::kill(-pgid, libc::SIGKILL) };
    let _ = child.wait();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_is_minimal_and_timeouts_kill() {
        std::env::set_var("BLOCKSNAP_TEST_SECRET", "s3cr3t");
        let r = Runner {
            set_env: vec![("BLOCKSNAP_SOURCE".into(), "/data".into())],
            ..Runner::default()
        };
        let out = r.run("test", "env").unwrap();
        assert!(!out.contains("s3cr3t"), "{out}");
        assert!(out.contains("BLOCKSNAP_SOURCE=/data"), "{out}");
        assert!(out.contains("PATH="), "{out}");
        let r = Runner {
            pass_env: vec!["BLOCKSNAP_TEST_SECRET".into()],
            ..Runner::default()
        };
        assert!(r.run("test", "env").unwrap().contains("s3cr3t"));

        let r = Runner {
            timeout: Duration::from_millis(300),
            ..Runner::default()
        };
        let started = Instant::now();
        let e = r.run("stop", "echo partial; sleep 30").unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(
            e.contains("did not finish within 0 s") && e.contains("partial"),
            "{e}"
        );
        let e = r.run("start", "echo boom >&2; exit 3").unwrap_err();
        assert!(e.contains("failed (exit status: 3): boom"), "{e}");
    }
}
