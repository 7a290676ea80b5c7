//! A large object read as a stream, a range at a time: a thread fetches
//! the next parts while the reader consumes the current one, so a network
//! object streams at the speed of its requests, with memory bounded by
//! `PARTS_AHEAD` parts.

use std::io::{self, Read};
use std::sync::mpsc::{sync_channel, Receiver};

use crate::error::Result;

/// Bytes per ranged request.
pub const PART: u64 = 8 << 20;
/// Parts fetched ahead of the reader.
const PARTS_AHEAD: usize = 3;

/// Fetches `len` bytes at `offset` (fewer only at the object's end).
pub type Fetch = Box<dyn Fn(u64, u64) -> Result<Vec<u8>> + Send>;

/// `Read` over an object of `size` bytes fetched with `fetch`.
pub struct RangedReader {
    parts: Receiver<io::Result<Vec<u8>>>,
    current: Vec<u8>,
    at: usize,
    remaining: u64,
}

impl RangedReader {
    pub fn new(size: u64, fetch: Fetch) -> RangedReader {
        let (tx, rx) = sync_channel(PARTS_AHEAD);
        std::thread::spawn(move || {
            let mut offset = 0;
            while offset < size {
                let len = PART.min(size - offset);
                let part = fetch(offset, len).and_then(|p| match p.len() as u64 == len {
                    true => Ok(p),
                    false => Err(crate::error::Error::Refused(format!(
                        "a ranged read of {len} bytes at {offset} returned {} bytes: the object \
                         changed while it was read",
                        p.len()
                    ))),
                });
                let failed = part.is_err();
                // The reader went away: stop fetching.
                if tx.send(part.map_err(io::Error::other)).is_err() || failed {
                    return;
                }
                offset += len;
            }
        });
        RangedReader {
            parts: rx,
            current: Vec::new(),
            at: 0,
            remaining: size,
        }
    }
}

impl Read for RangedReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.at == self.current.len() {
            if self.remaining == 0 {
                return Ok(0);
            }
            self.current = match self.parts.recv() {
                Ok(part) => part?,
                Err(_) => return Err(io::Error::other("the object's reader stopped")),
            };
            self.at = 0;
            self.remaining -= self.current.len() as u64;
        }
        let n = buf.len().min(self.current.len() - self.at);
        buf[..n].copy_from_slice(&self.current[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_whole_object_in_order_and_reports_a_failed_part() {
        let data: Vec<u8> = (0..(2 * PART + 12345)).map(|i| (i % 251) as u8).collect();
        let src = data.clone();
        let mut r = RangedReader::new(
            data.len() as u64,
            Box::new(move |o, l| Ok(src[o as usize..(o + l) as usize].to_vec())),
        );
        let mut got = Vec::new();
        r.read_to_end(&mut got).unwrap();
        assert!(got == data);

        let mut r = RangedReader::new(
            3 * PART,
            Box::new(|o, l| match o {
                0 => Ok(vec![1; l as usize]),
                _ => Ok(vec![1; 10]),
            }),
        );
        let e = r.read_to_end(&mut Vec::new()).unwrap_err();
        assert!(e.to_string().contains("changed while it was read"), "{e}");
    }
}
