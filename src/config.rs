//! The TOML configuration: one file with a `version`, every key known, errors
//! that name the key and the line. Defaults live here as named constants;
//! precedence is flag > environment > file > default (the CLI applies the
//! first two on top of what [`Config::load`] returns).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::license::{KeyRing, LicenseError};

pub const DEFAULT_CONFIG_PATH: &str = "/etc/licagent/licagent.toml";
pub const DEFAULT_STATE_DIR: &str = "/var/lib/licagent";
pub const DEFAULT_SOCKET: &str = "/run/licagent/api.sock";
pub const DEFAULT_SOCKET_MODE: u32 = 0o660;
pub const DEFAULT_ADMIN_GROUP: &str = "licadmin";
pub const DEFAULT_HWID_ROOT: &str = "/";
pub const DEFAULT_LOG_LEVEL: &str = "info";
/// How long a socket caller may take to send its headers (and may sit idle
/// between requests on a kept-alive connection).
pub const DEFAULT_HEADER_TIMEOUT_SECS: u64 = 10;
/// How long a socket caller may take to send a request body.
pub const DEFAULT_BODY_TIMEOUT_SECS: u64 = 30;
/// The range both API timeouts accept.
pub const API_TIMEOUT_RANGE: std::ops::RangeInclusive<u64> = 1..=300;
pub const DEFAULT_PORTAL_TIMEOUT_SECS: u64 = 15;
pub const DEFAULT_RETRY_MIN_SECS: u64 = 60;
pub const DEFAULT_RETRY_MAX_SECS: u64 = 3600;
pub const DEFAULT_JITTER_SECS: u64 = 300;
/// The only config layout this build reads.
pub const CONFIG_VERSION: u32 = 1;
/// The database file inside the state directory.
pub const DB_FILE: &str = "licagent.db";

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub version: u32,
    #[serde(default)]
    pub paths: Paths,
    #[serde(default)]
    pub api: Api,
    #[serde(default)]
    pub hwid: Hwid,
    #[serde(default)]
    pub trust: Trust,
    #[serde(default)]
    pub portal: Portal,
    #[serde(default)]
    pub refresh: Refresh,
    #[serde(default)]
    pub seats: Seats,
    #[serde(default)]
    pub test_mode: TestMode,
    #[serde(default)]
    pub log: Log,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Seats {
    /// Profile a new user gets when none is given.
    pub default_profile: String,
    /// Program run with the over-use as JSON when it changes; empty = none.
    pub notice_hook: String,
}

impl Default for Seats {
    fn default() -> Self {
        Seats {
            default_profile: crate::seats::DEFAULT_PROFILE.to_string(),
            notice_hook: String::new(),
        }
    }
}

impl Seats {
    pub fn hook(&self) -> Option<PathBuf> {
        (!self.notice_hook.is_empty()).then(|| PathBuf::from(&self.notice_hook))
    }
}

/// Test mode never lasts longer than this (innovaphone's 8 hours); the
/// config may only shorten it.
pub const MAX_TEST_MODE_SECS: u64 = 8 * 3600;

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TestMode {
    pub duration_secs: u64,
    /// Program run when a session ends (by itself or stopped), with the
    /// way it ended (`ran_out`, `stopped`) and the state after as
    /// arguments; empty = none.
    pub end_hook: String,
}

impl Default for TestMode {
    fn default() -> Self {
        TestMode {
            duration_secs: MAX_TEST_MODE_SECS,
            end_hook: String::new(),
        }
    }
}

impl TestMode {
    pub fn hook(&self) -> Option<PathBuf> {
        (!self.end_hook.is_empty()).then(|| PathBuf::from(&self.end_hook))
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Paths {
    pub state_dir: PathBuf,
    pub socket: PathBuf,
}

impl Default for Paths {
    fn default() -> Self {
        Paths {
            state_dir: PathBuf::from(DEFAULT_STATE_DIR),
            socket: PathBuf::from(DEFAULT_SOCKET),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Api {
    /// Octal, as a string ("0660"): who may connect at all is a file permission.
    pub socket_mode: String,
    /// Group given to the socket file; empty keeps the daemon's own group.
    pub socket_group: String,
    /// Members may change things (import, activate, assign); empty = nobody
    /// beyond root and the daemon's own user.
    pub admin_group: String,
    /// Seconds a caller may take to send its request headers, and may stay
    /// idle between requests.
    pub header_timeout_secs: u64,
    /// Seconds a caller may take to send a request body.
    pub body_timeout_secs: u64,
}

impl Default for Api {
    fn default() -> Self {
        Api {
            socket_mode: format!("{DEFAULT_SOCKET_MODE:04o}"),
            socket_group: String::new(),
            admin_group: DEFAULT_ADMIN_GROUP.to_string(),
            header_timeout_secs: DEFAULT_HEADER_TIMEOUT_SECS,
            body_timeout_secs: DEFAULT_BODY_TIMEOUT_SECS,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Hwid {
    /// Where /sys, /etc and /proc are read from ("/" except in tests).
    pub root: PathBuf,
}

impl Default for Hwid {
    fn default() -> Self {
        Hwid {
            root: PathBuf::from(DEFAULT_HWID_ROOT),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Trust {
    /// Extra vendor keys trusted beside the compiled-in ones, each
    /// "<key id> <base64 public key>".
    pub keys: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Portal {
    /// Base URL of the license portal; empty = not configured.
    pub url: String,
    /// PEM file of extra CA certificates trusted for the portal.
    pub ca_file: Option<PathBuf>,
    /// SHA-256 (hex) of certificates the portal may present; empty = no pinning.
    pub pin_sha256: Vec<String>,
    /// Development only: allow a plain http:// URL.
    pub allow_http: bool,
    pub timeout_secs: u64,
}

impl Default for Portal {
    fn default() -> Self {
        Portal {
            url: String::new(),
            ca_file: None,
            pin_sha256: Vec::new(),
            allow_http: false,
            timeout_secs: DEFAULT_PORTAL_TIMEOUT_SECS,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Refresh {
    /// First retry delay after a failed refresh; doubles up to `retry_max_secs`.
    pub retry_min_secs: u64,
    pub retry_max_secs: u64,
    /// A refresh starts up to this many seconds after it is due, chosen at
    /// random, so that a fleet does not call the portal all at once.
    pub jitter_secs: u64,
}

impl Default for Refresh {
    fn default() -> Self {
        Refresh {
            retry_min_secs: DEFAULT_RETRY_MIN_SECS,
            retry_max_secs: DEFAULT_RETRY_MAX_SECS,
            jitter_secs: DEFAULT_JITTER_SECS,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Log {
    /// error, warn, info, debug or trace, or per target ("info,licagent=debug").
    pub level: String,
}

impl Default for Log {
    fn default() -> Self {
        Log {
            level: DEFAULT_LOG_LEVEL.to_string(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("the config file {path} does not exist")]
    Missing { path: PathBuf },
    #[error("cannot read the config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A check beyond parsing failed (`check-config`: the CA file).
    #[error("{0}")]
    Check(String),
    #[error("{path}, line {line}: {message}")]
    Syntax {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{path}{at}: {key} = {value:?} is not valid: {rule}")]
    Invalid {
        path: PathBuf,
        /// ", line N" where the key is set in the file; empty for a default.
        at: String,
        key: &'static str,
        value: String,
        rule: String,
    },
}

/// The line where `key` ("section.name" or "name") is set in `text`:
/// the first `name = ...` inside `[section]`. A plain scan, enough for the
/// flat files this config is; `None` if the key is not in the file.
fn line_of(text: &str, key: &str) -> Option<usize> {
    let (section, name) = key.rsplit_once('.').unwrap_or(("", key));
    let mut current = String::new();
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if let Some(h) = t.strip_prefix('[').and_then(|h| h.split(']').next()) {
            current = h.trim().to_string();
            continue;
        }
        let Some((k, _)) = t.split_once('=') else {
            continue;
        };
        let k = k.trim().trim_matches('"');
        if current == section && k == name {
            return Some(i + 1);
        }
        // A dotted key at the top level ("log.level = ...").
        if current.is_empty() && k == key {
            return Some(i + 1);
        }
    }
    None
}

impl Default for Config {
    fn default() -> Self {
        Config {
            version: CONFIG_VERSION,
            paths: Paths::default(),
            api: Api::default(),
            hwid: Hwid::default(),
            trust: Trust::default(),
            portal: Portal::default(),
            refresh: Refresh::default(),
            seats: Seats::default(),
            test_mode: TestMode::default(),
            log: Log::default(),
        }
    }
}

impl Config {
    /// Loads `path` if given (it must exist), else the default path if it
    /// exists, else the defaults.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let (path, explicit) = match path {
            Some(p) => (p.to_path_buf(), true),
            None => (PathBuf::from(DEFAULT_CONFIG_PATH), false),
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => Config::parse(&text, &path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if explicit {
                    Err(ConfigError::Missing { path })
                } else {
                    Ok(Config::default())
                }
            }
            Err(source) => Err(ConfigError::Read { path, source }),
        }
    }

    /// Parses and validates config text; `path` only names it in errors.
    /// (The key of a bad value is named by [`key_at`].)
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1)
                .unwrap_or(0);
            let message = e.message().trim_end();
            let message = match e.span().and_then(|s| key_at(text, s.start)) {
                // "invalid type: string "15", expected u64" alone does not
                // say which key; an unknown-field message does already.
                Some(key) if !message.contains("unknown field") => format!("{key}: {message}"),
                _ => message.to_string(),
            };
            ConfigError::Syntax {
                path: path.to_path_buf(),
                line,
                message,
            }
        })?;
        config.validate(path).map_err(|e| match e {
            ConfigError::Invalid {
                path,
                key,
                value,
                rule,
                ..
            } => ConfigError::Invalid {
                at: line_of(text, key).map_or(String::new(), |n| format!(", line {n}")),
                path,
                key,
                value,
                rule,
            },
            other => other,
        })?;
        Ok(config)
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |key: &'static str, value: String, rule: &str| ConfigError::Invalid {
            path: path.to_path_buf(),
            at: String::new(),
            key,
            value,
            rule: rule.to_string(),
        };
        if self.version != CONFIG_VERSION {
            return Err(invalid(
                "version",
                self.version.to_string(),
                &format!("this licagent reads config version {CONFIG_VERSION}"),
            ));
        }
        self.socket_mode()
            .map_err(|rule| invalid("api.socket_mode", self.api.socket_mode.clone(), &rule))?;
        if let Err(e) = self.key_ring() {
            return Err(invalid(
                "trust.keys",
                self.trust.keys.join(", "),
                &e.to_string(),
            ));
        }
        let url = self.portal.url.as_str();
        if !url.is_empty() {
            if url.starts_with("http://") {
                if !self.portal.allow_http {
                    return Err(invalid(
                        "portal.url",
                        url.to_string(),
                        "the portal must be reached over https:// (portal.allow_http is for development only)",
                    ));
                }
            } else if !url.starts_with("https://") {
                return Err(invalid(
                    "portal.url",
                    url.to_string(),
                    "must start with https://",
                ));
            }
        }
        // Upper bounds too: these become durations and are added to times,
        // where a value near u64::MAX would overflow or turn negative.
        for (key, value, max) in [
            ("portal.timeout_secs", self.portal.timeout_secs, 3_600),
            (
                "refresh.retry_min_secs",
                self.refresh.retry_min_secs,
                30 * 86_400,
            ),
            (
                "refresh.retry_max_secs",
                self.refresh.retry_max_secs,
                30 * 86_400,
            ),
            ("refresh.jitter_secs", self.refresh.jitter_secs, 86_400),
        ] {
            let min = u64::from(key != "refresh.jitter_secs");
            if !(min..=max).contains(&value) {
                return Err(invalid(
                    key,
                    value.to_string(),
                    &format!("use {min} to {max} seconds"),
                ));
            }
        }
        for pin in &self.portal.pin_sha256 {
            let ok = pin.len() == 64 && pin.chars().all(|c| c.is_ascii_hexdigit());
            if !ok {
                return Err(invalid(
                    "portal.pin_sha256",
                    pin.clone(),
                    "each pin is the SHA-256 of a DER certificate, 64 hex digits",
                ));
            }
        }
        if self.refresh.retry_min_secs == 0
            || self.refresh.retry_max_secs < self.refresh.retry_min_secs
        {
            return Err(invalid(
                "refresh.retry_max_secs",
                self.refresh.retry_max_secs.to_string(),
                "retry_min_secs must be at least 1 and retry_max_secs at least retry_min_secs",
            ));
        }
        if self.seats.default_profile.is_empty() {
            return Err(invalid(
                "seats.default_profile",
                String::new(),
                "name a profile code, such as \"essential\"",
            ));
        }
        if let Some(hook) = self.seats.hook() {
            if !hook.is_absolute() {
                return Err(invalid(
                    "seats.notice_hook",
                    self.seats.notice_hook.clone(),
                    "must be an absolute path",
                ));
            }
        }
        if let Some(hook) = self.test_mode.hook() {
            if !hook.is_absolute() {
                return Err(invalid(
                    "test_mode.end_hook",
                    self.test_mode.end_hook.clone(),
                    "must be an absolute path",
                ));
            }
        }
        if !(1..=MAX_TEST_MODE_SECS).contains(&self.test_mode.duration_secs) {
            return Err(invalid(
                "test_mode.duration_secs",
                self.test_mode.duration_secs.to_string(),
                "test mode lasts 8 hours (28800 s) at most; it may only be shortened",
            ));
        }
        for (key, value) in [
            ("api.header_timeout_secs", self.api.header_timeout_secs),
            ("api.body_timeout_secs", self.api.body_timeout_secs),
        ] {
            if !API_TIMEOUT_RANGE.contains(&value) {
                return Err(invalid(key, value.to_string(), "use 1 to 300 seconds"));
            }
        }
        if crate::daemon::logging::parse(&self.log.level).is_err() {
            return Err(invalid(
                "log.level",
                self.log.level.clone(),
                "use error, warn, info, debug, trace or off, or per target as in \"info,licagent=debug\"",
            ));
        }
        Ok(())
    }

    /// The socket file mode, parsed from its octal string.
    pub fn socket_mode(&self) -> Result<u32, String> {
        let s = self.api.socket_mode.trim_start_matches("0o");
        match u32::from_str_radix(s, 8) {
            Ok(m) if m <= 0o777 => Ok(m),
            _ => Err("an octal file mode such as \"0660\"".to_string()),
        }
    }

    /// The vendor keys compiled in plus the configured extra keys.
    pub fn key_ring(&self) -> Result<KeyRing, LicenseError> {
        let mut ring = KeyRing::vendor();
        ring.extend(KeyRing::parse_list(&self.trust.keys.join("\n"))?);
        Ok(ring)
    }

    pub fn db_path(&self) -> PathBuf {
        self.paths.state_dir.join(DB_FILE)
    }
}

/// The dotted key (`portal.timeout_secs`) whose value starts at byte
/// `offset` of `text`: the key before `=` on that line, under the nearest
/// `[table]` header above it. `None` when the line is not `key = value`.
fn key_at(text: &str, offset: usize) -> Option<String> {
    let offset = offset.min(text.len());
    let start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let line = text[start..].lines().next()?;
    let (key, _) = line.split_once('=')?;
    let key = key.trim().trim_matches('"');
    if key.is_empty() || key.starts_with('[') || key.starts_with('#') {
        return None;
    }
    let table = text[..start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('[') && !l.starts_with("[["))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_string());
    Some(match table {
        Some(t) if !t.is_empty() => format!("{t}.{key}"),
        _ => key.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("test.toml"))
    }

    #[test]
    fn shipped_default_config_parses_to_the_defaults() {
        let text = include_str!("../config/licagent.toml");
        let c = parse(text).expect("config/licagent.toml must parse");
        assert_eq!(c, Config::default());
    }

    #[test]
    fn minimal_config_is_just_the_version() {
        let c = parse("version = 1\n").unwrap();
        assert_eq!(c.paths.socket, PathBuf::from(DEFAULT_SOCKET));
        assert_eq!(c.socket_mode().unwrap(), 0o660);
    }

    #[test]
    fn unknown_key_is_rejected_with_key_and_line() {
        let err =
            parse("version = 1\n\n[paths]\nstate_dir = \"/x\"\nsokcet = \"/y\"\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("line 5"), "{msg}");
        assert!(msg.contains("sokcet"), "{msg}");
    }

    #[test]
    fn a_value_of_the_wrong_type_names_its_key() {
        let msg = parse("version = 1\n[portal]\nurl = \"\"\ntimeout_secs = \"15\"\n")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("line 4"), "{msg}");
        assert!(msg.contains("portal.timeout_secs: invalid type"), "{msg}");
        let msg = parse("version = \"one\"\n").unwrap_err().to_string();
        assert!(msg.contains("version: invalid type"), "{msg}");
        assert_eq!(key_at("a = 1\n[x]\n b = 2\n", 14), Some("x.b".into()));
        assert_eq!(key_at("[x]\n", 1), None);
    }

    #[test]
    fn wrong_version_and_bad_values_name_the_key() {
        let msg = parse("version = 2\n").unwrap_err().to_string();
        assert!(msg.contains("version"), "{msg}");
        let msg = parse("version = 1\n[api]\nsocket_mode = \"rw\"\n")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("api.socket_mode"), "{msg}");
        let msg = parse("version = 1\n[portal]\nurl = \"http://127.0.0.1:1\"\n")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("https"), "{msg}");
        assert!(
            parse("version = 1\n[portal]\nurl = \"http://127.0.0.1:1\"\nallow_http = true\n")
                .is_ok()
        );
        let msg = parse("version = 1\n[test_mode]\nduration_secs = 28801\n")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("only be shortened"), "{msg}");
        assert!(parse("version = 1\n[test_mode]\nduration_secs = 60\n").is_ok());
        let msg = parse("version = 1\n[log]\nlevel = \"loud=[\"\n")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("log.level"), "{msg}");
        // An unknown word would have silenced all logging: refused, with
        // the key and the line it is on.
        let msg = parse("version = 1\n\n[log]\nlevel = \"warning\"\n")
            .unwrap_err()
            .to_string();
        assert!(msg.contains(", line 4: log.level = \"warning\""), "{msg}");
        let msg = parse("version = 1\n[api]\nbody_timeout_secs = 0\n")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("line 3: api.body_timeout_secs"), "{msg}");
        for (key, value) in [
            ("retry_max_secs", "18446744073709551615"),
            ("retry_min_secs", "0"),
            ("jitter_secs", "9223372036854775808"),
        ] {
            let msg = parse(&format!("version = 1\n[refresh]\n{key} = {value}\n"))
                .unwrap_err()
                .to_string();
            assert!(msg.contains(&format!("refresh.{key} = ")), "{msg}");
        }
        let msg = parse("version = 1\n[trust]\nkeys = [\"nonsense\"]\n")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("trust.keys"), "{msg}");
    }

    #[test]
    fn missing_explicit_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("nope.toml");
        assert!(matches!(
            Config::load(Some(&p)),
            Err(ConfigError::Missing { .. })
        ));
    }
}
