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
