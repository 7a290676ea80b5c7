//! A fault-injecting HTTP/1.1 proxy between the S3 client and a real
//! server: it forwards requests one by one (keep-alive included) and spoils
//! a given share of them, in turn:
//! - answers `503 SlowDown` itself without forwarding,
//! - forwards, then sends only part of the response and closes (a body or
//!   header cut short),
//! - closes the connection without answering (a reset).
//!
//! It understands just enough HTTP for the SDK's requests: a head, then a
//! `Content-Length` or chunked body; no body for HEAD, 204 and 304.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

pub struct FaultProxy {
    pub endpoint: String,
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    stats: Arc<Stats>,
}

#[derive(Default)]
struct Stats {
    requests: AtomicU64,
    faults: AtomicU64,
    signed: AtomicU64,
    counter: AtomicU64,
    /// A request-line fragment: the first PUT that contains it is forwarded
    /// and its response lost, whatever `percent` says.
    lose_first_put: std::sync::Mutex<Option<String>>,
    /// A request-line fragment: the first PUT that contains it reaches the
    /// server with one body byte flipped (damage in transit).
    corrupt_first_put: std::sync::Mutex<Option<String>>,
    /// (from, to, times): the next `times` GETs whose request line
    /// contains `from` are forwarded for `to` instead (the body of another
    /// key).
    swap_gets: std::sync::Mutex<Option<(String, String, u32)>>,
}

impl FaultProxy {
    /// Spoils `percent` of the requests to `upstream`.
    pub fn start(upstream: SocketAddr, percent: u64) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(Stats::default());
        let (s, st) = (stop.clone(), stats.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(client) = conn else { continue };
                let st = st.clone();
                std::thread::spawn(move || {
                    let _ = serve(client, upstream, percent, &st);
                });
            }
        });
        FaultProxy {
            endpoint: format!("http://{addr}"),
            addr,
            stop,
            stats,
        }
    }

    /// Forwards the first PUT whose request line contains `fragment` to the
    /// server, then closes the connection without the answer: the write
    /// landed, but the client cannot know.
    pub fn lose_response_to_first_put(&self, fragment: &str) {
        *self.stats.lose_first_put.lock().unwrap() = Some(fragment.to_string());
    }

    /// Flips a byte in the body of the first PUT whose request line
    /// contains `fragment` on its way to the server.
    pub fn corrupt_first_put(&self, fragment: &str) {
        *self.stats.corrupt_first_put.lock().unwrap() = Some(fragment.to_string());
    }

    /// Answers the next `times` GETs whose request line contains `from`
    /// with the object `to` names (a mirror or cache that serves another
    /// key's body).
    pub fn swap_gets(&self, from: &str, to: &str, times: u32) {
        *self.stats.swap_gets.lock().unwrap() = Some((from.to_string(), to.to_string(), times));
    }

    /// Requests that carried a signature (an `Authorization` header or a
    /// presigned query).
    pub fn signed(&self) -> u64 {
        self.stats.signed.load(Ordering::Relaxed)
    }

    /// (requests seen, requests spoiled)
    pub fn counts(&self) -> (u64, u64) {
        (
            self.stats.requests.load(Ordering::Relaxed),
            self.stats.faults.load(Ordering::Relaxed),
        )
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(self.addr);
    }
}

/// A full HTTP message: head (with the blank line) and body.
struct Message {
    head: Vec<u8>,
    body: Vec<u8>,
}

fn read_head(r: &mut impl BufRead) -> io::Result<Option<Vec<u8>>> {
    let mut head = Vec::new();
    loop {
        let mut line = Vec::new();
        if r.read_until(b'\n', &mut line)? == 0 {
            return if head.is_empty() {
                Ok(None)
            } else {
                Err(io::ErrorKind::UnexpectedEof.into())
            };
        }
        head.extend_from_slice(&line);
        if line == b"\r\n" {
            return Ok(Some(head));
        }
    }
}

fn header(head: &[u8], name: &str) -> Option<String> {
    String::from_utf8_lossy(head).lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_string())
    })
}

fn read_body(r: &mut impl BufRead, head: &[u8], has_body: bool) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    if !has_body {
        return Ok(body);
    }
    if header(head, "transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        // Keep the chunked framing as is: it is forwarded verbatim.
        loop {
            let mut size_line = Vec::new();
            r.read_until(b'\n', &mut size_line)?;
            body.extend_from_slice(&size_line);
            let text = String::from_utf8_lossy(&size_line);
            let size = usize::from_str_radix(text.trim().split(';').next().unwrap_or("0"), 16)
                .map_err(|_| io::Error::other("bad chunk size"))?;
            if size == 0 {
                // Trailers, then the blank line.
                loop {
                    let mut line = Vec::new();
                    r.read_until(b'\n', &mut line)?;
                    body.extend_from_slice(&line);
                    if line == b"\r\n" || line.is_empty() {
                        return Ok(body);
                    }
                }
            }
            let mut chunk = vec![0; size + 2];
            r.read_exact(&mut chunk)?;
            body.extend_from_slice(&chunk);
        }
    }
    let len: usize = header(head, "content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    body.resize(len, 0);
    r.read_exact(&mut body)?;
    Ok(body)
}

fn read_message(
    r: &mut impl BufRead,
    has_body: impl Fn(&[u8]) -> bool,
) -> io::Result<Option<Message>> {
    let Some(head) = read_head(r)? else {
        return Ok(None);
    };
    let body = read_body(r, &head, has_body(&head))?;
    Ok(Some(Message { head, body }))
}

fn serve(client: TcpStream, upstream: SocketAddr, percent: u64, stats: &Stats) -> io::Result<()> {
    let mut from_client = BufReader::new(client.try_clone()?);
    let mut to_client = client;
    let mut server: Option<(BufReader<TcpStream>, TcpStream)> = None;
    while let Some(request) = read_message(&mut from_client, |_| true)? {
        let n = stats.requests.fetch_add(1, Ordering::Relaxed);
        if header(&request.head, "authorization").is_some()
            || String::from_utf8_lossy(&request.head).contains("X-Amz-Signature")
        {
            stats.signed.fetch_add(1, Ordering::Relaxed);
        }
        let method = String::from_utf8_lossy(&request.head)
            .split(' ')
            .next()
            .unwrap_or("")
            .to_string();
        // A fixed spread over request numbers: every (100 / percent)-th
        // request is spoiled, cycling through the three kinds of fault.
        let spoil = percent > 0 && (n * percent) / 100 != ((n + 1) * percent) / 100;
        let request_line = String::from_utf8_lossy(&request.head)
            .lines()
            .next()
            .unwrap_or("")
            .to_string();
        let lose = method == "PUT" && {
            let mut target = stats.lose_first_put.lock().unwrap();
            let hit = target.as_deref().is_some_and(|f| request_line.contains(f));
            if hit {
                *target = None;
            }
            hit
        };
        let corrupt = method == "PUT" && {
            let mut target = stats.corrupt_first_put.lock().unwrap();
            let hit = target.as_deref().is_some_and(|f| request_line.contains(f));
            if hit {
                *target = None;
            }
            hit
        };
        let mut request = request;
        if method == "GET" {
            let mut target = stats.swap_gets.lock().unwrap();
            if let Some((from, to, times)) = target
                .clone()
                .filter(|(f, _, n)| *n > 0 && request_line.contains(f.as_str()))
            {
                *target = Some((from.clone(), to.clone(), times - 1));
                stats.faults.fetch_add(1, Ordering::Relaxed);
                let head = String::from_utf8_lossy(&request.head).replacen(&from, &to, 1);
                request.head = head.into_bytes();
            }
        }
        if corrupt && !request.body.is_empty() {
            stats.faults.fetch_add(1, Ordering::Relaxed);
            let mid = request.body.len() / 2;
            request.body[mid] ^= 0x20;
        }
        if lose {
            stats.faults.fetch_add(1, Ordering::Relaxed);
            forward(&mut server, upstream, &request, &method)?;
            let _ = to_client.shutdown(Shutdown::Both);
            return Ok(());
        }
        if spoil {
            let kind = stats.counter.fetch_add(1, Ordering::Relaxed) % 3;
            stats.faults.fetch_add(1, Ordering::Relaxed);
            match kind {
                0 => {
                    let body = b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code><Message>injected by the test proxy</Message></Error>";
                    write!(
                        to_client,
                        "HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    )?;
                    to_client.write_all(body)?;
                    return Ok(());
                }
                1 => {
                    let response = forward(&mut server, upstream, &request, &method)?;
                    let mut all = response.head;
                    all.extend_from_slice(&response.body);
                    to_client.write_all(&all[..all.len() / 2])?;
                    let _ = to_client.shutdown(Shutdown::Both);
                    return Ok(());
                }
                _ => {
                    let _ = to_client.shutdown(Shutdown::Both);
                    return Ok(());
                }
            }
        }
        let response = forward(&mut server, upstream, &request, &method)?;
        to_client.write_all(&response.head)?;
        to_client.write_all(&response.body)?;
        if header(&response.head, "connection").is_some_and(|v| v.eq_ignore_ascii_case("close")) {
            return Ok(());
        }
    }
    Ok(())
}

fn status_of(head: &[u8]) -> u16 {
    String::from_utf8_lossy(head)
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

fn forward(
    server: &mut Option<(BufReader<TcpStream>, TcpStream)>,
    upstream: SocketAddr,
    request: &Message,
    method: &str,
) -> io::Result<Message> {
    for _ in 0..2 {
        if server.is_none() {
            let s = TcpStream::connect(upstream)?;
            *server = Some((BufReader::new(s.try_clone()?), s));
        }
        let (reader, writer) = server.as_mut().expect("connected");
        let sent = writer
            .write_all(&request.head)
            .and_then(|_| writer.write_all(&request.body));
        let got = sent.and_then(|_| {
            read_message(reader, |head| {
                let status = status_of(head);
                method != "HEAD" && status != 204 && status != 304 && status >= 200
            })
        });
        // Interim answers (`100 Continue`) go to the client ahead of the
        // final one.
        let got = got.and_then(|first| {
            let Some(mut m) = first else { return Ok(None) };
            while status_of(&m.head) < 200 {
                let next = read_message(reader, |head| {
                    method != "HEAD" && !matches!(status_of(head), 204 | 304)
                })?
                .ok_or(io::ErrorKind::UnexpectedEof)?;
                m.head.extend_from_slice(&next.head);
                m.body = next.body;
                let interim_len = m.head.len() - next.head.len();
                if status_of(&m.head[interim_len..]) >= 200 {
                    break;
                }
            }
            Ok(Some(m))
        });
        match got {
            Ok(Some(m)) => {
                if header(&m.head, "connection").is_some_and(|v| v.eq_ignore_ascii_case("close")) {
                    *server = None;
                }
                return Ok(m);
            }
            // The server closed an idle keep-alive connection: reconnect.
            _ => *server = None,
        }
    }
    Err(io::Error::other("upstream did not answer"))
}
