//! Trusted time: the agent's own notion of "now", of which the wall clock is
//! only a hint.
//!
//! Trusted now is the last anchor plus the monotonic time elapsed since it
//! (`CLOCK_BOOTTIME`, which keeps counting through suspend). Anchors come
//! from, strongest first: a verified portal time bound to a request's nonce
//! (resets the clock in both directions), a license file's issue time (a
//! floor: only ever moves the clock forward), and the start of a boot (the
//! saved anchor carried over, or the wall clock when it is later). Until any
//! of those exists the wall clock is followed forward, never backward.
//!
//! No I/O: every reading of the clocks is an input ([`Reading`]), so every
//! case is a unit test. The daemon reads them in `crate::time::reading`.

use serde::{Deserialize, Serialize};

/// Above this distance between wall clock and trusted time `status` warns
/// (and the log says so once). Five minutes: NTP steps and leap smearing
/// stay well below it; a PBX whose wall clock is further off shows wrong
/// times in its call records even though its license is unaffected.
pub const SKEW_WARN_SECS: i64 = 300;

/// Where trusted time came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeSource {
    /// Nothing trusted yet: the wall clock, followed forward only (a board
    /// without a battery-backed clock at 1970 is not a tamper case).
    WallClock,
    /// Carried over a reboot from the saved anchor (or the wall clock at
    /// boot, when it was later).
    Boot,
    /// The issue time of an imported license file (a floor).
    LicenseFile,
    /// A portal answer: its time, signed and bound to the request's nonce.
    Portal,
}

impl TimeSource {
    /// The JSON name, for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            TimeSource::WallClock => "wall_clock",
            TimeSource::Boot => "boot",
            TimeSource::LicenseFile => "license_file",
            TimeSource::Portal => "portal",
        }
    }

    /// Whether the wall clock may still move trusted time forward within a
    /// boot. Once a portal or a license said what time it is, only those
    /// and the monotonic clock do.
    fn follows_wall(self) -> bool {
        matches!(self, TimeSource::WallClock | TimeSource::Boot)
    }

    pub fn word(self) -> &'static str {
        match self {
            TimeSource::WallClock => "wall clock (nothing trusted yet)",
            TimeSource::Boot => "carried over the last reboot",
            TimeSource::LicenseFile => "license file",
            TimeSource::Portal => "portal",
        }
    }
}

/// The clocks as read at one instant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reading {
    /// Wall clock, Unix milliseconds.
    pub wall_ms: i64,
    /// `CLOCK_BOOTTIME`, milliseconds.
    pub boot_ms: i64,
    /// The kernel's boot id; another value means the box rebooted.
    pub boot_id: String,
}

/// A persisted anchor: trusted time at one point of one boot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anchor {
    /// Trusted Unix milliseconds at the anchor.
    pub trusted_ms: i64,
    /// `CLOCK_BOOTTIME` milliseconds at the anchor.
    pub boot_ms: i64,
    pub boot_id: String,
    pub source: TimeSource,
    /// Trusted Unix seconds when `source` last set the time.
    pub source_at: i64,
}

/// What `status` shows about the clock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClockView {
    pub trusted: i64,
    pub wall: i64,
    /// Wall clock minus trusted time, seconds (negative: the wall clock is
    /// behind).
    pub offset: i64,
    pub source: TimeSource,
    pub source_at: i64,
    /// Set when the offset is beyond [`SKEW_WARN_SECS`] and something
    /// trusted exists to compare with.
    pub warning: Option<String>,
}

/// The clock itself. Every call takes a fresh [`Reading`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustedClock {
    anchor: Option<Anchor>,
}

impl TrustedClock {
    /// From the saved anchor, if any.
    pub fn new(saved: Option<Anchor>) -> TrustedClock {
        TrustedClock { anchor: saved }
    }

    pub fn anchor(&self) -> Option<&Anchor> {
        self.anchor.as_ref()
    }

    fn set(&mut self, r: &Reading, trusted_ms: i64, source: TimeSource, source_at: i64) {
        self.anchor = Some(Anchor {
            trusted_ms,
            boot_ms: r.boot_ms,
            boot_id: r.boot_id.clone(),
            source,
            source_at,
        });
    }

    /// Trusted now in milliseconds. Re-anchors after a reboot, and follows
    /// the wall clock forward while nothing trusted exists; the caller
    /// persists [`TrustedClock::anchor`] when it changed.
    pub fn now_ms(&mut self, r: &Reading) -> i64 {
        let Some(a) = &self.anchor else {
            self.set(r, r.wall_ms, TimeSource::WallClock, r.wall_ms / 1000);
            return r.wall_ms;
        };
        let same_boot = a.boot_id == r.boot_id && r.boot_ms >= a.boot_ms;
        if same_boot {
            let t = a.trusted_ms.saturating_add(r.boot_ms - a.boot_ms);
            if a.source.follows_wall() && r.wall_ms > t {
                let (source, at) = (a.source, a.source_at);
                self.set(r, r.wall_ms, source, at);
                return r.wall_ms;
            }
            return t;
        }
        // Rebooted: how long the box was off is unknown. The saved time is
        // a floor; a wall clock ahead of it is the best guess of the
        // downtime, one behind it is ignored (time runs on from the anchor).
        let carried = a.trusted_ms;
        let (t, source) = match a.source {
            TimeSource::WallClock => (carried.max(r.wall_ms), TimeSource::WallClock),
            _ => (carried.max(r.wall_ms), TimeSource::Boot),
        };
        self.set(r, t, source, t / 1000);
        t
    }

    /// Re-anchors at `r` with the same source: within one boot this says
    /// the same time, and it is what gets saved for the next boot.
    pub fn rebase(&mut self, r: &Reading) {
        let now = self.now_ms(r);
        if let Some(a) = &self.anchor {
            let (source, at) = (a.source, a.source_at);
            self.set(r, now, source, at);
        }
    }

    /// Trusted now in seconds.
    pub fn now(&mut self, r: &Reading) -> i64 {
        self.now_ms(r).div_euclid(1000)
    }

    /// A verified portal time (milliseconds): the truth, in both
    /// directions.
    pub fn set_portal(&mut self, r: &Reading, portal_ms: i64) {
        self.set(r, portal_ms, TimeSource::Portal, portal_ms.div_euclid(1000));
    }

    /// A verified license file says it is at least `secs`; true when that
    /// moved the clock.
    pub fn floor(&mut self, r: &Reading, secs: i64) -> bool {
        let now = self.now_ms(r);
        let ms = secs.saturating_mul(1000);
        if ms <= now {
            return false;
        }
        self.set(r, ms, TimeSource::LicenseFile, secs);
        true
    }

    /// The clock for people, at `r`.
    pub fn view(&mut self, r: &Reading) -> ClockView {
        let trusted = self.now(r);
        let wall = r.wall_ms.div_euclid(1000);
        let (source, source_at) = self
            .anchor
            .as_ref()
            .map_or((TimeSource::WallClock, wall), |a| (a.source, a.source_at));
        let offset = wall.saturating_sub(trusted);
        let warning = (source != TimeSource::WallClock && offset.abs() > SKEW_WARN_SECS).then(|| {
            let dir = if offset < 0 { "behind" } else { "ahead of" };
            format!(
                "the system clock is {} {dir} trusted time; licenses run on trusted time, but fix NTP or the RTC so that logs and call records are right",
                span(offset.unsigned_abs())
            )
        });
        ClockView {
            trusted,
            wall,
            offset,
            source,
            source_at,
            warning,
        }
    }
}

/// A duration for people: "10m", "365d 0h", "42s".
pub fn span(secs: u64) -> String {
    let (d, h, m, s) = (
        secs / 86_400,
        secs % 86_400 / 3600,
        secs % 3600 / 60,
        secs % 60,
    );
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_800_000_000_000;
    const YEAR: i64 = 365 * 86_400 * 1000;

    fn r(wall_ms: i64, boot_ms: i64, boot_id: &str) -> Reading {
        Reading {
            wall_ms,
            boot_ms,
            boot_id: boot_id.into(),
        }
    }

    fn portal_clock() -> TrustedClock {
        let mut c = TrustedClock::new(None);
        c.set_portal(&r(T0, 1000, "b1"), T0);
        c
    }

    #[test]
    fn with_nothing_trusted_the_wall_clock_is_followed_forward_only() {
        let mut c = TrustedClock::new(None);
        assert_eq!(c.now_ms(&r(T0, 0, "b1")), T0);
        // Forward (NTP set the clock): followed.
        assert_eq!(c.now_ms(&r(T0 + YEAR, 10, "b1")), T0 + YEAR);
        // Back: time runs on from the last value.
        assert_eq!(c.now_ms(&r(T0, 20, "b1")), T0 + YEAR + 10);
        // No tamper verdict without trusted time.
        assert_eq!(c.view(&r(T0, 20, "b1")).warning, None);
    }

    #[test]
    fn a_clock_set_back_a_year_does_not_stop_trusted_time() {
        let mut c = portal_clock();
        let now = c.now_ms(&r(T0 - YEAR, 1000 + 5_000, "b1"));
        assert_eq!(now, T0 + 5_000);
        let v = c.view(&r(T0 - YEAR + 5_000, 1000 + 5_000, "b1"));
        assert_eq!(v.trusted, (T0 + 5_000) / 1000);
        assert_eq!(v.offset, -YEAR / 1000);
        assert_eq!(v.source, TimeSource::Portal);
        assert!(v.warning.unwrap().contains("365d 0h behind"));
    }

    #[test]
    fn a_wall_clock_forward_jump_is_ignored_once_the_portal_spoke() {
        let mut c = portal_clock();
        assert_eq!(c.now_ms(&r(T0 + 400 * 86_400_000, 2000, "b1")), T0 + 1000);
    }

    #[test]
    fn portal_time_resets_both_ways() {
        let mut c = TrustedClock::new(None);
        // A board that believed it was 400 days later.
        c.now_ms(&r(T0 + 400 * 86_400_000, 0, "b1"));
        c.set_portal(&r(T0 + 400 * 86_400_000, 10, "b1"), T0);
        assert_eq!(c.now_ms(&r(T0 + 400 * 86_400_000, 1010, "b1")), T0 + 1000);
        c.set_portal(&r(0, 2000, "b1"), T0 + 60_000);
        assert_eq!(c.now(&r(0, 2000, "b1")), T0 / 1000 + 60);
    }

    #[test]
    fn after_a_reboot_a_wall_clock_behind_the_anchor_runs_on_from_it() {
        let mut c = portal_clock();
        // Rebooted with the RTC at 1970: the anchor is the floor.
        assert_eq!(c.now_ms(&r(0, 500, "b2")), T0);
        assert_eq!(c.now_ms(&r(0, 1500, "b2")), T0 + 1000);
        assert_eq!(c.anchor().unwrap().source, TimeSource::Boot);
        // A later wall clock after the reboot counts as the downtime, and
        // is followed while nothing newer is trusted.
        let mut c = portal_clock();
        assert_eq!(c.now_ms(&r(T0 + 86_400_000, 500, "b2")), T0 + 86_400_000);
        assert_eq!(
            c.now_ms(&r(T0 + 2 * 86_400_000, 600, "b2")),
            T0 + 2 * 86_400_000
        );
    }

    #[test]
    fn a_boot_clock_that_went_back_is_a_reboot_even_with_the_same_id() {
        let mut c = portal_clock();
        assert_eq!(c.now_ms(&r(0, 10, "b1")), T0);
    }

    #[test]
    fn a_license_file_is_a_floor() {
        let mut c = TrustedClock::new(None);
        c.now_ms(&r(0, 0, "b1"));
        assert!(c.floor(&r(0, 0, "b1"), T0 / 1000));
        assert_eq!(c.now_ms(&r(0, 3000, "b1")), T0 + 3000);
        assert_eq!(c.anchor().unwrap().source, TimeSource::LicenseFile);
        // An older license never moves time back.
        assert!(!c.floor(&r(0, 3000, "b1"), T0 / 1000 - 100));
        assert_eq!(c.now_ms(&r(0, 3000, "b1")), T0 + 3000);
        // And once a license said the time, a wall clock jump is ignored.
        assert_eq!(c.now_ms(&r(T0 + YEAR, 4000, "b1")), T0 + 4000);
    }

    #[test]
    fn view_is_quiet_within_the_threshold() {
        let mut c = portal_clock();
        let v = c.view(&r(T0 - SKEW_WARN_SECS * 1000, 1000, "b1"));
        assert_eq!(v.offset, -SKEW_WARN_SECS);
        assert_eq!(v.warning, None);
        let v = c.view(&r(T0 + (SKEW_WARN_SECS + 1) * 1000, 1000, "b1"));
        assert!(v.warning.unwrap().contains("ahead of"));
    }

    #[test]
    fn spans_read_well() {
        assert_eq!(span(42), "42s");
        assert_eq!(span(600), "10m 0s");
        assert_eq!(span(7200 + 60), "2h 1m");
        assert_eq!(span(365 * 86_400), "365d 0h");
    }
}
