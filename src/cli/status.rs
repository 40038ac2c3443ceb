//! `licagent status`: the license state, the PBX, seats and expiry.

use super::{block_on, client, print_json, CliError};
use crate::api::types::Status;
use crate::config::Config;
use crate::daemon::agent::state_word;
use crate::hwid::MatchVerdict;
use crate::license::LicenseState;

/// Prints the status and returns the exit code of its state.
pub fn run(config: &Config, json: bool, check: bool) -> Result<i32, CliError> {
    let status: Status = block_on(client(config).get("/v1/status"))??;
    if json {
        print_json(&status)?;
    } else if check {
        println!("{}", state_word(status.state));
    } else {
        print_human(&status);
    }
    Ok(exit_code(status.state))
}

/// The exit code of `licagent status` for a state (docs/cli.md).
pub fn exit_code(state: LicenseState) -> i32 {
    match state {
        LicenseState::Active | LicenseState::Trial | LicenseState::Test => super::EXIT_OK,
        LicenseState::Grace => super::EXIT_STATE_GRACE,
        LicenseState::Unlicensed => super::EXIT_STATE_UNLICENSED,
        LicenseState::Expired => super::EXIT_STATE_EXPIRED,
        LicenseState::Revoked => super::EXIT_STATE_REVOKED,
    }
}

/// A time for people: `2027-11-24 15:40 UTC (in 364 days)`, relative to
/// the agent's trusted now (or this machine's clock when the status has
/// none). Text that is not RFC 3339 is shown as it is.
fn when(rfc3339: &str, now: i64) -> String {
    let Some(t) = crate::time::parse_rfc3339(rfc3339) else {
        return rfc3339.to_string();
    };
    let day = rfc3339.get(..10).unwrap_or(rfc3339);
    let clock = rfc3339.get(11..16).unwrap_or("");
    let rel = match t - now {
        d if d.abs() < 60 => "now".to_string(),
        d if d > 0 => format!("in {}", rough(d as u64)),
        d => format!("{} ago", rough(d.unsigned_abs())),
    };
    format!("{day} {clock} UTC ({rel})")
}

/// "364 days", "5 hours", "12 minutes": one unit, rounded down.
fn rough(secs: u64) -> String {
    let (n, unit) = match secs {
        s if s >= 2 * 86_400 => (s / 86_400, "days"),
        s if s >= 2 * 3600 => (s / 3600, "hours"),
        s if s >= 120 => (s / 60, "minutes"),
        s => (s, "seconds"),
    };
    format!("{n} {unit}")
}

pub fn print_human(s: &Status) {
    let now = s
        .clock
        .as_ref()
        .and_then(|c| crate::time::parse_rfc3339(&c.trusted_now))
        .unwrap_or_else(crate::time::now);
    let licensed = if s.licensed {
        "licensed"
    } else {
        "NOT licensed"
    };
    println!("State:        {} ({licensed})", state_word(s.state));
    if let Some(r) = &s.reason {
        println!("Reason:       {r}");
    }
    if let Some(t) = &s.test_mode {
        println!("Test mode:    on until {}", when(&t.ends_at, now));
    }
    if let Some(n) = &s.next {
        println!(
            "Next:         {} in {} ({})",
            state_word(n.state),
            crate::license::clock::span(n.in_secs.max(0) as u64),
            when(&n.at, now)
        );
    }
    let hw_note = match s.license.as_ref().map(|l| l.hardware_match) {
        Some(MatchVerdict::Match) => " (matches the license)",
        Some(MatchVerdict::Partial) => " (hardware changed; see `licagent hwid --explain`)",
        Some(MatchVerdict::Mismatch) => " (does not match the license)",
        None => "",
    };
    println!("Hardware ID:  {}{hw_note}", s.hardware_id);
    if let Some(l) = &s.license {
        println!("PBX:          {} (system {})", l.pbx_name, l.system_id);
        println!(
            "License:      {} ({} license, {} term)",
            l.license_id,
            word(&l.kind),
            word(&l.term)
        );
        println!(
            "Expires:      {}",
            l.expires_at
                .as_deref()
                .map_or("never (lifetime)".to_string(), |t| when(t, now))
        );
        if let Some(due) = &l.refresh_due {
            println!("Refresh due:  {}", when(due, now));
        }
        if let (Some(_), Some(ends)) = (l.grace_left_secs, &l.grace_ends) {
            println!("Grace ends:   {}", when(ends, now));
        }
        println!("Enforcement:  {}", word(&l.enforcement));
        let seats: Vec<String> = l
            .seats
            .iter()
            .map(|(p, c)| match c.over {
                0 => format!("{p} {}/{}", c.used, c.purchased),
                over => format!("{p} {}/{} ({over} over)", c.used, c.purchased),
            })
            .collect();
        println!("Seats used:   {}", list_or_none(&seats));
        let addons: Vec<String> = l.addons.iter().map(|(a, n)| format!("{a} {n}")).collect();
        println!("Add-ons:      {}", list_or_none(&addons));
    }
    if let Some(r) = &s.refresh {
        if let Some(next) = &r.next_refresh {
            println!("Next refresh: {}", when(next, now));
        }
        if let Some(last) = &r.last_refresh {
            println!("Last contact: {}", when(last, now));
        }
        if let Some(e) = &r.last_error {
            println!("Last error:   {e} ({} failed attempts)", r.failures);
        }
    }
    if let Some(c) = &s.clock {
        println!(
            "Time:         {} (trusted, from {} since {})",
            c.trusted_now,
            c.source.word(),
            c.source_at
        );
        let off = crate::license::clock::span(c.offset_secs.unsigned_abs());
        let dir = if c.offset_secs < 0 { "behind" } else { "ahead" };
        println!("Wall clock:   {} ({off} {dir})", c.wall_clock);
        if let Some(w) = &c.warning {
            println!("Warning:      {w}");
        }
    }
    for w in &s.hardware_warnings {
        println!("Warning:      {w}");
    }
}

/// The JSON name of a value, for people too (`five_years`, `soft`).
fn word<T: serde::Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s.replace('_', " "),
        _ => String::new(),
    }
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "none".to_string()
    } else {
        items.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_as_dates_with_how_far_off() {
        let now = crate::time::parse_rfc3339("2026-11-25T10:00:00Z").unwrap();
        assert_eq!(
            when("2027-11-24T10:00:00Z", now),
            "2027-11-24 10:00 UTC (in 364 days)"
        );
        assert_eq!(
            when("2026-11-25T15:30:00Z", now),
            "2026-11-25 15:30 UTC (in 5 hours)"
        );
        assert_eq!(
            when("2026-11-25T09:48:00Z", now),
            "2026-11-25 09:48 UTC (12 minutes ago)"
        );
        assert_eq!(
            when("2026-11-25T10:00:30Z", now),
            "2026-11-25 10:00 UTC (now)"
        );
        assert_eq!(when("soon", now), "soon");
    }

    #[test]
    fn kinds_and_terms_are_words() {
        use crate::license::{LicenseKind, TermKind};
        assert_eq!(word(&LicenseKind::Full), "full");
        assert_eq!(word(&TermKind::FiveYears), "five years");
    }
}
