//! A real static web server for mirror tests: Python's `http.server`
//! (threading, HTTP/1.0, GET and HEAD of files, 404 for the rest) serving
//! a directory, as any static host or CDN origin would.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct WebServer {
    child: Child,
    pub addr: SocketAddr,
    /// `http://127.0.0.1:PORT`
    pub url: String,
}

impl WebServer {
    /// Serves `dir`. `None` (test skipped) without python3 outside CI;
    /// under `CI=true` a missing python3 fails the test.
    pub fn serve(dir: &Path) -> Option<WebServer> {
        let python = std::env::var("BLOCKSNAP_HTTP_PYTHON").unwrap_or_else(|_| "python3".into());
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(&python)
            .args([
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .arg("--directory")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let mut child = match child {
            Ok(c) => c,
            Err(e) => {
                let msg = format!("{python} -m http.server cannot start ({e})");
                assert!(
                    !super::s3server::in_ci(),
                    "{msg}; under CI=true mirror tests must run"
                );
                eprintln!("SKIPPED: {msg}");
                return None;
            }
        };
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(addr).is_err() {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("web server exited at start: {status}");
            }
            assert!(Instant::now() < deadline, "web server did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(WebServer {
            child,
            addr,
            url: format!("http://{addr}"),
        })
    }
}

impl Drop for WebServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
