//! Wire types of the agent ↔ portal protocol (docs/protocol.md).
//!
//! One definition of the contract: the agent's HTTPS client and `licportal`
//! both serialize these. It also owns the two signatures the protocol adds on
//! top of license files — the device's signature over a request body and the
//! portal's signature over a revocation statement — and the offline request
//! code. No I/O here.

use std::collections::BTreeMap;

use data_encoding::BASE64;
use serde::{Deserialize, Serialize};

use crate::hwid::Component;
use crate::license::{KeyRing, PublicKey, SigningKey};

/// Header carrying the device's signature over a request body.
pub const SIGNATURE_HEADER: &str = "Licagent-Signature";

/// Header carrying the protocol version the agent speaks. Absent means 1
/// (agents before trusted time); the portal serves both.
pub const PROTOCOL_HEADER: &str = "Licagent-Protocol";

/// The protocol version of this build. 2 added the portal's signed time
/// stamp to every answer ([`SignedStamp`]) and the `duplicate` error.
pub const PROTOCOL_VERSION: u32 = 2;

pub use super::stamp::{SignedStamp, Stamp, StampError};

/// Prefix of the signed message of a request, so that a request signature can
/// never be replayed as any other kind of signature by the same key.
pub const REQUEST_CONTEXT: &[u8] = b"licagent-request-v1\0";

/// Prefix of the signed message of a revocation statement (same reason).
pub const REVOCATION_CONTEXT: &[u8] = b"licagent-revocation-v1\0";

/// How far `sent_at` may be from the portal's clock, in seconds.
pub const MAX_CLOCK_SKEW_SECS: i64 = 300;

/// Raw length of a nonce.
pub const NONCE_LEN: usize = 16;

/// The largest request body the portal reads.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

pub const ACTIVATE_PATH: &str = "/v1/activate";
pub const REHOST_PATH: &str = "/v1/rehost";
pub const REFRESH_PATH: &str = "/v1/refresh";
pub const DEACTIVATE_PATH: &str = "/v1/deactivate";
pub const TRIAL_PATH: &str = "/v1/trial";

/// `POST /v1/activate` (and `POST /v1/rehost`, same body).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivateRequest {
    /// The PBX key as the admin pasted it; the portal canonicalizes it.
    pub key: String,
    pub hardware_id: String,
    pub components: Vec<Component>,
    /// Base64 of the device's 32-byte Ed25519 public key.
    pub device_public_key: String,
    /// Base64 of 16 random bytes; the license echoes it.
    pub nonce: String,
    pub agent_version: String,
}

/// `POST /v1/trial`: a trial license for this machine, once per hardware ID.
/// Answered with a [`LicenseResponse`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrialRequest {
    pub hardware_id: String,
    pub components: Vec<Component>,
    /// Base64 of the device's 32-byte Ed25519 public key.
    pub device_public_key: String,
    /// Base64 of 16 random bytes; the license echoes it.
    pub nonce: String,
    pub agent_version: String,
}

/// The answer to activate, rehost, refresh and trial.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LicenseResponse {
    /// An armored license file.
    pub license: String,
    /// The portal's time, bound to the request's nonce (protocol 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stamp: Option<SignedStamp>,
}

/// `POST /v1/refresh`, signed with [`SIGNATURE_HEADER`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshRequest {
    pub system_id: String,
    /// The license the agent holds now.
    pub license_id: String,
    pub hardware_id: String,
    pub components: Vec<Component>,
    /// Seats assigned per profile code, for the vendor's view of use.
    pub seats_in_use: BTreeMap<String, u32>,
    pub nonce: String,
    /// Unix seconds of the agent's trusted time.
    pub sent_at: i64,
    /// Test mode sessions that ended since the last refresh the portal
    /// took (protocol 2; absent or empty otherwise).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub test_sessions: Vec<TestSession>,
}

/// One test mode session, as the agent reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestSession {
    /// Unix seconds.
    pub started_at: i64,
    pub ended_at: i64,
    /// `ran_out` or `stopped`.
    pub how: String,
}

/// `POST /v1/deactivate`, signed with [`SIGNATURE_HEADER`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeactivateRequest {
    pub system_id: String,
    pub license_id: String,
    pub nonce: String,
    pub sent_at: i64,
}

/// The answer to deactivate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeactivateResponse {
    pub released: bool,
    /// The portal's time, bound to the request's nonce (protocol 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stamp: Option<SignedStamp>,
}

/// The machine-readable reason of an error answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadRequest,
    UnknownKey,
    UnknownSystem,
    BoundElsewhere,
    Revoked,
    BadSignature,
    StaleRequest,
    Replayed,
    Internal,
    /// The PBX was rehosted as often as the portal allows in its period;
    /// the message says when the next rehost is possible.
    RehostLimit,
    /// This machine's trial ended; only a PBX key licenses it now.
    TrialUsed,
    /// Protocol 2: the system refreshes from two boxes (a cloned image);
    /// the portal keeps the first and refuses the other. Agents of
    /// protocol 1 get `bound_elsewhere` instead.
    Duplicate,
    /// A code this build does not know (a newer portal); treat as a failure
    /// to retry later, never as a revocation.
    #[serde(other)]
    Unknown,
}

impl ErrorCode {
    /// The HTTP status the portal answers with.
    pub fn status(self) -> u16 {
        match self {
            ErrorCode::BadRequest => 400,
            ErrorCode::UnknownKey | ErrorCode::UnknownSystem => 404,
            ErrorCode::BoundElsewhere | ErrorCode::TrialUsed | ErrorCode::Duplicate => 409,
            ErrorCode::RehostLimit => 429,
            ErrorCode::Revoked => 410,
            ErrorCode::BadSignature | ErrorCode::StaleRequest | ErrorCode::Replayed => 401,
            ErrorCode::Internal | ErrorCode::Unknown => 500,
        }
    }
}

/// The body of every error answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
    /// Present with [`ErrorCode::Revoked`] only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revocation: Option<SignedRevocation>,
    /// The portal's time and this answer's code, bound to the request's
    /// nonce (protocol 2; absent when the request had no readable nonce).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stamp: Option<SignedStamp>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub code: ErrorCode,
    /// One sentence for a person.
    pub message: String,
}

impl ErrorBody {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code,
                message: message.into(),
            },
            revocation: None,
            stamp: None,
        }
    }
}

/// What the portal states when it tells a device that its license is gone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    pub system_id: String,
    /// The nonce of the request answered, so that a statement cannot be
    /// replayed to the device later.
    pub nonce: String,
    /// Unix seconds.
    pub revoked_at: i64,
    pub reason: String,
    /// The hardware ID the system moved to, after a rehost.
    pub moved_to: Option<String>,
}

/// A revocation statement signed by the portal's license signing key.
///
/// The statement stays as the exact bytes that were signed; the verifier
/// parses only what it has checked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedRevocation {
    /// Base64 of the JSON bytes of a [`Revocation`].
    pub statement: String,
    pub key_id: String,
    /// Base64 Ed25519 signature over [`REVOCATION_CONTEXT`] + statement bytes.
    pub signature: String,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("the revocation is signed by an unknown key (key id {0}); it is ignored")]
    UnknownSigner(String),
    #[error("the revocation signature is not valid; it is ignored")]
    BadSignature,
    #[error("the revocation is damaged: {0}")]
    DamagedRevocation(String),
    #[error(
        "the revocation answers another request (system {system_id}, nonce {nonce}); it is ignored"
    )]
    RevocationMismatch { system_id: String, nonce: String },
    #[error("this is not a licagent request code (no BEGIN LICAGENT REQUEST line found)")]
    NotARequestCode,
    #[error("the request code is cut off (no END LICAGENT REQUEST line); copy the whole block")]
    TruncatedRequestCode,
    #[error("the request code is damaged: {0}; copy it again")]
    DamagedRequestCode(String),
}

fn revocation_message(statement: &[u8]) -> Vec<u8> {
    let mut msg = Vec::with_capacity(REVOCATION_CONTEXT.len() + statement.len());
    msg.extend_from_slice(REVOCATION_CONTEXT);
    msg.extend_from_slice(statement);
    msg
}

impl SignedRevocation {
    /// Signs a statement with the portal's key.
    pub fn sign(revocation: &Revocation, key: &SigningKey) -> SignedRevocation {
        // Serializing a struct of strings and integers cannot fail.
        let statement = serde_json::to_vec(revocation).unwrap_or_default();
        let signature = key.sign_bytes(&revocation_message(&statement));
        SignedRevocation {
            statement: BASE64.encode(&statement),
            key_id: key.public_key().key_id(),
            signature: BASE64.encode(&signature),
        }
    }

    /// Checks the signature against the trusted keys and returns the statement.
    /// The caller must still compare `system_id` and `nonce` with its request
    /// ([`SignedRevocation::verify_for`] does both).
    pub fn verify(&self, ring: &KeyRing) -> Result<Revocation, WireError> {
        let key = ring
            .get(&self.key_id)
            .ok_or_else(|| WireError::UnknownSigner(self.key_id.clone()))?;
        let statement = BASE64
            .decode(self.statement.as_bytes())
            .map_err(|e| WireError::DamagedRevocation(format!("statement is not base64 ({e})")))?;
        let signature = BASE64
            .decode(self.signature.as_bytes())
            .map_err(|_| WireError::BadSignature)?;
        if !key.verify_bytes(&revocation_message(&statement), &signature) {
            return Err(WireError::BadSignature);
        }
        serde_json::from_slice(&statement)
            .map_err(|e| WireError::DamagedRevocation(format!("statement is not valid JSON ({e})")))
    }

    /// [`SignedRevocation::verify`], then checks that the statement answers
    /// this system's request with this nonce.
    pub fn verify_for(
        &self,
        ring: &KeyRing,
        system_id: &str,
        nonce: &str,
    ) -> Result<Revocation, WireError> {
        let revocation = self.verify(ring)?;
        if revocation.system_id != system_id || revocation.nonce != nonce {
            return Err(WireError::RevocationMismatch {
                system_id: revocation.system_id,
                nonce: revocation.nonce,
            });
        }
        Ok(revocation)
    }
}

fn request_message(body: &[u8]) -> Vec<u8> {
    let mut msg = Vec::with_capacity(REQUEST_CONTEXT.len() + body.len());
    msg.extend_from_slice(REQUEST_CONTEXT);
    msg.extend_from_slice(body);
    msg
}

/// The value of [`SIGNATURE_HEADER`] for a body: the device key's signature
/// over [`REQUEST_CONTEXT`] + the exact body bytes, base64.
pub fn sign_request(body: &[u8], key: &SigningKey) -> String {
    BASE64.encode(&key.sign_bytes(&request_message(body)))
}

/// Whether `sig_b64` is the device's signature over this exact body.
pub fn verify_request(body: &[u8], sig_b64: &str, key: &PublicKey) -> bool {
    match BASE64.decode(sig_b64.trim().as_bytes()) {
        Ok(sig) => key.verify_bytes(&request_message(body), &sig),
        Err(_) => false,
    }
}

/// A fresh nonce: base64 of [`NONCE_LEN`] random bytes.
pub fn new_nonce() -> String {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; NONCE_LEN];
    // getrandom(2) does not fail on a running Linux kernel. Were it to, the
    // all-zero nonce would be caught by the portal's replay check on its
    // second use, which is the worst this can cause.
    let _ = ring::rand::SystemRandom::new().fill(&mut bytes);
    BASE64.encode(&bytes)
}

/// Whether a nonce is base64 of exactly [`NONCE_LEN`] bytes.
pub fn nonce_is_valid(nonce: &str) -> bool {
    matches!(BASE64.decode(nonce.as_bytes()), Ok(b) if b.len() == NONCE_LEN)
}

const REQUEST_BEGIN: &str = "-----BEGIN LICAGENT REQUEST-----";
const REQUEST_END: &str = "-----END LICAGENT REQUEST-----";
const ARMOR_WIDTH: usize = 64;

/// The offline activation request: what an air-gapped PBX carries out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestCode {
    pub key: String,
    pub hardware_id: String,
    pub components: Vec<Component>,
    pub device_public_key: String,
    pub nonce: String,
}

impl RequestCode {
    /// Armored text, safe to paste into a mail or a web form.
    pub fn encode(&self) -> String {
        // Serializing strings and plain enums cannot fail.
        let json = serde_json::to_vec(self).unwrap_or_default();
        let b64 = BASE64.encode(&json);
        let mut out = String::with_capacity(b64.len() + b64.len() / ARMOR_WIDTH + 80);
        out.push_str(REQUEST_BEGIN);
        out.push('\n');
        // Base64 is ASCII, so byte chunks are character chunks.
        for chunk in b64.as_bytes().chunks(ARMOR_WIDTH) {
            out.push_str(&String::from_utf8_lossy(chunk));
            out.push('\n');
        }
        out.push_str(REQUEST_END);
        out.push('\n');
        out
    }

    /// Reads a request code out of any text around it (a mail, a ticket):
    /// only the block between the armor lines counts, and blank space and
    /// mail quoting (`>`) inside it are ignored.
    pub fn decode(text: &str) -> Result<RequestCode, WireError> {
        let start = text.find(REQUEST_BEGIN).ok_or(WireError::NotARequestCode)?;
        let rest = &text[start + REQUEST_BEGIN.len()..];
        let end = rest
            .find(REQUEST_END)
            .ok_or(WireError::TruncatedRequestCode)?;
        let b64: String = rest[..end]
            .chars()
            .filter(|c| !c.is_whitespace() && *c != '>')
            .collect();
        let json = BASE64.decode(b64.as_bytes()).map_err(|e| {
            WireError::DamagedRequestCode(format!("its text is not valid base64 ({e})"))
        })?;
        serde_json::from_slice(&json).map_err(|e| {
            WireError::DamagedRequestCode(format!("its content is not a request ({e})"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hwid::ComponentKind;

    fn components() -> Vec<Component> {
        vec![
            Component {
                kind: ComponentKind::MachineId,
                hash: "aa".repeat(32),
            },
            Component {
                kind: ComponentKind::Mac,
                hash: "bb".repeat(32),
            },
        ]
    }

    fn request_code() -> RequestCode {
        RequestCode {
            key: "ABCD-EFGH-JKMN-PQRS".into(),
            hardware_id: "hw-1234".into(),
            components: components(),
            device_public_key: BASE64.encode(&[7u8; 32]),
            nonce: new_nonce(),
        }
    }

    fn revocation() -> Revocation {
        Revocation {
            system_id: "SYS-AAAA-BBBB".into(),
            nonce: new_nonce(),
            revoked_at: 1_700_000_000,
            reason: "rehosted".into(),
            moved_to: Some("hw-new".into()),
        }
    }

    #[test]
    fn request_signature_round_trips() {
        let (key, _) = SigningKey::generate();
        let body = br#"{"system_id":"SYS-AAAA-BBBB"}"#;
        let sig = sign_request(body, &key);
        assert!(verify_request(body, &sig, &key.public_key()));
    }

    #[test]
    fn request_signature_rejects_a_changed_body() {
        let (key, _) = SigningKey::generate();
        let sig = sign_request(br#"{"seats":1}"#, &key);
        assert!(!verify_request(br#"{"seats":2}"#, &sig, &key.public_key()));
    }

    #[test]
    fn request_signature_rejects_another_key_and_garbage() {
        let (key, _) = SigningKey::generate();
        let (other, _) = SigningKey::generate();
        let body = b"{}";
        let sig = sign_request(body, &key);
        assert!(!verify_request(body, &sig, &other.public_key()));
        assert!(!verify_request(body, "not base64!", &key.public_key()));
    }

    #[test]
    fn request_signature_is_bound_to_its_context() {
        // A plain signature over the body (no context) must not pass.
        let (key, _) = SigningKey::generate();
        let body = b"{}";
        let plain = BASE64.encode(&key.sign_bytes(body));
        assert!(!verify_request(body, &plain, &key.public_key()));
    }

    #[test]
    fn revocation_round_trips() {
        let (key, _) = SigningKey::generate();
        let mut ring = KeyRing::empty();
        ring.add(key.public_key());
        let rev = revocation();
        let signed = SignedRevocation::sign(&rev, &key);
        assert_eq!(signed.verify(&ring), Ok(rev.clone()));
        assert_eq!(
            signed.verify_for(&ring, &rev.system_id, &rev.nonce),
            Ok(rev)
        );
    }

    #[test]
    fn revocation_rejects_a_changed_statement() {
        let (key, _) = SigningKey::generate();
        let mut ring = KeyRing::empty();
        ring.add(key.public_key());
        let mut signed = SignedRevocation::sign(&revocation(), &key);
        let mut forged = revocation();
        forged.system_id = "SYS-OTHER-ONE1".into();
        signed.statement = BASE64.encode(&serde_json::to_vec(&forged).unwrap());
        assert_eq!(signed.verify(&ring), Err(WireError::BadSignature));
    }

    #[test]
    fn revocation_rejects_an_unknown_signer() {
        let (key, _) = SigningKey::generate();
        let (other, _) = SigningKey::generate();
        let mut ring = KeyRing::empty();
        ring.add(other.public_key());
        let signed = SignedRevocation::sign(&revocation(), &key);
        assert_eq!(
            signed.verify(&ring),
            Err(WireError::UnknownSigner(key.public_key().key_id()))
        );
    }

    #[test]
    fn revocation_rejects_a_signature_under_the_wrong_key_id() {
        // The key id names a trusted key but another key signed.
        let (key, _) = SigningKey::generate();
        let (other, _) = SigningKey::generate();
        let mut ring = KeyRing::empty();
        ring.add(key.public_key());
        let mut signed = SignedRevocation::sign(&revocation(), &other);
        signed.key_id = key.public_key().key_id();
        assert_eq!(signed.verify(&ring), Err(WireError::BadSignature));
    }

    #[test]
    fn revocation_for_another_request_is_refused() {
        let (key, _) = SigningKey::generate();
        let mut ring = KeyRing::empty();
        ring.add(key.public_key());
        let rev = revocation();
        let signed = SignedRevocation::sign(&rev, &key);
        assert!(matches!(
            signed.verify_for(&ring, &rev.system_id, &new_nonce()),
            Err(WireError::RevocationMismatch { .. })
        ));
        assert!(matches!(
            signed.verify_for(&ring, "SYS-ZZZZ-ZZZZ", &rev.nonce),
            Err(WireError::RevocationMismatch { .. })
        ));
    }

    #[test]
    fn request_code_round_trips_and_is_wrapped() {
        let code = request_code();
        let text = code.encode();
        assert!(text.starts_with(REQUEST_BEGIN));
        assert!(text.trim_end().ends_with(REQUEST_END));
        assert!(text
            .lines()
            .all(|l| l.len() <= ARMOR_WIDTH || l.starts_with("-----")));
        assert!(text.lines().count() > 3, "the body must span several lines");
        assert_eq!(RequestCode::decode(&text), Ok(code));
    }

    #[test]
    fn request_code_decodes_from_a_quoted_mail() {
        let code = request_code();
        let quoted: String = code
            .encode()
            .lines()
            .map(|l| format!(">  {l}\r\n"))
            .collect();
        let mail = format!("Hello,\n\nhere is the code:\n\n{quoted}\nThanks, the field tech\n");
        assert_eq!(RequestCode::decode(&mail), Ok(code));
    }

    #[test]
    fn request_code_errors_name_the_problem() {
        assert_eq!(
            RequestCode::decode("just some text"),
            Err(WireError::NotARequestCode)
        );
        let text = request_code().encode();
        let cut = &text[..text.len() / 2];
        assert_eq!(
            RequestCode::decode(cut),
            Err(WireError::TruncatedRequestCode)
        );
        // A character that is not base64 inside the body.
        let damaged = text.replacen('\n', "\n*", 1);
        assert!(matches!(
            RequestCode::decode(&damaged),
            Err(WireError::DamagedRequestCode(_))
        ));
        let not_json = format!(
            "{REQUEST_BEGIN}\n{}\n{REQUEST_END}\n",
            BASE64.encode(b"not json")
        );
        assert!(matches!(
            RequestCode::decode(&not_json),
            Err(WireError::DamagedRequestCode(_))
        ));
    }

    #[test]
    fn error_codes_are_snake_case_with_their_status() {
        let body = ErrorBody::new(ErrorCode::BoundElsewhere, "elsewhere");
        let json = serde_json::to_string(&body).unwrap();
        assert_eq!(
            json,
            r#"{"error":{"code":"bound_elsewhere","message":"elsewhere"}}"#
        );
        assert_eq!(ErrorCode::BoundElsewhere.status(), 409);
        assert_eq!(ErrorCode::Revoked.status(), 410);
        assert_eq!(ErrorCode::StaleRequest.status(), 401);
        assert_eq!(ErrorCode::UnknownSystem.status(), 404);
        assert_eq!(ErrorCode::RehostLimit.status(), 429);
        assert_eq!(ErrorCode::TrialUsed.status(), 409);
        for (code, text) in [
            (ErrorCode::RehostLimit, "\"rehost_limit\""),
            (ErrorCode::TrialUsed, "\"trial_used\""),
        ] {
            assert_eq!(serde_json::to_string(&code).unwrap(), text);
            assert_eq!(serde_json::from_str::<ErrorCode>(text).unwrap(), code);
        }
        let parsed: ErrorBody =
            serde_json::from_str(r#"{"error":{"code":"something_new","message":"m"}}"#).unwrap();
        assert_eq!(parsed.error.code, ErrorCode::Unknown);
    }

    #[test]
    fn nonces_are_random_and_valid() {
        let a = new_nonce();
        assert!(nonce_is_valid(&a));
        assert_ne!(a, new_nonce());
        assert!(!nonce_is_valid("AAAA"));
        assert!(!nonce_is_valid("not base64"));
    }
}
