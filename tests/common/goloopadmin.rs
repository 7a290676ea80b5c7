//! A stand-in for goloop's admin API on its unix socket, with goloop's
//! chain state machine as far as a snapshot drives it (`chain/chain.go`,
//! `chain/taskbackup.go`): the database is open — its goleveldb `LOCK`
//! held with flock, as goleveldb holds it — while the chain is started or
//! stopped, and closed only in a manual backup. Stopping and starting take
//! a moment, as on a node, so callers must poll.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

struct Chain {
    state: String,
    height: i64,
    /// The database's LOCK, flocked while the database is open.
    lock: Option<std::fs::File>,
    lock_path: PathBuf,
    calls: Vec<String>,
}

impl Chain {
    fn open_db(&mut self) {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&self.lock_path)
            .unwrap();
        f.lock().unwrap();
        self.lock = Some(f);
    }
}

pub struct FakeGoloop {
    pub socket: PathBuf,
    chain: Arc<Mutex<Chain>>,
}

impl FakeGoloop {
    /// Serves at `socket`, the chain started with the database `db` open.
    pub fn start(socket: &Path, db: &Path, height: i64) -> FakeGoloop {
        let mut chain = Chain {
            state: "started".into(),
            height,
            lock: None,
            lock_path: db.join("LOCK"),
            calls: Vec::new(),
        };
        chain.open_db();
        let chain = Arc::new(Mutex::new(chain));
        let listener = UnixListener::bind(socket).unwrap();
        let c = chain.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { break };
                let c = c.clone();
                std::thread::spawn(move || serve(conn, &c));
            }
        });
        FakeGoloop {
            socket: socket.to_path_buf(),
            chain,
        }
    }

    pub fn state(&self) -> String {
        self.chain.lock().unwrap().state.clone()
    }

    pub fn db_open(&self) -> bool {
        self.chain.lock().unwrap().lock.is_some()
    }

    /// The requests, as `METHOD path`.
    pub fn calls(&self) -> Vec<String> {
        self.chain.lock().unwrap().calls.clone()
    }
}

/// Moves the chain to `to` after a short while (a stop or start in progress).
fn later(chain: &Arc<Mutex<Chain>>, to: &'static str) {
    let c = chain.clone();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(150));
        c.lock().unwrap().state = to.into();
    });
}

fn serve(conn: UnixStream, chain: &Arc<Mutex<Chain>>) {
    let mut r = BufReader::new(conn.try_clone().unwrap());
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let mut len = 0;
    loop {
        let mut h = String::new();
        r.read_line(&mut h).unwrap();
        if h == "\r\n" || h.is_empty() {
            break;
        }
        if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap();
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body).unwrap();
    let mut parts = line.split(' ');
    let (method, path) = (parts.next().unwrap(), parts.next().unwrap());
    let (status, answer) = {
        let mut c = chain.lock().unwrap();
        c.calls.push(format!("{method} {path}"));
        match (method, path) {
            ("GET", "/chain/0x1") => (
                200,
                format!(
                    r#"{{"cid":"0x1","nid":"0x1","channel":"icon_dex","state":"{}","height":{},"lastError":""}}"#,
                    c.state, c.height
                ),
            ),
            ("POST", "/chain/0x1/stop") => match c.state.as_str() {
                "started" => {
                    c.state = "stopping".into();
                    later(chain, "stopped");
                    (200, "\"OK\"".into())
                }
                "backup manual" => {
                    c.open_db();
                    c.state = "backup done".into();
                    (200, "\"OK\"".into())
                }
                s => (500, format!("InvalidStateToStop(status={s})")),
            },
            ("POST", "/chain/0x1/backup") => match c.state.as_str() {
                "stopped" | "backup done"
                    if String::from_utf8_lossy(&body).contains("\"manual\":true") =>
                {
                    c.lock = None;
                    c.state = "backup manual".into();
                    (200, "manual".into())
                }
                s => (500, format!("InvalidState(state={s})")),
            },
            ("POST", "/chain/0x1/start") => match c.state.as_str() {
                "stopped" | "backup done" => {
                    c.state = "starting".into();
                    later(chain, "started");
                    (200, "\"OK\"".into())
                }
                s => (500, format!("InvalidState(state={s})")),
            },
            _ => (404, "not found".into()),
        }
    };
    let mut w = conn;
    let _ = write!(
        w,
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
        answer.len()
    );
}
