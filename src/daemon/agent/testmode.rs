//! Test mode: everything unlocked, no seat limits, for 8 hours at most,
//! ending by itself; repeatable within the vendor's policy (a cool-down
//! between sessions, or off) from the signed license, or the compiled-in
//! policy on a box without one. Every session goes to the audit and, once
//! ended, to the portal at the next refresh; a hook runs when one ends.

use tracing::{info, warn};

use super::{state_word, users, Agent, Inner, TEST_MODE_KEY};
use crate::api::types::Status;
use crate::license::{self, LicensePayload, TestModePolicy};
use crate::portal::wire::TestSession;
use crate::seats::{AuditAction, AuditRecord};
use crate::store::StoreError;
use crate::time;

/// Why test mode could not be switched.
#[derive(Debug, thiserror::Error)]
pub enum TestModeError {
    #[error("test mode is already on until {0}; stop it first to start it again")]
    AlreadyOn(String),
    #[error("test mode is not on")]
    NotOn,
    #[error("the license of this system turns test mode off (the vendor's policy)")]
    Off,
    #[error(
        "test mode can start again at {at}: the vendor's policy asks for {gap} between sessions"
    )]
    CoolingDown { at: String, gap: String },
    #[error("{0}")]
    Store(#[from] StoreError),
}

impl Agent {
    /// Starts test mode for `duration_secs` (the policy may shorten it),
    /// then back to the installed license by itself.
    pub fn start_test_mode(&self, duration_secs: i64) -> Result<Status, TestModeError> {
        let mut inner = self.lock();
        let now = inner.now();
        if let Some(until) = inner.test_until.filter(|u| *u > now) {
            return Err(TestModeError::AlreadyOn(time::rfc3339(until)));
        }
        let policy = inner.test_mode_policy();
        if !policy.allowed {
            return Err(TestModeError::Off);
        }
        if let Some(last) = inner.store.last_test_session_end()? {
            let at = last.saturating_add(policy.cooldown_secs);
            if policy.cooldown_secs > 0 && now < at {
                return Err(TestModeError::CoolingDown {
                    at: time::rfc3339(at),
                    gap: license::clock::span(policy.cooldown_secs.max(0) as u64),
                });
            }
        }
        let until = now + duration_secs.min(policy.max_secs).max(1);
        inner
            .store
            .set_setting(TEST_MODE_KEY, Some(&until.to_string()))?;
        inner.store.start_test_session(now, until)?;
        inner.audit_test_mode(AuditAction::TestModeStart, now);
        inner.test_until = Some(until);
        info!(until = %time::rfc3339(until), "test mode started: everything unlocked, no seat limits");
        inner.sync_limits(now);
        let status = inner.status(now);
        drop(inner);
        self.wake();
        Ok(status)
    }

    /// Ends test mode now.
    pub fn stop_test_mode(&self) -> Result<Status, TestModeError> {
        let mut inner = self.lock();
        let now = inner.now();
        if inner.test_until.filter(|u| *u > now).is_none() {
            return Err(TestModeError::NotOn);
        }
        inner.end_test_mode("stopped");
        let status = inner.status(now);
        drop(inner);
        self.wake();
        Ok(status)
    }

    /// Ended sessions the portal has not had, with their store ids.
    pub fn test_sessions_to_report(&self) -> (Vec<i64>, Vec<TestSession>) {
        let rows = match self.lock().store.unreported_test_sessions() {
            Ok(r) => r,
            Err(e) => {
                warn!("cannot read the test mode sessions: {e}");
                return (vec![], vec![]);
            }
        };
        let ids = rows.iter().map(|r| r.id).collect();
        let sessions = rows
            .into_iter()
            .map(|r| TestSession {
                started_at: r.started_at,
                ended_at: r.ended_at.unwrap_or(r.ends_at),
                how: r.how.unwrap_or_default(),
            })
            .collect();
        (ids, sessions)
    }

    /// The portal took these sessions.
    pub fn test_sessions_reported(&self, ids: &[i64]) {
        if ids.is_empty() {
            return;
        }
        if let Err(e) = self.lock().store.mark_test_sessions_reported(ids) {
            warn!("cannot mark the test mode sessions as reported: {e}");
        }
    }
}

impl Inner {
    /// The installed license's policy, or the compiled-in one.
    pub(super) fn test_mode_policy(&self) -> TestModePolicy {
        self.license
            .as_ref()
            .and_then(|l| l.payload.test_mode)
            .unwrap_or(TestModePolicy::DEFAULT)
    }

    /// `why`: "stopped" or "its time ran out".
    pub(super) fn end_test_mode(&mut self, why: &str) {
        if let Err(e) = self.store.set_setting(TEST_MODE_KEY, None) {
            warn!("cannot clear test mode in the store: {e}");
        }
        let now = self.last_now;
        let how = if why == "stopped" {
            "stopped"
        } else {
            "ran_out"
        };
        if let Err(e) = self.store.end_test_session(now, how) {
            warn!("cannot record the end of the test mode session: {e}");
        }
        self.audit_test_mode(AuditAction::TestModeEnd, now);
        self.test_until = None;
        info!(back_to = state_word(self.state), "test mode ended: {why}");
        self.sync_limits(now);
        if let Some(hook) = &self.test_end_hook {
            users::run_hook(
                hook,
                &[how.to_string(), state_word(self.state).to_string()],
                "test mode end hook",
            );
        }
    }

    fn audit_test_mode(&mut self, action: AuditAction, now: i64) {
        let record = AuditRecord {
            at: now,
            caller_uid: nix::unistd::getuid().as_raw(),
            action,
            user_id: String::new(),
            before: None,
            after: None,
            totals: Default::default(),
        };
        if let Err(e) = self.store.append_audit(&record) {
            warn!("cannot write the test mode audit row: {e}");
        }
    }
}

/// What test mode unlocks when no license is installed: the vendor's
/// catalog, every code unlimited.
pub(super) fn test_mode_payload() -> LicensePayload {
    LicensePayload {
        format: license::payload::PAYLOAD_FORMAT,
        license_id: "test-mode".into(),
        system_id: String::new(),
        pbx_name: String::new(),
        hardware_id: String::new(),
        hardware: Vec::new(),
        kind: license::LicenseKind::Test,
        issued_at: 0,
        term: license::Term {
            kind: license::TermKind::Lifetime,
            ends_at: None,
        },
        refresh_due: None,
        grace_secs: 0,
        enforcement: license::Enforcement::Soft,
        seats: Default::default(),
        addons: Default::default(),
        catalog: LicensePayload::demo_catalog(),
        device_public_key: None,
        nonce: None,
        test_mode: None,
    }
}
