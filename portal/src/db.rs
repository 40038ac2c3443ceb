//! The portal's SQLite database: customers, PBX orders and their current
//! binding, the history of released bindings (which the rehost limit counts),
//! issued licenses, the trials handed out per hardware ID, the nonces seen
//! recently, settings and the fault knob.
//!
//! The server and the admin CLI open it at the same time (a test flips the
//! fault while the server runs), hence WAL and a busy timeout.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use licagent::hwid::Component;
use licagent::license::{Enforcement, Term, TermKind};
use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::order;

/// Schema version in `PRAGMA user_version`.
const SCHEMA_VERSION: i64 = 4;

const SCHEMA: &str = "
CREATE TABLE customers (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL
);
CREATE TABLE pbx (
    serial            TEXT PRIMARY KEY,
    portal_key        TEXT NOT NULL UNIQUE,
    customer_id       INTEGER NOT NULL REFERENCES customers(id),
    name              TEXT NOT NULL,
    term_kind         TEXT NOT NULL,
    term_ends_at      INTEGER,
    enforcement       TEXT NOT NULL,
    seats             TEXT NOT NULL,
    addons            TEXT NOT NULL,
    created_at        INTEGER NOT NULL,
    revoked_at        INTEGER,
    revoked_reason    TEXT,
    -- The current binding; all NULL while unbound.
    hardware_id       TEXT,
    components        TEXT,
    device_public_key TEXT,
    bound_at          INTEGER,
    last_refresh_at   INTEGER,
    seats_in_use      TEXT,
    last_license_id   TEXT
);
CREATE TABLE bindings_history (
    id                INTEGER PRIMARY KEY,
    serial            TEXT NOT NULL REFERENCES pbx(serial),
    hardware_id       TEXT NOT NULL,
    components        TEXT NOT NULL,
    device_public_key TEXT NOT NULL,
    bound_at          INTEGER NOT NULL,
    released_at       INTEGER NOT NULL,
    reason            TEXT NOT NULL,
    moved_to          TEXT
);
CREATE INDEX bindings_history_serial ON bindings_history(serial);
CREATE TABLE licenses (
    license_id   TEXT PRIMARY KEY,
    serial       TEXT NOT NULL REFERENCES pbx(serial),
    hardware_id  TEXT NOT NULL,
    issued_at    INTEGER NOT NULL
);
CREATE TABLE nonces (
    serial   TEXT NOT NULL,
    nonce    TEXT NOT NULL,
    seen_at  INTEGER NOT NULL,
    PRIMARY KEY (serial, nonce)
);
CREATE TABLE settings (
    key    TEXT PRIMARY KEY,
    value  TEXT NOT NULL
);
";

/// Version 2: the rehost limit's reset mark and the trials.
const SCHEMA_V2: &str = "
-- Rehosts released up to this bindings_history id do not count any more
-- (`pbx reset-rehosts`). An id, not a time, so that a reset and a rehost in
-- the same second are told apart.
ALTER TABLE pbx ADD COLUMN rehosts_reset_after INTEGER NOT NULL DEFAULT 0;
ALTER TABLE pbx ADD COLUMN rehosts_reset_at INTEGER;
-- One row per hardware ID that ever got a trial: the record that makes a
-- trial once per machine.
CREATE TABLE trials (
    hardware_id       TEXT PRIMARY KEY,
    system_id         TEXT NOT NULL,
    first_at          INTEGER NOT NULL,
    last_at           INTEGER NOT NULL,
    downloads         INTEGER NOT NULL,
    components        TEXT NOT NULL,
    device_public_key TEXT NOT NULL,
    last_license_id   TEXT NOT NULL
);
";

/// The `reason` of a binding released by a rehost; the rehost limit counts
/// these.
pub const REASON_REHOSTED: &str = "rehosted";

/// How long a nonce is remembered. A request is accepted only within
/// ±MAX_CLOCK_SKEW_SECS of its `sent_at`, so a replay is at most twice that
/// later; an hour leaves room for the portal's own clock steps.
const NONCE_TTL_SECS: i64 = 3600;

pub const DEFAULT_REFRESH_SECS: i64 = 24 * 60 * 60;
pub const DEFAULT_GRACE_SECS: i64 = 14 * 24 * 60 * 60;
pub const DEFAULT_REHOST_LIMIT: u32 = 3;
pub const DEFAULT_REHOST_PERIOD_DAYS: i64 = 365;
pub const DEFAULT_TRIAL_SECS: i64 = 90 * 24 * 60 * 60;
pub const DEFAULT_TRIAL_SEATS: &str = "basic=5,essential=5,business=5,premium=5";

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("the portal database failed: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("the portal database holds a damaged {what} for {serial}: {detail}")]
    Damaged {
        what: &'static str,
        serial: String,
        detail: String,
    },
    #[error("the portal database has schema version {0}, newer than this licportal knows; update licportal")]
    TooNew(i64),
    #[error("there is no customer named {0:?}; add it with `licportal customer add`")]
    UnknownCustomer(String),
    #[error("a customer named {0:?} exists already")]
    CustomerExists(String),
    #[error("there is no PBX with serial {0}; `licportal pbx list` shows them")]
    UnknownSerial(String),
    #[error("the setting {0:?} is unknown; use refresh_secs, grace_secs, rehost_limit, rehost_period_days, trial_secs, trial_seats or duplicate_window_secs")]
    UnknownSetting(String),
    #[error("the setting {key} must be {rule}, not {value:?}")]
    BadSetting {
        key: String,
        value: String,
        rule: String,
    },
}

/// A device's current binding to a PBX.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Binding {
    pub hardware_id: String,
    pub components: Vec<Component>,
    pub device_public_key: String,
    pub bound_at: i64,
}

/// Why and when a PBX was revoked by the vendor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revoked {
    pub at: i64,
    pub reason: String,
}

/// One PBX order with its state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pbx {
    pub serial: String,
    /// Canonical form.
    pub key: String,
    pub customer: String,
    pub name: String,
    pub term: Term,
    pub enforcement: Enforcement,
    pub seats: BTreeMap<String, u32>,
    pub addons: BTreeMap<String, u32>,
    pub created_at: i64,
    pub revoked: Option<Revoked>,
    pub binding: Option<Binding>,
    pub last_refresh_at: Option<i64>,
    pub seats_in_use: BTreeMap<String, u32>,
    pub last_license_id: Option<String>,
    /// When `pbx reset-rehosts` last ran.
    pub rehosts_reset_at: Option<i64>,
}

/// A new order, as `pbx add` makes it.
#[derive(Clone, Debug)]
pub struct NewPbx {
    pub serial: String,
    pub key: String,
    pub customer: String,
    pub name: String,
    pub term: Term,
    pub enforcement: Enforcement,
    pub seats: BTreeMap<String, u32>,
    pub addons: BTreeMap<String, u32>,
    pub created_at: i64,
}

/// Changes of `pbx edit`; `None` keeps the field.
#[derive(Clone, Debug, Default)]
pub struct PbxEdit {
    pub term: Option<Term>,
    pub enforcement: Option<Enforcement>,
    pub seats: Option<BTreeMap<String, u32>>,
    pub addons: Option<BTreeMap<String, u32>>,
}

/// A binding that was released (deactivated or moved away by a rehost).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PastBinding {
    pub hardware_id: String,
    pub device_public_key: String,
    pub released_at: i64,
    pub reason: String,
    pub moved_to: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    pub refresh_secs: i64,
    pub grace_secs: i64,
    /// Rehosts allowed per PBX within the period.
    pub rehost_limit: u32,
    pub rehost_period_days: i64,
    /// How long a trial runs from its first download.
    pub trial_secs: i64,
    /// Seats per profile of a trial license.
    pub trial_seats: BTreeMap<String, u32>,
    /// Two boxes refreshing one system within this many seconds of each
    /// other are a duplicate (`crate::clones`).
    pub duplicate_window_secs: i64,
}

impl Settings {
    pub fn rehost_period_secs(&self) -> i64 {
        self.rehost_period_days.saturating_mul(24 * 60 * 60)
    }
}

/// One machine's trial: when it first downloaded its trial license, and
/// the latest download.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trial {
    pub hardware_id: String,
    /// `TRIAL-XXXX-XXXX`, the same for every download of this machine.
    pub system_id: String,
    pub first_at: i64,
    pub last_at: i64,
    pub downloads: u64,
    pub device_public_key: String,
    pub last_license_id: String,
}

/// A trial download to record.
#[derive(Clone, Debug)]
pub struct TrialDownload<'a> {
    pub hardware_id: &'a str,
    pub system_id: &'a str,
    pub components: &'a [Component],
    pub device_public_key: &'a str,
    pub license_id: &'a str,
    pub at: i64,
}

/// Misbehaviours the server can be told to show, for the agent's tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Fault {
    #[default]
    None,
    /// Wait this many seconds before answering.
    Slow(u64),
    /// Answer 500 without doing anything.
    Error500,
    /// Answer 200 with a body that is not JSON.
    Garbage,
    /// Accept TCP, then close before the TLS handshake.
    Down,
    /// Issue licenses that carry another nonce than the request's.
    WrongNonce,
    /// Sign licenses with a throwaway key.
    UnknownSigner,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown fault {0:?}; use none, slow:SECS, error500, garbage, down, wrong-nonce or unknown-signer")]
pub struct FaultParseError(String);

impl FromStr for Fault {
    type Err = FaultParseError;
    fn from_str(s: &str) -> Result<Fault, FaultParseError> {
        let err = || FaultParseError(s.to_string());
        Ok(match s.trim() {
            "none" => Fault::None,
            "error500" => Fault::Error500,
            "garbage" => Fault::Garbage,
            "down" => Fault::Down,
            "wrong-nonce" => Fault::WrongNonce,
            "unknown-signer" => Fault::UnknownSigner,
            other => {
                let secs = other.strip_prefix("slow:").ok_or_else(err)?;
                Fault::Slow(secs.parse().map_err(|_| err())?)
            }
        })
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::None => f.write_str("none"),
            Fault::Slow(secs) => write!(f, "slow:{secs}"),
            Fault::Error500 => f.write_str("error500"),
            Fault::Garbage => f.write_str("garbage"),
            Fault::Down => f.write_str("down"),
            Fault::WrongNonce => f.write_str("wrong-nonce"),
            Fault::UnknownSigner => f.write_str("unknown-signer"),
        }
    }
}

fn to_json<T: serde::Serialize>(v: &T) -> String {
    // Maps of strings to integers and lists of plain structs always serialize.
    serde_json::to_string(v).unwrap_or_default()
}

fn term_kind_to_str(kind: TermKind) -> &'static str {
    order::term_name(kind)
}

pub struct Db {
    conn: Connection,
}

impl Db {
    /// The connection, for the queries kept beside their domain
    /// (`crate::clones`).
    pub(crate) fn conn(&self) -> &Connection {
        &self.conn
    }

    /// Opens (and creates or migrates) the database at `path`.
    pub fn open(path: &Path) -> Result<Db, DbError> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        let db = Db { conn };
        db.migrate()?;
        Ok(db)
    }

    fn migrate(&self) -> Result<(), DbError> {
        let version: i64 = self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if version > SCHEMA_VERSION {
            return Err(DbError::TooNew(version));
        }
        if version < SCHEMA_VERSION {
            // All steps in one transaction: a failed upgrade leaves the old
            // schema as it was.
            let tx = self.conn.unchecked_transaction()?;
            if version < 1 {
                tx.execute_batch(SCHEMA)?;
            }
            if version < 2 {
                tx.execute_batch(SCHEMA_V2)?;
            }
            if version < 3 {
                tx.execute_batch(crate::clones::SCHEMA_V3)?;
            }
            if version < 4 {
                tx.execute_batch(crate::sessions::SCHEMA_V4)?;
            }
            tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
            tx.commit()?;
        }
        Ok(())
    }

    pub fn add_customer(&self, name: &str, now: i64) -> Result<(), DbError> {
        match self.conn.execute(
            "INSERT INTO customers (name, created_at) VALUES (?1, ?2)",
            params![name, now],
        ) {
            Ok(_) => Ok(()),
            Err(e) if is_unique_violation(&e) => Err(DbError::CustomerExists(name.to_string())),
            Err(e) => Err(e.into()),
        }
    }

    /// Adds an order. `Ok(false)` when the serial or key is taken already
    /// (the caller draws new ones).
    pub fn add_pbx(&self, p: &NewPbx) -> Result<bool, DbError> {
        let customer_id: i64 = self
            .conn
            .query_row(
                "SELECT id FROM customers WHERE name = ?1",
                [&p.customer],
                |r| r.get(0),
            )
            .optional()?
            .ok_or_else(|| DbError::UnknownCustomer(p.customer.clone()))?;
        let res = self.conn.execute(
            "INSERT INTO pbx (serial, portal_key, customer_id, name, term_kind, term_ends_at,
                              enforcement, seats, addons, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            params![
                p.serial,
                p.key,
                customer_id,
                p.name,
                term_kind_to_str(p.term.kind),
                p.term.ends_at,
                order::enforcement_name(p.enforcement),
                to_json(&p.seats),
                to_json(&p.addons),
                p.created_at
            ],
        );
        match res {
            Ok(_) => Ok(true),
            Err(e) if is_unique_violation(&e) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    const PBX_SELECT: &'static str = "SELECT p.serial, p.portal_key, c.name, p.name, p.term_kind,
        p.term_ends_at, p.enforcement, p.seats, p.addons, p.created_at, p.revoked_at,
        p.revoked_reason, p.hardware_id, p.components, p.device_public_key, p.bound_at,
        p.last_refresh_at, p.seats_in_use, p.last_license_id, p.rehosts_reset_at
        FROM pbx p JOIN customers c ON c.id = p.customer_id";

    fn pbx_where(&self, cond: &str, arg: &str) -> Result<Option<Pbx>, DbError> {
        let sql = format!("{} WHERE {cond}", Self::PBX_SELECT);
        let raw = self.conn.query_row(&sql, [arg], RawPbx::read).optional()?;
        raw.map(RawPbx::into_pbx).transpose()
    }

    pub fn pbx_by_serial(&self, serial: &str) -> Result<Option<Pbx>, DbError> {
        self.pbx_where("p.serial = ?1", serial)
    }

    /// `key` in canonical form.
    pub fn pbx_by_key(&self, key: &str) -> Result<Option<Pbx>, DbError> {
        self.pbx_where("p.portal_key = ?1", key)
    }

    /// `pbx_by_serial`, with an error naming the serial when it is unknown.
    pub fn pbx(&self, serial: &str) -> Result<Pbx, DbError> {
        self.pbx_by_serial(serial)?
            .ok_or_else(|| DbError::UnknownSerial(serial.to_string()))
    }

    pub fn list_pbx(&self) -> Result<Vec<Pbx>, DbError> {
        let sql = format!("{} ORDER BY c.name, p.name, p.serial", Self::PBX_SELECT);
        let mut stmt = self.conn.prepare(&sql)?;
        let raws = stmt
            .query_map([], RawPbx::read)?
            .collect::<Result<Vec<_>, _>>()?;
        raws.into_iter().map(RawPbx::into_pbx).collect()
    }

    pub fn edit_pbx(&self, serial: &str, edit: &PbxEdit) -> Result<(), DbError> {
        let tx = self.conn.unchecked_transaction()?;
        let current = self.pbx(serial)?;
        let term = edit.term.unwrap_or(current.term);
        let enforcement = edit.enforcement.unwrap_or(current.enforcement);
        let seats = edit.seats.as_ref().unwrap_or(&current.seats);
        let addons = edit.addons.as_ref().unwrap_or(&current.addons);
        tx.execute(
            "UPDATE pbx SET term_kind = ?2, term_ends_at = ?3, enforcement = ?4, seats = ?5,
                            addons = ?6
             WHERE serial = ?1",
            params![
                serial,
                term_kind_to_str(term.kind),
                term.ends_at,
                order::enforcement_name(enforcement),
                to_json(seats),
                to_json(addons)
            ],
        )?;
        tx.commit()?;
        Ok(())
    }

    pub fn revoke(&self, serial: &str, reason: &str, now: i64) -> Result<(), DbError> {
        let n = self.conn.execute(
            "UPDATE pbx SET revoked_at = ?2, revoked_reason = ?3 WHERE serial = ?1",
            params![serial, now, reason],
        )?;
        if n == 0 {
            return Err(DbError::UnknownSerial(serial.to_string()));
        }
        Ok(())
    }

    /// Sets the current binding (replacing one on the same hardware).
    pub fn bind(&self, serial: &str, b: &Binding) -> Result<(), DbError> {
        self.conn.execute(
            "UPDATE pbx SET hardware_id = ?2, components = ?3, device_public_key = ?4,
                            bound_at = ?5
             WHERE serial = ?1",
            params![
                serial,
                b.hardware_id,
                to_json(&b.components),
                b.device_public_key,
                b.bound_at
            ],
        )?;
        Ok(())
    }

    /// Moves the current binding into the history and leaves the PBX unbound.
    /// Does nothing when it is unbound.
    pub fn release(
        &self,
        serial: &str,
        now: i64,
        reason: &str,
        moved_to: Option<&str>,
    ) -> Result<(), DbError> {
        let tx = self.conn.unchecked_transaction()?;
        tx.execute(
            "INSERT INTO bindings_history (serial, hardware_id, components, device_public_key,
                                           bound_at, released_at, reason, moved_to)
             SELECT serial, hardware_id, components, device_public_key, bound_at, ?2, ?3, ?4
             FROM pbx WHERE serial = ?1 AND hardware_id IS NOT NULL",
            params![serial, now, reason, moved_to],
        )?;
        tx.execute(
            "UPDATE pbx SET hardware_id = NULL, components = NULL, device_public_key = NULL,
                            bound_at = NULL
             WHERE serial = ?1",
            [serial],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// When the rehosts of a PBX that still count were made, oldest first:
    /// bindings released by a rehost after `since`, and after the last
    /// `reset_rehosts`. A re-activation on the same hardware releases
    /// nothing, so it is not among them.
    pub fn rehost_times(&self, serial: &str, since: i64) -> Result<Vec<i64>, DbError> {
        let mut stmt = self.conn.prepare(
            "SELECT h.released_at FROM bindings_history h JOIN pbx p ON p.serial = h.serial
             WHERE h.serial = ?1 AND h.reason = ?2 AND h.released_at > ?3
               AND h.id > p.rehosts_reset_after
             ORDER BY h.released_at, h.id",
        )?;
        let rows = stmt.query_map(params![serial, REASON_REHOSTED, since], |r| r.get(0))?;
        Ok(rows.collect::<Result<Vec<i64>, _>>()?)
    }

    /// Makes the rehosts made so far stop counting against the limit.
    pub fn reset_rehosts(&self, serial: &str, now: i64) -> Result<(), DbError> {
        let n = self.conn.execute(
            "UPDATE pbx SET rehosts_reset_at = ?2,
                 rehosts_reset_after = (SELECT COALESCE(MAX(id), 0) FROM bindings_history)
             WHERE serial = ?1",
            params![serial, now],
        )?;
        if n == 0 {
            return Err(DbError::UnknownSerial(serial.to_string()));
        }
        Ok(())
    }

    /// Released bindings of a PBX, newest first.
    pub fn history(&self, serial: &str) -> Result<Vec<PastBinding>, DbError> {
        let mut stmt = self.conn.prepare(
            "SELECT hardware_id, device_public_key, released_at, reason, moved_to
             FROM bindings_history WHERE serial = ?1 ORDER BY released_at DESC, id DESC",
        )?;
        let rows = stmt.query_map([serial], |r| {
            Ok(PastBinding {
                hardware_id: r.get(0)?,
                device_public_key: r.get(1)?,
                released_at: r.get(2)?,
                reason: r.get(3)?,
                moved_to: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// Records a successful refresh: when, the seats in use, the license
    /// the device held, and the hardware it runs on now.
    pub fn record_refresh(
        &self,
        serial: &str,
        now: i64,
        seats_in_use: &BTreeMap<String, u32>,
        license_id: &str,
        hardware_id: &str,
        components: &[Component],
    ) -> Result<(), DbError> {
        self.conn.execute(
            "UPDATE pbx SET last_refresh_at = ?2, seats_in_use = ?3, last_license_id = ?4,
                            hardware_id = ?5, components = ?6
             WHERE serial = ?1",
            params![
                serial,
                now,
                to_json(seats_in_use),
                license_id,
                hardware_id,
                to_json(&components)
            ],
        )?;
        Ok(())
    }

    pub fn record_license(
        &self,
        license_id: &str,
        serial: &str,
        hardware_id: &str,
        issued_at: i64,
    ) -> Result<(), DbError> {
        self.conn.execute(
            "INSERT INTO licenses (license_id, serial, hardware_id, issued_at)
             VALUES (?1, ?2, ?3, ?4)",
            params![license_id, serial, hardware_id, issued_at],
        )?;
        Ok(())
    }

    pub fn licenses_issued(&self, serial: &str) -> Result<u64, DbError> {
        let n: i64 = self.conn.query_row(
            "SELECT COUNT(*) FROM licenses WHERE serial = ?1",
            [serial],
            |r| r.get(0),
        )?;
        Ok(n as u64)
    }

    /// Remembers a nonce for a system. `false` when it was seen before
    /// (a replay). Forgets nonces older than the replay window.
    pub fn use_nonce(&self, serial: &str, nonce: &str, now: i64) -> Result<bool, DbError> {
        self.conn.execute(
            "DELETE FROM nonces WHERE seen_at < ?1",
            [now - NONCE_TTL_SECS],
        )?;
        let n = self.conn.execute(
            "INSERT OR IGNORE INTO nonces (serial, nonce, seen_at) VALUES (?1, ?2, ?3)",
            params![serial, nonce, now],
        )?;
        Ok(n == 1)
    }

    /// The trial of a machine, if it ever got one.
    pub fn trial(&self, hardware_id: &str) -> Result<Option<Trial>, DbError> {
        let sql = format!("{TRIAL_SELECT} WHERE hardware_id = ?1");
        Ok(self
            .conn
            .query_row(&sql, [hardware_id], read_trial)
            .optional()?)
    }

    /// All trials, the oldest first.
    pub fn list_trials(&self) -> Result<Vec<Trial>, DbError> {
        let sql = format!("{TRIAL_SELECT} ORDER BY first_at, hardware_id");
        let mut stmt = self.conn.prepare(&sql)?;
        let rows = stmt.query_map([], read_trial)?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// Records a trial license download. The first one of a machine starts
    /// its trial; later ones keep that start and the system id.
    pub fn record_trial_download(&self, d: &TrialDownload<'_>) -> Result<(), DbError> {
        self.conn.execute(
            "INSERT INTO trials (hardware_id, system_id, first_at, last_at, downloads, components,
                                 device_public_key, last_license_id)
             VALUES (?1, ?2, ?3, ?3, 1, ?4, ?5, ?6)
             ON CONFLICT(hardware_id) DO UPDATE SET
                 last_at = excluded.last_at, downloads = downloads + 1,
                 components = excluded.components,
                 device_public_key = excluded.device_public_key,
                 last_license_id = excluded.last_license_id",
            params![
                d.hardware_id,
                d.system_id,
                d.at,
                to_json(&d.components),
                d.device_public_key,
                d.license_id
            ],
        )?;
        Ok(())
    }

    fn setting(&self, key: &str) -> Result<Option<String>, DbError> {
        Ok(self
            .conn
            .query_row("SELECT value FROM settings WHERE key = ?1", [key], |r| {
                r.get(0)
            })
            .optional()?)
    }

    fn put_setting(&self, key: &str, value: &str) -> Result<(), DbError> {
        self.conn.execute(
            "INSERT INTO settings (key, value) VALUES (?1, ?2)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            params![key, value],
        )?;
        Ok(())
    }

    pub fn settings(&self) -> Result<Settings, DbError> {
        let int = |key: &str, default: i64| -> Result<i64, DbError> {
            Ok(self
                .setting(key)?
                .and_then(|v| v.parse().ok())
                .unwrap_or(default))
        };
        // Values were checked when set; one this build cannot read (an
        // older or newer licportal wrote it) counts as the default.
        let trial_seats = self
            .setting("trial_seats")?
            .and_then(|v| parse_trial_seats(&v).ok())
            .unwrap_or_else(default_trial_seats);
        Ok(Settings {
            refresh_secs: int("refresh_secs", DEFAULT_REFRESH_SECS)?,
            grace_secs: int("grace_secs", DEFAULT_GRACE_SECS)?,
            rehost_limit: int("rehost_limit", DEFAULT_REHOST_LIMIT.into())?
                .try_into()
                .unwrap_or(DEFAULT_REHOST_LIMIT),
            rehost_period_days: int("rehost_period_days", DEFAULT_REHOST_PERIOD_DAYS)?,
            trial_secs: int("trial_secs", DEFAULT_TRIAL_SECS)?,
            trial_seats,
            duplicate_window_secs: int(
                "duplicate_window_secs",
                crate::clones::DEFAULT_DUPLICATE_WINDOW_SECS,
            )?,
        })
    }

    /// Sets one setting, after checking the value.
    #[cfg(test)]
    pub fn set_setting(&self, key: &str, value: &str) -> Result<(), DbError> {
        self.set_settings(&[(key, value)])
    }

    /// Sets several settings (`settings set`): all of them, or none when
    /// one is refused.
    pub fn set_settings(&self, pairs: &[(&str, &str)]) -> Result<(), DbError> {
        let checked = pairs
            .iter()
            .map(|(k, v)| Ok((k.trim(), check_setting(k.trim(), v)?)))
            .collect::<Result<Vec<_>, DbError>>()?;
        let tx = self.conn.unchecked_transaction()?;
        for (key, value) in checked {
            self.put_setting(key, &value)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// The fault knob; a value this build cannot read counts as none.
    pub fn fault(&self) -> Result<Fault, DbError> {
        Ok(self
            .setting("fault")?
            .and_then(|v| v.parse().ok())
            .unwrap_or_default())
    }

    pub fn set_fault(&self, fault: Fault) -> Result<(), DbError> {
        self.put_setting("fault", &fault.to_string())
    }
}

const MAX_REHOST_PERIOD_DAYS: i64 = 365_000;

/// Checks a setting's value and returns it as stored.
fn check_setting(key: &str, value: &str) -> Result<String, DbError> {
    let bad = |rule: &str| DbError::BadSetting {
        key: key.to_string(),
        value: value.to_string(),
        rule: rule.to_string(),
    };
    Ok(match key {
        "refresh_secs" | "grace_secs" | "trial_secs" | "duplicate_window_secs" => {
            match value.trim().parse::<i64>() {
                Ok(n) if n > 0 => n.to_string(),
                _ => return Err(bad("a whole number of seconds above 0")),
            }
        }
        "rehost_period_days" => match value.trim().parse::<i64>() {
            // A thousand years is "never forget"; more would only
            // overflow the arithmetic of times.
            Ok(n) if (1..=MAX_REHOST_PERIOD_DAYS).contains(&n) => n.to_string(),
            _ => return Err(bad("a whole number of days from 1 to 365000")),
        },
        "rehost_limit" => match value.trim().parse::<u32>() {
            // 0 would lock a PBX to its box for good, reset or not.
            Ok(n) if n > 0 => n.to_string(),
            _ => return Err(bad("a whole number of rehosts above 0")),
        },
        "trial_seats" => {
            let seats = parse_trial_seats(value).map_err(|e| bad(&e))?;
            order::format_counts(&seats)
        }
        _ => return Err(DbError::UnknownSetting(key.to_string())),
    })
}

/// Parses `trial_seats` in the syntax of `pbx add --seats`; a trial without
/// any seat would license nothing, so one is needed.
fn parse_trial_seats(value: &str) -> Result<BTreeMap<String, u32>, String> {
    let seats = order::parse_counts(value, order::CountKind::Seats, &order::catalog())
        .map_err(|e| format!("a seat list like {DEFAULT_TRIAL_SEATS} ({e})"))?;
    if seats.values().all(|n| *n == 0) {
        return Err(format!(
            "a seat list with at least one seat, like {DEFAULT_TRIAL_SEATS}"
        ));
    }
    Ok(seats)
}

fn default_trial_seats() -> BTreeMap<String, u32> {
    // The default is a constant this file's tests parse.
    parse_trial_seats(DEFAULT_TRIAL_SEATS).unwrap_or_default()
}

const TRIAL_SELECT: &str = "SELECT hardware_id, system_id, first_at, last_at, downloads,
    device_public_key, last_license_id FROM trials";

fn read_trial(r: &Row<'_>) -> rusqlite::Result<Trial> {
    Ok(Trial {
        hardware_id: r.get(0)?,
        system_id: r.get(1)?,
        first_at: r.get(2)?,
        last_at: r.get(3)?,
        downloads: r.get::<_, i64>(4)?.try_into().unwrap_or(0),
        device_public_key: r.get(5)?,
        last_license_id: r.get(6)?,
    })
}

fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(
        e,
        rusqlite::Error::SqliteFailure(f, _)
            if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
    )
}

/// A row as stored, before its JSON and enum columns are parsed.
struct RawPbx {
    serial: String,
    key: String,
    customer: String,
    name: String,
    term_kind: String,
    term_ends_at: Option<i64>,
    enforcement: String,
    seats: String,
    addons: String,
    created_at: i64,
    revoked_at: Option<i64>,
    revoked_reason: Option<String>,
    hardware_id: Option<String>,
    components: Option<String>,
    device_public_key: Option<String>,
    bound_at: Option<i64>,
    last_refresh_at: Option<i64>,
    seats_in_use: Option<String>,
    last_license_id: Option<String>,
    rehosts_reset_at: Option<i64>,
}

impl RawPbx {
    fn read(r: &Row<'_>) -> rusqlite::Result<RawPbx> {
        Ok(RawPbx {
            serial: r.get(0)?,
            key: r.get(1)?,
            customer: r.get(2)?,
            name: r.get(3)?,
            term_kind: r.get(4)?,
            term_ends_at: r.get(5)?,
            enforcement: r.get(6)?,
            seats: r.get(7)?,
            addons: r.get(8)?,
            created_at: r.get(9)?,
            revoked_at: r.get(10)?,
            revoked_reason: r.get(11)?,
            hardware_id: r.get(12)?,
            components: r.get(13)?,
            device_public_key: r.get(14)?,
            bound_at: r.get(15)?,
            last_refresh_at: r.get(16)?,
            seats_in_use: r.get(17)?,
            last_license_id: r.get(18)?,
            rehosts_reset_at: r.get(19)?,
        })
    }

    fn into_pbx(self) -> Result<Pbx, DbError> {
        let serial = self.serial.clone();
        let damaged = |what: &'static str, detail: String| DbError::Damaged {
            what,
            serial: serial.clone(),
            detail,
        };
        let json_map = |what: &'static str, s: &str| -> Result<BTreeMap<String, u32>, DbError> {
            serde_json::from_str(s).map_err(|e| damaged(what, e.to_string()))
        };
        let kind =
            order::parse_term(&self.term_kind).map_err(|e| damaged("term", e.to_string()))?;
        let enforcement = order::parse_enforcement(&self.enforcement)
            .map_err(|e| damaged("enforcement", e.to_string()))?;
        let binding = match (
            self.hardware_id,
            self.components,
            self.device_public_key,
            self.bound_at,
        ) {
            (Some(hardware_id), Some(components), Some(device_public_key), Some(bound_at)) => {
                Some(Binding {
                    hardware_id,
                    components: serde_json::from_str(&components)
                        .map_err(|e| damaged("binding", e.to_string()))?,
                    device_public_key,
                    bound_at,
                })
            }
            _ => None,
        };
        Ok(Pbx {
            seats: json_map("seat list", &self.seats)?,
            addons: json_map("add-on list", &self.addons)?,
            seats_in_use: match &self.seats_in_use {
                Some(s) => json_map("seats in use", s)?,
                None => BTreeMap::new(),
            },
            serial: self.serial,
            key: self.key,
            customer: self.customer,
            name: self.name,
            term: Term {
                kind,
                ends_at: self.term_ends_at,
            },
            enforcement,
            created_at: self.created_at,
            revoked: self.revoked_at.map(|at| Revoked {
                at,
                reason: self.revoked_reason.unwrap_or_default(),
            }),
            binding,
            last_refresh_at: self.last_refresh_at,
            last_license_id: self.last_license_id,
            rehosts_reset_at: self.rehosts_reset_at,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use licagent::hwid::ComponentKind;

    fn open() -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("portal.db")).unwrap();
        (dir, db)
    }

    fn new_pbx(serial: &str, key: &str) -> NewPbx {
        NewPbx {
            serial: serial.into(),
            key: key.into(),
            customer: "ACME".into(),
            name: "Head office".into(),
            term: Term {
                kind: TermKind::Yearly,
                ends_at: Some(2_000_000),
            },
            enforcement: Enforcement::Soft,
            seats: BTreeMap::from([("premium".into(), 5)]),
            addons: BTreeMap::from([("mobile".into(), 2)]),
            created_at: 1000,
        }
    }

    fn binding(hw: &str, dev: &str) -> Binding {
        Binding {
            hardware_id: hw.into(),
            components: vec![Component {
                kind: ComponentKind::Mac,
                hash: "ab".repeat(32),
            }],
            device_public_key: dev.into(),
            bound_at: 1500,
        }
    }

    #[test]
    fn orders_round_trip_by_serial_and_key() {
        let (_d, db) = open();
        db.add_customer("ACME", 1).unwrap();
        assert!(db.add_pbx(&new_pbx("SYS-1", "KEY1")).unwrap());
        let p = db.pbx_by_serial("SYS-1").unwrap().unwrap();
        assert_eq!(p.customer, "ACME");
        assert_eq!(p.term.ends_at, Some(2_000_000));
        assert_eq!(p.seats["premium"], 5);
        assert_eq!(p.addons["mobile"], 2);
        assert_eq!(p.binding, None);
        assert_eq!(db.pbx_by_key("KEY1").unwrap(), Some(p));
        assert_eq!(db.pbx_by_key("KEY2").unwrap(), None);
        assert!(matches!(db.pbx("SYS-9"), Err(DbError::UnknownSerial(_))));
    }

    #[test]
    fn duplicates_are_refused() {
        let (_d, db) = open();
        db.add_customer("ACME", 1).unwrap();
        assert!(matches!(
            db.add_customer("ACME", 2),
            Err(DbError::CustomerExists(_))
        ));
        assert!(db.add_pbx(&new_pbx("SYS-1", "KEY1")).unwrap());
        // A taken serial or key asks the caller to draw again.
        assert!(!db.add_pbx(&new_pbx("SYS-1", "KEY2")).unwrap());
        assert!(!db.add_pbx(&new_pbx("SYS-2", "KEY1")).unwrap());
        let mut p = new_pbx("SYS-3", "KEY3");
        p.customer = "Nobody".into();
        assert!(matches!(db.add_pbx(&p), Err(DbError::UnknownCustomer(_))));
    }

    #[test]
    fn edit_changes_only_what_is_given() {
        let (_d, db) = open();
        db.add_customer("ACME", 1).unwrap();
        db.add_pbx(&new_pbx("SYS-1", "KEY1")).unwrap();
        db.edit_pbx(
            "SYS-1",
            &PbxEdit {
                seats: Some(BTreeMap::from([("essential".into(), 9)])),
                enforcement: Some(Enforcement::Hard),
                ..PbxEdit::default()
            },
        )
        .unwrap();
        let p = db.pbx("SYS-1").unwrap();
        assert_eq!(p.seats, BTreeMap::from([("essential".into(), 9)]));
        assert_eq!(p.enforcement, Enforcement::Hard);
        assert_eq!(p.addons["mobile"], 2);
        assert_eq!(p.term.kind, TermKind::Yearly);
        assert!(db.edit_pbx("SYS-9", &PbxEdit::default()).is_err());
    }

    #[test]
    fn bind_release_and_history() {
        let (_d, db) = open();
        db.add_customer("ACME", 1).unwrap();
        db.add_pbx(&new_pbx("SYS-1", "KEY1")).unwrap();
        db.bind("SYS-1", &binding("hw-a", "dev-a")).unwrap();
        assert_eq!(
            db.pbx("SYS-1").unwrap().binding,
            Some(binding("hw-a", "dev-a"))
        );
        db.release("SYS-1", 2000, "rehosted", Some("hw-b")).unwrap();
        assert_eq!(db.pbx("SYS-1").unwrap().binding, None);
        // Releasing an unbound PBX adds nothing.
        db.release("SYS-1", 2100, "deactivated", None).unwrap();
        let h = db.history("SYS-1").unwrap();
        assert_eq!(
            h,
            vec![PastBinding {
                hardware_id: "hw-a".into(),
                device_public_key: "dev-a".into(),
                released_at: 2000,
                reason: "rehosted".into(),
                moved_to: Some("hw-b".into()),
            }]
        );
    }

    #[test]
    fn refresh_and_revoke_are_recorded() {
        let (_d, db) = open();
        db.add_customer("ACME", 1).unwrap();
        db.add_pbx(&new_pbx("SYS-1", "KEY1")).unwrap();
        db.bind("SYS-1", &binding("hw-a", "dev-a")).unwrap();
        let in_use = BTreeMap::from([("premium".into(), 3)]);
        db.record_refresh("SYS-1", 3000, &in_use, "lic-1", "hw-a2", &[])
            .unwrap();
        db.revoke("SYS-1", "unpaid", 4000).unwrap();
        let p = db.pbx("SYS-1").unwrap();
        assert_eq!(p.last_refresh_at, Some(3000));
        assert_eq!(p.seats_in_use, in_use);
        assert_eq!(p.last_license_id.as_deref(), Some("lic-1"));
        assert_eq!(p.binding.unwrap().hardware_id, "hw-a2");
        assert_eq!(
            p.revoked,
            Some(Revoked {
                at: 4000,
                reason: "unpaid".into()
            })
        );
        assert!(matches!(
            db.revoke("SYS-9", "x", 1),
            Err(DbError::UnknownSerial(_))
        ));
        db.record_license("lic-1", "SYS-1", "hw-a", 3000).unwrap();
        assert_eq!(db.licenses_issued("SYS-1").unwrap(), 1);
    }

    #[test]
    fn nonces_are_single_use_per_system_and_expire() {
        let (_d, db) = open();
        assert!(db.use_nonce("SYS-1", "n1", 1000).unwrap());
        assert!(!db.use_nonce("SYS-1", "n1", 1001).unwrap());
        // Another system may use the same nonce.
        assert!(db.use_nonce("SYS-2", "n1", 1001).unwrap());
        // Long after the window it is forgotten.
        assert!(db
            .use_nonce("SYS-1", "n1", 1000 + NONCE_TTL_SECS + 1)
            .unwrap());
    }

    #[test]
    fn settings_have_defaults_and_are_checked() {
        let (_d, db) = open();
        assert_eq!(
            db.settings().unwrap(),
            Settings {
                refresh_secs: DEFAULT_REFRESH_SECS,
                grace_secs: DEFAULT_GRACE_SECS,
                rehost_limit: 3,
                rehost_period_days: 365,
                trial_secs: 90 * 86_400,
                trial_seats: BTreeMap::from([
                    ("basic".into(), 5),
                    ("business".into(), 5),
                    ("essential".into(), 5),
                    ("premium".into(), 5)
                ]),
                duplicate_window_secs: 3 * 86_400,
            }
        );
        db.set_setting("refresh_secs", "30").unwrap();
        db.set_setting("rehost_limit", "1").unwrap();
        db.set_setting("rehost_period_days", "30").unwrap();
        db.set_setting("trial_secs", "60").unwrap();
        db.set_setting("trial_seats", " Premium=2 ,basic=1")
            .unwrap();
        let s = db.settings().unwrap();
        assert_eq!(s.refresh_secs, 30);
        assert_eq!(s.rehost_limit, 1);
        assert_eq!(s.rehost_period_secs(), 30 * 86_400);
        assert_eq!(s.trial_secs, 60);
        assert_eq!(
            s.trial_seats,
            BTreeMap::from([("basic".into(), 1), ("premium".into(), 2)])
        );
        assert!(matches!(
            db.set_setting("refresh", "30"),
            Err(DbError::UnknownSetting(_))
        ));
        for (key, value) in [
            ("grace_secs", "0"),
            ("grace_secs", "soon"),
            ("trial_secs", "-5"),
            ("rehost_limit", "0"),
            ("rehost_limit", "-1"),
            ("rehost_period_days", "0"),
            ("rehost_period_days", "99999999999999"),
            ("trial_seats", "mobile=5"),
            ("trial_seats", "premium"),
            ("trial_seats", "basic=0"),
            ("trial_seats", ""),
        ] {
            let err = db.set_setting(key, value).unwrap_err();
            assert!(
                matches!(&err, DbError::BadSetting { key: k, .. } if k == key),
                "{key}={value}: {err}"
            );
        }
        // Nothing of the refused values was stored.
        assert_eq!(db.settings().unwrap(), s);
        // Several at once are stored all or none.
        assert!(db
            .set_settings(&[("trial_secs", "5"), ("grace_secs", "0")])
            .is_err());
        assert_eq!(db.settings().unwrap(), s);
        db.set_settings(&[("trial_secs", "5"), (" grace_secs ", "7")])
            .unwrap();
        assert_eq!(db.settings().unwrap().trial_secs, 5);
        assert_eq!(db.settings().unwrap().grace_secs, 7);
    }

    #[test]
    fn a_bad_trial_seats_message_shows_the_syntax() {
        let (_d, db) = open();
        let msg = db
            .set_setting("trial_seats", "platinum=3")
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("platinum") && msg.contains(DEFAULT_TRIAL_SEATS),
            "{msg}"
        );
    }

    #[test]
    fn rehosts_count_within_the_period_and_after_a_reset() {
        let (_d, db) = open();
        db.add_customer("ACME", 1).unwrap();
        db.add_pbx(&new_pbx("SYS-1", "KEY1")).unwrap();
        db.add_pbx(&new_pbx("SYS-2", "KEY2")).unwrap();
        for (at, reason) in [
            (2000, REASON_REHOSTED),
            (3000, "deactivated"),
            (4000, REASON_REHOSTED),
        ] {
            db.bind("SYS-1", &binding("hw", "dev")).unwrap();
            db.release("SYS-1", at, reason, None).unwrap();
        }
        // Another PBX's rehost is not this one's.
        db.bind("SYS-2", &binding("hw", "dev")).unwrap();
        db.release("SYS-2", 4500, REASON_REHOSTED, None).unwrap();
        assert_eq!(db.rehost_times("SYS-1", 0).unwrap(), vec![2000, 4000]);
        // Only those released after `since`.
        assert_eq!(db.rehost_times("SYS-1", 2000).unwrap(), vec![4000]);

        db.reset_rehosts("SYS-1", 5000).unwrap();
        assert_eq!(db.rehost_times("SYS-1", 0).unwrap(), Vec::<i64>::new());
        assert_eq!(db.pbx("SYS-1").unwrap().rehosts_reset_at, Some(5000));
        assert_eq!(db.rehost_times("SYS-2", 0).unwrap(), vec![4500]);
        // A rehost in the same second as the reset, after it, counts.
        db.bind("SYS-1", &binding("hw", "dev")).unwrap();
        db.release("SYS-1", 5000, REASON_REHOSTED, None).unwrap();
        assert_eq!(db.rehost_times("SYS-1", 0).unwrap(), vec![5000]);
        assert!(matches!(
            db.reset_rehosts("SYS-9", 1),
            Err(DbError::UnknownSerial(_))
        ));
    }

    #[test]
    fn trials_keep_their_first_download() {
        let (_d, db) = open();
        let comps = binding("hw", "dev").components;
        let download = |hw: &'static str, license_id: &'static str, at| TrialDownload {
            hardware_id: hw,
            system_id: "TRIAL-AAAA-BBBB",
            components: &comps,
            device_public_key: "dev",
            license_id,
            at,
        };
        assert_eq!(db.trial("hw-a").unwrap(), None);
        db.record_trial_download(&download("hw-a", "lic-1", 1000))
            .unwrap();
        db.record_trial_download(&TrialDownload {
            system_id: "TRIAL-OTHER",
            device_public_key: "dev2",
            ..download("hw-a", "lic-2", 2000)
        })
        .unwrap();
        db.record_trial_download(&download("hw-b", "lic-3", 1500))
            .unwrap();
        let a = db.trial("hw-a").unwrap().unwrap();
        assert_eq!(
            a,
            Trial {
                hardware_id: "hw-a".into(),
                system_id: "TRIAL-AAAA-BBBB".into(),
                first_at: 1000,
                last_at: 2000,
                downloads: 2,
                device_public_key: "dev2".into(),
                last_license_id: "lic-2".into(),
            }
        );
        let all: Vec<String> = db
            .list_trials()
            .unwrap()
            .into_iter()
            .map(|t| t.hardware_id)
            .collect();
        assert_eq!(all, vec!["hw-a", "hw-b"]);
    }

    #[test]
    fn a_version_1_database_is_upgraded_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("portal.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(SCHEMA).unwrap();
            conn.pragma_update(None, "user_version", 1).unwrap();
            conn.execute(
                "INSERT INTO customers (name, created_at) VALUES ('ACME', 1)",
                [],
            )
            .unwrap();
        }
        let db = Db::open(&path).unwrap();
        db.add_pbx(&new_pbx("SYS-1", "KEY1")).unwrap();
        db.bind("SYS-1", &binding("hw", "dev")).unwrap();
        db.release("SYS-1", 2000, REASON_REHOSTED, None).unwrap();
        assert_eq!(db.rehost_times("SYS-1", 0).unwrap(), vec![2000]);
        assert_eq!(db.list_trials().unwrap(), vec![]);
        let version: i64 = db
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        drop(db);
        // Opening again does not run the steps twice.
        Db::open(&path).unwrap();
    }

    #[test]
    fn faults_round_trip_through_text_and_db() {
        let (_d, db) = open();
        assert_eq!(db.fault().unwrap(), Fault::None);
        for f in [
            Fault::Slow(3),
            Fault::Error500,
            Fault::Garbage,
            Fault::Down,
            Fault::WrongNonce,
            Fault::UnknownSigner,
            Fault::None,
        ] {
            assert_eq!(f.to_string().parse::<Fault>(), Ok(f));
            db.set_fault(f).unwrap();
            assert_eq!(db.fault().unwrap(), f);
        }
        assert!("slow:x".parse::<Fault>().is_err());
        assert!("flaky".parse::<Fault>().is_err());
    }

    #[test]
    fn a_second_connection_sees_changes() {
        // The server and the CLI each hold a connection.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("portal.db");
        let server = Db::open(&path).unwrap();
        let cli = Db::open(&path).unwrap();
        cli.set_fault(Fault::Down).unwrap();
        assert_eq!(server.fault().unwrap(), Fault::Down);
    }
}
