//! The agent's side of trusted time: reading it, saving its anchor, taking
//! the portal's time and re-deriving the state when it moved. The rules
//! themselves are in `crate::license::clock`.

use tracing::{info, warn};

use super::{Inner, ANCHOR_KEY, ANCHOR_PERSIST_MS};
use crate::license::clock::{Anchor, Reading, TimeSource};
use crate::license::{state, LicenseState};
use crate::store::{Store, StoreError};
use crate::time;

impl Inner {
    /// Trusted now, Unix seconds.
    pub(super) fn now(&mut self) -> i64 {
        self.now_ms().div_euclid(1000)
    }

    /// Trusted now, Unix milliseconds; saves the anchor when it moved and
    /// logs a skew beyond the threshold once.
    pub(super) fn now_ms(&mut self) -> i64 {
        let r = time::reading();
        let now = self.clock.now_ms(&r);
        self.last_now = now.div_euclid(1000);
        self.persist_anchor(&r, false);
        let v = self.clock.view(&r);
        match (&v.warning, self.skew_warned) {
            (Some(w), false) => {
                warn!(
                    message_id = crate::daemon::logging::message_id::CLOCK_WARNING,
                    wall_clock = %time::rfc3339(v.wall),
                    trusted_now = %time::rfc3339(v.trusted),
                    offset_secs = v.offset,
                    "{w}"
                );
                self.skew_warned = true;
            }
            (None, true) => self.skew_warned = false,
            _ => {}
        }
        now
    }

    /// Writes the anchor when its source or boot changed, when `force`, or
    /// every [`ANCHOR_PERSIST_MS`] (as a fresh anchor at this reading, which
    /// within one boot says the same).
    pub(super) fn persist_anchor(&mut self, r: &Reading, force: bool) {
        let Some(cur) = self.clock.anchor().cloned() else {
            return;
        };
        let due = match &self.anchor_saved {
            None => true,
            // A new source, a correction or a reboot is saved at once;
            // the steady run of time (and the wall clock followed forward
            // while nothing is trusted) every ANCHOR_PERSIST_MS.
            Some(saved) => {
                force
                    || saved.source != cur.source
                    || saved.source_at != cur.source_at
                    || saved.boot_id != cur.boot_id
                    || r.boot_ms.saturating_sub(saved.boot_ms) >= ANCHOR_PERSIST_MS
                    || r.boot_ms < saved.boot_ms
            }
        };
        if !due {
            return;
        }
        self.clock.rebase(r);
        let Some(anchor) = self.clock.anchor().cloned() else {
            return;
        };
        let json = serde_json::to_string(&anchor).unwrap_or_default();
        match self.store.set_setting(ANCHOR_KEY, Some(&json)) {
            Ok(()) => self.anchor_saved = Some(anchor),
            Err(e) => warn!("cannot save trusted time: {e}"),
        }
    }

    /// Takes a verified portal time and re-derives the state from the
    /// license's own times: a forward jump the portal undid must not leave
    /// the box expired.
    pub(super) fn set_portal_time(&mut self, portal_ms: i64) {
        let r = time::reading();
        let before = self.clock.now(&r);
        self.clock.set_portal(&r, portal_ms);
        self.persist_anchor(&r, true);
        let portal_secs = portal_ms.div_euclid(1000);
        if (before - portal_secs).abs() > crate::license::clock::SKEW_WARN_SECS {
            info!(
                was = %time::rfc3339(before),
                now = %time::rfc3339(portal_secs),
                "trusted time corrected by the portal"
            );
        }
        let now = self.now();
        self.rederive(now);
        self.sync_limits(now);
    }

    /// The state from the license's times at `now`, unless a verdict that
    /// time cannot change stands (revoked, unlicensed).
    fn rederive(&mut self, now: i64) {
        if matches!(self.state, LicenseState::Revoked | LicenseState::Unlicensed) {
            return;
        }
        let Some(l) = &self.license else { return };
        let next = state::state_at(&l.payload, now);
        if next != self.state {
            let reason = self.reason_for(next, now, None);
            self.set_state(next, reason);
        }
    }
}

/// The saved anchor of trusted time. A store from before trusted time has
/// only a high-water mark: it becomes an anchor carried over a reboot, so
/// time runs on from it and never below it.
pub(super) fn saved_anchor(store: &Store) -> Result<Option<Anchor>, StoreError> {
    if let Some(json) = store.setting(ANCHOR_KEY)? {
        match serde_json::from_str(&json) {
            Ok(a) => return Ok(Some(a)),
            Err(e) => {
                warn!("the saved trusted time is damaged ({e}); starting from the high-water mark")
            }
        }
    }
    let mark = store.clock_mark()?;
    Ok((mark > 0).then(|| Anchor {
        trusted_ms: mark.saturating_mul(1000),
        boot_ms: 0,
        boot_id: "before-trusted-time".into(),
        source: TimeSource::Boot,
        source_at: mark,
    }))
}
