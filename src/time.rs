//! The one place that reads clocks: the wall clock (Unix seconds), the
//! monotonic boot clock and the boot id that trusted time is built on
//! (`crate::license::clock`), and RFC 3339 for people.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::license::clock::Reading;

/// Overrides the kernel's boot id. For tests that simulate a reboot: a
/// changed id can only make the agent carry its saved time over, never
/// move trusted time back, so it is harmless to expose.
pub const BOOT_ID_ENV: &str = "LICAGENT_BOOT_ID";

/// The wall clock, in Unix milliseconds.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// `CLOCK_BOOTTIME` in milliseconds: monotonic, and counting suspend.
pub fn boot_ms() -> i64 {
    use nix::time::{clock_gettime, ClockId};
    match clock_gettime(ClockId::CLOCK_BOOTTIME) {
        // time_t and c_long are 32 bits on armhf: widen before multiplying,
        // or the product overflows after 24 days of uptime.
        #[allow(clippy::useless_conversion)]
        Ok(t) => i64::from(t.tv_sec()) * 1000 + i64::from(t.tv_nsec()) / 1_000_000,
        // Linux always has it; were it missing, a clock stuck at 0 reads
        // as one more reboot each time, which never moves time back.
        Err(_) => 0,
    }
}

/// This boot's id (read once per process).
pub fn boot_id() -> &'static str {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(|| {
        std::env::var(BOOT_ID_ENV)
            .ok()
            .filter(|v| !v.is_empty())
            .or_else(|| std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok())
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    })
}

/// Every clock at once, for the trusted clock.
pub fn reading() -> Reading {
    Reading {
        wall_ms: now_ms(),
        boot_ms: boot_ms(),
        boot_id: boot_id().to_string(),
    }
}

/// Now, in Unix seconds.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The last second RFC 3339 can write (9999-12-31T23:59:59Z).
const MAX_RFC3339: i64 = 253_402_300_799;

/// RFC 3339 in UTC, to the second. Times outside what the format can hold
/// (from a peer, or a damaged file) are clamped, never a panic.
pub fn rfc3339(secs: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_secs(secs.clamp(0, MAX_RFC3339) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Parses RFC 3339 (what [`rfc3339`] writes) back to Unix seconds.
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    let t = humantime::parse_rfc3339(text).ok()?;
    let secs = t.duration_since(UNIX_EPOCH).ok()?.as_secs();
    i64::try_from(secs).ok()
}

/// Serde for a time kept as Unix seconds and shown as RFC 3339; reads
/// either form, so that answers of older agents still parse.
pub mod rfc3339_serde {
    use serde::{de, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(secs: &i64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::rfc3339(*secs))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            Secs(i64),
            Text(String),
        }
        match Either::deserialize(d)? {
            Either::Secs(s) => Ok(s),
            Either::Text(t) => super::parse_rfc3339(&t)
                .ok_or_else(|| de::Error::custom(format!("{t:?} is not an RFC 3339 time"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_and_clamps() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_800_000_000), "2027-01-15T08:00:00Z");
        assert_eq!(rfc3339(i64::MAX), "9999-12-31T23:59:59Z");
        assert_eq!(rfc3339(-5), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn rfc3339_reads_back_and_serde_takes_both_forms() {
        assert_eq!(parse_rfc3339("2027-01-15T08:00:00Z"), Some(1_800_000_000));
        assert_eq!(parse_rfc3339("yesterday"), None);
        #[derive(serde::Serialize, serde::Deserialize)]
        struct T {
            #[serde(with = "rfc3339_serde")]
            at: i64,
        }
        let text = serde_json::to_string(&T { at: 1_800_000_000 }).unwrap();
        assert_eq!(text, r#"{"at":"2027-01-15T08:00:00Z"}"#);
        let old: T = serde_json::from_str(r#"{"at":1800000000}"#).unwrap();
        assert_eq!(old.at, 1_800_000_000);
        let new: T = serde_json::from_str(&text).unwrap();
        assert_eq!(new.at, 1_800_000_000);
    }
}
