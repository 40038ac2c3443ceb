//! The agent's state in memory: the verified license, its state, this
//! machine's hardware, kept in step with the store. The API handlers and the
//! daemon's timers call into it; every call is short and never awaits while
//! holding the lock.

use std::path::Path;
use std::sync::Mutex;

use tracing::{error, info, warn};

use crate::api::types::Status;
use crate::config::Config;
use crate::hwid::{self, HardwareInfo, HwMatch};
use crate::license::clock::{Anchor, TrustedClock};

use crate::daemon::logging;
use crate::license::{
    self, state, Event, KeyRing, LicenseError, LicenseKind, LicensePayload, LicenseState,
};
use crate::seats::{self, Ledger, LedgerSettings, Limits, OverUse};
use crate::store::{Store, StoreError, StoredLicense};
use crate::time;

mod clock;
mod install;
mod observe;
mod report;
mod testmode;
pub mod users;

pub use install::{Expect, ImportError};
pub use testmode::TestModeError;

pub use report::state_word;

/// How often trusted time is written to the store while nothing else
/// changes it: after a reboot it runs on from the last saved value, so a
/// box that is switched off loses at most this much (never gains).
const ANCHOR_PERSIST_MS: i64 = 60_000;

/// The setting that keeps the trusted clock's anchor (JSON).
const ANCHOR_KEY: &str = "clock_anchor";

pub struct Agent {
    inner: Mutex<Inner>,
    /// Woken whenever a deadline may have changed (a license installed,
    /// test mode switched, the clock corrected), so that the daemon's
    /// timer re-plans at once instead of at its next tick.
    changed: tokio::sync::Notify,
}

struct Inner {
    store: Store,
    ring: KeyRing,
    hw: HardwareInfo,
    license: Option<Loaded>,
    state: LicenseState,
    reason: Option<String>,
    /// Trusted time (`crate::license::clock`).
    clock: TrustedClock,
    /// The anchor as last saved.
    anchor_saved: Option<Anchor>,
    /// The skew warning is logged once per episode.
    skew_warned: bool,
    /// The last trusted now, for code that must not read the clock again.
    last_now: i64,
    /// End of test mode (Unix seconds) while it is on.
    test_until: Option<i64>,
    /// Users and their seats, in step with the store.
    ledger: Ledger,
    /// Over-use as last reported, so that each change is logged once.
    last_over_use: Vec<OverUse>,
    /// Run (not waited for) when over-use changes; `seats.notice_hook`.
    notice_hook: Option<std::path::PathBuf>,
    /// Run (not waited for) when a test mode session ends;
    /// `test_mode.end_hook`.
    test_end_hook: Option<std::path::PathBuf>,
}

struct Loaded {
    payload: LicensePayload,
    stored: StoredLicense,
    hw: HwMatch,
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("cannot create the state directory {path}: {source}")]
    StateDir {
        path: String,
        source: std::io::Error,
    },
}

/// What a refresh needs to know about the installed license.
#[derive(Clone, Debug)]
pub struct RefreshTarget {
    pub system_id: String,
    pub license_id: String,
    pub issued_at: i64,
    pub refresh_due: i64,
}

/// The setting that keeps a revocation across restarts.
const REVOKED_KEY: &str = "revoked_reason";

/// The setting that keeps test mode's end across restarts.
const TEST_MODE_KEY: &str = "test_mode_until";

impl Agent {
    /// Opens the store, reads this machine's hardware, and loads the cached
    /// license without any network.
    pub fn open(config: &Config) -> Result<Agent, AgentError> {
        let dir = &config.paths.state_dir;
        create_private_dir(dir).map_err(|source| AgentError::StateDir {
            path: dir.display().to_string(),
            source,
        })?;
        let (store, report) = Store::open(&config.db_path())?;
        if let Some(aside) = &report.moved_aside {
            error!(
                moved_to = %aside.display(),
                reason = report.corruption.as_deref().unwrap_or("unknown"),
                "the database was corrupt and was moved aside; starting unlicensed (re-import or re-activate the license)"
            );
        }
        let hw = collect_hardware(&config.hwid.root);
        for w in &hw.warnings {
            warn!(hardware_id = %hw.hardware_id, "{w}");
        }
        let ring = config.key_ring().unwrap_or_else(|e| {
            // validate() already refused a bad list; keep the vendor keys.
            error!("trust keys not usable: {e}");
            KeyRing::vendor()
        });
        let anchor = clock::saved_anchor(&store)?;
        let settings = LedgerSettings {
            default_profile: config.seats.default_profile.clone(),
        };
        let ledger = seats::load(&store, Limits::none(), settings)?;
        let mut inner = Inner {
            store,
            ring,
            hw,
            license: None,
            state: LicenseState::Unlicensed,
            reason: Some("no license is installed".to_string()),
            clock: TrustedClock::new(anchor.clone()),
            anchor_saved: anchor,
            skew_warned: false,
            last_now: 0,
            test_until: None,
            ledger,
            last_over_use: Vec::new(),
            notice_hook: config.seats.hook(),
            test_end_hook: config.test_mode.hook(),
        };
        inner.test_until = inner
            .store
            .setting(TEST_MODE_KEY)?
            .and_then(|v| v.parse().ok());
        let now = inner.now();
        inner.load_current(now)?;
        inner.sync_limits(now);
        let v = inner.clock.view(&time::reading());
        info!(
            message_id = logging::message_id::STATE_CHANGE,
            state = state_word(inner.state),
            hardware_id = %inner.hw.hardware_id,
            trusted_now = %time::rfc3339(v.trusted),
            time_source = v.source.as_str(),
            "license state at start: {}",
            state_word(inner.state)
        );
        Ok(Agent {
            inner: Mutex::new(inner),
            changed: tokio::sync::Notify::new(),
        })
    }

    /// Resolves when a deadline may have changed since the last call.
    pub async fn changed(&self) {
        self.changed.notified().await
    }

    /// Tells the daemon's timer to plan again.
    pub fn wake(&self) {
        self.changed.notify_one();
    }

    /// Trusted now, Unix seconds.
    pub fn now(&self) -> i64 {
        self.lock().now()
    }

    /// Trusted now, Unix milliseconds (for timers).
    pub fn now_ms(&self) -> i64 {
        self.lock().now_ms()
    }

    /// A verified portal time (a stamp or a license bound to our nonce):
    /// trusted time is reset to it, in either direction, and the state
    /// follows.
    pub fn portal_time(&self, portal_ms: i64) {
        let mut inner = self.lock();
        inner.set_portal_time(portal_ms);
        drop(inner);
        self.wake();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent data (every change
        // is committed to the store before memory is touched).
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn status(&self) -> Status {
        let mut inner = self.lock();
        let now = inner.now();
        inner.status(now)
    }

    /// Refuses a trial on a box that holds a full license, unless `replace`.
    pub fn check_trial_allowed(&self, replace: bool) -> Result<(), ImportError> {
        let inner = self.lock();
        match &inner.license {
            Some(l) if l.payload.kind == LicenseKind::Full && !replace => {
                Err(ImportError::Weaker {
                    installed: l.payload.license_id.clone(),
                    system: l.payload.system_id.clone(),
                    name: l.payload.pbx_name.clone(),
                    new_kind: "trial".into(),
                })
            }
            _ => Ok(()),
        }
    }

    pub fn key_ring(&self) -> KeyRing {
        self.lock().ring.clone()
    }

    pub fn hardware(&self) -> HardwareInfo {
        self.lock().hw.clone()
    }

    /// The state as reported (test mode shows as `test`).
    pub fn state(&self) -> LicenseState {
        let mut inner = self.lock();
        let now = inner.now();
        inner.reported_state(now)
    }

    /// Verifies and installs an armored license file (offline import).
    /// Another system's license, or a weaker kind over a full license,
    /// needs `replace`.
    pub fn import(&self, text: &str, replace: bool) -> Result<Status, ImportError> {
        self.accept(text, None, replace)
    }

    /// Verifies and installs a license; from the portal it must also answer
    /// the request (`expect`), and its time resets trusted time.
    pub fn accept(
        &self,
        text: &str,
        expect: Option<Expect<'_>>,
        replace: bool,
    ) -> Result<Status, ImportError> {
        let result = self.lock().accept(text, expect, replace);
        // The deadlines may have moved even when the license was refused
        // (the portal's time was taken).
        self.wake();
        result
    }

    /// The installed license, when it is one the portal keeps fresh.
    pub fn refresh_target(&self) -> Option<RefreshTarget> {
        let inner = self.lock();
        if matches!(
            inner.state,
            LicenseState::Revoked | LicenseState::Unlicensed
        ) {
            return None;
        }
        let p = &inner.license.as_ref()?.payload;
        Some(RefreshTarget {
            system_id: p.system_id.clone(),
            license_id: p.license_id.clone(),
            issued_at: p.issued_at,
            refresh_due: p.refresh_due?,
        })
    }

    /// Seats in use per profile, reported to the portal on refresh.
    pub fn seats_in_use(&self) -> std::collections::BTreeMap<String, u32> {
        self.lock().ledger.seats_in_use()
    }

    /// The portal said the license is revoked (a verified statement). Kept
    /// across restarts until another license is installed.
    pub fn revoke(&self, reason: &str) -> Result<(), StoreError> {
        let mut inner = self.lock();
        let text = format!("the portal revoked this license: {reason}");
        inner.store.set_setting(REVOKED_KEY, Some(&text))?;
        if inner.apply(Event::Revoked, Some(text)) {
            let now = inner.last_now;
            inner.sync_limits(now);
        }
        drop(inner);
        self.wake();
        Ok(())
    }

    /// Removes the installed license (after the portal released the
    /// binding): the PBX is unlicensed until it is activated again.
    pub fn remove_license(&self) -> Result<Status, StoreError> {
        let mut inner = self.lock();
        let now = inner.now();
        inner.store.remove_license(now)?;
        inner.store.set_setting(REVOKED_KEY, None)?;
        inner.license = None;
        inner.apply(
            Event::Removed,
            Some("the license was deactivated on this box".into()),
        );
        inner.sync_limits(now);
        let status = inner.status(now);
        drop(inner);
        self.wake();
        Ok(status)
    }

    /// Applies whatever the passing of time implies; called by the daemon's
    /// timer. Returns the state after.
    pub fn tick(&self) -> LicenseState {
        let mut inner = self.lock();
        let now = inner.now();
        if inner.apply_time_events(now) {
            inner.sync_limits(now);
        }
        if inner.test_until.is_some_and(|u| u <= now) {
            inner.end_test_mode("its time ran out");
        }
        inner.reported_state(now)
    }

    /// Takes a new trust key ring (config reload) and re-checks the license.
    pub fn set_key_ring(&self, ring: KeyRing) -> Result<(), StoreError> {
        let mut inner = self.lock();
        inner.ring = ring;
        let now = inner.now();
        inner.load_current(now)?;
        inner.sync_limits(now);
        drop(inner);
        self.wake();
        Ok(())
    }

    /// Milliseconds until the next time-driven change (refresh due, grace
    /// end, term end, test mode end), if any, for the daemon's timer.
    pub fn next_deadline_ms(&self) -> Option<i64> {
        let mut inner = self.lock();
        let now = inner.now_ms();
        let mut times: Vec<i64> = inner.test_until.into_iter().collect();
        if let Some(l) = &inner.license {
            let p = &l.payload;
            if let Some(due) = p.refresh_due {
                times.push(due);
                times.push(due.saturating_add(p.grace_secs));
            }
            times.extend(p.term.ends_at);
        }
        times
            .into_iter()
            .map(|t| t.saturating_mul(1000))
            .filter(|t| *t > now)
            .min()
            .map(|t| t - now)
    }
}

impl Inner {
    /// Reads the current license from the store and derives the state from
    /// its own times (start-up and trust changes).
    fn load_current(&mut self, now: i64) -> Result<(), StoreError> {
        self.license = None;
        let Some(stored) = self.store.current_license()? else {
            self.set_state(
                LicenseState::Unlicensed,
                Some("no license is installed".into()),
            );
            return Ok(());
        };
        let payload = match license::verify(&stored.armored, &self.ring) {
            Ok(p) => p,
            Err(e) => {
                warn!(license_id = %stored.license_id, "the installed license is not accepted: {e}");
                self.set_state(
                    LicenseState::Unlicensed,
                    Some(format!("the installed license is not accepted: {e}")),
                );
                return Ok(());
            }
        };
        let hw = match license::check(&payload, &self.hw.components, now) {
            Ok(v) => v.hardware,
            Err(LicenseError::Expired(at)) => {
                let hw = hwid::compare(&payload.hardware, &self.hw.components);
                self.license = Some(Loaded {
                    payload,
                    stored,
                    hw,
                });
                self.set_state(
                    LicenseState::Expired,
                    Some(format!("the term ended at {at}")),
                );
                return Ok(());
            }
            Err(e) => {
                warn!(license_id = %stored.license_id, "the installed license is not valid here: {e}");
                self.set_state(LicenseState::Unlicensed, Some(e.to_string()));
                return Ok(());
            }
        };
        let revoked = self.store.setting(REVOKED_KEY)?;
        let state = match revoked {
            Some(_) => LicenseState::Revoked,
            None => state::state_at(&payload, now),
        };
        self.license = Some(Loaded {
            payload,
            stored,
            hw,
        });
        let reason = self.reason_for(state, now, revoked);
        self.set_state(state, reason);
        Ok(())
    }

    fn set_state(&mut self, state: LicenseState, reason: Option<String>) {
        if state != self.state {
            let (from, to) = (state_word(self.state), state_word(state));
            let id = logging::message_id::STATE_CHANGE;
            // Losing ground is a warning: the admin must act before (grace)
            // or now (expired, revoked).
            match state {
                LicenseState::Grace | LicenseState::Expired | LicenseState::Revoked => {
                    warn!(message_id = id, from, to, "license state changed: {to}")
                }
                _ => info!(message_id = id, from, to, "license state changed: {to}"),
            }
        }
        self.state = state;
        self.reason = reason;
    }

    /// Runs one event through the transition table; true when the state
    /// changed. The caller re-syncs the seat limits once after its events.
    fn apply(&mut self, event: Event, reason: Option<String>) -> bool {
        match state::transition(self.state, event) {
            Some(next) => {
                let now = self.last_now;
                let reason = reason.or_else(|| self.reason_for(next, now, None));
                let changed = next != self.state;
                self.set_state(next, reason);
                changed
            }
            None => {
                tracing::debug!(state = ?self.state, ?event, "event does not apply");
                false
            }
        }
    }

    /// The time-driven events that have happened by `now`, in order; true
    /// when the state changed.
    fn apply_time_events(&mut self, now: i64) -> bool {
        let Some(l) = &self.license else {
            return false;
        };
        let p = &l.payload;
        let mut events = vec![];
        if let Some(due) = p.refresh_due {
            if now >= due {
                events.push(Event::RefreshOverdue);
            }
            if now >= due.saturating_add(p.grace_secs) {
                events.push(Event::GraceEnded);
            }
        }
        if p.term.ends_at.is_some_and(|end| now >= end) {
            events.push(Event::TermEnded);
        }
        let mut changed = false;
        for e in events {
            changed |= self.apply(e, None);
        }
        changed
    }

    fn reason_for(&self, state: LicenseState, now: i64, revoked: Option<String>) -> Option<String> {
        let p = self.license.as_ref().map(|l| &l.payload);
        match state {
            LicenseState::Unlicensed => Some("no license is installed".into()),
            LicenseState::Revoked => Some(revoked.unwrap_or_else(|| "the portal revoked this license".into())),
            LicenseState::Expired => p
                .and_then(|p| state::expiry_reason(p, now))
                .map(|r| format!("the license expired: {r}")),
            LicenseState::Grace => p.and_then(|p| p.refresh_due).map(|due| {
                format!(
                    "the portal has not been reached since the refresh was due at {}; licensed until grace ends",
                    time::rfc3339(due)
                )
            }),
            _ => None,
        }
    }

    fn test_mode_on(&self, now: i64) -> Option<i64> {
        self.test_until.filter(|u| *u > now)
    }

    fn reported_state(&self, now: i64) -> LicenseState {
        if self.test_mode_on(now).is_some() {
            LicenseState::Test
        } else {
            self.state
        }
    }

    /// Gives the ledger the limits of what is in force now: the license
    /// while licensed, no limits in test mode, nothing otherwise.
    fn sync_limits(&mut self, now: i64) {
        let limits = match (self.test_mode_on(now), &self.license) {
            (Some(_), license) => {
                let mut p = license
                    .as_ref()
                    .map(|l| l.payload.clone())
                    .unwrap_or_else(testmode::test_mode_payload);
                p.kind = license::LicenseKind::Test;
                Limits::from_payload(&p)
            }
            (None, Some(l)) if self.state.is_licensed() => Limits::from_payload(&l.payload),
            _ => Limits::none(),
        };
        let over = self.ledger.set_limits(limits);
        self.note_over_use(over);
    }

    /// Logs over-use once per change and runs the notice hook.
    fn note_over_use(&mut self, over: Vec<OverUse>) {
        if over == self.last_over_use {
            return;
        }
        for o in &over {
            warn!(
                message_id = logging::message_id::OVER_USE,
                code = %o.code,
                purchased = o.purchased,
                used = o.used,
                "over-use: {} users hold {} ({}), {} seats were bought",
                o.used, o.name, o.code, o.purchased
            );
        }
        if over.is_empty() {
            info!(
                message_id = logging::message_id::OVER_USE,
                "no profile or add-on is over-used any more"
            );
        }
        if let Some(hook) = &self.notice_hook {
            users::run_notice_hook(hook, &over);
        }
        self.last_over_use = over;
    }
}

/// Reads the hardware; a machine where nothing can be read still runs the
/// agent (unlicensed), with a warning instead of a crash loop.
pub fn collect_hardware(root: &Path) -> HardwareInfo {
    match hwid::collect(root) {
        Ok(hw) => hw,
        Err(e) => {
            error!("{e}");
            HardwareInfo {
                hardware_id: hwid::hardware_id(&[]),
                components: vec![],
                warnings: vec![e.to_string()],
            }
        }
    }
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    match std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
    {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}
