//! License states and the one table of transitions between them.

use serde::{Deserialize, Serialize};

use super::payload::{LicenseKind, LicensePayload};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LicenseState {
    Unlicensed,
    Active,
    /// The portal was not reached past refresh due; licensed until grace ends.
    Grace,
    Expired,
    Revoked,
    Trial,
    Test,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// A verified license of this kind was installed (import, activation, refresh).
    Installed(LicenseKind),
    /// The refresh due time passed without a successful refresh.
    RefreshOverdue,
    /// A refresh reached the portal and the license is current again.
    Refreshed,
    /// Grace ended without a successful refresh.
    GraceEnded,
    /// The term of the license ended.
    TermEnded,
    /// The portal said the license was revoked.
    Revoked,
    /// The license was removed (deactivated, database reset).
    Removed,
}

impl LicenseState {
    /// Whether the PBX is licensed in this state.
    pub fn is_licensed(self) -> bool {
        unimplemented!()
    }
}

/// The transition table. `None` means the event does not apply in that state.
pub fn transition(state: LicenseState, event: Event) -> Option<LicenseState> {
    let _ = (state, event);
    unimplemented!()
}

/// The state a license is in at `now`, from its own times alone (start-up).
pub fn state_at(payload: &LicensePayload, now: i64) -> LicenseState {
    let _ = (payload, now);
    unimplemented!()
}
