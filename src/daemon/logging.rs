//! Logs: structured records to journald when running under systemd, a plain
//! formatter on stderr otherwise. The level can change on reload.

use std::io::IsTerminal;
use std::sync::OnceLock;

use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, Layer, Registry};

type Handle = reload::Handle<Targets, Registry>;

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
        .flatten();
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
