//! License files: the payload, the armored signed format, the key ring, the
//! states a license moves through, and the portal key format. No I/O here:
//! bytes in, verdict out.

pub mod clock;
pub mod file;
pub mod key;
pub mod payload;
pub mod ranges;
pub mod state;

pub use file::{
    check, parse, sign, verify, KeyRing, LicenseError, PublicKey, SignedLicense, SigningKey,
    Validity, MAX_CLOCK_SKEW_SECS, SIGNING_DOMAIN,
};
pub use key::{KeyError, PortalKey};
pub use payload::{
    CatalogEntry, Enforcement, EntryKind, LicenseKind, LicensePayload, Term, TermKind,
    TestModePolicy,
};
pub use state::{expiry_reason, next_step, state_at, transition, Event, LicenseState};
