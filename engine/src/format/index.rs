//! The repository index (FORMAT.md §12): what a listing of the repository
//! says about every object but the chunks, published as one object so that
//! a static mirror (plain GET, no listing) can be read.
//!
//! Text, one object per line, so that an operator can read it with `curl`:
//!
//! ```text
//! blocksnap-index 1
//! created <unix ns>
//! <key> <size> <modified unix ns>
//! …
//! end <number of object lines>
//! signature                      (optional, then a minisign signature
//! <minisign signature file>       over every byte before `signature`)
//! ```
//!
//! Keys are sorted, unique, never under `chunks/`, and each is a key the
//! layout allows (checked again by whoever uses it); the `end` line makes a
//! truncated index an error rather than a shorter listing.

use super::{layout, limits, FormatError};

pub const INDEX_KEY: &str = "index";
const MAGIC_LINE: &str = "blocksnap-index 1";

/// One object the index names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub key: String,
    pub size: u64,
    pub modified_unix_ns: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Index {
    pub created_unix_ns: u64,
    pub objects: Vec<Listed>,
    /// Decoded: the embedded signature's text, if any, and the length of
    /// the bytes it signs (everything before the `signature` line).
    pub signature: Option<(Vec<u8>, usize)>,
}

/// The largest embedded signature (a minisign signature file).
const MAX_SIGNATURE_BYTES: usize = 2048;

/// Whether `key` may appear in an index: a key of the repository's layout
/// outside `chunks/`, of printable ASCII without spaces.
fn indexable(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 1024
        && !key.starts_with(layout::CHUNKS_PREFIX)
        && key != INDEX_KEY
        && key.bytes().all(|b| b.is_ascii_graphic())
        && !key
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
}

impl Index {
    /// The index of `objects` (any order; chunks and the index itself are
    /// left out).
    pub fn new(created_unix_ns: u64, objects: impl IntoIterator<Item = Listed>) -> Index {
        let mut objects: Vec<Listed> = objects.into_iter().filter(|o| indexable(&o.key)).collect();
        objects.sort_by(|a, b| a.key.cmp(&b.key));
        objects.dedup_by(|a, b| a.key == b.key);
        Index {
            created_unix_ns,
            objects,
            signature: None,
        }
    }

    /// The object with `signature` (a minisign signature file over
    /// `body`, this index's [`Index::encode`]) embedded.
    pub fn with_signature(body: &[u8], signature: &[u8]) -> Vec<u8> {
        let mut out = body.to_vec();
        out.extend_from_slice(b"signature\n");
        out.extend_from_slice(signature);
        out
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = format!("{MAGIC_LINE}\ncreated {}\n", self.created_unix_ns);
        for o in &self.objects {
            out.push_str(&format!("{} {} {}\n", o.key, o.size, o.modified_unix_ns));
        }
        out.push_str(&format!("end {}\n", self.objects.len()));
        out.into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Result<Index, FormatError> {
        FormatError::check_limit("index size", bytes.len() as u64, limits::MAX_INDEX_BYTES)?;
        let text =
            std::str::from_utf8(bytes).map_err(|_| FormatError::corrupt("index: not UTF-8"))?;
        let mut lines = text.split_inclusive('\n');
        let mut line = || -> Result<&str, FormatError> {
            let l = lines
                .next()
                .ok_or_else(|| FormatError::Truncated("index: ends before its end line".into()))?;
            l.strip_suffix('\n')
                .ok_or_else(|| FormatError::Truncated("index: a line without its newline".into()))
        };
        match line()? {
            MAGIC_LINE => {}
            l if l.starts_with("blocksnap-index ") => {
                return Err(FormatError::corrupt(format!(
                    "index: version {:?}, this build reads 1",
                    &l[16..]
                )))
            }
            _ => return Err(FormatError::corrupt("index: not a blocksnap index")),
        }
        let number = |s: &str, what: &str| -> Result<u64, FormatError> {
            if s.is_empty() || s.len() > 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
                return Err(FormatError::corrupt(format!("index: bad {what} {s:?}")));
            }
            s.parse()
                .map_err(|_| FormatError::corrupt(format!("index: bad {what} {s:?}")))
        };
        let created = line()?
            .strip_prefix("created ")
            .ok_or_else(|| FormatError::corrupt("index: no created line"))?;
        let created_unix_ns = number(created, "creation time")?;
        let mut objects: Vec<Listed> = Vec::new();
        loop {
            let l = line()?;
            if let Some(n) = l.strip_prefix("end ") {
                if number(n, "count")? != objects.len() as u64 {
                    return Err(FormatError::corrupt(
                        "index: its end line counts other lines",
                    ));
                }
                break;
            }
            let mut parts = l.split(' ');
            let (Some(key), Some(size), Some(modified), None) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                return Err(FormatError::corrupt(format!(
                    "index: bad line {:?}",
                    trim(l)
                )));
            };
            if !indexable(key) {
                return Err(FormatError::corrupt(format!(
                    "index: names {:?}",
                    trim(key)
                )));
            }
            if objects.last().is_some_and(|p| p.key.as_str() >= key) {
                return Err(FormatError::corrupt(format!(
                    "index: {:?} out of order or twice",
                    trim(key)
                )));
            }
            FormatError::check_limit(
                "index objects",
                objects.len() as u64 + 1,
                limits::MAX_INDEX_OBJECTS,
            )?;
            objects.push(Listed {
                key: key.to_string(),
                size: number(size, "size")?,
                modified_unix_ns: number(modified, "time")?,
            });
        }
        let signature = match lines.next() {
            None => None,
            Some("signature\n") => {
                let sig: String = lines.collect();
                if sig.is_empty() || sig.len() > MAX_SIGNATURE_BYTES {
                    return Err(FormatError::corrupt(format!(
                        "index: a signature of {} bytes (1 to {MAX_SIGNATURE_BYTES})",
                        sig.len()
                    )));
                }
                let body = bytes.len() - sig.len() - "signature\n".len();
                Some((sig.into_bytes(), body))
            }
            Some(_) => return Err(FormatError::corrupt("index: bytes after its end line")),
        };
        Ok(Index {
            created_unix_ns,
            objects,
            signature,
        })
    }

    /// The objects under `prefix`, in key order.
    pub fn under<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = &'a Listed> + 'a {
        let start = self.objects.partition_point(|o| o.key.as_str() < prefix);
        self.objects[start..]
            .iter()
            .take_while(move |o| o.key.starts_with(prefix))
    }
}

fn trim(s: &str) -> String {
    s.chars().take(100).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(key: &str) -> Listed {
        Listed {
            key: key.into(),
            size: 7,
            modified_unix_ns: 9,
        }
    }

    #[test]
    fn round_trips_and_leaves_out_chunks() {
        let i = Index::new(
            5,
            [
                l("snapshots/b"),
                l("chunks/aa/x"),
                l("config"),
                l("snapshots/a"),
                l("index"),
            ],
        );
        let bytes = i.encode();
        assert_eq!(
            String::from_utf8(bytes.clone()).unwrap(),
            "blocksnap-index 1\ncreated 5\nconfig 7 9\nsnapshots/a 7 9\nsnapshots/b 7 9\nend 3\n"
        );
        let d = Index::decode(&bytes).unwrap();
        assert_eq!(d, i);
        let signed = Index::with_signature(&bytes, b"untrusted comment: x\nsig\n");
        let d = Index::decode(&signed).unwrap();
        assert_eq!(d.objects, i.objects);
        assert_eq!(
            d.signature,
            Some((b"untrusted comment: x\nsig\n".to_vec(), bytes.len()))
        );
        let under: Vec<&str> = d.under("snapshots/").map(|o| o.key.as_str()).collect();
        assert_eq!(under, ["snapshots/a", "snapshots/b"]);
    }

    #[test]
    fn hostile_indexes_are_refused() {
        let good = "blocksnap-index 1\ncreated 5\nconfig 7 9\nend 1\n";
        assert!(Index::decode(good.as_bytes()).is_ok());
        for bad in [
            "blocksnap-index 1\ncreated 5\nconfig 7 9\n",
            "blocksnap-index 1\ncreated 5\nconfig 7 9\nend 2\n",
            "blocksnap-index 1\ncreated 5\nconfig 7 9\nend 1",
            "blocksnap-index 1\ncreated 5\nconfig 7 9\nend 1\nx",
            "blocksnap-index 1\ncreated 5\nconfig 7 9\nend 1\nsignature\n",
            "blocksnap-index 2\ncreated 5\nend 0\n",
            "blocksnap-index 1\ncreated 5\n../etc 7 9\nend 1\n",
            "blocksnap-index 1\ncreated 5\nchunks/aa/b 7 9\nend 1\n",
            "blocksnap-index 1\ncreated 5\nb 7 9\na 7 9\nend 2\n",
            "blocksnap-index 1\ncreated 5\na 7 9\na 7 9\nend 2\n",
            "blocksnap-index 1\ncreated 5\na -7 9\nend 1\n",
            "blocksnap-index 1\ncreated 5\na 99999999999999999999999 9\nend 1\n",
            "blocksnap-index 1\ncreated x\nend 0\n",
            "",
        ] {
            assert!(Index::decode(bad.as_bytes()).is_err(), "{bad:?}");
        }
    }
}
