//! Signed snapshots: who published a snapshot, provable to anyone who holds
//! the publisher's public key (FORMAT.md §11 "Signatures").
//!
//! Keys and signatures are minisign's (Ed25519; the `minisign` crate, by
//! minisign's author), so an operator can check a downloaded manifest with
//! the `minisign` tool. A signature is a separate object beside what it
//! signs, never inside it, so manifests of every version stay valid, a
//! snapshot can be signed later and by several keys, and older readers
//! ignore signatures:
//!
//! - `signatures/<snapshot id>/<key id>` signs the manifest object's exact
//!   bytes (whose BLAKE3 is the snapshot id);
//! - `signatures/<snapshot id>/<key id>.forget` signs the forget record
//!   `forgotten/<snapshot id>`, so a trusted history tells an authorised
//!   forget from a deletion.
//!
//! A signature object is a minisign signature file (text, at most
//! [`MAX_SIGNATURE_OBJECT`] bytes, prehashed BLAKE2b-512 form only), decoded
//! by [`decode`] with the same bounded discipline as every other object.
//! Nothing it says is believed until it verifies against a trusted key and
//! the very bytes of the object it names.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::io::{Cursor, Write};
use std::path::Path;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::format::layout;
use crate::format::FormatError;
use crate::id::Hash;
use crate::repo::Repository;

pub use minisign::SignatureBox;

/// Largest signature object read: a minisign signature file with a
/// trusted comment of a few hundred bytes is about 350.
pub const MAX_SIGNATURE_OBJECT: u64 = 2048;

/// The environment variable that holds an encrypted secret key's
/// passphrase (blocksnap never prompts: it runs from cron).
pub const PASSPHRASE_ENV: &str = "BLOCKSNAP_KEY_PASSPHRASE";

/// A minisign key id: 8 bytes, shown as minisign shows it (16 uppercase
/// hex digits of the little-endian number).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub [u8; 8]);

impl KeyId {
    fn from_slice(b: &[u8]) -> Option<KeyId> {
        Some(KeyId(b.try_into().ok()?))
    }

    fn parse(s: &str) -> Option<KeyId> {
        if s.len() != 16
            || !s
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
        {
            return None;
        }
        let n = u64::from_str_radix(s, 16).ok()?;
        Some(KeyId(n.to_le_bytes()))
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016X}", u64::from_le_bytes(self.0))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for KeyId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// What a signature object signs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Signed {
    /// The manifest object `snapshots/…-<id>`.
    Manifest,
    /// The forget record `forgotten/<id>`.
    Forget,
}

/// The key of a signature object.
pub fn signature_key(id: &Hash, key: KeyId, what: Signed) -> String {
    let suffix = match what {
        Signed::Manifest => "",
        Signed::Forget => ".forget",
    };
    format!("{}{}/{key}{suffix}", layout::SIGNATURES_PREFIX, id.to_hex())
}

/// Parses a signature object's key; `None` for anything else (a stray).
pub fn parse_signature_key(key: &str) -> Option<(Hash, KeyId, Signed)> {
    let rest = key.strip_prefix(layout::SIGNATURES_PREFIX)?;
    let (id, name) = rest.split_once('/')?;
    let id: Hash = id.parse().ok()?;
    let (kid, what) = match name.strip_suffix(".forget") {
        Some(k) => (k, Signed::Forget),
        None => (name, Signed::Manifest),
    };
    Some((id, KeyId::parse(kid)?, what))
}

/// Decodes a signature object: bounded, UTF-8, a minisign signature file in
/// the prehashed form with a trusted comment. Says nothing about validity.
pub fn decode(bytes: &[u8]) -> std::result::Result<SignatureBox, FormatError> {
    if bytes.len() as u64 > MAX_SIGNATURE_OBJECT {
        return Err(FormatError::corrupt(format!(
            "signature object of {} bytes, more than {MAX_SIGNATURE_OBJECT}",
            bytes.len()
        )));
    }
    let text = std::str::from_utf8(bytes)
        .map_err(|_| FormatError::corrupt("signature object is not UTF-8 text"))?;
    let sig = SignatureBox::from_string(text)
        .map_err(|e| FormatError::corrupt(format!("not a minisign signature: {e}")))?;
    if !sig.is_prehashed() {
        return Err(FormatError::corrupt(
            "legacy (not prehashed) minisign signature",
        ));
    }
    sig.trusted_comment()
        .map_err(|e| FormatError::corrupt(format!("signature without a trusted comment: {e}")))?;
    Ok(sig)
}

/// A secret key, ready to sign.
pub struct Signer {
    sk: minisign::SecretKey,
    pk: minisign::PublicKey,
    id: KeyId,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signer({})", self.id)
    }
}

impl Signer {
    /// Loads a minisign secret key file. An encrypted key needs its
    /// passphrase in [`PASSPHRASE_ENV`].
    pub fn load(path: &Path) -> Result<Signer> {
        let text = std::fs::read_to_string(path).map_err(Error::io("read key", path))?;
        let parse = || {
            minisign::SecretKeyBox::from_string(&text).map_err(|e| {
                Error::Refused(format!(
                    "{}: not a minisign secret key: {e}",
                    path.display()
                ))
            })
        };
        let sk = match parse()?.into_unencrypted_secret_key() {
            Ok(sk) if !sk.is_encrypted() => sk,
            _ => {
                let Ok(pass) = std::env::var(PASSPHRASE_ENV) else {
                    return Err(Error::Refused(format!(
                        "{}: the secret key is encrypted (or damaged): put its passphrase in {PASSPHRASE_ENV}",
                        path.display()
                    )));
                };
                parse()?.into_secret_key(Some(pass)).map_err(|e| {
                    Error::Refused(format!(
                        "{}: cannot open the secret key: {e}",
                        path.display()
                    ))
                })?
            }
        };
        let pk = minisign::PublicKey::from_secret_key(&sk)
            .map_err(|e| Error::Refused(format!("{}: {e}", path.display())))?;
        let id = KeyId::from_slice(pk.keynum()).ok_or_else(|| {
            Error::Refused(format!("{}: a key id that is not 8 bytes", path.display()))
        })?;
        Ok(Signer { sk, pk, id })
    }

    pub fn key_id(&self) -> KeyId {
        self.id
    }

    /// The public key, as one line (what `--trust` takes).
    pub fn public_line(&self) -> String {
        self.pk.to_base64()
    }

    /// A signature object over `object` (the exact bytes stored), with
    /// `comment` as its trusted comment.
    pub fn sign(&self, object: &[u8], comment: &str) -> Result<Vec<u8>> {
        let sig = minisign::sign(
            Some(&self.pk),
            &self.sk,
            Cursor::new(object),
            Some(comment),
            Some(&format!("signature from blocksnap key {}", self.id)),
        )
        .map_err(|e| Error::Refused(format!("cannot sign with key {}: {e}", self.id)))?;
        Ok(sig.to_string().into_bytes())
    }

    /// Signs a snapshot's manifest object and stores the signature.
    pub fn sign_snapshot(
        &self,
        repo: &Repository,
        key: &layout::SnapshotKey,
        bytes: &[u8],
    ) -> Result<()> {
        let comment = format!(
            "blocksnap snapshot {} height {}",
            key.id.to_hex(),
            key.height
        );
        let object = self.sign(bytes, &comment)?;
        put(
            repo,
            &signature_key(&key.id, self.id, Signed::Manifest),
            &object,
        )
    }

    /// Signs a forget record and stores the signature.
    pub fn sign_forget(&self, repo: &Repository, id: &Hash, record: &[u8]) -> Result<()> {
        let comment = format!("blocksnap forget {}", id.to_hex());
        let object = self.sign(record, &comment)?;
        put(repo, &signature_key(id, self.id, Signed::Forget), &object)
    }
}

/// Stores a signature; one already there (a re-run, or an earlier
/// signature by the same key) is kept.
fn put(repo: &Repository, key: &str, object: &[u8]) -> Result<()> {
    repo.store().put_if_absent(key, object)?;
    Ok(())
}

/// Writes a new key pair: `out` (the secret key, mode 0600, never
/// printed) and `out.pub`. Neither file may exist. With a passphrase the
/// secret key is encrypted (minisign's scrypt form).
pub fn generate(out: &Path, passphrase: Option<String>) -> Result<(KeyId, String)> {
    use std::os::unix::fs::OpenOptionsExt;
    let kp = match passphrase {
        Some(p) => minisign::KeyPair::generate_encrypted_keypair(Some(p)),
        None => minisign::KeyPair::generate_unencrypted_keypair(),
    }
    .map_err(|e| Error::Refused(format!("cannot generate a key: {e}")))?;
    let id = KeyId::from_slice(kp.pk.keynum())
        .ok_or_else(|| Error::Refused("minisign made a key id that is not 8 bytes".into()))?;
    let secret = kp
        .sk
        .to_box(Some(&format!("blocksnap secret key {id}")))
        .map_err(|e| Error::Refused(format!("cannot encode the secret key: {e}")))?
        .to_string();
    let public = kp
        .pk
        .to_box()
        .map_err(|e| Error::Refused(format!("cannot encode the public key: {e}")))?
        .to_string();
    let pub_path = {
        let mut p = out.as_os_str().to_owned();
        p.push(".pub");
        std::path::PathBuf::from(p)
    };
    let create = |path: &Path, mode: u32, body: &str| -> Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .map_err(Error::io("create", path))?;
        f.write_all(body.as_bytes())
            .and_then(|_| f.sync_all())
            .map_err(Error::io("write", path))
    };
    if pub_path.exists() {
        return Err(Error::Refused(format!(
            "{} already exists: not replaced",
            pub_path.display()
        )));
    }
    create(out, 0o600, &secret)?;
    if let Err(e) = create(&pub_path, 0o644, &public) {
        let _ = std::fs::remove_file(out);
        return Err(e);
    }
    Ok((id, kp.pk.to_base64()))
}

/// The public keys a reader trusts.
#[derive(Default)]
pub struct Trust {
    keys: BTreeMap<KeyId, minisign::PublicKey>,
}

impl fmt::Debug for Trust {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.keys.keys()).finish()
    }
}

impl Trust {
    /// Each spec is a public key (its base64 line) or a file of them (a
    /// minisign `.pub` file, or one key per line; comment lines and blank
    /// lines are skipped).
    pub fn parse(specs: &[String]) -> Result<Trust> {
        let mut trust = Trust::default();
        for spec in specs {
            let spec = spec.trim();
            let from_file = Path::new(spec).is_file();
            let text = if from_file {
                std::fs::read_to_string(spec).map_err(Error::io("read", Path::new(spec)))?
            } else {
                spec.to_string()
            };
            let mut found = 0;
            for line in text.lines().map(str::trim) {
                if line.is_empty()
                    || line.starts_with("untrusted comment:")
                    || line.starts_with('#')
                {
                    continue;
                }
                let pk = minisign::PublicKey::from_base64(line).map_err(|e| {
                    Error::Refused(format!(
                        "--trust {spec}: {line:?} is not a minisign public key ({e})"
                    ))
                })?;
                let id = KeyId::from_slice(pk.keynum())
                    .ok_or_else(|| Error::Refused(format!("--trust {spec}: bad key id")))?;
                trust.keys.insert(id, pk);
                found += 1;
            }
            if found == 0 {
                return Err(Error::Refused(format!(
                    "--trust {spec}: no public key in it{}",
                    if from_file {
                        ""
                    } else {
                        " (not a file either)"
                    }
                )));
            }
        }
        Ok(trust)
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn ids(&self) -> Vec<KeyId> {
        self.keys.keys().copied().collect()
    }

    /// Whether one of the signatures `listed` for `id` verifies, with a
    /// trusted key, over `object` (the bytes of what it signs). Signatures
    /// by other keys are not read.
    pub fn check(
        &self,
        repo: &Repository,
        listed: &Signatures,
        id: &Hash,
        what: Signed,
        object: &[u8],
    ) -> Verdict {
        let mut verdict = Verdict {
            trusted_by: None,
            signed_by: listed.signers(id, what),
            bad: Vec::new(),
        };
        for kid in verdict.signed_by.clone() {
            let Some(pk) = self.keys.get(&kid) else {
                continue;
            };
            let key = signature_key(id, kid, what);
            let checked = repo
                .store()
                .get(&key, MAX_SIGNATURE_OBJECT)
                .map_err(|e| e.to_string())
                .and_then(|bytes| decode(&bytes).map_err(|e| e.to_string()))
                .and_then(|sig| {
                    if KeyId::from_slice(sig.keynum()) != Some(kid) {
                        return Err(format!("made by key {:?}, not {kid}", sig.keynum()));
                    }
                    minisign::verify(pk, &sig, Cursor::new(object), true, false, false)
                        .map_err(|e| e.to_string())
                });
            match checked {
                Ok(()) => {
                    verdict.trusted_by = Some(kid);
                    return verdict;
                }
                Err(e) => verdict.bad.push((kid, e)),
            }
        }
        verdict
    }
}

/// Checks one snapshot's manifest against the trusted keys.
pub fn check_snapshot(
    repo: &Repository,
    trust: &Trust,
    listed: &Signatures,
    key: &layout::SnapshotKey,
) -> Result<Verdict> {
    let bytes = repo.manifest_bytes(key)?;
    Ok(trust.check(repo, listed, &key.id, Signed::Manifest, &bytes))
}

/// The one snapshot `selector` names, among those a trusted key signed:
/// `latest` is the newest trusted snapshot (of `host`), a height the newest
/// trusted one at that height; anything else named that is not trusted is
/// refused, naming the snapshot and the keys.
pub fn resolve_trusted(
    repo: &Repository,
    trust: &Trust,
    selector: &crate::repo::Selector,
    host: Option<&str>,
) -> Result<layout::SnapshotKey> {
    use crate::repo::Selector;
    let listed = Signatures::list(repo)?;
    let keys: Vec<String> = trust.ids().iter().map(|k| k.to_string()).collect();
    let newest = |candidates: Vec<layout::SnapshotKey>, what: String| {
        for key in candidates.iter().rev() {
            if check_snapshot(repo, trust, &listed, key).is_ok_and(|v| v.trusted()) {
                return Ok(*key);
            }
        }
        Err(Error::Refused(format!(
            "no {what} is signed by a trusted key ({}){}",
            keys.join(", "),
            if candidates.is_empty() {
                String::new()
            } else {
                format!("; {} snapshot(s) are not", candidates.len())
            }
        )))
    };
    match selector {
        Selector::Latest => newest(repo.resolve_for(&Selector::All, host)?, "snapshot".into()),
        Selector::Height(h) => {
            let at: Vec<_> = repo
                .resolve_for(&Selector::All, host)?
                .into_iter()
                .filter(|k| k.height == *h)
                .collect();
            newest(at, format!("snapshot at height {h}"))
        }
        other => {
            let key = repo.resolve_for(other, host)?[0];
            let verdict = check_snapshot(repo, trust, &listed, &key)?;
            if verdict.trusted() {
                Ok(key)
            } else {
                Err(Error::Refused(format!(
                    "snapshot {} is not trusted: {}",
                    key.key(),
                    verdict.why_not(trust)
                )))
            }
        }
    }
}

/// What [`Trust::check`] found.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    /// The trusted key whose signature verified.
    pub trusted_by: Option<KeyId>,
    /// Every key with a signature object for it.
    pub signed_by: Vec<KeyId>,
    /// Signatures by trusted keys that did not verify, and why.
    pub bad: Vec<(KeyId, String)>,
}

impl Verdict {
    pub fn trusted(&self) -> bool {
        self.trusted_by.is_some()
    }

    /// Why it is not trusted, naming the keys (for messages).
    pub fn why_not(&self, trust: &Trust) -> String {
        let trusted = trust.ids();
        let others: Vec<String> = self
            .signed_by
            .iter()
            .filter(|k| !trusted.contains(k))
            .map(|k| k.to_string())
            .collect();
        let mut why = Vec::new();
        if self.signed_by.is_empty() {
            why.push("it is not signed".to_string());
        }
        if !others.is_empty() {
            why.push(format!(
                "it is signed by {}, not a trusted key",
                others.join(", ")
            ));
        }
        for (kid, e) in &self.bad {
            why.push(format!("the signature by {kid} does not verify: {e}"));
        }
        let trusted: Vec<String> = trusted.iter().map(|k| k.to_string()).collect();
        format!("{} (trusted: {})", why.join("; "), trusted.join(", "))
    }
}

/// Every signature object in the repository, from one listing.
#[derive(Debug, Default)]
pub struct Signatures {
    by_id: HashMap<(Hash, Signed), BTreeSet<KeyId>>,
}

impl Signatures {
    /// One LIST of `signatures/`; keys that do not parse are ignored.
    pub fn list(repo: &Repository) -> Result<Signatures> {
        let mut s = Signatures::default();
        for o in repo.store().list(layout::SIGNATURES_PREFIX)? {
            if let Some((id, kid, what)) = parse_signature_key(&o.key) {
                s.by_id.entry((id, what)).or_default().insert(kid);
            }
        }
        Ok(s)
    }

    /// The keys with a signature object for `id`.
    pub fn signers(&self, id: &Hash, what: Signed) -> Vec<KeyId> {
        self.by_id
            .get(&(*id, what))
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_keys_round_trip_and_strays_are_refused() {
        let id = Hash::of(b"manifest");
        let kid = KeyId([1, 2, 3, 4, 5, 6, 7, 0xE8]);
        assert_eq!(kid.to_string(), "E807060504030201");
        for what in [Signed::Manifest, Signed::Forget] {
            let key = signature_key(&id, kid, what);
            assert_eq!(parse_signature_key(&key), Some((id, kid, what)));
        }
        let base = format!("signatures/{}/", id.to_hex());
        for stray in [
            format!("{base}e807060504030201"),
            format!("{base}E80706050403020"),
            format!("{base}E807060504030201.other"),
            format!("signatures/{}/E807060504030201", &id.to_hex()[1..]),
            "signatures/x".to_string(),
        ] {
            assert_eq!(parse_signature_key(&stray), None, "{stray}");
        }
    }

    #[test]
    fn decode_is_bounded_and_strict() {
        assert!(decode(&vec![b'a'; 3000]).is_err());
        assert!(decode(b"\xff\xfe").is_err());
        assert!(decode(b"untrusted comment: x\n").is_err());
        assert!(decode(b"").is_err());
    }
}
