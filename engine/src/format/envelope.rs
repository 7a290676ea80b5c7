//! The 24-byte header every repository object starts with.
//!
//! ```text
//! offset size field
//!      0    4 magic        "BSNP"
//!      4    1 kind         1 config, 2 chunk, 3 manifest, 4 forget record,
//!                          5 prune plan
//!      5    1 version      format version of this object's layout (1 or 2)
//!      6    1 codec        0 raw, 1 zstd
//!      7    1 reserved     0
//!      8    8 raw_len      u64 LE, payload length after decoding
//!     16    8 payload_len  u64 LE, stored payload bytes that follow
//!     24    … payload
//! ```
//! Config and manifest objects end with a 32-byte BLAKE3 of everything before
//! it, so they check themselves; chunks are checked by their name instead.
//! The header makes every object self-describing: a reader tells a chunk from
//! a manifest, a truncated object from a corrupt one, and an object from a
//! newer blocksnap from garbage, before it looks at the payload.

use super::FormatError;

pub const MAGIC: [u8; 4] = *b"BSNP";
/// The newest format version this build reads and writes. Each object is
/// written with the lowest version whose layout it follows: chunks and the
/// config are unchanged since version 1 and still written as 1, so that
/// older readers keep reading them; manifests (which gained `host`) and
/// the kinds version 2 added are written as 2; a manifest that records the
/// block its database was at is written as 3.
pub const FORMAT_VERSION: u8 = 3;
pub const HEADER_LEN: usize = 24;
pub const TRAILER_LEN: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Config = 1,
    Chunk = 2,
    Manifest = 3,
    ForgetRecord = 4,
    PrunePlan = 5,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Config => "config",
            Kind::Chunk => "chunk",
            Kind::Manifest => "manifest",
            Kind::ForgetRecord => "forget record",
            Kind::PrunePlan => "prune plan",
        }
    }

    /// The format version that introduced the kind.
    fn since(self) -> u8 {
        match self {
            Kind::Config | Kind::Chunk | Kind::Manifest => 1,
            Kind::ForgetRecord | Kind::PrunePlan => 2,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Raw = 0,
    Zstd = 1,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub kind: Kind,
    /// The object's format version (1 ..= [`FORMAT_VERSION`]).
    pub version: u8,
    pub codec: Codec,
    pub raw_len: u64,
    pub payload_len: u64,
}

impl Header {
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[..4].copy_from_slice(&MAGIC);
        out[4] = self.kind as u8;
        out[5] = self.version;
        out[6] = self.codec as u8;
        out[7] = 0;
        out[8..16].copy_from_slice(&self.raw_len.to_le_bytes());
        out[16..24].copy_from_slice(&self.payload_len.to_le_bytes());
        out
    }

    /// Parses the header of an object expected to be of `kind` and returns
    /// it with the payload, which must be exactly `payload_len` bytes long
    /// (plus the trailer for self-checking kinds).
    pub fn split(bytes: &[u8], kind: Kind) -> Result<(Header, &[u8]), FormatError> {
        let Some((head, rest)) = bytes.split_first_chunk::<HEADER_LEN>() else {
            if bytes.len() >= 4 && bytes[..4] != MAGIC {
                return Err(FormatError::corrupt("not a blocksnap object (bad magic)"));
            }
            return Err(FormatError::Truncated(format!(
                "{} bytes, shorter than the {HEADER_LEN}-byte header",
                bytes.len()
            )));
        };
        if head[..4] != MAGIC {
            return Err(FormatError::corrupt("not a blocksnap object (bad magic)"));
        }
        let version = head[5];
        if version > FORMAT_VERSION {
            return Err(FormatError::NeedsNewer {
                found: version,
                supported: FORMAT_VERSION,
            });
        }
        if version == 0 {
            return Err(FormatError::corrupt("format version 0 does not exist"));
        }
        if head[4] != kind as u8 {
            return Err(FormatError::corrupt(format!(
                "expected a {} object, found kind byte {}",
                kind.name(),
                head[4]
            )));
        }
        if version < kind.since() {
            return Err(FormatError::corrupt(format!(
                "a {} object cannot be format version {version} (the kind exists since version {})",
                kind.name(),
                kind.since()
            )));
        }
        let codec = match head[6] {
            0 => Codec::Raw,
            1 => Codec::Zstd,
            other => return Err(FormatError::corrupt(format!("unknown codec {other}"))),
        };
        if head[7] != 0 {
            return Err(FormatError::corrupt("reserved header byte is not zero"));
        }
        let raw_len = u64::from_le_bytes(head[8..16].try_into().expect("8 bytes"));
        let payload_len = u64::from_le_bytes(head[16..24].try_into().expect("8 bytes"));
        let trailer = if kind == Kind::Chunk { 0 } else { TRAILER_LEN };
        let have = rest.len() as u64;
        let want = payload_len.checked_add(trailer as u64).ok_or_else(|| {
            FormatError::corrupt(format!("payload length {payload_len} overflows"))
        })?;
        if have < want {
            return Err(FormatError::Truncated(format!(
                "header promises {want} bytes after it, only {have} present"
            )));
        }
        if have > want {
            return Err(FormatError::corrupt(format!(
                "{} unexpected byte(s) after the {} payload",
                have - want,
                kind.name()
            )));
        }
        if trailer > 0 {
            let body_end = bytes.len() - TRAILER_LEN;
            let expected = &bytes[body_end..];
            if blake3::hash(&bytes[..body_end]).as_bytes() != expected {
                return Err(FormatError::corrupt(format!(
                    "{} checksum does not match its bytes",
                    kind.name()
                )));
            }
        }
        let header = Header {
            kind,
            version,
            codec,
            raw_len,
            payload_len,
        };
        Ok((header, &rest[..payload_len as usize]))
    }
}

/// Header + payload + BLAKE3 trailer, for every kind but chunks.
pub(crate) fn seal(kind: Kind, version: u8, payload: &[u8]) -> Vec<u8> {
    let header = Header {
        kind,
        version,
        codec: Codec::Raw,
        raw_len: payload.len() as u64,
        payload_len: payload.len() as u64,
    };
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len() + TRAILER_LEN);
    out.extend_from_slice(&header.encode());
    out.extend_from_slice(payload);
    let sum = blake3::hash(&out);
    out.extend_from_slice(sum.as_bytes());
    out
}

/// The format version and payload of a sealed object, checked.
pub(crate) fn open(bytes: &[u8], kind: Kind, max: u64) -> Result<(u8, &[u8]), FormatError> {
    FormatError::check_limit("object size", bytes.len() as u64, max)?;
    let (header, payload) = Header::split(bytes, kind)?;
    if header.codec != Codec::Raw {
        return Err(FormatError::corrupt(format!(
            "{} objects are stored raw, found codec {:?}",
            kind.name(),
            header.codec
        )));
    }
    if header.raw_len != header.payload_len {
        return Err(FormatError::corrupt(
            "raw length differs from payload length",
        ));
    }
    Ok((header.version, payload))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_object_round_trips_and_detects_damage() {
        let obj = seal(Kind::Manifest, 2, b"hello");
        assert_eq!(
            open(&obj, Kind::Manifest, 1 << 20).unwrap(),
            (2, &b"hello"[..])
        );
        let v1 = seal(Kind::Manifest, 1, b"hello");
        assert_eq!(open(&v1, Kind::Manifest, 1 << 20).unwrap().0, 1);
        // A kind of version 2 never carries version 1.
        let early = seal(Kind::PrunePlan, 1, b"x");
        assert!(matches!(
            open(&early, Kind::PrunePlan, 1 << 20),
            Err(FormatError::Corrupt(m)) if m.contains("cannot be format version 1")
        ));

        let mut flipped = obj.clone();
        flipped[HEADER_LEN] ^= 1;
        assert!(matches!(
            open(&flipped, Kind::Manifest, 1 << 20),
            Err(FormatError::Corrupt(m)) if m.contains("checksum")
        ));
        assert!(matches!(
            open(&obj[..obj.len() - 1], Kind::Manifest, 1 << 20),
            Err(FormatError::Truncated(_))
        ));
        assert!(matches!(
            open(&obj[..10], Kind::Manifest, 1 << 20),
            Err(FormatError::Truncated(_))
        ));
        assert!(matches!(
            open(&obj, Kind::Config, 1 << 20),
            Err(FormatError::Corrupt(m)) if m.contains("expected a config")
        ));
        let mut newer = obj.clone();
        newer[5] = FORMAT_VERSION + 1;
        let len = newer.len();
        let sum = blake3::hash(&newer[..len - TRAILER_LEN]);
        newer[len - TRAILER_LEN..].copy_from_slice(sum.as_bytes());
        assert_eq!(
            open(&newer, Kind::Manifest, 1 << 20),
            Err(FormatError::NeedsNewer {
                found: FORMAT_VERSION + 1,
                supported: FORMAT_VERSION
            })
        );
        assert!(matches!(
            open(&obj, Kind::Manifest, 8),
            Err(FormatError::Limit {
                limit: "object size",
                ..
            })
        ));
        let mut huge = obj.clone();
        huge[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(open(&huge, Kind::Manifest, 1 << 20).is_err());
    }
}
