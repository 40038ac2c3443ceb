//! The portal's SQLite database: customers, PBX orders and their current
//! binding, the history of released bindings, issued licenses, the nonces
//! seen recently, settings and the fault knob.
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
const SCHEMA_VERSION: i64 = 1;

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

/// How long a nonce is remembered. A request is accepted only within
/// ±MAX_CLOCK_SKEW_SECS of its `sent_at`, so a replay is at most twice that
/// later; an hour leaves room for the portal's own clock steps.
const NONCE_TTL_SECS: i64 = 3600;

pub const DEFAULT_REFRESH_SECS: i64 = 24 * 60 * 60;
pub const DEFAULT_GRACE_SECS: i64 = 14 * 24 * 60 * 60;

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
    #[error("the setting {0:?} is unknown; use refresh_secs or grace_secs")]
    UnknownSetting(String),
    #[error("the setting {key} must be a whole number of seconds above 0, not {value:?}")]
    BadSetting { key: String, value: String },
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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    pub refresh_secs: i64,
    pub grace_secs: i64,
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
        if version < 1 {
            let tx = self.conn.unchecked_transaction()?;
            tx.execute_batch(SCHEMA)?;
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
        p.last_refresh_at, p.seats_in_use, p.last_license_id
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
        Ok(Settings {
            refresh_secs: int("refresh_secs", DEFAULT_REFRESH_SECS)?,
            grace_secs: int("grace_secs", DEFAULT_GRACE_SECS)?,
        })
    }

    /// Sets `refresh_secs` or `grace_secs`.
    pub fn set_setting(&self, key: &str, value: &str) -> Result<(), DbError> {
        if key != "refresh_secs" && key != "grace_secs" {
            return Err(DbError::UnknownSetting(key.to_string()));
        }
        match value.trim().parse::<i64>() {
            Ok(n) if n > 0 => self.put_setting(key, &n.to_string()),
            _ => Err(DbError::BadSetting {
                key: key.to_string(),
                value: value.to_string(),
            }),
        }
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
                grace_secs: DEFAULT_GRACE_SECS
            }
        );
        db.set_setting("refresh_secs", "30").unwrap();
        assert_eq!(db.settings().unwrap().refresh_secs, 30);
        assert!(matches!(
            db.set_setting("refresh", "30"),
            Err(DbError::UnknownSetting(_))
        ));
        assert!(matches!(
            db.set_setting("grace_secs", "0"),
            Err(DbError::BadSetting { .. })
        ));
        assert!(matches!(
            db.set_setting("grace_secs", "soon"),
            Err(DbError::BadSetting { .. })
        ));
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
