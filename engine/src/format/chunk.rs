//! Chunk objects: the envelope header, then the chunk's bytes raw or as one
//! zstd frame. A chunk's key is the BLAKE3 hash of its *uncompressed* bytes,
//! so every read is checked end to end by rehashing what it decoded.
//!
//! LevelDB tables are already snappy-compressed; zstd rarely wins much on
//! them, so a chunk is stored raw unless compression saves at least 1/16 of
//! it. Readers accept either codec for any chunk.

use super::envelope::{Codec, Header, Kind, HEADER_LEN};

/// zstd level for new repositories. Measured on generated node data, level
/// 1 stores within 1 % of level 3's bytes in half the time: what compresses
/// here (hex in block bodies) compresses at any level.
pub const DEFAULT_ZSTD_LEVEL: i32 = 1;
use super::{limits, FormatError};
use crate::id::{ChunkId, Hash};

/// Encodes `raw` as a chunk object, compressing with zstd at `level` when
/// that pays. `compressor` is reused across chunks to avoid reallocating
/// zstd's context for every chunk.
pub fn encode(raw: &[u8], compressor: &mut zstd::bulk::Compressor<'_>) -> Vec<u8> {
    let compressed = compressor
        .compress(raw)
        .ok()
        .filter(|c| c.len() < raw.len() - raw.len() / 16);
    let (codec, payload) = match &compressed {
        Some(c) => (Codec::Zstd, c.as_slice()),
        None => (Codec::Raw, raw),
    };
    let header = Header {
        kind: Kind::Chunk,
        // The chunk layout is version 1's: older readers read it too.
        version: 1,
        codec,
        raw_len: raw.len() as u64,
        payload_len: payload.len() as u64,
    };
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&header.encode());
    out.extend_from_slice(payload);
    out
}

/// Decodes a chunk object and checks that its bytes hash to `id`.
///
/// The decompressor is bounded by the header's `raw_len`, itself capped by
/// [`limits::MAX_CHUNK_BYTES`], so a decompression bomb fails instead of
/// allocating.
pub fn decode(bytes: &[u8], id: &ChunkId) -> Result<Vec<u8>, FormatError> {
    let (header, payload) = Header::split(bytes, Kind::Chunk)?;
    FormatError::check_limit("chunk raw length", header.raw_len, limits::MAX_CHUNK_BYTES)?;
    let raw_len = header.raw_len as usize;
    let raw = match header.codec {
        Codec::Raw => {
            if header.payload_len != header.raw_len {
                return Err(FormatError::corrupt(
                    "raw chunk's payload length differs from its raw length",
                ));
            }
            payload.to_vec()
        }
        Codec::Zstd => {
            check_frame(payload, header.raw_len)?;
            let mut raw = Vec::with_capacity(raw_len);
            zstd::bulk::Decompressor::new()
                .and_then(|mut d| d.decompress_to_buffer(payload, &mut raw))
                .map_err(|e| FormatError::corrupt(format!("zstd payload does not decode: {e}")))?;
            if raw.len() != raw_len {
                return Err(FormatError::corrupt(format!(
                    "zstd payload decodes to {} bytes, header says {raw_len}",
                    raw.len()
                )));
            }
            raw
        }
    };
    let actual = Hash::of(&raw);
    if actual != *id {
        return Err(FormatError::corrupt(format!(
            "bytes hash to {actual}, not to the chunk's name"
        )));
    }
    Ok(raw)
}

/// The zstd frame magic number (RFC 8878 §3.1.1), little-endian.
const ZSTD_MAGIC: u32 = 0xFD2F_B528;

/// Checks that a chunk payload is exactly one zstd frame of the kind the
/// writer makes (RFC 8878 §3.1.1), before anything is inflated:
/// - it starts with the zstd frame magic (no skippable frame, no legacy
///   format);
/// - the header's reserved bit is 0 and it names no dictionary;
/// - it declares its content size, and that size is `raw_len`;
/// - its window is at most [`limits::MAX_CHUNK_BYTES`];
/// - its blocks (none of the reserved type) and optional checksum end
///   exactly at the end of the payload: no second frame, no trailing bytes.
pub fn check_frame(payload: &[u8], raw_len: u64) -> Result<(), FormatError> {
    let bad = |what: String| Err(FormatError::corrupt(format!("zstd payload: {what}")));
    let byte = |i: usize| payload.get(i).copied();
    let le = |at: usize, n: usize| -> Option<u64> {
        let b = payload.get(at..at + n)?;
        Some(b.iter().rev().fold(0u64, |v, x| (v << 8) | u64::from(*x)))
    };
    match le(0, 4) {
        Some(m) if m as u32 == ZSTD_MAGIC => {}
        Some(m) if (m as u32) & 0xFFFF_FFF0 == 0x184D_2A50 => {
            return bad("a skippable frame, not a zstd frame".into())
        }
        _ => return bad("does not start with a zstd frame".into()),
    }
    let Some(fhd) = byte(4) else {
        return bad("frame header cut short".into());
    };
    let fcs_flag = fhd >> 6;
    let single_segment = fhd & 0x20 != 0;
    let checksum = fhd & 0x04 != 0;
    if fhd & 0x08 != 0 {
        return bad("reserved bit of the frame header is set".into());
    }
    if fhd & 0x03 != 0 {
        return bad("frame names a dictionary".into());
    }
    let mut at = 5;
    let window = if single_segment {
        None
    } else {
        let Some(wd) = byte(at) else {
            return bad("frame header cut short".into());
        };
        at += 1;
        let log = 10 + u64::from(wd >> 3);
        let base = 1u64 << log;
        Some(base + (base / 8) * u64::from(wd & 7))
    };
    let fcs_len = match (fcs_flag, single_segment) {
        (0, false) => 0,
        (0, true) => 1,
        (1, _) => 2,
        (2, _) => 4,
        _ => 8,
    };
    if fcs_len == 0 {
        return bad("frame does not declare its content size".into());
    }
    let Some(mut content) = le(at, fcs_len) else {
        return bad("frame header cut short".into());
    };
    if fcs_len == 2 {
        content += 256;
    }
    at += fcs_len;
    if content != raw_len {
        return bad(format!(
            "frame declares {content} content bytes, the header says {raw_len}"
        ));
    }
    let window = window.unwrap_or(content);
    if window > limits::MAX_CHUNK_BYTES {
        return bad(format!(
            "window of {window} bytes, more than {} allowed",
            limits::MAX_CHUNK_BYTES
        ));
    }
    loop {
        let Some(h) = le(at, 3) else {
            return bad("block header cut short".into());
        };
        at += 3;
        let last = h & 1 != 0;
        let size = (h >> 3) as usize;
        at += match (h >> 1) & 3 {
            0 | 2 => size,
            1 => 1,
            _ => return bad("block of the reserved type".into()),
        };
        if at > payload.len() {
            return bad("block cut short".into());
        }
        if last {
            break;
        }
    }
    if checksum {
        at += 4;
    }
    match at.cmp(&payload.len()) {
        std::cmp::Ordering::Equal => Ok(()),
        std::cmp::Ordering::Greater => bad("checksum cut short".into()),
        std::cmp::Ordering::Less => bad(format!(
            "{} byte(s) after the frame (a second frame or trailing data)",
            payload.len() - at
        )),
    }
}

/// Reads only the header: what a quick check can learn without the payload.
pub fn peek_header(bytes: &[u8]) -> Result<Header, FormatError> {
    Header::split(bytes, Kind::Chunk).map(|(h, _)| h)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compressor() -> zstd::bulk::Compressor<'static> {
        zstd::bulk::Compressor::new(3).unwrap()
    }

    #[test]
    fn compressible_chunks_are_zstd_and_random_ones_raw() {
        let text = b"block 123 hash 0xabc ".repeat(1000);
        let obj = encode(&text, &mut compressor());
        assert_eq!(obj[6], Codec::Zstd as u8);
        assert!(obj.len() < text.len() / 4);
        assert_eq!(decode(&obj, &Hash::of(&text)).unwrap(), text);

        let mut noise = vec![0u8; 4096];
        blake3::Hasher::new().finalize_xof().fill(&mut noise);
        let obj = encode(&noise, &mut compressor());
        assert_eq!(obj[6], Codec::Raw as u8);
        assert_eq!(obj.len(), HEADER_LEN + noise.len());
        assert_eq!(decode(&obj, &Hash::of(&noise)).unwrap(), noise);

        let obj = encode(b"", &mut compressor());
        assert_eq!(decode(&obj, &Hash::of(b"")).unwrap(), b"");
    }

    #[test]
    fn damage_is_reported_not_returned() {
        let text = b"0123456789".repeat(500);
        let id = Hash::of(&text);
        let obj = encode(&text, &mut compressor());

        let mut flipped = obj.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0x40;
        assert!(matches!(
            decode(&flipped, &id),
            Err(FormatError::Corrupt(_))
        ));
        assert!(matches!(
            decode(&obj[..obj.len() - 3], &id),
            Err(FormatError::Truncated(_))
        ));
        assert!(matches!(
            decode(&obj, &Hash::of(b"other")),
            Err(FormatError::Corrupt(m)) if m.contains("hash")
        ));
    }

    #[test]
    fn a_payload_must_be_exactly_one_plain_zstd_frame() {
        let text = b"block 123 hash 0xabc ".repeat(5000);
        let id = Hash::of(&text);
        let obj = encode(&text, &mut compressor());
        assert_eq!(obj[6], Codec::Zstd as u8);
        let payload = &obj[HEADER_LEN..];
        check_frame(payload, text.len() as u64).unwrap();
        let reject = |object: Vec<u8>, why: &str| match decode(&object, &id) {
            Err(FormatError::Corrupt(m)) => assert!(m.contains(why), "{m}"),
            other => panic!("{why}: {other:?}"),
        };
        let with_payload = |p: &[u8]| {
            let mut o = obj[..HEADER_LEN].to_vec();
            o[16..24].copy_from_slice(&(p.len() as u64).to_le_bytes());
            o.extend_from_slice(p);
            o
        };
        // A second frame, trailing bytes, a skippable frame before the data.
        let mut twice = payload.to_vec();
        twice.extend_from_slice(payload);
        reject(with_payload(&twice), "after the frame");
        let mut trailing = payload.to_vec();
        trailing.push(0);
        reject(with_payload(&trailing), "after the frame");
        let mut skippable = vec![0x50, 0x2A, 0x4D, 0x18, 4, 0, 0, 0, 1, 2, 3, 4];
        skippable.extend_from_slice(payload);
        reject(with_payload(&skippable), "skippable");
        // The declared content size must be the header's raw length.
        let mut o = obj.clone();
        o[8..16].copy_from_slice(&(text.len() as u64 - 1).to_le_bytes());
        reject(o, "content bytes");
        // A frame without a declared content size.
        let mut c = zstd::bulk::Compressor::new(3).unwrap();
        c.set_parameter(zstd::stream::raw::CParameter::ContentSizeFlag(false))
            .unwrap();
        reject(with_payload(&c.compress(&text).unwrap()), "content size");
        // A window beyond the chunk limit.
        let mut big = payload.to_vec();
        big[4] &= !0x20; // not single-segment: a window descriptor follows
        big.insert(5, 0xF8); // windowLog 41
        reject(with_payload(&big), "window");
    }

    #[test]
    fn decompression_bomb_is_refused_before_inflating() {
        let zeros = vec![0u8; 1 << 20];
        let mut obj = encode(&zeros, &mut compressor());
        // Claim a raw length beyond the limit.
        obj[8..16].copy_from_slice(&(limits::MAX_CHUNK_BYTES + 1).to_le_bytes());
        assert!(matches!(
            decode(&obj, &Hash::of(&zeros)),
            Err(FormatError::Limit {
                limit: "chunk raw length",
                ..
            })
        ));
        // Claim fewer bytes than the frame inflates to.
        let mut obj = encode(&zeros, &mut compressor());
        obj[8..16].copy_from_slice(&1024u64.to_le_bytes());
        assert!(matches!(
            decode(&obj, &Hash::of(&zeros)),
            Err(FormatError::Corrupt(_))
        ));
    }
}
