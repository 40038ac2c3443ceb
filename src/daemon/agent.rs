//! The agent's state in memory: the verified license, its state, this
//! machine's hardware, kept in step with the store. The API handlers and the
//! daemon's timers call into it; every call is short and never awaits while
//! holding the lock.

use std::path::Path;
use std::sync::Mutex;

use tracing::{error, info, warn};

use crate::api::types::{LicenseSummary, SeatCount, Status, TestMode};
use crate::config::Config;
use crate::hwid::{self, HardwareInfo, HwMatch};
use crate::license::{self, state, Event, KeyRing, LicenseError, LicensePayload, LicenseState};
use crate::seats::{self, Ledger, LedgerSettings, Limits, OverUse};
use crate::store::{Store, StoreError, StoredLicense};
use crate::time;

mod observe;
pub mod users;

/// The clock may lag its own high-water mark by this much before the agent
/// says so (NTP steps and leap smearing stay quiet).
const CLOCK_BACK_TOLERANCE_SECS: i64 = 300;

/// How often the high-water mark is written to the store at most.
const CLOCK_MARK_PERSIST_SECS: i64 = 60;

pub struct Agent {
    inner: Mutex<Inner>,
}

struct Inner {
    store: Store,
    ring: KeyRing,
    hw: HardwareInfo,
    license: Option<Loaded>,
    state: LicenseState,
    reason: Option<String>,
    /// The highest time seen; "now" never goes below it.
    clock_mark: i64,
    clock_mark_saved: i64,
    clock_back_warned: bool,
    /// End of test mode (Unix seconds) while it is on.
    test_until: Option<i64>,
    /// Users and their seats, in step with the store.
    ledger: Ledger,
    /// Over-use as last reported, so that each change is logged once.
    last_over_use: Vec<OverUse>,
    /// Run (not waited for) when over-use changes; `seats.notice_hook`.
    notice_hook: Option<std::path::PathBuf>,
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

/// Why an import was refused; the API maps each to a status code.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{0}")]
    Invalid(#[from] LicenseError),
    #[error("the license {new} is older than the installed license {installed} of the same system; it was not installed")]
    Older { new: String, installed: String },
    #[error("the portal's license answers another request (nonce mismatch); it was not installed")]
    WrongNonce,
    #[error("the portal's license names another device key; it was not installed")]
    WrongDevice,
    #[error("the license could not be saved: {0}")]
    Store(#[from] StoreError),
}

/// What a license from the portal must carry to be installed: it answers
/// this request and names this device.
pub struct Expect<'a> {
    pub nonce: &'a str,
    pub device_public_key: &'a str,
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

/// Why test mode could not be switched.
#[derive(Debug, thiserror::Error)]
pub enum TestModeError {
    #[error("test mode is already on until {0}; stop it first to start it again")]
    AlreadyOn(String),
    #[error("test mode is not on")]
    NotOn,
    #[error("{0}")]
    Store(#[from] StoreError),
}

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
        let clock_mark = store.clock_mark()?;
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
            clock_mark,
            clock_mark_saved: clock_mark,
            clock_back_warned: false,
            test_until: None,
            ledger,
            last_over_use: Vec::new(),
            notice_hook: config.seats.hook(),
        };
        inner.test_until = inner
            .store
            .setting(TEST_MODE_KEY)?
            .and_then(|v| v.parse().ok());
        let now = inner.now();
        inner.persist_clock_mark(now, true);
        inner.load_current(now)?;
        inner.sync_limits(now);
        info!(
            state = ?inner.state,
            hardware_id = %inner.hw.hardware_id,
            "license state at start: {}",
            state_word(inner.state)
        );
        Ok(Agent {
            inner: Mutex::new(inner),
        })
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
    pub fn import(&self, text: &str) -> Result<Status, ImportError> {
        self.accept(text, None)
    }

    /// Verifies and installs a license; from the portal it must also answer
    /// the request (`expect`).
    pub fn accept(&self, text: &str, expect: Option<Expect<'_>>) -> Result<Status, ImportError> {
        let mut inner = self.lock();
        let now = inner.now();
        let payload = license::verify(text, &inner.ring)?;
        if let Some(x) = &expect {
            if payload.nonce.as_deref() != Some(x.nonce) {
                return Err(ImportError::WrongNonce);
            }
            if payload.device_public_key.as_deref() != Some(x.device_public_key) {
                return Err(ImportError::WrongDevice);
            }
        }
        let validity = license::check(&payload, &inner.hw.components, now)?;
        if let Some(cur) = &inner.license {
            if cur.payload.system_id == payload.system_id
                && payload.issued_at < cur.payload.issued_at
            {
                return Err(ImportError::Older {
                    new: payload.license_id.clone(),
                    installed: cur.payload.license_id.clone(),
                });
            }
        }
        let stored = StoredLicense {
            license_id: payload.license_id.clone(),
            armored: text.trim().to_string() + "\n",
            installed_at: now,
        };
        inner.store.install_license(&stored)?;
        inner.store.set_setting(REVOKED_KEY, None)?;
        inner.persist_clock_mark(now, true);
        info!(
            license_id = %payload.license_id,
            system_id = %payload.system_id,
            kind = ?payload.kind,
            "license installed"
        );
        let kind = payload.kind;
        inner.license = Some(Loaded {
            payload,
            stored,
            hw: validity.hardware,
        });
        inner.apply(Event::Installed(kind), None);
        // A license installed late may already be in grace.
        inner.apply_time_events(now);
        // New seats take effect now, even when the state stayed the same.
        inner.sync_limits(now);
        Ok(inner.status(now))
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
            let now = inner.clock_mark;
            inner.sync_limits(now);
        }
        Ok(())
    }

    /// Starts test mode: everything unlocked, no seat limits, for
    /// `duration_secs`, then back to the installed license by itself.
    pub fn start_test_mode(&self, duration_secs: i64) -> Result<Status, TestModeError> {
        let mut inner = self.lock();
        let now = inner.now();
        if let Some(until) = inner.test_until.filter(|u| *u > now) {
            return Err(TestModeError::AlreadyOn(time::rfc3339(until)));
        }
        let until = now + duration_secs;
        inner
            .store
            .set_setting(TEST_MODE_KEY, Some(&until.to_string()))?;
        inner.test_until = Some(until);
        info!(until = %time::rfc3339(until), "test mode started: everything unlocked, no seat limits");
        inner.sync_limits(now);
        Ok(inner.status(now))
    }

    /// Ends test mode now.
    pub fn stop_test_mode(&self) -> Result<Status, TestModeError> {
        let mut inner = self.lock();
        let now = inner.now();
        if inner.test_until.filter(|u| *u > now).is_none() {
            return Err(TestModeError::NotOn);
        }
        inner.end_test_mode("stopped");
        Ok(inner.status(now))
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
        Ok(inner.status(now))
    }

    /// Applies whatever the passing of time implies; called by the daemon's
    /// timer. Returns the state after.
    pub fn tick(&self) -> LicenseState {
        let mut inner = self.lock();
        let now = inner.now();
        inner.persist_clock_mark(now, false);
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
        Ok(())
    }

    /// Seconds until the next time-driven state change, if any (for timers).
    pub fn next_deadline(&self) -> Option<i64> {
        let mut inner = self.lock();
        let now = inner.now();
        let mut times: Vec<i64> = inner.test_until.into_iter().collect();
        let Some(l) = &inner.license else {
            return times
                .into_iter()
                .filter(|t| *t > now)
                .min()
                .map(|t| t - now);
        };
        let p = &l.payload;
        if let Some(due) = p.refresh_due {
            times.push(due);
            times.push(due.saturating_add(p.grace_secs));
        }
        if let Some(end) = p.term.ends_at {
            times.push(end);
        }
        times
            .into_iter()
            .filter(|t| *t > now)
            .min()
            .map(|t| t - now)
    }
}

impl Inner {
    /// Wall-clock time, never below the high-water mark.
    fn now(&mut self) -> i64 {
        let wall = time::now();
        if wall >= self.clock_mark {
            self.clock_mark = wall;
            self.clock_back_warned = false;
        } else if self.clock_mark - wall > CLOCK_BACK_TOLERANCE_SECS && !self.clock_back_warned {
            warn!(
                clock = %time::rfc3339(wall),
                high_water = %time::rfc3339(self.clock_mark),
                "the system clock is behind the latest time this agent has seen; license times use the latter"
            );
            self.clock_back_warned = true;
        }
        self.clock_mark
    }

    fn persist_clock_mark(&mut self, now: i64, force: bool) {
        if !force && now - self.clock_mark_saved < CLOCK_MARK_PERSIST_SECS {
            return;
        }
        match self.store.advance_clock_mark(now) {
            Ok(saved) => self.clock_mark_saved = saved,
            Err(e) => warn!("cannot save the clock high-water mark: {e}"),
        }
    }

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
            info!(from = ?self.state, to = ?state, "license state changed: {}", state_word(state));
        }
        self.state = state;
        self.reason = reason;
    }

    /// Runs one event through the transition table; true when the state
    /// changed. The caller re-syncs the seat limits once after its events.
    fn apply(&mut self, event: Event, reason: Option<String>) -> bool {
        match state::transition(self.state, event) {
            Some(next) => {
                let now = self.clock_mark;
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

    fn end_test_mode(&mut self, why: &str) {
        if let Err(e) = self.store.set_setting(TEST_MODE_KEY, None) {
            warn!("cannot clear test mode in the store: {e}");
        }
        self.test_until = None;
        info!(back_to = state_word(self.state), "test mode ended: {why}");
        let now = self.clock_mark;
        self.sync_limits(now);
    }

    /// Gives the ledger the limits of what is in force now: the license
    /// while licensed, no limits in test mode, nothing otherwise.
    fn sync_limits(&mut self, now: i64) {
        let limits = match (self.test_mode_on(now), &self.license) {
            (Some(_), license) => {
                let mut p = license
                    .as_ref()
                    .map(|l| l.payload.clone())
                    .unwrap_or_else(test_mode_payload);
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
                code = %o.code,
                purchased = o.purchased,
                used = o.used,
                "over-use: {} users hold {} ({}), {} seats were bought",
                o.used, o.name, o.code, o.purchased
            );
        }
        if over.is_empty() {
            info!("no profile or add-on is over-used any more");
        }
        if let Some(hook) = &self.notice_hook {
            users::run_notice_hook(hook, &over);
        }
        self.last_over_use = over;
    }

    fn status(&self, now: i64) -> Status {
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
            license,
            refresh: None,
        }
    }
}

fn summary(l: &Loaded, state: LicenseState, now: i64, ledger: &Ledger) -> LicenseSummary {
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

/// What test mode unlocks when no license is installed: the vendor's
/// catalog, every code unlimited.
fn test_mode_payload() -> LicensePayload {
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
    }
}
