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
use crate::store::Store;

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

/// What a signature vouches for: one object of one kind. Its trusted
/// comment (which minisign's global signature covers) names the kind and
/// the object, and a reader accepts a signature only when the comment names
/// exactly what it checks (FORMAT.md §11): a forget record's signature is
/// never a manifest's, nor one snapshot's another's, whatever bytes they
/// sign.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject {
    /// The manifest object of this snapshot.
    Snapshot(layout::SnapshotKey),
    /// The forget record `forgotten/<id>` of this snapshot.
    Forget(Hash),
}

impl Subject {
    /// The snapshot id its signature objects are filed under.
    pub fn id(&self) -> Hash {
        match self {
            Subject::Snapshot(k) => k.id,
            Subject::Forget(id) => *id,
        }
    }

    pub fn signed(&self) -> Signed {
        match self {
            Subject::Snapshot(_) => Signed::Manifest,
            Subject::Forget(_) => Signed::Forget,
        }
    }

    /// The trusted comment a signature for it carries, exactly.
    pub fn comment(&self) -> String {
        match self {
            Subject::Snapshot(k) => {
                format!("blocksnap snapshot {} height {}", k.id.to_hex(), k.height)
            }
            Subject::Forget(id) => format!("blocksnap forget {}", id.to_hex()),
        }
    }

    /// The key of its signature object by `key`.
    pub fn signature_key(&self, key: KeyId) -> String {
        signature_key(&self.id(), key, self.signed())
    }

    fn what(&self) -> &'static str {
        match self {
            Subject::Snapshot(_) => "snapshot",
            Subject::Forget(_) => "forget record",
        }
    }
}

/// Checks a signature object's bytes: it decodes, was made by `kid` (whose
/// public key is `pk`), verifies over `object`, and its trusted comment
/// names `subject`.
fn check_signature(
    bytes: &[u8],
    kid: KeyId,
    pk: &minisign::PublicKey,
    subject: &Subject,
    object: &[u8],
) -> std::result::Result<(), String> {
    check_comment(bytes, kid, pk, &subject.comment(), subject.what(), object)
}

/// The trusted comment of a repository index's embedded signature
/// (FORMAT.md §15): the index and its creation time.
pub fn index_comment(created_unix_ns: u64) -> String {
    format!("blocksnap index created {created_unix_ns}")
}

/// [`check_signature`] for a signature whose trusted comment must be
/// exactly `expected` (`what` names it in messages).
fn check_comment(
    bytes: &[u8],
    kid: KeyId,
    pk: &minisign::PublicKey,
    expected: &str,
    what: &str,
    object: &[u8],
) -> std::result::Result<(), String> {
    let sig = decode(bytes).map_err(|e| e.to_string())?;
    if KeyId::from_slice(sig.keynum()) != Some(kid) {
        return Err(format!("made by key {:?}, not {kid}", sig.keynum()));
    }
    minisign::verify(pk, &sig, Cursor::new(object), true, false, false)
        .map_err(|e| e.to_string())?;
    let comment = sig.trusted_comment().map_err(|e| e.to_string())?;
    if comment != expected {
        return Err(format!(
            "it signs {comment:?}, not this {what} ({expected:?})"
        ));
    }
    Ok(())
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

    /// Signs `object`, the exact bytes of `subject`, and stores the
    /// signature. A signature object already there (a re-run, or an earlier
    /// signature by this key) is kept if it is a valid signature of this key
    /// for `subject`; anything else there is an error, since nothing is
    /// ever replaced (the snapshot would stay unsigned while the command
    /// reported success).
    pub fn sign_subject(&self, store: &dyn Store, subject: &Subject, object: &[u8]) -> Result<()> {
        let signature = self.sign(object, &subject.comment())?;
        let key = subject.signature_key(self.id);
        if store.put_if_absent(&key, &signature)? {
            return Ok(());
        }
        let there = store.get(&key, MAX_SIGNATURE_OBJECT);
        match there
            .map_err(|e| e.to_string())
            .and_then(|bytes| check_signature(&bytes, self.id, &self.pk, subject, object))
        {
            Ok(()) => Ok(()),
            Err(why) => Err(Error::Refused(format!(
                "{key} already holds an object that is not this key's signature of the {} ({why}); \
                 blocksnap never replaces an object: delete it, then sign again",
                subject.what()
            ))),
        }
    }

    /// Signs a snapshot's manifest object and stores the signature.
    pub fn sign_snapshot(
        &self,
        store: &dyn Store,
        key: &layout::SnapshotKey,
        bytes: &[u8],
    ) -> Result<()> {
        self.sign_subject(store, &Subject::Snapshot(*key), bytes)
    }

    /// Signs a forget record and stores the signature. The caller must have
    /// decoded `record` and found it to be the record of snapshot `id` it
    /// would write itself: a signer never signs bytes blocksnap did not
    /// produce.
    pub fn sign_forget(&self, store: &dyn Store, id: &Hash, record: &[u8]) -> Result<()> {
        self.sign_subject(store, &Subject::Forget(*id), record)
    }
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
    /// lines are skipped). A spec that is a key is taken as the key, even
    /// when a file of that name exists (so a file planted in the working
    /// directory cannot stand in for a key given on the command line). The
    /// same key id twice with different keys is refused: a later key never
    /// silently replaces a trusted one.
    pub fn parse(specs: &[String]) -> Result<Trust> {
        Trust::parse_in(specs, Path::new(""))
    }

    /// [`Trust::parse`], with relative file names taken in `dir`.
    fn parse_in(specs: &[String], dir: &Path) -> Result<Trust> {
        let mut trust = Trust::default();
        for spec in specs {
            let spec = spec.trim();
            let as_key = minisign::PublicKey::from_base64(spec).is_ok();
            let path = dir.join(spec);
            let from_file = !as_key && path.is_file();
            let text = if from_file {
                std::fs::read_to_string(&path).map_err(Error::io("read", &path))?
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
                match trust.keys.get(&id) {
                    Some(known) if known.to_base64() != pk.to_base64() => {
                        return Err(Error::Refused(format!(
                            "--trust {spec}: two different public keys share the key id {id}; \
                             refusing to guess which one is trusted"
                        )))
                    }
                    _ => {
                        trust.keys.insert(id, pk);
                    }
                }
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

    /// Whether one of the signatures `listed` for `subject` verifies, with a
    /// trusted key, over `object` (the bytes of what it signs) and names
    /// `subject` in its trusted comment. Signatures by other keys are not
    /// read.
    pub fn check(
        &self,
        store: &dyn Store,
        listed: &Signatures,
        subject: &Subject,
        object: &[u8],
    ) -> Verdict {
        let id = subject.id();
        let mut verdict = Verdict {
            trusted_by: None,
            signed_by: listed.signers(&id, subject.signed()),
            bad: Vec::new(),
        };
        for kid in verdict.signed_by.clone() {
            let Some(pk) = self.keys.get(&kid) else {
                continue;
            };
            let key = subject.signature_key(kid);
            let checked = store
                .get(&key, MAX_SIGNATURE_OBJECT)
                .map_err(|e| e.to_string())
                .and_then(|bytes| check_signature(&bytes, kid, pk, subject, object));
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

    /// Checks a signature embedded in the object it signs (a repository
    /// index): made by a trusted key, over `object`, with the trusted
    /// comment `expected`. Returns the key.
    pub fn check_embedded(
        &self,
        signature: &[u8],
        object: &[u8],
        expected: &str,
        what: &str,
    ) -> std::result::Result<KeyId, String> {
        let sig = decode(signature).map_err(|e| e.to_string())?;
        let kid = KeyId::from_slice(sig.keynum())
            .ok_or_else(|| "a signature without a key id".to_string())?;
        let pk = self
            .keys
            .get(&kid)
            .ok_or_else(|| format!("signed by key {kid}, which is not trusted"))?;
        check_comment(signature, kid, pk, expected, what, object)?;
        Ok(kid)
    }

    /// Whether any trusted key has a signature object listed for
    /// `subject`: without one it cannot be trusted, and nothing need be
    /// read to say so.
    pub fn may_vouch(&self, listed: &Signatures, subject: &Subject) -> bool {
        listed
            .signers(&subject.id(), subject.signed())
            .iter()
            .any(|k| self.keys.contains_key(k))
    }

    /// Checks a signature object found in another repository (a copy's
    /// source) before it is kept: it must decode and, when its key is
    /// trusted, verify for `subject`.
    pub fn check_object(
        &self,
        bytes: &[u8],
        kid: KeyId,
        subject: &Subject,
        object: &[u8],
    ) -> std::result::Result<bool, String> {
        match self.keys.get(&kid) {
            Some(pk) => check_signature(bytes, kid, pk, subject, object).map(|()| true),
            None => {
                let sig = decode(bytes).map_err(|e| e.to_string())?;
                if KeyId::from_slice(sig.keynum()) != Some(kid) {
                    return Err(format!("made by key {:?}, not {kid}", sig.keynum()));
                }
                Ok(false)
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
    pub fn list(store: &dyn Store) -> Result<Signatures> {
        let mut s = Signatures::default();
        for o in store.list(layout::SIGNATURES_PREFIX)? {
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

    /// A key given on the command line is the key, even when a file of that
    /// name stands in the working directory (#20.12); two keys with one key
    /// id are refused, not silently merged (#20.14).
    #[test]
    fn a_key_is_a_key_and_key_ids_are_unique() {
        use base64::Engine;
        let dir = tempfile::tempdir().unwrap();
        let a = minisign::KeyPair::generate_unencrypted_keypair().unwrap();
        let b = minisign::KeyPair::generate_unencrypted_keypair().unwrap();
        let (a_line, b_line) = (a.pk.to_base64(), b.pk.to_base64());
        // A file named like key A, holding key B.
        let planted = dir.path().join(&a_line);
        std::fs::create_dir_all(planted.parent().unwrap()).unwrap();
        std::fs::write(&planted, format!("{b_line}\n")).unwrap();
        let t = Trust::parse_in(std::slice::from_ref(&a_line), dir.path()).unwrap();
        let a_id = KeyId::from_slice(a.pk.keynum()).unwrap();
        assert_eq!(t.ids(), vec![a_id]);
        // A file that is not a key is still read as a file.
        let file = dir.path().join("keys.pub");
        std::fs::write(&file, format!("untrusted comment: x\n{b_line}\n")).unwrap();
        let t = Trust::parse_in(&["keys.pub".to_string()], dir.path()).unwrap();
        assert_eq!(t.ids(), vec![KeyId::from_slice(b.pk.keynum()).unwrap()]);

        // Key A's id with key B's bytes: another key under the same id.
        let engine = base64::engine::general_purpose::STANDARD;
        let mut raw = engine.decode(&a_line).unwrap();
        let other = engine.decode(&b_line).unwrap();
        raw[10..].copy_from_slice(&other[10..]);
        let twin = engine.encode(&raw);
        let err = Trust::parse_in(&[a_line.clone(), twin], dir.path())
            .unwrap_err()
            .to_string();
        assert!(err.contains("share the key id"), "{err}");
        // The same key twice is fine.
        Trust::parse_in(&[a_line.clone(), a_line], dir.path()).unwrap();
    }
}
