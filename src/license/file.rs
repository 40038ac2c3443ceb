//! The armored license file: canonical payload, Ed25519 signature, key id.
//!
//! Bytes in, verdict out: no I/O. The payload bytes are carried exactly as
//! they were signed, so verification never re-serialises anything, and no
//! JSON is interpreted before its signature has been checked. See
//! `docs/license-format.md`.

use data_encoding::{BASE64, HEXLOWER};
use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};

use crate::hwid::{Component, HwMatch, MatchVerdict};

use super::payload::{LicensePayload, PAYLOAD_FORMAT};

/// The armor's first line.
pub const BEGIN: &str = "-----BEGIN LICAGENT LICENSE-----";
/// The armor's last line.
pub const END: &str = "-----END LICAGENT LICENSE-----";
/// Prefix of every signed message: a signature over a license can never be
/// mistaken for a signature over anything else the same key signs (the portal
/// signs protocol messages with it too).
pub const SIGNING_DOMAIN: &[u8] = b"licagent-license-v1\0";
/// How far in the future `issued_at` may lie before a license is refused as
/// not yet valid: clocks of appliances and portal are rarely exact.
pub const MAX_CLOCK_SKEW_SECS: i64 = 300;
/// Payload base64 line width in the armor.
const WRAP: usize = 64;
/// Length of an Ed25519 signature.
const SIGNATURE_LEN: usize = 64;

/// The keys the vendor's release pipeline compiles in.
const VENDOR_KEYS: &str = include_str!("vendor_keys.txt");

/// A vendor's signing key. Only the portal and tests hold one.
pub struct SigningKey {
    pair: Ed25519KeyPair,
}

impl SigningKey {
    /// A new key and its PKCS#8 document (to be stored by the caller).
    ///
    /// # Panics
    /// When the operating system's random generator fails; use
    /// [`SigningKey::try_generate`] to handle that.
    pub fn generate() -> (SigningKey, Vec<u8>) {
        match SigningKey::try_generate() {
            Ok(k) => k,
            Err(e) => panic!("{e}"),
        }
    }

    /// A new key and its PKCS#8 v2 document, or an error when the system
    /// random generator fails.
    pub fn try_generate() -> Result<(SigningKey, Vec<u8>), LicenseError> {
        let rng = ring::rand::SystemRandom::new();
        let doc = Ed25519KeyPair::generate_pkcs8(&rng)
            .map_err(|_| LicenseError::BadKey("the system random generator failed".to_string()))?;
        let pkcs8 = doc.as_ref().to_vec();
        let key = SigningKey::from_pkcs8(&pkcs8)?;
        Ok((key, pkcs8))
    }

    pub fn from_pkcs8(pkcs8: &[u8]) -> Result<SigningKey, LicenseError> {
        Ed25519KeyPair::from_pkcs8(pkcs8)
            .map(|pair| SigningKey { pair })
            .map_err(|e| {
                LicenseError::BadKey(format!(
                    "the signing key is not an Ed25519 PKCS#8 v2 document ({e})"
                ))
            })
    }

    pub fn public_key(&self) -> PublicKey {
        let mut bytes = [0u8; 32];
        // ring's Ed25519 public keys are always 32 bytes.
        bytes.copy_from_slice(self.pair.public_key().as_ref());
        PublicKey { bytes }
    }

    /// Signs arbitrary bytes (the portal signs protocol messages with it too).
    pub fn sign_bytes(&self, msg: &[u8]) -> Vec<u8> {
        self.pair.sign(msg).as_ref().to_vec()
    }
}

impl std::fmt::Debug for SigningKey {
    /// Never prints key material.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({})", self.public_key().key_id())
    }
}

/// An Ed25519 public key with its key id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKey {
    bytes: [u8; 32],
}

impl PublicKey {
    pub fn from_bytes(bytes: [u8; 32]) -> PublicKey {
        PublicKey { bytes }
    }
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.bytes
    }
    /// Key id: the first 8 bytes of SHA-256 of the key, lower-case hex.
    pub fn key_id(&self) -> String {
        let digest = ring::digest::digest(&ring::digest::SHA256, &self.bytes);
        HEXLOWER.encode(&digest.as_ref()[..8])
    }
    pub fn to_base64(&self) -> String {
        BASE64.encode(&self.bytes)
    }
    pub fn from_base64(s: &str) -> Result<PublicKey, LicenseError> {
        let raw = BASE64.decode(s.trim().as_bytes()).map_err(|e| {
            LicenseError::BadKey(format!("the public key is not valid base64 ({e})"))
        })?;
        let bytes: [u8; 32] = raw.as_slice().try_into().map_err(|_| {
            LicenseError::BadKey(format!(
                "the public key is {} bytes long; an Ed25519 key has 32",
                raw.len()
            ))
        })?;
        Ok(PublicKey { bytes })
    }
    pub fn verify_bytes(&self, msg: &[u8], sig: &[u8]) -> bool {
        UnparsedPublicKey::new(&ED25519, &self.bytes)
            .verify(msg, sig)
            .is_ok()
    }
}

/// The keys a verifier trusts: the vendor's, compiled in, plus configured extras.
#[derive(Clone, Debug, Default)]
pub struct KeyRing {
    keys: Vec<PublicKey>,
}

impl KeyRing {
    /// The vendor keys compiled into this build.
    pub fn vendor() -> KeyRing {
        // The file is part of the source tree and a unit test parses it, so
        // a failure here is a build defect, not an input error.
        match KeyRing::parse_list(VENDOR_KEYS) {
            Ok(ring) => ring,
            Err(e) => panic!("src/license/vendor_keys.txt is invalid: {e}"),
        }
    }
    pub fn empty() -> KeyRing {
        KeyRing::default()
    }
    /// The key ids, in the order the keys were added.
    pub fn key_ids(&self) -> Vec<String> {
        self.keys.iter().map(|k| k.key_id()).collect()
    }
    pub fn add(&mut self, key: PublicKey) {
        // A key listed twice (vendor file and config) is trusted once.
        if !self.keys.contains(&key) {
            self.keys.push(key);
        }
    }
    pub fn get(&self, key_id: &str) -> Option<&PublicKey> {
        self.keys.iter().find(|k| k.key_id() == key_id)
    }
    /// Every trusted key, in the order added.
    pub fn keys(&self) -> &[PublicKey] {
        &self.keys
    }
    /// Adds every key of `other`.
    pub fn extend(&mut self, other: KeyRing) {
        for k in other.keys {
            self.add(k);
        }
    }

    /// Reads a key list: one `<key id> <base64 public key>` per line; blank
    /// lines and lines starting with `#` are skipped. The key id must be the
    /// id of the key on the same line, which catches a key pasted under the
    /// wrong id or truncated.
    pub fn parse_list(text: &str) -> Result<KeyRing, LicenseError> {
        let mut ring = KeyRing::empty();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let n = n + 1;
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [id, b64] = fields.as_slice() else {
                return Err(LicenseError::BadKey(format!(
                    "line {n} of the key list is not '<key id> <base64 public key>'"
                )));
            };
            let key = PublicKey::from_base64(b64).map_err(|e| match e {
                LicenseError::BadKey(d) => LicenseError::BadKey(format!("line {n}: {d}")),
                other => other,
            })?;
            let actual = key.key_id();
            if !id.eq_ignore_ascii_case(&actual) {
                return Err(LicenseError::BadKey(format!(
                    "line {n}: key id {id} does not match its key, whose id is {actual}"
                )));
            }
            ring.add(key);
        }
        Ok(ring)
    }
}

/// A parsed but not yet verified license file.
#[derive(Clone, Debug)]
pub struct SignedLicense {
    pub key_id: String,
    pub payload_bytes: Vec<u8>,
    pub signature: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LicenseError {
    #[error("this is not a license file (no licagent license block found)")]
    NotALicense,
    #[error("the license file is damaged: {0}")]
    Damaged(String),
    #[error("the license is signed by an unknown key (key id {0}); add the vendor key to [trust] or update licagent")]
    UnknownKey(String),
    #[error("the license signature is not valid; the file was altered or is not from the vendor")]
    BadSignature,
    #[error("the license was issued for another machine (hardware ID {expected}, this machine is {actual})")]
    WrongMachine { expected: String, actual: String },
    #[error("the license is not valid yet (issued at {0}); check the clock")]
    NotYetValid(String),
    #[error("the license expired at {0}")]
    Expired(String),
    /// Signed, but a number in it is outside what the agent accepts.
    #[error("the license carries a value licagent does not accept ({0}); it was not installed, ask the vendor for a corrected license")]
    OutOfRange(String),
    /// A signing or public key (key list, config, PKCS#8 file) is unusable.
    #[error("the key is not usable: {0}")]
    BadKey(String),
}

fn damaged(detail: impl Into<String>) -> LicenseError {
    LicenseError::Damaged(detail.into())
}

/// The message a license signature covers: domain prefix, then payload bytes.
fn signed_message(payload_bytes: &[u8]) -> Vec<u8> {
    let mut msg = Vec::with_capacity(SIGNING_DOMAIN.len() + payload_bytes.len());
    msg.extend_from_slice(SIGNING_DOMAIN);
    msg.extend_from_slice(payload_bytes);
    msg
}

/// Armors a signed payload.
pub fn sign(payload: &LicensePayload, key: &SigningKey) -> String {
    // Serialising this struct cannot fail: every map key is a string and no
    // field has a fallible Serialize.
    let bytes = match serde_json::to_vec(payload) {
        Ok(b) => b,
        Err(e) => panic!("a license payload did not serialise: {e}"),
    };
    let signature = key.sign_bytes(&signed_message(&bytes));
    let body = BASE64.encode(&bytes);
    let mut out = String::with_capacity(body.len() + body.len() / WRAP + 256);
    out.push_str(BEGIN);
    out.push('\n');
    out.push_str(&format!("Key-Id: {}\n", key.public_key().key_id()));
    out.push_str(&format!("Signature: {}\n", BASE64.encode(&signature)));
    out.push('\n');
    // Base64 is ASCII, so byte chunks are char chunks.
    for line in body.as_bytes().chunks(WRAP) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(END);
    out.push('\n');
    out
}

/// Decodes the armor without checking the signature.
///
/// Tolerant of text around the block (a mail body), CRLF, indentation and
/// re-wrapped base64; strict about everything inside the block.
pub fn parse(text: &str) -> Result<SignedLicense, LicenseError> {
    let Some(begin) = text.find(BEGIN) else {
        return Err(LicenseError::NotALicense);
    };
    let after_begin = &text[begin + BEGIN.len()..];
    let Some(end) = after_begin.find(END) else {
        return Err(damaged("the END line is missing; the file was cut off"));
    };
    if after_begin[end + END.len()..].contains(BEGIN) {
        return Err(damaged(
            "the text holds more than one license block; import them one at a time",
        ));
    }
    let inner = &after_begin[..end];

    let mut key_id: Option<String> = None;
    let mut signature: Option<Vec<u8>> = None;
    let mut body = String::new();
    // `str::lines` drops a trailing '\r', so CRLF needs no special case.
    for line in inner.lines().map(str::trim) {
        if line.is_empty() {
            continue;
        }
        // Base64 never contains ':', so a colon marks a header line. This
        // tolerates a mail client that dropped the blank separator line.
        if let Some((name, value)) = line.split_once(':') {
            if !body.is_empty() {
                return Err(damaged(format!("the header '{name}' follows the payload")));
            }
            let value = value.trim();
            match name.trim() {
                "Key-Id" => {
                    if key_id.is_some() {
                        return Err(damaged("the Key-Id header appears twice"));
                    }
                    key_id = Some(parse_key_id(value)?);
                }
                "Signature" => {
                    if signature.is_some() {
                        return Err(damaged("the Signature header appears twice"));
                    }
                    let sig = BASE64
                        .decode(value.as_bytes())
                        .map_err(|e| damaged(format!("the signature is not valid base64 ({e})")))?;
                    if sig.len() != SIGNATURE_LEN {
                        return Err(damaged(format!(
                            "the signature is {} bytes long; an Ed25519 signature has {SIGNATURE_LEN}",
                            sig.len()
                        )));
                    }
                    signature = Some(sig);
                }
                other => return Err(damaged(format!("unknown header '{other}'"))),
            }
        } else {
            // Re-wrapped lines may carry stray inner whitespace too.
            body.extend(line.chars().filter(|c| !c.is_whitespace()));
        }
    }
    let key_id = key_id.ok_or_else(|| damaged("the Key-Id header is missing"))?;
    let signature = signature.ok_or_else(|| damaged("the Signature header is missing"))?;
    if body.is_empty() {
        return Err(damaged("the payload is missing"));
    }
    let payload_bytes = BASE64
        .decode(body.as_bytes())
        .map_err(|e| damaged(format!("the payload is not valid base64 ({e})")))?;
    Ok(SignedLicense {
        key_id,
        payload_bytes,
        signature,
    })
}

/// A key id is 16 hex digits; upper case is read as lower case.
fn parse_key_id(value: &str) -> Result<String, LicenseError> {
    if value.len() == 16 && value.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(value.to_ascii_lowercase())
    } else {
        Err(damaged(format!(
            "the Key-Id '{value}' is not 16 hexadecimal digits"
        )))
    }
}

/// Parses and checks the signature; returns the payload it vouches for.
///
/// Order: armor, key lookup, signature, then (only for signed bytes) the
/// payload's format and shape.
pub fn verify(text: &str, ring: &KeyRing) -> Result<LicensePayload, LicenseError> {
    let signed = parse(text)?;
    let key = ring
        .get(&signed.key_id)
        .ok_or_else(|| LicenseError::UnknownKey(signed.key_id.clone()))?;
    if !key.verify_bytes(&signed_message(&signed.payload_bytes), &signed.signature) {
        return Err(LicenseError::BadSignature);
    }
    // Read the format first, so that a newer layout is named as such rather
    // than reported as an unknown field.
    let value: serde_json::Value = serde_json::from_slice(&signed.payload_bytes)
        .map_err(|e| damaged(format!("the payload is not JSON ({e})")))?;
    match value.get("format").and_then(serde_json::Value::as_u64) {
        Some(f) if f == u64::from(PAYLOAD_FORMAT) => {}
        Some(f) => {
            return Err(damaged(format!(
                "the payload has format {f}, this licagent reads format {PAYLOAD_FORMAT}; update licagent"
            )))
        }
        None => return Err(damaged("the payload has no format number")),
    }
    let payload: LicensePayload = serde_json::from_value(value)
        .map_err(|e| damaged(format!("the payload is not a licagent license ({e})")))?;
    super::ranges::check(&payload).map_err(LicenseError::OutOfRange)?;
    Ok(payload)
}

/// How a verified license relates to this machine and this time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Validity {
    pub hardware: HwMatch,
}

/// Checks a verified payload against the current hardware and time
/// (`now` already raised to the clock high-water mark by the caller).
///
/// A `Partial` hardware match passes; the caller sees it in
/// [`Validity::hardware`] and warns. Refresh and grace are not judged here
/// (see `state.rs`): this answers only "may this license run here, now".
pub fn check(
    payload: &LicensePayload,
    current: &[Component],
    now: i64,
) -> Result<Validity, LicenseError> {
    let hardware = crate::hwid::compare(&payload.hardware, current);
    if hardware.verdict == MatchVerdict::Mismatch {
        return Err(LicenseError::WrongMachine {
            expected: payload.hardware_id.clone(),
            actual: crate::hwid::hardware_id(current),
        });
    }
    if payload.issued_at > now.saturating_add(MAX_CLOCK_SKEW_SECS) {
        return Err(LicenseError::NotYetValid(crate::time::rfc3339(
            payload.issued_at,
        )));
    }
    if let Some(end) = payload.term.ends_at {
        if end <= now {
            return Err(LicenseError::Expired(crate::time::rfc3339(end)));
        }
    }
    Ok(Validity { hardware })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::hwid::ComponentKind;
    use crate::license::payload::{Enforcement, LicenseKind, Term, TermKind};

    fn component(kind: ComponentKind, n: u8) -> Component {
        Component {
            kind,
            hash: HEXLOWER.encode(&[n; 32]),
        }
    }

    fn bound() -> Vec<Component> {
        vec![
            component(ComponentKind::MachineId, 1),
            component(ComponentKind::DmiUuid, 2),
            component(ComponentKind::Mac, 3),
        ]
    }

    const NOW: i64 = 1_700_000_000;

    fn payload() -> LicensePayload {
        LicensePayload {
            format: PAYLOAD_FORMAT,
            license_id: "lic-0001".into(),
            system_id: "SYS-42".into(),
            pbx_name: "Head office".into(),
            hardware_id: "hw-bound".into(),
            hardware: bound(),
            kind: LicenseKind::Full,
            issued_at: NOW - 60,
            term: Term {
                kind: TermKind::Yearly,
                ends_at: Some(NOW + 365 * 86_400),
            },
            refresh_due: Some(NOW + 86_400),
            grace_secs: 14 * 86_400,
            enforcement: Enforcement::Soft,
            seats: BTreeMap::from([("essential".into(), 20), ("premium".into(), 5)]),
            addons: BTreeMap::from([("mobile".into(), 10), ("data_sources".into(), 1)]),
            catalog: LicensePayload::demo_catalog(),
            device_public_key: Some(BASE64.encode(&[9u8; 32])),
            nonce: Some("n-1".into()),
            test_mode: None,
        }
    }

    fn key() -> SigningKey {
        SigningKey::generate().0
    }

    fn ring_of(k: &SigningKey) -> KeyRing {
        let mut ring = KeyRing::empty();
        ring.add(k.public_key());
        ring
    }

    /// Re-armors `bytes` signed by `k` (for payloads `sign` would not produce).
    fn armor_raw(bytes: &[u8], k: &SigningKey) -> String {
        let sig = k.sign_bytes(&signed_message(bytes));
        format!(
            "{BEGIN}\nKey-Id: {}\nSignature: {}\n\n{}\n{END}\n",
            k.public_key().key_id(),
            BASE64.encode(&sig),
            BASE64.encode(bytes)
        )
    }

    #[test]
    fn sign_then_verify_round_trips() {
        let k = key();
        let p = payload();
        let text = sign(&p, &k);
        assert_eq!(verify(&text, &ring_of(&k)), Ok(p));
    }

    #[test]
    fn armor_layout() {
        let k = key();
        let text = sign(&payload(), &k);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], BEGIN);
        assert_eq!(lines[1], format!("Key-Id: {}", k.public_key().key_id()));
        assert!(lines[2].starts_with("Signature: "));
        assert_eq!(lines[3], "");
        assert_eq!(*lines.last().unwrap(), END);
        let body = &lines[4..lines.len() - 1];
        assert!(body.len() > 2, "the demo payload spans several lines");
        assert!(body[..body.len() - 1].iter().all(|l| l.len() == 64));
        assert!(body.last().unwrap().len() <= 64);
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn signature_covers_the_domain_prefix() {
        let k = key();
        let text = sign(&payload(), &k);
        let signed = parse(&text).unwrap();
        let pk = k.public_key();
        assert!(pk.verify_bytes(&signed_message(&signed.payload_bytes), &signed.signature));
        assert!(!pk.verify_bytes(&signed.payload_bytes, &signed.signature));
        assert_eq!(
            signed.payload_bytes,
            serde_json::to_vec(&payload()).unwrap()
        );
    }

    #[test]
    fn parse_tolerates_mail_crlf_indent_and_rewrap() {
        let k = key();
        let p = payload();
        let text = sign(&p, &k);
        let signed = parse(&text).unwrap();
        // Re-wrap the body at 40 columns, indent, CRLF, surround with prose.
        let body = BASE64.encode(&signed.payload_bytes);
        let rewrapped: Vec<String> = body
            .as_bytes()
            .chunks(40)
            .map(|c| format!("   {}  ", String::from_utf8_lossy(c)))
            .collect();
        let mail = format!(
            "Hello,\r\n\r\nplease find your license below.\r\n\r\n  {BEGIN}\r\n  Key-Id: {}\r\n  Signature: {}\r\n\r\n{}\r\n  {END}  \r\n\r\nRegards,\r\nThe vendor\r\n",
            signed.key_id,
            BASE64.encode(&signed.signature),
            rewrapped.join("\r\n")
        );
        assert_eq!(verify(&mail, &ring_of(&k)), Ok(p.clone()));
        // A mail client that dropped the blank separator line.
        let squeezed = text.replacen("\n\n", "\n", 1);
        assert_ne!(squeezed, text);
        assert_eq!(verify(&squeezed, &ring_of(&k)), Ok(p));
    }

    #[test]
    fn not_a_license() {
        assert_eq!(parse("").unwrap_err(), LicenseError::NotALicense);
        assert_eq!(
            parse("Dear customer, your key is ABCDE-...").unwrap_err(),
            LicenseError::NotALicense
        );
        assert_eq!(
            parse("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n").unwrap_err(),
            LicenseError::NotALicense
        );
    }

    fn assert_damaged(text: &str, needle: &str) {
        match parse(text) {
            Err(LicenseError::Damaged(d)) => assert!(d.contains(needle), "{d:?} lacks {needle:?}"),
            other => panic!("expected Damaged({needle}), got {other:?}"),
        }
    }

    #[test]
    fn damaged_armor_is_reported_with_its_detail() {
        let text = sign(&payload(), &key());
        let cut = &text[..text.len() / 2];
        assert_damaged(cut, "END line is missing");
        assert_damaged(&format!("{text}{text}"), "more than one license block");

        let without = |prefix: &str| {
            text.lines()
                .filter(|l| !l.starts_with(prefix))
                .collect::<Vec<_>>()
                .join("\n")
        };
        assert_damaged(&without("Key-Id"), "Key-Id header is missing");
        assert_damaged(&without("Signature"), "Signature header is missing");

        let dup = |prefix: &str| {
            let line = text.lines().find(|l| l.starts_with(prefix)).unwrap();
            text.replacen(line, &format!("{line}\n{line}"), 1)
        };
        assert_damaged(&dup("Key-Id"), "Key-Id header appears twice");
        assert_damaged(&dup("Signature"), "Signature header appears twice");

        let unknown = text.replacen("Key-Id:", "Comment: hi\nKey-Id:", 1);
        assert_damaged(&unknown, "unknown header 'Comment'");
        let late = text.replacen(
            &format!("\n{END}"),
            &format!("\nKey-Id: 0011223344556677\n{END}"),
            1,
        );
        assert_damaged(&late, "follows the payload");
    }

    #[test]
    fn damaged_fields() {
        let k = key();
        let text = sign(&payload(), &k);
        let signed = parse(&text).unwrap();
        let sig_line = format!("Signature: {}", BASE64.encode(&signed.signature));

        let bad_id = text.replacen(&signed.key_id, "not-an-id", 1);
        assert_damaged(&bad_id, "is not 16 hexadecimal digits");

        let bad_sig_b64 = text.replacen(&sig_line, "Signature: !!!notbase64", 1);
        assert_damaged(&bad_sig_b64, "signature is not valid base64");

        let short = text.replacen(
            &sig_line,
            &format!("Signature: {}", BASE64.encode(&[1u8; 63])),
            1,
        );
        assert_damaged(&short, "signature is 63 bytes long");

        // A character outside base64 in the body.
        let mut lines: Vec<String> = text.lines().map(String::from).collect();
        lines[5].replace_range(3..4, "%");
        assert_damaged(&lines.join("\n"), "payload is not valid base64");

        let empty = format!("{BEGIN}\nKey-Id: {}\n{sig_line}\n\n{END}\n", signed.key_id);
        assert_damaged(&empty, "payload is missing");
    }

    #[test]
    fn key_id_is_read_case_insensitively() {
        let k = key();
        let text = sign(&payload(), &k);
        let id = k.public_key().key_id();
        let upper = text.replacen(&id, &id.to_uppercase(), 1);
        assert_eq!(verify(&upper, &ring_of(&k)), Ok(payload()));
    }

    #[test]
    fn unknown_key() {
        let k = key();
        let text = sign(&payload(), &k);
        let other = key();
        assert_eq!(
            verify(&text, &ring_of(&other)),
            Err(LicenseError::UnknownKey(k.public_key().key_id()))
        );
        assert_eq!(
            verify(&text, &KeyRing::empty()),
            Err(LicenseError::UnknownKey(k.public_key().key_id()))
        );
    }

    #[test]
    fn any_flipped_byte_breaks_the_signature() {
        let k = key();
        let ring = ring_of(&k);
        let signed = parse(&sign(&payload(), &k)).unwrap();
        let rearmor = |payload: &[u8], sig: &[u8]| {
            format!(
                "{BEGIN}\nKey-Id: {}\nSignature: {}\n\n{}\n{END}\n",
                signed.key_id,
                BASE64.encode(sig),
                BASE64.encode(payload)
            )
        };
        for i in 0..signed.payload_bytes.len() {
            let mut p = signed.payload_bytes.clone();
            p[i] ^= 0x01;
            assert_eq!(
                verify(&rearmor(&p, &signed.signature), &ring),
                Err(LicenseError::BadSignature),
                "payload byte {i}"
            );
        }
        for i in 0..signed.signature.len() {
            let mut s = signed.signature.clone();
            s[i] ^= 0x80;
            assert_eq!(
                verify(&rearmor(&signed.payload_bytes, &s), &ring),
                Err(LicenseError::BadSignature),
                "signature byte {i}"
            );
        }
    }

    #[test]
    fn another_keys_signature_under_the_same_key_id_is_bad() {
        let trusted = key();
        let forger = key();
        let forged = sign(&payload(), &forger).replacen(
            &forger.public_key().key_id(),
            &trusted.public_key().key_id(),
            1,
        );
        assert_eq!(
            verify(&forged, &ring_of(&trusted)),
            Err(LicenseError::BadSignature)
        );
    }

    #[test]
    fn payload_shape_is_judged_only_after_the_signature() {
        let k = key();
        let ring = ring_of(&k);
        // Junk signed by someone else under the trusted key id: the
        // signature fails first, whatever the JSON would have said.
        let forger = key();
        let junk = armor_raw(b"not json", &forger).replacen(
            &forger.public_key().key_id(),
            &k.public_key().key_id(),
            1,
        );
        assert_eq!(verify(&junk, &ring), Err(LicenseError::BadSignature));

        let expect_damaged = |bytes: &[u8], needle: &str| match verify(&armor_raw(bytes, &k), &ring)
        {
            Err(LicenseError::Damaged(d)) => assert!(d.contains(needle), "{d:?} lacks {needle:?}"),
            other => panic!("expected Damaged({needle}), got {other:?}"),
        };
        expect_damaged(b"not json", "payload is not JSON");
        expect_damaged(b"{\"license_id\":\"x\"}", "no format number");

        let mut v = serde_json::to_value(payload()).unwrap();
        v["format"] = serde_json::json!(2);
        v["new_field"] = serde_json::json!(true);
        expect_damaged(
            &serde_json::to_vec(&v).unwrap(),
            "format 2, this licagent reads format 1",
        );

        let mut v = serde_json::to_value(payload()).unwrap();
        v["surprise"] = serde_json::json!(1);
        expect_damaged(&serde_json::to_vec(&v).unwrap(), "not a licagent license");

        let mut v = serde_json::to_value(payload()).unwrap();
        v["kind"] = serde_json::json!("forever");
        expect_damaged(&serde_json::to_vec(&v).unwrap(), "not a licagent license");
    }

    #[test]
    fn signing_key_round_trips_through_pkcs8() {
        let (k, pkcs8) = SigningKey::generate();
        let again = SigningKey::from_pkcs8(&pkcs8).unwrap();
        assert_eq!(k.public_key(), again.public_key());
        let sig = again.sign_bytes(b"hello");
        assert!(k.public_key().verify_bytes(b"hello", &sig));
        assert!(!k.public_key().verify_bytes(b"hellO", &sig));
        assert!(matches!(
            SigningKey::from_pkcs8(&pkcs8[..pkcs8.len() - 1]),
            Err(LicenseError::BadKey(_))
        ));
        assert!(!format!("{k:?}").contains(&BASE64.encode(&pkcs8)));
    }

    #[test]
    fn key_id_is_sha256_prefix_in_lower_hex() {
        let pk = PublicKey::from_bytes([0u8; 32]);
        // SHA-256 of 32 zero bytes starts 66687aadf862bd77.
        assert_eq!(pk.key_id(), "66687aadf862bd77");
        let other = key().public_key();
        assert_eq!(other.key_id().len(), 16);
        assert_ne!(other.key_id(), pk.key_id());
    }

    #[test]
    fn public_key_base64() {
        let pk = key().public_key();
        assert_eq!(PublicKey::from_base64(&pk.to_base64()), Ok(pk.clone()));
        assert_eq!(
            PublicKey::from_base64(&format!(" {}\n", pk.to_base64())),
            Ok(pk)
        );
        assert!(matches!(
            PublicKey::from_base64("%%%"),
            Err(LicenseError::BadKey(_))
        ));
        match PublicKey::from_base64(&BASE64.encode(&[1u8; 31])) {
            Err(LicenseError::BadKey(d)) => assert!(d.contains("31 bytes"), "{d}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn shipped_vendor_key_list_parses() {
        let ring = KeyRing::parse_list(VENDOR_KEYS).unwrap();
        assert_eq!(ring.keys().len(), KeyRing::vendor().keys().len());
    }

    #[test]
    fn parse_list_reads_keys_and_skips_comments() {
        let a = key().public_key();
        let b = key().public_key();
        let text = format!(
            "# vendor keys\n\n{} {}\n   # indented comment\n\t{}\t{}  \n{} {}\n",
            a.key_id(),
            a.to_base64(),
            b.key_id().to_uppercase(),
            b.to_base64(),
            a.key_id(),
            a.to_base64(),
        );
        let ring = KeyRing::parse_list(&text).unwrap();
        assert_eq!(
            ring.keys(),
            &[a.clone(), b.clone()],
            "duplicates are trusted once"
        );
        assert_eq!(ring.get(&a.key_id()), Some(&a));
        assert_eq!(ring.get(&b.key_id()), Some(&b));
        assert!(KeyRing::parse_list("# nothing\n")
            .unwrap()
            .keys()
            .is_empty());
    }

    #[test]
    fn parse_list_rejects_bad_lines_naming_the_line() {
        let a = key().public_key();
        let b = key().public_key();
        let expect = |text: String, needle: &str| match KeyRing::parse_list(&text) {
            Err(LicenseError::BadKey(d)) => assert!(d.contains(needle), "{d:?} lacks {needle:?}"),
            other => panic!("expected BadKey({needle}), got {other:?}"),
        };
        expect(
            format!("# c\n{}\n", a.to_base64()),
            "line 2 of the key list",
        );
        expect(
            format!("{} {} extra\n", a.key_id(), a.to_base64()),
            "line 1 of the key list",
        );
        expect(
            format!("{} %%%\n", a.key_id()),
            "line 1: the public key is not valid base64",
        );
        expect(
            format!("\n\n{} {}\n", b.key_id(), a.to_base64()),
            &format!(
                "line 3: key id {} does not match its key, whose id is {}",
                b.key_id(),
                a.key_id()
            ),
        );
    }

    #[test]
    fn key_ring_extend_merges_without_duplicates() {
        let a = key().public_key();
        let b = key().public_key();
        let mut ring = KeyRing::empty();
        ring.add(a.clone());
        let mut other = KeyRing::empty();
        other.add(a.clone());
        other.add(b.clone());
        ring.extend(other);
        assert_eq!(ring.keys(), &[a, b]);
    }

    // --- check: needs crate::hwid::compare and hardware_id ---

    #[test]
    fn check_accepts_the_bound_machine_in_term() {
        let p = payload();
        let v = check(&p, &bound(), NOW).unwrap();
        assert_eq!(v.hardware.verdict, MatchVerdict::Match);
    }

    #[test]
    fn check_refuses_another_machine() {
        let p = payload();
        let other = vec![
            component(ComponentKind::MachineId, 11),
            component(ComponentKind::DmiUuid, 12),
            component(ComponentKind::Mac, 13),
        ];
        assert_eq!(
            check(&p, &other, NOW),
            Err(LicenseError::WrongMachine {
                expected: "hw-bound".into(),
                actual: crate::hwid::hardware_id(&other),
            })
        );
    }

    #[test]
    fn check_allows_five_minutes_of_clock_skew() {
        let mut p = payload();
        p.issued_at = NOW + MAX_CLOCK_SKEW_SECS;
        assert!(check(&p, &bound(), NOW).is_ok());
        p.issued_at = NOW + MAX_CLOCK_SKEW_SECS + 1;
        assert_eq!(
            check(&p, &bound(), NOW),
            Err(LicenseError::NotYetValid(crate::time::rfc3339(p.issued_at)))
        );
    }

    #[test]
    fn check_refuses_an_ended_term() {
        let mut p = payload();
        p.term.ends_at = Some(NOW + 1);
        assert!(check(&p, &bound(), NOW).is_ok());
        p.term.ends_at = Some(NOW);
        assert_eq!(
            check(&p, &bound(), NOW),
            Err(LicenseError::Expired(crate::time::rfc3339(NOW)))
        );
        p.term = Term {
            kind: TermKind::Lifetime,
            ends_at: None,
        };
        assert!(check(&p, &bound(), i64::MAX).is_ok());
    }
}
