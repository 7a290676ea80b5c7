//! Bandwidth limits (`--limit-upload`, `--limit-download`): a decorator
//! that paces the bytes of object bodies, so that a snapshot uploading
//! from a running node leaves the node its share of the link.
//!
//! Each direction is a token bucket holding at most a quarter second of
//! its rate. A request takes its bytes from the bucket and may leave it in
//! debt; the request (and so every request behind it) then waits until the
//! debt is repaid. Uploads are paced before they are sent, downloads after
//! they arrive (their size is known only then), so the average rate over
//! any second or more stays within the limit whatever the parallelism.
//! Everything else is forwarded unchanged.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::Store;
use crate::error::Result;

/// A rate in bytes per second, `None` for unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    pub upload: Option<u64>,
    pub download: Option<u64>,
}

impl Limits {
    pub fn is_none(&self) -> bool {
        self.upload.is_none() && self.download.is_none()
    }
}

pub struct LimitedStore<S> {
    inner: S,
    up: Option<Bucket>,
    down: Option<Bucket>,
}

struct Bucket {
    rate: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl Bucket {
    fn new(rate: u64) -> Bucket {
        let rate = rate.max(1) as f64;
        let burst = rate / 4.0;
        Bucket {
            rate,
            burst,
            state: Mutex::new((burst, Instant::now())),
        }
    }

    /// Takes `n` bytes at `now`; returns how long the caller must wait
    /// first.
    fn take(&self, n: u64, now: Instant) -> Duration {
        let mut s = self.state.lock().expect("bucket lock");
        let (tokens, last) = *s;
        let now = now.max(last);
        let tokens = (tokens + now.duration_since(last).as_secs_f64() * self.rate).min(self.burst);
        let left = tokens - n as f64;
        *s = (left, now);
        if left >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-left / self.rate)
        }
    }

    fn pace(&self, n: u64) {
        let wait = self.take(n, Instant::now());
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
    }
}

impl<S: Store> LimitedStore<S> {
    pub fn new(inner: S, limits: Limits) -> Self {
        LimitedStore {
            inner,
            up: limits.upload.map(Bucket::new),
            down: limits.download.map(Bucket::new),
        }
    }
}

impl<S: Store> Store for LimitedStore<S> {
    super::forward_store!(inner: put_replace, lists_chunks, published_index, size, list, delete, delete_many, remove_stale_writes, flush, location, parallelism, request_counts);

    fn get(&self, key: &str, max_len: u64) -> Result<Vec<u8>> {
        let bytes = self.inner.get(key, max_len)?;
        if let Some(b) = &self.down {
            b.pace(bytes.len() as u64);
        }
        Ok(bytes)
    }
    fn put_if_absent(&self, key: &str, bytes: &[u8]) -> Result<bool> {
        if let Some(b) = &self.up {
            b.pace(bytes.len() as u64);
        }
        self.inner.put_if_absent(key, bytes)
    }
    fn put_owned(&self, key: &str, bytes: Vec<u8>) -> Result<bool> {
        if let Some(b) = &self.up {
            b.pace(bytes.len() as u64);
        }
        self.inner.put_owned(key, bytes)
    }
}

/// Parses a rate: a byte count with an optional unit (`K`/`KiB`, `M`/`MiB`,
/// `G`/`GiB` are powers of 1024; `KB`, `MB`, `GB` powers of 1000) and an
/// optional `/s`; a bare number is bytes per second.
pub fn parse_rate(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim();
    let t = t.strip_suffix("/s").unwrap_or(t).trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let not_a_rate = || format!("{s:?} is not a rate (e.g. 20MiB; a bare number is bytes/s)");
    if num.is_empty() {
        return Err(not_a_rate());
    }
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kib" => 1024.0,
        "m" | "mib" => 1024.0 * 1024.0,
        "g" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        other => {
            return Err(format!(
                "unknown unit {other:?} in rate {s:?} (use e.g. 500KiB, 20MiB, 1GiB or bytes)"
            ))
        }
    };
    let n: f64 = num.parse().map_err(|_| not_a_rate())?;
    let rate = (n * mult).round();
    if !(1.0..=1e15).contains(&rate) {
        return Err(format!(
            "rate {s:?} is out of range (at least 1 byte/s, at most 1 PB/s)"
        ));
    }
    Ok(rate as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    #[test]
    fn rates_parse_with_binary_and_decimal_units() {
        assert_eq!(parse_rate("20MiB"), Ok(20 << 20));
        assert_eq!(parse_rate("20M/s"), Ok(20 << 20));
        assert_eq!(parse_rate("1.5GiB"), Ok(3 << 29));
        assert_eq!(parse_rate("500kB"), Ok(500_000));
        assert_eq!(parse_rate("12345"), Ok(12345));
        for bad in ["", "fast", "10 parsecs", "0", "-5M", "1e30"] {
            assert!(parse_rate(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn a_bucket_lends_a_quarter_second_then_charges_each_byte_at_the_rate() {
        let b = Bucket::new(1000);
        let t0 = *b.state.lock().unwrap();
        let at = |ms: u64| t0.1 + Duration::from_millis(ms);
        // The burst: 250 bytes free.
        assert_eq!(b.take(250, at(0)), Duration::ZERO);
        // Then 500 bytes cost half a second of waiting.
        assert_eq!(b.take(500, at(0)), Duration::from_millis(500));
        // A second request queues behind the first one's debt.
        assert_eq!(b.take(100, at(0)), Duration::from_millis(600));
        // Time repays the debt; idle time never saves more than the burst.
        assert_eq!(b.take(0, at(600)), Duration::ZERO);
        assert_eq!(b.take(1000, at(10_600)), Duration::from_millis(750));
    }

    #[test]
    fn uploads_and_downloads_never_beat_their_rates_across_threads() {
        // 4 threads putting 64 KiB objects at 1 MiB/s for 1.5 MiB in all:
        // at least 1.25 s once the quarter second of burst is spent (only a
        // lower bound: a loaded machine may take longer).
        let store = LimitedStore::new(
            MemoryStore::new(),
            Limits {
                upload: Some(1 << 20),
                download: Some(2 << 20),
            },
        );
        let started = Instant::now();
        std::thread::scope(|s| {
            for t in 0..4 {
                let store = &store;
                s.spawn(move || {
                    for i in 0..6 {
                        store
                            .put_if_absent(&format!("{t}/{i}"), &vec![0; 64 << 10])
                            .unwrap();
                    }
                });
            }
        });
        let up = started.elapsed().as_secs_f64();
        assert!(up >= 1.2, "1.5 MiB at 1 MiB/s took {up:.2} s");
        let started = Instant::now();
        for t in 0..4 {
            for i in 0..6 {
                store.get(&format!("{t}/{i}"), 1 << 20).unwrap();
            }
        }
        let down = started.elapsed().as_secs_f64();
        // 1 MiB beyond the burst at 2 MiB/s.
        assert!(down >= 0.49, "1.5 MiB at 2 MiB/s took {down:.2} s");
    }
}
