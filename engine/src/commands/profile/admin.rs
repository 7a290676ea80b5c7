//! goloop's admin API over its unix socket (`cli.sock`; icon-project/goloop
//! `node/rest.go`, `chain/taskbackup.go`): releasing a chain's database for
//! a consistent snapshot and taking it back.
//!
//! A stopped chain keeps its goleveldb open (its `LOCK` held); a *manual
//! backup* closes it without stopping the process. So, to release:
//! `POST /chain/{cid}/stop` until the state is `stopped`, then
//! `POST /chain/{cid}/backup {"manual":true}` until it is `backup manual`.
//! To resume: `POST /chain/{cid}/stop` (ends the manual backup and reopens
//! the database) until it is no longer `backup manual`, then
//! `POST /chain/{cid}/start` until `started`. Both are idempotent: run
//! again from any of the states between, they finish the job.
//!
//! The snapshot's staged lifecycle runs them as its stop and start
//! commands (`blocksnap goloop release|resume`), so its guarantees — the
//! lock wait, the downtime bound, signals, the start always attempted —
//! hold as for any stop command.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::sys::interrupt;

/// What `GET /chain/{cid}` says (goloop's `ChainView`).
#[derive(Debug, Clone, Deserialize)]
pub struct ChainView {
    pub state: String,
    #[serde(default)]
    pub height: i64,
    #[serde(default, rename = "lastError")]
    pub last_error: String,
}

pub struct Admin {
    socket: PathBuf,
    /// The chain selector: `0x1`, a channel name.
    chain: String,
    timeout: Duration,
}

/// The longest answer read from the socket.
const MAX_RESPONSE: u64 = 1 << 20;

impl Admin {
    pub fn new(socket: &Path, chain: &str, timeout: Duration) -> Admin {
        Admin {
            socket: socket.to_path_buf(),
            chain: chain.to_string(),
            timeout,
        }
    }

    fn fail(&self, what: String) -> Error {
        Error::Refused(format!(
            "goloop admin API at {} (chain {}): {what}",
            self.socket.display(),
            self.chain
        ))
    }

    /// One request; returns the status and the body.
    fn request(&self, method: &str, path: &str, body: &str) -> Result<(u16, String)> {
        let mut s = UnixStream::connect(&self.socket)
            .map_err(|e| self.fail(format!("cannot connect: {e}")))?;
        let _ = s.set_read_timeout(Some(Duration::from_secs(60)));
        let _ = s.set_write_timeout(Some(Duration::from_secs(60)));
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .map_err(|e| self.fail(format!("{method} {path}: {e}")))?;
        let mut raw = Vec::new();
        s.take(MAX_RESPONSE)
            .read_to_end(&mut raw)
            .map_err(|e| self.fail(format!("{method} {path}: reading the answer: {e}")))?;
        let text = String::from_utf8_lossy(&raw);
        let (head, rest) = text
            .split_once("\r\n\r\n")
            .ok_or_else(|| self.fail(format!("{method} {path}: not an HTTP answer")))?;
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| self.fail(format!("{method} {path}: no status")))?;
        let chunked = head.lines().any(|l| {
            let l = l.to_ascii_lowercase();
            l.starts_with("transfer-encoding:") && l.contains("chunked")
        });
        let body = if chunked {
            dechunk(rest)
        } else {
            rest.to_string()
        };
        Ok((status, body))
    }

    fn post(&self, op: &str, body: &str) -> Result<()> {
        let path = format!("/chain/{}/{op}", self.chain);
        let (status, answer) = self.request("POST", &path, body)?;
        if status != 200 {
            return Err(self.fail(format!("POST {path}: HTTP {status}: {}", answer.trim())));
        }
        Ok(())
    }

    pub fn view(&self) -> Result<ChainView> {
        let path = format!("/chain/{}", self.chain);
        let (status, body) = self.request("GET", &path, "")?;
        if status != 200 {
            return Err(self.fail(format!("GET {path}: HTTP {status}: {}", body.trim())));
        }
        serde_json::from_str(&body).map_err(|e| {
            self.fail(format!(
                "GET {path}: not a chain view ({e}): {}",
                body.trim()
            ))
        })
    }

    /// Polls until `done` holds for the state, or the timeout.
    fn wait(&self, what: &str, done: impl Fn(&str) -> bool) -> Result<ChainView> {
        let deadline = Instant::now() + self.timeout;
        loop {
            let v = self.view()?;
            if done(&v.state) {
                return Ok(v);
            }
            if v.state == "failed" || v.state.ends_with(" failed") {
                return Err(self.fail(format!("{what}: the chain failed: {}", v.last_error.trim())));
            }
            if Instant::now() >= deadline {
                return Err(self.fail(format!(
                    "{what}: still {:?} after {} s",
                    v.state,
                    self.timeout.as_secs()
                )));
            }
            interrupt::check()?;
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the chain and releases its database (a manual backup).
    pub fn release(&self) -> Result<ChainView> {
        let v = self.view()?;
        if v.state == "backup manual" {
            return Ok(v);
        }
        if !matches!(v.state.as_str(), "stopped" | "finished" | "backup done") {
            self.post("stop", "")?;
            self.wait("stopping", |s| {
                matches!(s, "stopped" | "finished" | "backup done")
            })?;
        }
        self.post("backup", r#"{"manual":true}"#)?;
        self.wait("releasing the database", |s| s == "backup manual")
    }

    /// Takes the database back and starts the chain.
    pub fn resume(&self) -> Result<ChainView> {
        let v = self.view()?;
        if v.state == "started" {
            return Ok(v);
        }
        if v.state == "backup manual" {
            self.post("stop", "")?;
            self.wait("reopening the database", |s| s != "backup manual")?;
        }
        if self.view()?.state != "started" {
            self.post("start", "")?;
        }
        self.wait("starting", |s| s == "started")
    }
}

/// The body of a chunked answer.
fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16) else {
            break;
        };
        let (Some(chunk), Some(next)) = (after.get(..n), after.get(n..)) else {
            break;
        };
        if n == 0 {
            break;
        }
        out.push_str(chunk);
        rest = next.trim_start_matches("\r\n");
    }
    out
}
