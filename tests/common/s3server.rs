//! Real S3-compatible servers on loopback, started per test.
//!
//! - s3s-fs (Rust, crates.io) serves a directory and checks SigV4
//!   signatures: the main S3 tests run against it.
//! - moto (PyPI) accepts unsigned requests: the public-bucket test.
//!
//! `.ci/run` installs both into `~/.cache`. Outside CI a missing server
//! skips the test with a message; under `CI=true` it fails the test, so CI
//! can never pass without having talked to a real server.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const ACCESS_KEY: &str = "blocksnap-test-key";
pub const SECRET_KEY: &str = "blocksnap-test-secret-0123456789";
pub const BUCKET: &str = "blocksnap-test";

pub struct S3Server {
    child: Child,
    pub addr: SocketAddr,
    pub endpoint: String,
    /// The directory s3s-fs serves (objects are files under `root/BUCKET/`).
    pub root: Option<PathBuf>,
}

pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

fn binary(env: &str, default: &str) -> Option<PathBuf> {
    let path = std::env::var_os(env).map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(default)
    });
    if path.is_file() {
        return Some(path);
    }
    let msg = format!(
        "S3 test server {} not found (set {env}, or run .ci/run which installs it)",
        path.display()
    );
    assert!(!in_ci(), "{msg}; under CI=true S3 tests must run");
    eprintln!("SKIPPED: {msg}");
    None
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl S3Server {
    /// s3s-fs serving `root`, with bucket [`BUCKET`] created. `None` (test
    /// skipped) when the binary is missing outside CI.
    pub fn s3s_fs(root: &Path) -> Option<S3Server> {
        let bin = binary("BLOCKSNAP_S3S_FS", ".cache/blocksnap-s3s/bin/s3s-fs")?;
        std::fs::create_dir_all(root.join(BUCKET)).unwrap();
        let port = free_port();
        let child = Command::new(bin)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start s3s-fs");
        let server = S3Server::started(child, port, Some(root.to_path_buf()));
        Some(server)
    }

    /// moto's S3 server with bucket [`BUCKET`] created; it accepts unsigned
    /// requests (and does not check signatures at all).
    pub fn moto() -> Option<S3Server> {
        let bin = binary(
            "BLOCKSNAP_MOTO_SERVER",
            ".cache/blocksnap-moto/bin/moto_server",
        )?;
        let port = free_port();
        let child = Command::new(bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto_server");
        let server = S3Server::started(child, port, None);
        let status = server.raw("PUT", &format!("/{BUCKET}"), b"");
        assert_eq!(status, 200, "create bucket on moto");
        // Published the way an operator publishes snapshots: anyone may
        // read and list, nobody else may write.
        let policy = format!(
            r#"{{"Version":"2012-10-17","Statement":[{{"Sid":"PublicRead","Effect":"Allow","Principal":"*","Action":["s3:GetObject","s3:ListBucket"],"Resource":["arn:aws:s3:::{BUCKET}","arn:aws:s3:::{BUCKET}/*"]}}]}}"#
        );
        let status = server.raw("PUT", &format!("/{BUCKET}?policy"), policy.as_bytes());
        assert_eq!(status, 200, "public-read policy on moto");
        Some(server)
    }

    fn started(mut child: Child, port: u16, root: Option<PathBuf>) -> S3Server {
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(addr).is_err() {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("S3 test server exited at start: {status}");
            }
            assert!(Instant::now() < deadline, "S3 test server did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        S3Server {
            child,
            addr,
            endpoint: format!("http://{addr}"),
            root,
        }
    }

    /// One unsigned HTTP/1.1 request; returns the status code.
    pub fn raw(&self, method: &str, path: &str, body: &[u8]) -> u16 {
        let mut s = TcpStream::connect(self.addr).unwrap();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.addr,
            body.len()
        )
        .unwrap();
        s.write_all(body).unwrap();
        let mut response = Vec::new();
        s.read_to_end(&mut response).unwrap();
        let text = String::from_utf8_lossy(&response);
        text.split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
