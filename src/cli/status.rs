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

pub fn print_human(s: &Status) {
    println!("State:        {}", state_word(s.state));
    if let Some(r) = &s.reason {
        println!("Reason:       {r}");
    }
    if let Some(t) = &s.test_mode {
        println!(
            "Test mode:    on until {} ({} left)",
            t.ends_at,
            humantime::format_duration(std::time::Duration::from_secs(t.left_secs.max(0) as u64))
        );
    }
    if let Some(n) = &s.next {
        println!(
            "Next:         {} in {} (at {})",
            state_word(n.state),
            crate::license::clock::span(n.in_secs.max(0) as u64),
            n.at
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
            "License:      {} ({:?}, {:?} term)",
            l.license_id, l.kind, l.term
        );
        println!(
            "Expires:      {}",
            l.expires_at.as_deref().unwrap_or("never (lifetime)")
        );
        if let Some(due) = &l.refresh_due {
            println!("Refresh due:  {due}");
        }
        if let Some(left) = l.grace_left_secs {
            println!(
                "Grace left:   {} (until {})",
                humantime::format_duration(std::time::Duration::from_secs(left as u64)),
                l.grace_ends.as_deref().unwrap_or("?")
            );
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
            println!("Next refresh: {next}");
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
