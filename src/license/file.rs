//! The armored license file: canonical payload, Ed25519 signature, key id.

use crate::hwid::{Component, HwMatch};

use super::payload::LicensePayload;

/// A vendor's signing key. Only the portal and tests hold one.
pub struct SigningKey {
    _private: (),
}

impl SigningKey {
    /// A new key and its PKCS#8 document (to be stored by the caller).
    pub fn generate() -> (SigningKey, Vec<u8>) {
        unimplemented!()
    }
    pub fn from_pkcs8(pkcs8: &[u8]) -> Result<SigningKey, LicenseError> {
        let _ = pkcs8;
        unimplemented!()
    }
    pub fn public_key(&self) -> PublicKey {
        unimplemented!()
    }
    /// Signs arbitrary bytes (the portal signs protocol messages with it too).
    pub fn sign_bytes(&self, msg: &[u8]) -> Vec<u8> {
        let _ = msg;
        unimplemented!()
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
        unimplemented!()
    }
    pub fn to_base64(&self) -> String {
        unimplemented!()
    }
    pub fn from_base64(s: &str) -> Result<PublicKey, LicenseError> {
        let _ = s;
        unimplemented!()
    }
    pub fn verify_bytes(&self, msg: &[u8], sig: &[u8]) -> bool {
        let _ = (msg, sig);
        unimplemented!()
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
        unimplemented!()
    }
    pub fn empty() -> KeyRing {
        KeyRing::default()
    }
    pub fn add(&mut self, key: PublicKey) {
        self.keys.push(key);
    }
    pub fn get(&self, key_id: &str) -> Option<&PublicKey> {
        self.keys.iter().find(|k| k.key_id() == key_id)
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
}

/// Armors a signed payload.
pub fn sign(payload: &LicensePayload, key: &SigningKey) -> String {
    let _ = (payload, key);
    unimplemented!()
}

/// Decodes the armor without checking the signature.
pub fn parse(text: &str) -> Result<SignedLicense, LicenseError> {
    let _ = text;
    unimplemented!()
}

/// Parses and checks the signature; returns the payload it vouches for.
pub fn verify(text: &str, ring: &KeyRing) -> Result<LicensePayload, LicenseError> {
    let _ = (text, ring);
    unimplemented!()
}

/// How a verified license relates to this machine and this time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Validity {
    pub hardware: HwMatch,
}

/// Checks a verified payload against the current hardware and time
/// (`now` already raised to the clock high-water mark by the caller).
pub fn check(
    payload: &LicensePayload,
    current: &[Component],
    now: i64,
) -> Result<Validity, LicenseError> {
    let _ = (payload, current, now);
    unimplemented!()
}
