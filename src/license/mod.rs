//! License files: the payload, the armored signed format, the key ring, the
//! states a license moves through, and the portal key format. No I/O here:
//! bytes in, verdict out.

pub mod file;
pub mod key;
pub mod payload;
pub mod state;

pub use file::{
    check, parse, sign, verify, KeyRing, LicenseError, PublicKey, SignedLicense, SigningKey,
    Validity,
};
pub use payload::{CatalogEntry, EntryKind, Enforcement, LicenseKind, LicensePayload, Term, TermKind};
pub use key::{KeyError, PortalKey};
pub use state::{Event, LicenseState};
