//! Seat accounting: which PBX user holds which profile and add-ons, and which
//! of those holdings the license in force actually covers.
//!
//! It owns the rules (see `docs/seats.md`): profiles and add-ons come from the
//! license's catalog, never from code; the admin user is never counted; free
//! profiles are unlimited; add-ons need a profile and their declared
//! prerequisites; hard enforcement refuses an assignment beyond the seats,
//! soft enforcement stores it and reports the over-use; when seats are short,
//! the earliest assignment (lowest sequence number, then user id) keeps its
//! seat.
//!
//! The engine ([`Ledger`], [`Limits`], the CSV parser) is pure: it never
//! touches the disk. The daemon keeps one `Ledger` in memory behind its lock,
//! loaded from the store at start. A change is planned against memory
//! ([`Ledger::plan`]), written to the store, then committed to memory
//! ([`Ledger::commit`]); [`apply`] does the three steps. Entitlement checks
//! ([`Ledger::entitlement`]) read memory only and do not allocate.

pub mod csv;
mod ledger;
mod limits;
mod plan;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use ledger::{
    Entitlement, Grant, GrantReport, Ledger, LedgerSettings, OverUse, Reason, SeatSummary,
    UserQuery, UserReason, UserReport, DEFAULT_PROFILE,
};
pub use limits::Limits;
pub use plan::{ImportError, ImportPlan, ImportPreview, Outcome, Plan, RowError};

use crate::store::{Store, StoreError};

/// Longest user id, extension, phone number and display name accepted.
pub const MAX_ID_LEN: usize = 64;
pub const MAX_EXTENSION_LEN: usize = 32;
pub const MAX_NUMBER_LEN: usize = 32;
pub const MAX_NAME_LEN: usize = 128;

/// What a user is for the PBX; decides whether it is counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UserKind {
    /// A person who logs in: counted against the seats.
    Regular,
    /// The PBX's administrator account: never counted. At most one.
    Admin,
    /// Park orbits, queues, virtual users without login. Counted like a
    /// regular user, but a new one gets a free profile when the catalog has
    /// one (see [`Ledger::plan`]).
    Virtual,
}

impl UserKind {
    pub fn as_str(self) -> &'static str {
        match self {
            UserKind::Regular => "regular",
            UserKind::Admin => "admin",
            UserKind::Virtual => "virtual",
        }
    }

    pub fn parse(s: &str) -> Option<UserKind> {
        match s {
            "regular" => Some(UserKind::Regular),
            "admin" => Some(UserKind::Admin),
            "virtual" => Some(UserKind::Virtual),
            _ => None,
        }
    }
}

/// A profile or add-on a user holds, with the sequence number of the change
/// that gave it: the allocation order when seats are short.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Held {
    pub code: String,
    pub seq: i64,
}

/// The largest sequence number accepted from outside (an export being
/// restored): 2^53, the largest integer every JSON reader holds exactly.
/// Far below `i64::MAX`, so the ledger's `seq + 1` has room for ever.
pub const MAX_SEQ: i64 = 1 << 53;

/// A sequence number from outside must lie in `1..=MAX_SEQ`.
pub fn check_seq(seq: i64) -> Result<(), String> {
    if (1..=MAX_SEQ).contains(&seq) {
        Ok(())
    } else {
        Err(format!(
            "assignment sequence {seq} is outside 1..={MAX_SEQ}"
        ))
    }
}

/// A PBX user as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// The PBX's own stable id for the user.
    pub id: String,
    pub name: String,
    /// Unique among users.
    pub extension: String,
    /// The user's phone number (DID), if any.
    pub number: Option<String>,
    pub kind: UserKind,
    /// The base profile; `None` after an unassign.
    pub profile: Option<Held>,
    /// Add-ons, sorted by code, each code once.
    pub addons: Vec<Held>,
}

impl User {
    pub fn profile_code(&self) -> Option<&str> {
        self.profile.as_ref().map(|h| h.code.as_str())
    }

    pub fn holds_addon(&self, code: &str) -> bool {
        self.addons.iter().any(|h| h.code == code)
    }

    pub fn snapshot(&self) -> UserSnapshot {
        UserSnapshot {
            name: self.name.clone(),
            extension: self.extension.clone(),
            number: self.number.clone(),
            kind: self.kind,
            profile: self.profile.as_ref().map(|h| h.code.clone()),
            addons: self.addons.iter().map(|h| h.code.clone()).collect(),
        }
    }
}

/// A user to create.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewUser {
    pub id: String,
    pub name: String,
    pub extension: String,
    #[serde(default)]
    pub number: Option<String>,
    #[serde(default = "regular")]
    pub kind: UserKind,
    /// `None`: the default profile (see [`LedgerSettings`]).
    #[serde(default)]
    pub profile: Option<String>,
    #[serde(default)]
    pub addons: Vec<String>,
}

fn regular() -> UserKind {
    UserKind::Regular
}

/// Fields of a user to change; `None` leaves a field as it is.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserUpdate {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub extension: Option<String>,
    /// `Some(None)` clears the number.
    #[serde(default)]
    pub number: Option<Option<String>>,
    #[serde(default)]
    pub kind: Option<UserKind>,
}

/// One change the API can ask for. Assigning a profile to a user who has
/// one is a reassignment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Create(NewUser),
    Update { id: String, update: UserUpdate },
    Delete { id: String },
    Assign { id: String, profile: String },
    Unassign { id: String },
    AddAddon { id: String, code: String },
    RemoveAddon { id: String, code: String },
}

/// What an audit row says happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditAction {
    Create,
    Update,
    Delete,
    Assign,
    Unassign,
    AddAddon,
    RemoveAddon,
    /// One row of a bulk import.
    Import,
    /// Test mode started (no user; `user_id` is empty).
    TestModeStart,
    /// Test mode ended, by itself or stopped.
    TestModeEnd,
}

impl AuditAction {
    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::Create => "create",
            AuditAction::Update => "update",
            AuditAction::Delete => "delete",
            AuditAction::Assign => "assign",
            AuditAction::Unassign => "unassign",
            AuditAction::AddAddon => "add_addon",
            AuditAction::RemoveAddon => "remove_addon",
            AuditAction::Import => "import",
            AuditAction::TestModeStart => "test_mode_start",
            AuditAction::TestModeEnd => "test_mode_end",
        }
    }

    pub fn parse(s: &str) -> Option<AuditAction> {
        [
            AuditAction::Create,
            AuditAction::Update,
            AuditAction::Delete,
            AuditAction::Assign,
            AuditAction::Unassign,
            AuditAction::AddAddon,
            AuditAction::RemoveAddon,
            AuditAction::Import,
            AuditAction::TestModeStart,
            AuditAction::TestModeEnd,
        ]
        .into_iter()
        .find(|a| a.as_str() == s)
    }
}

/// A user as an audit row shows it, before or after a change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserSnapshot {
    pub name: String,
    pub extension: String,
    pub number: Option<String>,
    pub kind: UserKind,
    pub profile: Option<String>,
    pub addons: Vec<String>,
}

/// Seats of one code after a change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeatTotal {
    /// Holders counted against the seats.
    pub used: u32,
    /// `None`: unlimited (free profile, test license).
    pub purchased: Option<u32>,
}

/// One change to one user, for the audit table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Unix seconds in memory and in the store; RFC 3339 on the API (like
    /// every other time there; Unix seconds before 0.2, still read).
    #[serde(with = "crate::time::rfc3339_serde")]
    pub at: i64,
    /// The local caller, from the socket's peer credentials.
    pub caller_uid: u32,
    pub action: AuditAction,
    pub user_id: String,
    /// `None` when the user was created.
    pub before: Option<UserSnapshot>,
    /// `None` when the user was deleted.
    pub after: Option<UserSnapshot>,
    /// The seats of every code the change touched, after it.
    pub totals: BTreeMap<String, SeatTotal>,
}

/// An audit row read back, with its id (increasing in the order of changes).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub id: i64,
    #[serde(flatten)]
    pub record: AuditRecord,
}

#[derive(Debug, thiserror::Error)]
pub enum SeatError {
    #[error("no license is in force, so no profile or add-on can be assigned; import or activate a license first")]
    NoLicense,
    #[error("there is no profile '{code}' in the license; its profiles are: {known}")]
    UnknownProfile { code: String, known: String },
    #[error("there is no add-on '{code}' in the license; its add-ons are: {known}")]
    UnknownAddon { code: String, known: String },
    #[error("there is no user '{id}'")]
    UnknownUser { id: String },
    #[error("a user with id '{id}' exists already")]
    DuplicateUser { id: String },
    #[error("extension {extension} belongs to user '{holder}' already")]
    DuplicateExtension { extension: String, holder: String },
    #[error("user '{existing}' is the admin already; only one user may be of kind admin")]
    SecondAdmin { existing: String },
    #[error("no {name} seat is free: {purchased} bought, {used} in use (hard enforcement); free a seat or buy more")]
    NoSeat {
        code: String,
        name: String,
        purchased: u32,
        used: u32,
    },
    #[error("user '{user}' has no profile; assign one before adding the add-on {code}")]
    AddonNeedsProfile { user: String, code: String },
    #[error("the add-on {code} of user '{user}' needs {requires}, which {why}")]
    MissingPrerequisite {
        user: String,
        code: String,
        requires: String,
        why: String,
    },
    #[error("the change would leave the add-on {addon} of user '{user}' without {requires}; remove {addon} first")]
    BreaksPrerequisite {
        user: String,
        addon: String,
        requires: String,
    },
    #[error("user '{user}' still holds the add-ons {addons}; remove them before unassigning the profile")]
    AddonsHeld { user: String, addons: String },
    #[error("user '{user}' does not hold the add-on {code}")]
    AddonNotHeld { user: String, code: String },
    #[error("the default profile '{code}' (setting default_profile) is not a profile of the license; give a profile or fix the setting")]
    BadDefault { code: String },
    #[error("invalid {field} {value:?}: {rule}")]
    Invalid {
        field: &'static str,
        value: String,
        rule: &'static str,
    },
    #[error("the change was planned against an older state of the users; plan it again")]
    StalePlan,
    #[error("the change could not be saved, nothing was changed: {0}")]
    Store(#[from] StoreError),
}

/// Plans `op`, writes it to the store, then to memory: if the store refuses,
/// memory is left as it was. Call it under the lock that guards `ledger`
/// and `store` together; that lock is what makes "two callers for the last
/// seat, exactly one wins" hold.
pub fn apply(
    ledger: &mut Ledger,
    store: &mut Store,
    op: Op,
    caller_uid: u32,
    now: i64,
) -> Result<Outcome, SeatError> {
    let plan = ledger.plan(op, caller_uid, now)?;
    commit(ledger, store, plan)
}

/// Writes a plan (from [`Ledger::plan`] or [`Ledger::plan_import`]) to the
/// store, then commits it to memory.
pub fn commit(ledger: &mut Ledger, store: &mut Store, plan: Plan) -> Result<Outcome, SeatError> {
    // Refuse a stale plan before writing anything.
    if !ledger.is_current(&plan) {
        return Err(SeatError::StalePlan);
    }
    store.save_users(plan.upserts(), plan.deletes(), plan.audit())?;
    ledger.commit(plan)
}

/// Loads every user from the store into a new ledger.
pub fn load(store: &Store, limits: Limits, settings: LedgerSettings) -> Result<Ledger, StoreError> {
    Ok(Ledger::load(limits, settings, store.load_users()?))
}

/// Checks a user id: 1 to [`MAX_ID_LEN`] of letters, digits and `._@:-`.
pub fn check_id(id: &str) -> Result<(), SeatError> {
    check(
        "user id",
        id,
        MAX_ID_LEN,
        |c| c.is_ascii_alphanumeric() || "._@:-".contains(c),
        "use 1 to 64 letters, digits and . _ @ : -",
    )
}

/// Checks an extension: 1 to [`MAX_EXTENSION_LEN`] of letters, digits and `*#._-`.
pub fn check_extension(ext: &str) -> Result<(), SeatError> {
    check(
        "extension",
        ext,
        MAX_EXTENSION_LEN,
        |c| c.is_ascii_alphanumeric() || "*#._-".contains(c),
        "use 1 to 32 letters, digits and * # . _ -",
    )
}

/// Checks a phone number: 1 to [`MAX_NUMBER_LEN`] of digits, spaces and `+()-./`.
pub fn check_number(number: &str) -> Result<(), SeatError> {
    check(
        "number",
        number,
        MAX_NUMBER_LEN,
        |c| c.is_ascii_digit() || " +()-./".contains(c),
        "use up to 32 digits, spaces and + ( ) - . /",
    )
}

/// Checks a display name: 1 to [`MAX_NAME_LEN`] characters, no control
/// characters, no spaces at either end.
pub fn check_name(name: &str) -> Result<(), SeatError> {
    let invalid = |rule| SeatError::Invalid {
        field: "name",
        value: name.to_string(),
        rule,
    };
    if name.trim() != name {
        return Err(invalid("remove the spaces at its start or end"));
    }
    check(
        "name",
        name,
        MAX_NAME_LEN,
        |c| !c.is_control(),
        "use 1 to 128 characters without control characters",
    )
}

fn check(
    field: &'static str,
    value: &str,
    max: usize,
    allowed: impl Fn(char) -> bool,
    rule: &'static str,
) -> Result<(), SeatError> {
    let n = value.chars().count();
    if n == 0 || n > max || !value.chars().all(allowed) {
        return Err(SeatError::Invalid {
            field,
            value: value.to_string(),
            rule,
        });
    }
    Ok(())
}

#[cfg(test)]
mod range_tests;
#[cfg(test)]
mod tests;
