//! Test mode sessions: one row per session, for the audit and for the
//! portal, which gets every ended session once at the next refresh.

use rusqlite::{params, OptionalExtension};

use super::{Store, StoreError};

/// A session as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestSessionRow {
    pub id: i64,
    pub started_at: i64,
    pub ends_at: i64,
    pub ended_at: Option<i64>,
    pub how: Option<String>,
}

impl Store {
    /// Records the start of a session.
    pub fn start_test_session(&mut self, started_at: i64, ends_at: i64) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO test_sessions (started_at, ends_at) VALUES (?1, ?2)",
            params![started_at, ends_at],
        )?;
        Ok(())
    }

    /// Closes the running session (if any) at `ended_at`.
    pub fn end_test_session(&mut self, ended_at: i64, how: &str) -> Result<(), StoreError> {
        self.conn.execute(
            "UPDATE test_sessions SET ended_at = ?1, how = ?2
             WHERE id = (SELECT MAX(id) FROM test_sessions) AND ended_at IS NULL",
            params![ended_at, how],
        )?;
        Ok(())
    }

    /// When the last session ended, for the vendor's cool-down.
    pub fn last_test_session_end(&self) -> Result<Option<i64>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT MAX(ended_at) FROM test_sessions WHERE ended_at IS NOT NULL",
                [],
                |r| r.get::<_, Option<i64>>(0),
            )
            .optional()?
            .flatten())
    }

    /// Ended sessions the portal has not had yet, oldest first.
    pub fn unreported_test_sessions(&self) -> Result<Vec<TestSessionRow>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT id, started_at, ends_at, ended_at, how FROM test_sessions
             WHERE reported = 0 AND ended_at IS NOT NULL ORDER BY id LIMIT 100",
        )?;
        let rows = stmt
            .query_map([], |r| {
                Ok(TestSessionRow {
                    id: r.get(0)?,
                    started_at: r.get(1)?,
                    ends_at: r.get(2)?,
                    ended_at: r.get(3)?,
                    how: r.get(4)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// The portal took these sessions.
    pub fn mark_test_sessions_reported(&mut self, ids: &[i64]) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        for id in ids {
            tx.execute("UPDATE test_sessions SET reported = 1 WHERE id = ?1", [id])?;
        }
        tx.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_kept_until_reported() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _) = Store::open(&dir.path().join("db")).unwrap();
        assert_eq!(store.last_test_session_end().unwrap(), None);
        store.start_test_session(100, 200).unwrap();
        // A running session is not reported yet.
        assert!(store.unreported_test_sessions().unwrap().is_empty());
        store.end_test_session(150, "stopped").unwrap();
        store.start_test_session(300, 400).unwrap();
        store.end_test_session(400, "ran_out").unwrap();
        let rows = store.unreported_test_sessions().unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].how.as_deref(), Some("stopped"));
        assert_eq!(store.last_test_session_end().unwrap(), Some(400));
        store.mark_test_sessions_reported(&[rows[0].id]).unwrap();
        let rows = store.unreported_test_sessions().unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].started_at, 300);
    }
}
