//! The archive as a stream of tar bytes: its compression told by its first
//! bytes, the compressed bytes counted, and its end checked — tar's own
//! reader takes an archive cut at an entry boundary for a complete one.

use std::io::{self, BufRead, BufReader, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::Serialize;

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

/// Counts the bytes read through it (the archive as given).
pub(super) struct Counted<R> {
    inner: R,
    count: Arc<AtomicU64>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// The tar bytes of `input`, decompressed as its magic says; with the
/// counter of compressed bytes read.
pub(super) fn open<'a>(
    input: impl Read + 'a,
    what: &str,
) -> Result<(Box<dyn Read + 'a>, Compression, Arc<AtomicU64>)> {
    let count = Arc::new(AtomicU64::new(0));
    let counted = Counted {
        inner: input,
        count: count.clone(),
    };
    let mut buffered = BufReader::with_capacity(1 << 20, counted);
    let head = buffered.fill_buf().map_err(|e| read_error(what, e))?;
    let compression = match head {
        [0x1f, 0x8b, ..] => Compression::Gzip,
        [0x28, 0xb5, 0x2f, 0xfd, ..] => Compression::Zstd,
        [b'B', b'Z', b'h', ..] | [0xfd, b'7', b'z', b'X', b'Z', 0, ..] => {
            return Err(Error::Refused(format!(
                "{what}: a bzip2 or xz archive; import reads tar, tar.gz and tar.zst \
                 (recompress it, e.g. `xz -dc {what} | blocksnap import --tar - …`)"
            )))
        }
        _ => Compression::None,
    };
    let reader: Box<dyn Read + 'a> = match compression {
        // pigz and `cat a.gz b.gz` give several members: all are read.
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(buffered)),
        Compression::Zstd => Box::new(
            zstd::stream::read::Decoder::with_buffer(buffered).map_err(|e| read_error(what, e))?,
        ),
        Compression::None => Box::new(buffered),
    };
    Ok((reader, compression, count))
}

pub(super) fn read_error(what: &str, e: io::Error) -> Error {
    Error::Refused(format!("{what}: reading the archive failed: {e}"))
}

/// After tar's reader stopped (at a zero block, or at the end of the
/// stream): the archive must have ended as tar ends one — a second zero
/// block, then only zeros (record padding) — and its compressed stream
/// must end whole. A stream cut at an entry boundary, or an archive
/// followed by anything (another archive, garbage), is refused.
pub(super) fn check_end(rest: &mut dyn Read, what: &str) -> Result<()> {
    let mut buf = vec![0u8; 64 << 10];
    let mut zeros = 0u64;
    loop {
        let n = match rest.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(read_error(what, e)),
        };
        if buf[..n].iter().any(|&b| b != 0) {
            return Err(Error::Refused(format!(
                "{what}: bytes follow the archive's end-of-archive marker (a second archive \
                 or garbage); refused"
            )));
        }
        zeros += n as u64;
        crate::sys::interrupt::check()?;
    }
    if zeros < 512 {
        return Err(Error::Refused(format!(
            "{what}: the archive ends without tar's end-of-archive marker: it is truncated"
        )));
    }
    Ok(())
}
