//! JSON bodies of the local API. `licagent status --json` prints [`Status`]
//! as is, so its fields are a stable contract (docs/api.md).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::hwid::{ComponentKind, MatchVerdict};
use crate::license::{Enforcement, LicenseKind, LicenseState, TermKind};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub state: LicenseState,
    /// Whether the PBX may use what the license grants right now.
    pub licensed: bool,
    /// Why the state is what it is, for people (unlicensed, expired, revoked,
    /// grace); `null` when active.
    pub reason: Option<String>,
    /// This machine's hardware ID.
    pub hardware_id: String,
    pub hardware_warnings: Vec<String>,
    /// Set while test mode is on (then `state` is `test`).
    #[serde(default)]
    pub test_mode: Option<TestMode>,
    /// `null` when no license is installed.
    pub license: Option<LicenseSummary>,
    /// The portal link; `null` when no portal is configured.
    #[serde(default)]
    pub refresh: Option<RefreshInfo>,
    /// The next rung of the ladder: what comes by itself, and when;
    /// `null` when nothing does (docs/operations.md, "The ladder").
    #[serde(default)]
    pub next: Option<NextStep>,
    /// Trusted time against the wall clock.
    #[serde(default)]
    pub clock: Option<ClockInfo>,
}

/// "active → grace in 3 days": the state that comes without a successful
/// refresh, and when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NextStep {
    pub state: LicenseState,
    /// RFC 3339, trusted time.
    pub at: String,
    pub in_secs: i64,
}

/// The agent's clock (docs/config.md, "Trusted time").
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClockInfo {
    /// Trusted now, RFC 3339: what every license time is compared with.
    pub trusted_now: String,
    /// The system's wall clock, RFC 3339: only a hint.
    pub wall_clock: String,
    /// Wall clock minus trusted time, seconds (negative: behind).
    pub offset_secs: i64,
    /// `portal`, `license_file`, `boot` or `wall_clock`.
    pub source: crate::license::clock::TimeSource,
    /// When that source last set the time (trusted time, RFC 3339).
    pub source_at: String,
    /// Set when the offset is over the skew threshold (300 s).
    pub warning: Option<String>,
}

/// Refresh facts: when the agent next calls the portal, and how it went.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshInfo {
    pub next_refresh: Option<String>,
    pub last_refresh: Option<String>,
    pub last_error: Option<String>,
    /// Failed attempts in a row.
    pub failures: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestMode {
    pub ends_at: String,
    pub left_secs: i64,
}

/// `GET /v1/whoami`: the caller as the daemon sees it (SO_PEERCRED).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Whoami {
    pub uid: u32,
    /// The user name of `uid`; `null` when the uid has no name here.
    pub user: Option<String>,
    /// Whether the caller may call the change routes.
    pub may_change: bool,
    /// The configured admin group, `null` when none (or it does not exist).
    pub admin_group: Option<String>,
}

/// `POST /v1/activate`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivateBody {
    pub key: String,
    #[serde(default)]
    pub rehost: bool,
}

/// `POST /v1/trial` (the body is optional).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrialBody {
    /// Allow a trial to replace an installed full license.
    #[serde(default)]
    pub replace: bool,
}

/// `POST /v1/request-code`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestCodeBody {
    pub key: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestCodeAnswer {
    pub request_code: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LicenseSummary {
    pub license_id: String,
    pub system_id: String,
    pub pbx_name: String,
    pub kind: LicenseKind,
    /// The hardware ID the license is bound to.
    pub bound_hardware_id: String,
    /// How this machine matches the binding.
    pub hardware_match: MatchVerdict,
    /// Component kinds that changed since the license was issued.
    pub hardware_changed: Vec<ComponentKind>,
    pub issued_at: String,
    pub term: TermKind,
    /// End of the term (RFC 3339); `null` for lifetime.
    pub expires_at: Option<String>,
    /// When the agent must next reach the portal; `null` if never.
    pub refresh_due: Option<String>,
    /// When the license stops if the portal stays unreachable; `null` if never.
    pub grace_ends: Option<String>,
    /// Seconds of grace left, in the grace state only.
    pub grace_left_secs: Option<i64>,
    pub enforcement: Enforcement,
    pub seats: BTreeMap<String, SeatCount>,
    pub addons: BTreeMap<String, u32>,
    pub installed_at: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeatCount {
    pub purchased: u32,
    /// Users counted against the seats (the admin never is).
    pub used: u32,
    /// Seats left (`free` before 0.2; named like `GET /v1/seats`).
    pub available: u32,
    /// Users beyond the seats (soft enforcement, or an order that shrank).
    pub over: u32,
}
