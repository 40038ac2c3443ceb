//! Logs: structured records to journald when running under systemd, a plain
//! formatter on stderr otherwise. The level can change on reload.

use std::io::IsTerminal;
use std::sync::OnceLock;

use tracing_journald::{Priority, PriorityMappings};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, Layer, Registry};

type Handle = reload::Handle<Targets, Registry>;

/// journald `MESSAGE_ID`s, one per kind of event an operator filters on
/// (`journalctl MESSAGE_ID=...`); docs/operations.md lists them. Log calls
/// pass one as the field `message_id`.
pub mod message_id {
    /// The license state changed (active, grace, expired, revoked, ...).
    pub const STATE_CHANGE: &str = "101dc5f790b94095ac7e7018b0f5d727";
    /// Seats are used beyond what was bought, or no longer.
    pub const OVER_USE: &str = "8cea2415255a4ff4b9e58391ba63722a";
    /// The wall clock disagrees with trusted time beyond the threshold.
    pub const CLOCK_WARNING: &str = "2afaafd58f184397ad79b744f4162d84";
    /// A local caller was refused (access, limits).
    pub const REFUSED_CALLER: &str = "8ec4bf2401474f15bb4b065df613b947";
}

static HANDLE: OnceLock<Handle> = OnceLock::new();

/// Installs the global subscriber. Journald is used when systemd connected
/// our stderr to the journal (JOURNAL_STREAM) and its socket answers.
pub fn init(level: &str) {
    let filter = parse(level).unwrap_or_else(|_| Targets::new().with_default(tracing::Level::INFO));
    let (filter, handle) = reload::Layer::new(filter);
    let _ = HANDLE.set(handle);
    let journald = std::env::var_os("JOURNAL_STREAM")
        .is_some()
        .then(|| tracing_journald::layer().ok())
        .flatten()
        .map(|j| {
            j.with_priority_mappings(PriorityMappings {
                // journald's own meaning: info is 6, not "notice" (5).
                info: Priority::Informational,
                debug: Priority::Debug,
                ..PriorityMappings::new()
            })
            // Fields under their own names (STATE=grace, MESSAGE_ID=...),
            // not F_STATE: MESSAGE_ID only works unprefixed.
            .with_field_prefix(None)
        });
    let registry = tracing_subscriber::registry().with(filter);
    let result = match journald {
        Some(j) => registry.with(j.boxed()).try_init(),
        None => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_target(false)
                    .with_ansi(std::io::stderr().is_terminal())
                    .boxed(),
            )
            .try_init(),
    };
    // A second init (tests calling cli::run twice) keeps the first one.
    let _ = result;
}

pub fn set_level(level: &str) -> Result<(), String> {
    let filter = parse(level)?;
    match HANDLE.get() {
        Some(h) => h.reload(filter).map_err(|e| e.to_string()),
        None => Ok(()),
    }
}

/// A level ("info") or per-target levels ("info,licagent=debug"). A plain
/// target filter, not tracing's EnvFilter: that one brings a regex engine,
/// which would be most of the appliance binary's growth.
pub fn parse(level: &str) -> Result<Targets, String> {
    // tracing reads a bare word it does not know ("warning") as a target
    // name with every level on, which turns off all other logging: every
    // directive must name one of the levels.
    for directive in level.split(',').map(str::trim) {
        let word = directive.rsplit_once('=').map_or(directive, |(_, l)| l);
        if !LEVELS.iter().any(|l| l.eq_ignore_ascii_case(word.trim())) {
            return Err(format!(
                "{level:?} is not a log level: {directive:?} names none of {}",
                LEVELS.join(", ")
            ));
        }
    }
    level
        .parse::<Targets>()
        .map_err(|e| format!("{level:?} is not a log level: {e}"))
}

/// The words a level may be (`off` silences a target).
pub const LEVELS: [&str; 6] = ["error", "warn", "info", "debug", "trace", "off"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_and_per_target_levels_parse_and_unknown_words_do_not() {
        for ok in [
            "info",
            "WARN",
            "info,licagent=debug",
            "warn, licagent::api=trace",
            "off",
        ] {
            assert!(parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "warning",
            "",
            "info,",
            "licagent",
            "licagent=loud",
            "info,verbose",
        ] {
            let err = parse(bad).unwrap_err();
            assert!(err.contains("is not a log level"), "{bad}: {err}");
        }
    }
}
