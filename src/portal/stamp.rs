//! The portal's time stamp: its clock, signed with its license signing key
//! and bound to the nonce of the request it answers (protocol version 2).
//! Every answer to a request that carried a nonce holds one, errors
//! included, so that an agent whose clock is wrong learns the right time
//! even from a refusal. No I/O here.

use data_encoding::BASE64;
use serde::{Deserialize, Serialize};

use super::wire::ErrorCode;
use crate::license::{KeyRing, SigningKey};

/// Prefix of the signed message of a time stamp, so that it can never be
/// taken for any other signature by the same key.
pub const STAMP_CONTEXT: &[u8] = b"licagent-time-v1\0";

/// What the portal states: its time when it answered this nonce, and the
/// error code of the answer (`null` for a success), so that a refusal such
/// as `duplicate` is signed too.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    pub nonce: String,
    /// Unix seconds on the portal's clock.
    pub now: i64,
    /// The same to the millisecond, so that deadlines land within a
    /// second of their time on the agent.
    #[serde(default)]
    pub now_ms: Option<i64>,
    #[serde(default)]
    pub code: Option<ErrorCode>,
}

/// A [`Stamp`] as its signed bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedStamp {
    /// Base64 of the JSON bytes of a [`Stamp`].
    pub statement: String,
    pub key_id: String,
    /// Base64 Ed25519 signature over [`STAMP_CONTEXT`] + statement bytes.
    pub signature: String,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StampError {
    #[error("the portal's time stamp is signed by an unknown key (key id {0}); it is ignored")]
    UnknownSigner(String),
    #[error("the portal's time stamp has no valid signature; it is ignored")]
    BadSignature,
    #[error("the portal's time stamp answers another request; it is ignored")]
    WrongNonce,
}

fn message(statement: &[u8]) -> Vec<u8> {
    let mut msg = Vec::with_capacity(STAMP_CONTEXT.len() + statement.len());
    msg.extend_from_slice(STAMP_CONTEXT);
    msg.extend_from_slice(statement);
    msg
}

impl Stamp {
    /// The portal's time in milliseconds (from `now` when `now_ms` is
    /// missing or disagrees with it).
    pub fn millis(&self) -> i64 {
        match self.now_ms {
            Some(ms) if ms.div_euclid(1000) == self.now => ms,
            _ => self.now.saturating_mul(1000),
        }
    }
}

impl SignedStamp {
    pub fn sign(stamp: &Stamp, key: &SigningKey) -> SignedStamp {
        // A struct of strings and integers always serializes.
        let statement = serde_json::to_vec(stamp).unwrap_or_default();
        SignedStamp {
            signature: BASE64.encode(&key.sign_bytes(&message(&statement))),
            statement: BASE64.encode(&statement),
            key_id: key.public_key().key_id(),
        }
    }

    /// The stamp, if a trusted key signed it and it answers `nonce`.
    pub fn verify_for(&self, ring: &KeyRing, nonce: &str) -> Result<Stamp, StampError> {
        let key = ring
            .get(&self.key_id)
            .ok_or_else(|| StampError::UnknownSigner(self.key_id.clone()))?;
        let statement = BASE64
            .decode(self.statement.as_bytes())
            .map_err(|_| StampError::BadSignature)?;
        let sig = BASE64
            .decode(self.signature.as_bytes())
            .map_err(|_| StampError::BadSignature)?;
        if !key.verify_bytes(&message(&statement), &sig) {
            return Err(StampError::BadSignature);
        }
        let stamp: Stamp =
            serde_json::from_slice(&statement).map_err(|_| StampError::BadSignature)?;
        if stamp.nonce != nonce {
            return Err(StampError::WrongNonce);
        }
        Ok(stamp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::portal::wire::new_nonce;

    fn ring_of(key: &SigningKey) -> KeyRing {
        let mut ring = KeyRing::empty();
        ring.add(key.public_key());
        ring
    }

    #[test]
    fn a_stamp_verifies_for_its_nonce_only() {
        let (key, _) = SigningKey::generate();
        let nonce = new_nonce();
        let stamp = Stamp {
            nonce: nonce.clone(),
            now: 1_800_000_000,
            now_ms: Some(1_800_000_000_123),
            code: Some(ErrorCode::StaleRequest),
        };
        let signed = SignedStamp::sign(&stamp, &key);
        assert_eq!(signed.verify_for(&ring_of(&key), &nonce), Ok(stamp));
        assert_eq!(
            signed.verify_for(&ring_of(&key), &new_nonce()),
            Err(StampError::WrongNonce)
        );
    }

    #[test]
    fn a_changed_or_foreign_stamp_is_refused() {
        let (key, _) = SigningKey::generate();
        let (other, _) = SigningKey::generate();
        let nonce = new_nonce();
        let stamp = Stamp {
            nonce: nonce.clone(),
            now: 1_800_000_000,
            now_ms: None,
            code: None,
        };
        let mut signed = SignedStamp::sign(&stamp, &key);
        assert_eq!(
            signed.verify_for(&ring_of(&other), &nonce),
            Err(StampError::UnknownSigner(key.public_key().key_id()))
        );
        let later = Stamp {
            now: 1_900_000_000,
            ..stamp
        };
        signed.statement = BASE64.encode(&serde_json::to_vec(&later).unwrap());
        assert_eq!(
            signed.verify_for(&ring_of(&key), &nonce),
            Err(StampError::BadSignature)
        );
    }
}
