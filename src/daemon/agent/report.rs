//! What the agent reports: `status` with the license summary, the ladder
//! (the next state and when) and the clock, and words for people.

use super::{Inner, Loaded};
use crate::api::types::{ClockInfo, LicenseSummary, NextStep, SeatCount, Status, TestMode};
use crate::license::{self, LicenseKind, LicenseState};
use crate::seats::{self, Ledger};
use crate::time;

impl Inner {
    pub(super) fn status(&self, now: i64) -> Status {
        let license = self
            .license
            .as_ref()
            .map(|l| summary(l, self.state, now, &self.ledger));
        let test_until = self.test_mode_on(now);
        let state = self.reported_state(now);
        let reason = match test_until {
            Some(until) => Some(format!(
                "test mode: everything unlocked, no seat limits, until {}",
                time::rfc3339(until)
            )),
            None => self.reason.clone(),
        };
        Status {
            state,
            licensed: state.is_licensed(),
            reason,
            test_mode: test_until.map(|until| TestMode {
                ends_at: time::rfc3339(until),
                left_secs: until - now,
            }),
            hardware_id: self.hw.hardware_id.clone(),
            hardware_warnings: self.hw.warnings.clone(),
            next: self.next_step(now, test_until),
            clock: Some(self.clock_info()),
            license,
            refresh: None,
        }
    }

    /// The next rung of the ladder. In test mode it is the end of test mode
    /// (back to the license's own state).
    fn next_step(&self, now: i64, test_until: Option<i64>) -> Option<NextStep> {
        let step = match (test_until, &self.license) {
            (Some(until), _) => Some((self.state, until)),
            (None, Some(l)) => license::next_step(&l.payload, self.state, now),
            (None, None) => None,
        };
        step.map(|(state, at)| NextStep {
            state,
            at: time::rfc3339(at),
            in_secs: at - now,
        })
    }

    fn clock_info(&self) -> ClockInfo {
        let mut clock = self.clock.clone();
        let v = clock.view(&time::reading());
        ClockInfo {
            trusted_now: time::rfc3339(v.trusted),
            wall_clock: time::rfc3339(v.wall),
            offset_secs: v.offset,
            source: v.source,
            source_at: time::rfc3339(v.source_at),
            warning: v.warning,
        }
    }
}

pub(super) fn summary(
    l: &Loaded,
    state: LicenseState,
    now: i64,
    ledger: &Ledger,
) -> LicenseSummary {
    let counts: std::collections::HashMap<String, seats::SeatSummary> = ledger
        .summary()
        .into_iter()
        .map(|s| (s.code.clone(), s))
        .collect();
    let p = &l.payload;
    let grace_end = p.refresh_due.map(|d| d.saturating_add(p.grace_secs));
    let mut changed: Vec<_> =
        l.hw.missing
            .iter()
            .chain(&l.hw.added)
            .map(|c| c.kind)
            .collect();
    changed.sort();
    changed.dedup();
    LicenseSummary {
        license_id: p.license_id.clone(),
        system_id: p.system_id.clone(),
        pbx_name: p.pbx_name.clone(),
        kind: p.kind,
        bound_hardware_id: p.hardware_id.clone(),
        hardware_match: l.hw.verdict,
        hardware_changed: changed,
        issued_at: time::rfc3339(p.issued_at),
        term: p.term.kind,
        expires_at: p.term.ends_at.map(time::rfc3339),
        refresh_due: p.refresh_due.map(time::rfc3339),
        grace_ends: grace_end.map(time::rfc3339),
        grace_left_secs: match (state, grace_end) {
            (LicenseState::Grace, Some(end)) => Some((end - now).max(0)),
            _ => None,
        },
        enforcement: p.enforcement,
        seats: p
            .seats
            .iter()
            .map(|(k, v)| {
                let c = counts.get(k);
                let used = c.map_or(0, |c| c.used);
                let count = SeatCount {
                    purchased: *v,
                    used,
                    available: v.saturating_sub(used),
                    over: c.map_or(0, |c| c.over),
                };
                (k.clone(), count)
            })
            .collect(),
        addons: p.addons.clone(),
        installed_at: time::rfc3339(l.stored.installed_at),
    }
}

/// One word for people and logs.
pub fn state_word(s: LicenseState) -> &'static str {
    match s {
        LicenseState::Unlicensed => "unlicensed",
        LicenseState::Active => "active",
        LicenseState::Grace => "grace",
        LicenseState::Expired => "expired",
        LicenseState::Revoked => "revoked",
        LicenseState::Trial => "trial",
        LicenseState::Test => "test",
    }
}

/// A license kind in one word.
pub fn kind_word(k: LicenseKind) -> &'static str {
    match k {
        LicenseKind::Full => "full",
        LicenseKind::Trial => "trial",
        LicenseKind::Test => "test",
    }
}
