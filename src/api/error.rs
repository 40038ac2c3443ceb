//! Errors on the socket: `{"error": {"code": "...", "message": "..."}}` with
//! a real HTTP status. The code is for programs and never changes meaning;
//! the message is for people and may be reworded. docs/api.md lists every
//! code; docs/openapi.yaml has the same list as an enum.

use hyper::StatusCode;
use serde::{Deserialize, Serialize};

use crate::daemon::agent::users::RestoreError;
use crate::daemon::agent::{ImportError, TestModeError};
use crate::daemon::link::LinkError;
use crate::license::LicenseError;
use crate::portal::wire::ErrorCode as PortalCode;
use crate::portal::PortalError;
use crate::seats::SeatError;
use crate::store::StoreError;

/// Every error code of the API. Adding one is compatible; renaming or
/// removing one is a `/v2` change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Code {
    /// No route has this path (a typo, a trailing slash, another version).
    NotFound,
    /// The path exists, the method does not.
    MethodNotAllowed,
    /// The body or query string is malformed or misses a field.
    BadRequest,
    /// The body is larger than the route accepts.
    BodyTooLarge,
    /// The body did not arrive within `api.body_timeout_secs` (HTTP 408).
    BodyTimeout,
    /// The caller may read but not change.
    AccessDenied,
    /// The request came through a web page (`Origin` or `Referer`) on
    /// `/v1/`, or through `/ui/api/` from another site.
    OriginRefused,
    /// A change through `/ui/api/` without the header `X-Licagent-UI: 1`
    /// (what a cross-site form cannot send).
    CsrfRefused,
    /// The daemon could not do it (store error); the message says what.
    Internal,
    /// The store is on a read-only file system: reads work, changes do not.
    ReadOnly,
    /// Too many connections or requests; try again shortly.
    Busy,

    // License files and keys.
    /// The text is not a license file, or is damaged.
    NotALicense,
    /// A license file failed a check (signature, signer, machine, expiry).
    LicenseInvalid,
    /// Older than the installed license of the same system.
    LicenseOlder,
    /// Another system's license; `--replace` to switch (the message says
    /// what happens to the users).
    OtherSystem,
    /// A weaker license (a trial, test) would replace a full one; `trial`
    /// on a box with a full license is refused so (HTTP 409).
    Downgrade,
    /// The portal's answer does not answer this request or names another device.
    LicenseMismatch,
    /// The PBX key has a typo or the wrong shape (checked locally).
    KeyInvalid,

    // The portal.
    /// No portal URL is configured.
    PortalNotConfigured,
    /// Nothing to refresh or deactivate: no license from the portal is installed.
    NothingToRefresh,
    /// The portal does not know the key.
    UnknownKey,
    /// The portal does not know the system.
    UnknownSystem,
    /// The license is bound to another box; `activate KEY --rehost` moves it.
    BoundElsewhere,
    /// The portal saw this system refresh from two boxes (a cloned image)
    /// and keeps the other one; `activate KEY --rehost` moves it here.
    Duplicate,
    /// The portal's rehost limit for the period is reached.
    RehostLimit,
    /// This machine's trial was used.
    TrialUsed,
    /// The portal refused the request for another reason (message says which).
    PortalRefused,
    /// The portal revoked the license.
    Revoked,
    /// The portal could not be reached, was not trusted, answered garbage
    /// or failed itself (HTTP 502).
    PortalUnreachable,
    /// The portal did not answer in time (HTTP 504).
    PortalTimeout,

    // Test mode and trial.
    TestModeOn,
    TestModeOff,
    /// The vendor's policy in the license turns test mode off.
    TestModeDisabled,
    /// The vendor's policy asks for a pause between sessions.
    TestModeCooldown,

    // Users and seats.
    UnknownUser,
    DuplicateUser,
    DuplicateExtension,
    SecondAdmin,
    /// No license is in force, so nothing can be assigned.
    NoLicense,
    /// Hard enforcement: every seat of the code is taken.
    NoSeatFree,
    /// The license has no such profile or add-on.
    UnknownCode,
    /// A prerequisite is missing, or a change would break one.
    MissingPrerequisite,
    /// The user still holds add-ons / does not hold this add-on / has no profile.
    HoldingConflict,
    /// A field has a value outside its rule.
    InvalidValue,
    /// The change raced another one; send it again.
    Conflict,
    /// A bulk import has bad rows; `rows` lists them.
    CsvInvalid,
    /// A restore was refused (other system, not empty, wrong layout).
    RestoreRefused,
}

/// The error object, inside `{"error": ...}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    pub code: Code,
    pub message: String,
    /// Every bad row of a refused bulk import.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rows: Vec<crate::seats::RowError>,
}

/// Every error body: `{"error": {...}}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ApiError,
}

impl ApiError {
    pub fn new(code: Code, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
            rows: Vec::new(),
        }
    }
}

/// The HTTP status and code of a portal-link failure: 4xx for what the
/// caller or the portal decided, 502/504 for a portal that could not be
/// reached, understood, or that failed itself.
pub fn link(e: &LinkError) -> (StatusCode, Code) {
    match e {
        LinkError::Key(_) => (StatusCode::BAD_REQUEST, Code::KeyInvalid),
        LinkError::License(e) => import(e),
        LinkError::NothingToRefresh => (StatusCode::CONFLICT, Code::NothingToRefresh),
        LinkError::Revoked(_) => (StatusCode::GONE, Code::Revoked),
        LinkError::Portal(p) => portal(p),
    }
}

fn portal(p: &PortalError) -> (StatusCode, Code) {
    const UNPROCESSABLE: StatusCode = StatusCode::UNPROCESSABLE_ENTITY;
    match p {
        PortalError::NotConfigured => (StatusCode::CONFLICT, Code::PortalNotConfigured),
        PortalError::Timeout(_) => (StatusCode::GATEWAY_TIMEOUT, Code::PortalTimeout),
        PortalError::Refused { code, .. } => match code {
            PortalCode::UnknownKey => (UNPROCESSABLE, Code::UnknownKey),
            PortalCode::UnknownSystem => (UNPROCESSABLE, Code::UnknownSystem),
            PortalCode::BoundElsewhere => (StatusCode::CONFLICT, Code::BoundElsewhere),
            PortalCode::Duplicate => (StatusCode::CONFLICT, Code::Duplicate),
            PortalCode::RehostLimit => (StatusCode::TOO_MANY_REQUESTS, Code::RehostLimit),
            PortalCode::TrialUsed => (StatusCode::CONFLICT, Code::TrialUsed),
            PortalCode::Revoked => (StatusCode::GONE, Code::Revoked),
            PortalCode::BadRequest
            | PortalCode::BadSignature
            | PortalCode::StaleRequest
            | PortalCode::Replayed => (UNPROCESSABLE, Code::PortalRefused),
            // The portal failed itself: trouble on its side, not a verdict.
            PortalCode::Internal | PortalCode::Unknown => {
                (StatusCode::BAD_GATEWAY, Code::PortalUnreachable)
            }
        },
        PortalError::Setup(_)
        | PortalError::Unreachable { .. }
        | PortalError::Untrusted { .. }
        | PortalError::Garbage(_) => (StatusCode::BAD_GATEWAY, Code::PortalUnreachable),
    }
}

pub fn import(e: &ImportError) -> (StatusCode, Code) {
    const UNPROCESSABLE: StatusCode = StatusCode::UNPROCESSABLE_ENTITY;
    match e {
        ImportError::Invalid(LicenseError::NotALicense)
        | ImportError::Invalid(LicenseError::Damaged(_)) => {
            (StatusCode::BAD_REQUEST, Code::NotALicense)
        }
        ImportError::Invalid(_) => (UNPROCESSABLE, Code::LicenseInvalid),
        ImportError::Older { .. } => (UNPROCESSABLE, Code::LicenseOlder),
        ImportError::WrongNonce | ImportError::WrongDevice => {
            (UNPROCESSABLE, Code::LicenseMismatch)
        }
        ImportError::OtherSystem { .. } => (StatusCode::CONFLICT, Code::OtherSystem),
        ImportError::Weaker { .. } => (StatusCode::CONFLICT, Code::Downgrade),
        ImportError::Store(e) => store(e),
    }
}

/// A store failure: the read-only state directory is its own code (reads
/// still work; the sentence names the file system), the rest is internal.
pub fn store(e: &StoreError) -> (StatusCode, Code) {
    match e {
        StoreError::ReadOnly(_) => (StatusCode::SERVICE_UNAVAILABLE, Code::ReadOnly),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, Code::Internal),
    }
}

pub fn test_mode(e: &TestModeError) -> (StatusCode, Code) {
    match e {
        TestModeError::AlreadyOn(_) => (StatusCode::CONFLICT, Code::TestModeOn),
        TestModeError::NotOn => (StatusCode::CONFLICT, Code::TestModeOff),
        TestModeError::Off => (StatusCode::CONFLICT, Code::TestModeDisabled),
        TestModeError::CoolingDown { .. } => (StatusCode::CONFLICT, Code::TestModeCooldown),
        TestModeError::Store(e) => store(e),
    }
}

pub fn seat(e: &SeatError) -> (StatusCode, Code) {
    const CONFLICT: StatusCode = StatusCode::CONFLICT;
    const UNPROCESSABLE: StatusCode = StatusCode::UNPROCESSABLE_ENTITY;
    match e {
        SeatError::UnknownUser { .. } => (StatusCode::NOT_FOUND, Code::UnknownUser),
        SeatError::NoSeat { .. } => (CONFLICT, Code::NoSeatFree),
        SeatError::DuplicateUser { .. } => (CONFLICT, Code::DuplicateUser),
        SeatError::DuplicateExtension { .. } => (CONFLICT, Code::DuplicateExtension),
        SeatError::SecondAdmin { .. } => (CONFLICT, Code::SecondAdmin),
        SeatError::NoLicense => (CONFLICT, Code::NoLicense),
        SeatError::StalePlan => (CONFLICT, Code::Conflict),
        SeatError::UnknownProfile { .. } | SeatError::UnknownAddon { .. } => {
            (UNPROCESSABLE, Code::UnknownCode)
        }
        SeatError::BadDefault { .. } => (UNPROCESSABLE, Code::UnknownCode),
        SeatError::MissingPrerequisite { .. } | SeatError::BreaksPrerequisite { .. } => {
            (UNPROCESSABLE, Code::MissingPrerequisite)
        }
        SeatError::AddonNeedsProfile { .. }
        | SeatError::AddonsHeld { .. }
        | SeatError::AddonNotHeld { .. } => (UNPROCESSABLE, Code::HoldingConflict),
        SeatError::Invalid { .. } => (UNPROCESSABLE, Code::InvalidValue),
        SeatError::Store(e) => store(e),
    }
}

pub fn restore(e: &RestoreError) -> (StatusCode, Code) {
    match e {
        RestoreError::Store(e) => store(e),
        RestoreError::NoLicense => (StatusCode::CONFLICT, Code::NoLicense),
        RestoreError::NotEmpty(_) => (StatusCode::CONFLICT, Code::RestoreRefused),
        RestoreError::OtherSystem { .. } | RestoreError::Format(_) => {
            (StatusCode::UNPROCESSABLE_ENTITY, Code::RestoreRefused)
        }
        RestoreError::Bad { .. } => (StatusCode::UNPROCESSABLE_ENTITY, Code::InvalidValue),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_nests_code_and_message() {
        let body = ErrorBody {
            error: ApiError::new(Code::UnknownUser, "there is no user '7'"),
        };
        let text = serde_json::to_string(&body).unwrap();
        assert_eq!(
            text,
            r#"{"error":{"code":"unknown_user","message":"there is no user '7'"}}"#
        );
    }

    #[test]
    fn portal_trouble_is_a_gateway_error_not_a_refusal() {
        let failed = PortalError::Refused {
            code: PortalCode::Internal,
            message: "boom".into(),
            revocation: None,
            stamp: None,
        };
        assert_eq!(
            portal(&failed),
            (StatusCode::BAD_GATEWAY, Code::PortalUnreachable)
        );
        assert_eq!(
            portal(&PortalError::Timeout(15)),
            (StatusCode::GATEWAY_TIMEOUT, Code::PortalTimeout)
        );
        let bound = PortalError::Refused {
            code: PortalCode::BoundElsewhere,
            message: "elsewhere".into(),
            revocation: None,
            stamp: None,
        };
        assert_eq!(portal(&bound), (StatusCode::CONFLICT, Code::BoundElsewhere));
    }
}
