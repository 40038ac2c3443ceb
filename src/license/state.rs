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
        matches!(
            self,
            LicenseState::Active | LicenseState::Grace | LicenseState::Trial | LicenseState::Test
        )
    }
}

/// The transition table. `None` means the event does not apply in that state.
///
/// Read top to bottom; the first matching row wins.
pub fn transition(state: LicenseState, event: Event) -> Option<LicenseState> {
    use Event as E;
    use LicenseState as S;
    match (state, event) {
        // A verified license replaces whatever was there.
        (_, E::Installed(LicenseKind::Full)) => Some(S::Active),
        (_, E::Installed(LicenseKind::Trial)) => Some(S::Trial),
        (_, E::Installed(LicenseKind::Test)) => Some(S::Test),
        // The portal is unreachable past refresh due: still licensed, for a while.
        (S::Active, E::RefreshOverdue) => Some(S::Grace),
        (S::Grace | S::Active, E::Refreshed) => Some(S::Active),
        (S::Grace, E::GraceEnded) => Some(S::Expired),
        (S::Active | S::Grace | S::Trial | S::Test, E::TermEnded) => Some(S::Expired),
        // Test mode is local only: the portal has nothing to revoke there.
        (S::Active | S::Grace | S::Expired | S::Trial, E::Revoked) => Some(S::Revoked),
        (_, E::Removed) => Some(S::Unlicensed),
        _ => None,
    }
}

/// Why a license is expired at `now`, computed from its own times alone.
enum Expiry {
    TermEnded,
    GraceEnded,
}

fn expiry(payload: &LicensePayload, now: i64) -> Option<Expiry> {
    if payload.term.ends_at.is_some_and(|end| now >= end) {
        return Some(Expiry::TermEnded);
    }
    // Trial and test licenses end with their term; they do not refresh.
    if payload.kind != LicenseKind::Full {
        return None;
    }
    match payload.refresh_due {
        Some(due) if now >= due.saturating_add(payload.grace_secs) => Some(Expiry::GraceEnded),
        _ => None,
    }
}

/// The state a license is in at `now`, from its own times alone (start-up).
pub fn state_at(payload: &LicensePayload, now: i64) -> LicenseState {
    if expiry(payload, now).is_some() {
        return LicenseState::Expired;
    }
    match (payload.kind, payload.refresh_due) {
        (LicenseKind::Trial, _) => LicenseState::Trial,
        (LicenseKind::Test, _) => LicenseState::Test,
        (LicenseKind::Full, Some(due)) if now >= due => LicenseState::Grace,
        (LicenseKind::Full, _) => LicenseState::Active,
    }
}

/// Why [`state_at`] says Expired, in words for status output; `None` if it
/// does not.
pub fn expiry_reason(payload: &LicensePayload, now: i64) -> Option<&'static str> {
    expiry(payload, now).map(|e| match e {
        Expiry::TermEnded => "term ended",
        Expiry::GraceEnded => "grace ended without reaching the portal",
    })
}

/// The next rung of the ladder: the state the license moves to by itself,
/// and when (Unix seconds), from `state` at `now`. `None`: nothing comes by
/// itself (lifetime, expired, revoked, unlicensed). A successful refresh
/// resets the ladder; this is what happens without one.
pub fn next_step(
    payload: &LicensePayload,
    state: LicenseState,
    now: i64,
) -> Option<(LicenseState, i64)> {
    let end = payload.term.ends_at;
    let grace_end = payload
        .refresh_due
        .map(|d| d.saturating_add(payload.grace_secs));
    let earliest = |a: Option<i64>, b: Option<i64>| match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let step = match state {
        LicenseState::Active => match (payload.refresh_due, end) {
            (Some(due), Some(end)) if end <= due => Some((LicenseState::Expired, end)),
            (Some(due), _) if due > now => Some((LicenseState::Grace, due)),
            (Some(_), _) => earliest(grace_end, end).map(|t| (LicenseState::Expired, t)),
            (None, end) => end.map(|t| (LicenseState::Expired, t)),
        },
        LicenseState::Grace => earliest(grace_end, end).map(|t| (LicenseState::Expired, t)),
        LicenseState::Trial | LicenseState::Test => end.map(|t| (LicenseState::Expired, t)),
        LicenseState::Expired | LicenseState::Revoked | LicenseState::Unlicensed => None,
    };
    step.map(|(s, t)| (s, t.max(now)))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::license::payload::{Enforcement, Term, TermKind, PAYLOAD_FORMAT};

    const ALL_STATES: [LicenseState; 7] = [
        LicenseState::Unlicensed,
        LicenseState::Active,
        LicenseState::Grace,
        LicenseState::Expired,
        LicenseState::Revoked,
        LicenseState::Trial,
        LicenseState::Test,
    ];
    const ALL_EVENTS: [Event; 9] = [
        Event::Installed(LicenseKind::Full),
        Event::Installed(LicenseKind::Trial),
        Event::Installed(LicenseKind::Test),
        Event::RefreshOverdue,
        Event::Refreshed,
        Event::GraceEnded,
        Event::TermEnded,
        Event::Revoked,
        Event::Removed,
    ];

    /// The table written out longhand: every (state, event) pair that moves.
    fn expected(state: LicenseState, event: Event) -> Option<LicenseState> {
        use Event as E;
        use LicenseState as S;
        let rows: &[(S, E, S)] = &[
            (S::Active, E::RefreshOverdue, S::Grace),
            (S::Grace, E::Refreshed, S::Active),
            (S::Active, E::Refreshed, S::Active),
            (S::Grace, E::GraceEnded, S::Expired),
            (S::Active, E::TermEnded, S::Expired),
            (S::Grace, E::TermEnded, S::Expired),
            (S::Trial, E::TermEnded, S::Expired),
            (S::Test, E::TermEnded, S::Expired),
            (S::Active, E::Revoked, S::Revoked),
            (S::Grace, E::Revoked, S::Revoked),
            (S::Expired, E::Revoked, S::Revoked),
            (S::Trial, E::Revoked, S::Revoked),
        ];
        match event {
            E::Installed(LicenseKind::Full) => Some(S::Active),
            E::Installed(LicenseKind::Trial) => Some(S::Trial),
            E::Installed(LicenseKind::Test) => Some(S::Test),
            E::Removed => Some(S::Unlicensed),
            _ => rows
                .iter()
                .find(|(s, e, _)| *s == state && *e == event)
                .map(|(_, _, to)| *to),
        }
    }

    #[test]
    fn every_pair_of_the_table() {
        let mut moves = 0;
        for s in ALL_STATES {
            for e in ALL_EVENTS {
                assert_eq!(transition(s, e), expected(s, e), "{s:?} + {e:?}");
                moves += usize::from(transition(s, e).is_some());
            }
        }
        // 7 states x (3 installs + remove) + 12 specific rows.
        assert_eq!(moves, 7 * 4 + 12);
    }

    #[test]
    fn events_that_do_not_apply_are_refused() {
        use Event as E;
        use LicenseState as S;
        assert_eq!(transition(S::Unlicensed, E::Refreshed), None);
        assert_eq!(transition(S::Expired, E::Refreshed), None);
        assert_eq!(transition(S::Grace, E::RefreshOverdue), None);
        assert_eq!(transition(S::Trial, E::RefreshOverdue), None);
        assert_eq!(transition(S::Active, E::GraceEnded), None);
        assert_eq!(transition(S::Test, E::Revoked), None);
        assert_eq!(transition(S::Revoked, E::Revoked), None);
        assert_eq!(transition(S::Expired, E::TermEnded), None);
    }

    #[test]
    fn licensed_states() {
        let licensed: Vec<LicenseState> =
            ALL_STATES.into_iter().filter(|s| s.is_licensed()).collect();
        assert_eq!(
            licensed,
            [
                LicenseState::Active,
                LicenseState::Grace,
                LicenseState::Trial,
                LicenseState::Test
            ]
        );
    }

    const DUE: i64 = 1_000_000;
    const GRACE: i64 = 7 * 86_400;
    const END: i64 = 50_000_000;

    fn payload(
        kind: LicenseKind,
        refresh_due: Option<i64>,
        ends_at: Option<i64>,
    ) -> LicensePayload {
        LicensePayload {
            format: PAYLOAD_FORMAT,
            license_id: "lic-1".into(),
            system_id: "sys-1".into(),
            pbx_name: "pbx".into(),
            hardware_id: "hw".into(),
            hardware: Vec::new(),
            kind,
            issued_at: 0,
            term: Term {
                kind: if ends_at.is_some() {
                    TermKind::Yearly
                } else {
                    TermKind::Lifetime
                },
                ends_at,
            },
            refresh_due,
            grace_secs: GRACE,
            enforcement: Enforcement::Soft,
            seats: BTreeMap::new(),
            addons: BTreeMap::new(),
            catalog: Vec::new(),
            device_public_key: None,
            nonce: None,
            test_mode: None,
        }
    }

    #[test]
    fn state_at_refresh_boundaries() {
        let p = payload(LicenseKind::Full, Some(DUE), Some(END));
        assert_eq!(state_at(&p, DUE - 1), LicenseState::Active);
        assert_eq!(state_at(&p, DUE), LicenseState::Grace);
        assert_eq!(state_at(&p, DUE + GRACE - 1), LicenseState::Grace);
        assert_eq!(state_at(&p, DUE + GRACE), LicenseState::Expired);
        assert_eq!(expiry_reason(&p, DUE + GRACE - 1), None);
        assert_eq!(
            expiry_reason(&p, DUE + GRACE),
            Some("grace ended without reaching the portal")
        );
    }

    #[test]
    fn state_at_term_end() {
        let p = payload(LicenseKind::Full, Some(END + GRACE), Some(END));
        assert_eq!(state_at(&p, END - 1), LicenseState::Active);
        assert_eq!(state_at(&p, END), LicenseState::Expired);
        assert_eq!(expiry_reason(&p, END - 1), None);
        assert_eq!(expiry_reason(&p, END), Some("term ended"));
        // The term wins over grace when both are over.
        let both = payload(LicenseKind::Full, Some(DUE), Some(END));
        assert_eq!(expiry_reason(&both, END), Some("term ended"));
    }

    #[test]
    fn state_at_without_refresh_or_end_stays_active() {
        let p = payload(LicenseKind::Full, None, None);
        assert_eq!(state_at(&p, i64::MAX), LicenseState::Active);
        assert_eq!(expiry_reason(&p, i64::MAX), None);
        // A huge grace does not overflow into the past.
        let mut p = payload(LicenseKind::Full, Some(DUE), None);
        p.grace_secs = i64::MAX;
        assert_eq!(state_at(&p, DUE), LicenseState::Grace);
    }

    #[test]
    fn the_ladder_names_the_next_step_and_when() {
        let p = payload(LicenseKind::Full, Some(DUE), Some(END));
        assert_eq!(
            next_step(&p, LicenseState::Active, DUE - 10),
            Some((LicenseState::Grace, DUE))
        );
        assert_eq!(
            next_step(&p, LicenseState::Grace, DUE + 5),
            Some((LicenseState::Expired, DUE + GRACE))
        );
        // The term ends before grace would.
        let short = payload(LicenseKind::Full, Some(END - 10), Some(END));
        assert_eq!(
            next_step(&short, LicenseState::Grace, END - 5),
            Some((LicenseState::Expired, END))
        );
        // The term ends before refresh is even due.
        let p2 = payload(LicenseKind::Full, Some(END + 10), Some(END));
        assert_eq!(
            next_step(&p2, LicenseState::Active, 0),
            Some((LicenseState::Expired, END))
        );
        let trial = payload(LicenseKind::Trial, None, Some(END));
        assert_eq!(
            next_step(&trial, LicenseState::Trial, 0),
            Some((LicenseState::Expired, END))
        );
        let lifetime = payload(LicenseKind::Full, None, None);
        assert_eq!(next_step(&lifetime, LicenseState::Active, 0), None);
        for s in [
            LicenseState::Expired,
            LicenseState::Revoked,
            LicenseState::Unlicensed,
        ] {
            assert_eq!(next_step(&p, s, 0), None);
        }
        // Never in the past: a step that is due happens now.
        assert_eq!(
            next_step(&p, LicenseState::Active, DUE + 1),
            Some((LicenseState::Expired, DUE + GRACE))
        );
    }

    #[test]
    fn state_at_trial_and_test_until_their_term_ends() {
        for (kind, state) in [
            (LicenseKind::Trial, LicenseState::Trial),
            (LicenseKind::Test, LicenseState::Test),
        ] {
            // refresh_due past grace does not expire them; only the term does.
            let p = payload(kind, Some(DUE), Some(END));
            assert_eq!(state_at(&p, DUE + GRACE), state);
            assert_eq!(state_at(&p, END - 1), state);
            assert_eq!(state_at(&p, END), LicenseState::Expired);
            assert_eq!(expiry_reason(&p, END), Some("term ended"));
        }
    }
}
