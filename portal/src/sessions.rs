//! Test mode on the portal's side: the sessions agents report at refresh
//! (what `pbx show` sums over the last 30 days) and the vendor's per-PBX
//! test mode policy, which goes into the PBX's signed licenses.

use licagent::license::TestModePolicy;
use licagent::portal::wire::TestSession;
use rusqlite::{params, OptionalExtension};

use crate::db::{Db, DbError};

/// Version 4 of the schema.
pub const SCHEMA_V4: &str = "
CREATE TABLE test_sessions (
    serial      TEXT NOT NULL REFERENCES pbx(serial),
    started_at  INTEGER NOT NULL,
    ended_at    INTEGER NOT NULL,
    how         TEXT NOT NULL,
    reported_at INTEGER NOT NULL,
    PRIMARY KEY (serial, started_at)
);
-- A PBX without a row gets no policy in its license: the agent's
-- compiled-in one applies (8 hours, no cool-down).
CREATE TABLE test_policies (
    serial        TEXT PRIMARY KEY REFERENCES pbx(serial),
    allowed       INTEGER NOT NULL,
    max_secs      INTEGER NOT NULL,
    cooldown_secs INTEGER NOT NULL
);
";

/// What `pbx show` reports of test mode.
pub const SESSION_WINDOW_SECS: i64 = 30 * 24 * 60 * 60;

/// Sessions longer than this are reported as this long (an agent cannot run
/// test mode longer; a bad report must not inflate the vendor's figures).
const MAX_SESSION_SECS: i64 = 8 * 3600;

impl Db {
    /// Stores reported sessions; a session reported twice counts once.
    pub fn record_test_sessions(
        &self,
        serial: &str,
        sessions: &[TestSession],
        now: i64,
    ) -> Result<(), DbError> {
        for s in sessions.iter().take(100) {
            let ended = s
                .ended_at
                .clamp(s.started_at, s.started_at.saturating_add(MAX_SESSION_SECS));
            let how: String = s.how.chars().take(16).collect();
            self.conn().execute(
                "INSERT OR IGNORE INTO test_sessions (serial, started_at, ended_at, how, reported_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![serial, s.started_at, ended, how, now],
            )?;
        }
        Ok(())
    }

    /// Sessions that ended after `since`, oldest first.
    pub fn test_sessions_since(
        &self,
        serial: &str,
        since: i64,
    ) -> Result<Vec<TestSession>, DbError> {
        let mut stmt = self.conn().prepare(
            "SELECT started_at, ended_at, how FROM test_sessions
             WHERE serial = ?1 AND ended_at >= ?2 ORDER BY started_at",
        )?;
        let rows = stmt
            .query_map(params![serial, since], |r| {
                Ok(TestSession {
                    started_at: r.get(0)?,
                    ended_at: r.get(1)?,
                    how: r.get(2)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    pub fn test_policy(&self, serial: &str) -> Result<Option<TestModePolicy>, DbError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT allowed, max_secs, cooldown_secs FROM test_policies WHERE serial = ?1",
                [serial],
                |r| {
                    Ok(TestModePolicy {
                        allowed: r.get::<_, i64>(0)? != 0,
                        max_secs: r.get(1)?,
                        cooldown_secs: r.get(2)?,
                    })
                },
            )
            .optional()?)
    }

    /// Sets the policy; `None` goes back to the agent's compiled-in one.
    pub fn set_test_policy(
        &self,
        serial: &str,
        policy: Option<&TestModePolicy>,
    ) -> Result<(), DbError> {
        self.pbx(serial)?;
        match policy {
            Some(p) => self.conn().execute(
                "INSERT OR REPLACE INTO test_policies (serial, allowed, max_secs, cooldown_secs)
                 VALUES (?1, ?2, ?3, ?4)",
                params![serial, i64::from(p.allowed), p.max_secs, p.cooldown_secs],
            )?,
            None => self
                .conn()
                .execute("DELETE FROM test_policies WHERE serial = ?1", [serial])?,
        };
        Ok(())
    }
}

/// Hours of test mode in `sessions`.
pub fn hours(sessions: &[TestSession]) -> f64 {
    let secs: i64 = sessions
        .iter()
        .map(|s| s.ended_at.saturating_sub(s.started_at).max(0))
        .sum();
    secs as f64 / 3600.0
}
