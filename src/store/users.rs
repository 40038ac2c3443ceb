//! The seat accounting's tables: users, the add-ons they hold, and the
//! audit of every change. The rules live in `crate::seats`; this file only
//! reads and writes what the ledger decided, each change in one transaction.

use std::collections::HashMap;

use rusqlite::types::Type;
use rusqlite::{params, OptionalExtension, TransactionBehavior};
use serde::{Deserialize, Serialize};

use super::{Store, StoreError};
use crate::seats::{AuditAction, AuditEntry, AuditRecord, Held, User, UserKind};

/// Most audit rows one query returns.
pub const MAX_AUDIT_ROWS: u32 = 1000;

/// Which audit rows to read, newest first.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditQuery {
    /// Only changes to this user.
    #[serde(default)]
    pub user_id: Option<String>,
    /// Only changes where the user held this profile or add-on before or
    /// after: "who took the last Premium seat".
    #[serde(default)]
    pub code: Option<String>,
    /// Only rows older than this id (paging).
    #[serde(default)]
    pub before_id: Option<i64>,
    /// At most this many rows (0 or more than [`MAX_AUDIT_ROWS`]: that).
    #[serde(default)]
    pub limit: u32,
}

/// A JSON column that does not decode: reported as a conversion failure
/// of that column, which `StoreError::Sql` carries.
fn json_err(col: usize, e: serde_json::Error) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(col, Type::Text, Box::new(e))
}

impl Store {
    /// Every user with its holdings.
    pub fn load_users(&self) -> Result<Vec<User>, StoreError> {
        let mut addons: HashMap<String, Vec<Held>> = HashMap::new();
        let mut stmt = self
            .conn
            .prepare("SELECT user_id, code, seq FROM user_addons ORDER BY user_id, code")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                Held {
                    code: r.get(1)?,
                    seq: r.get(2)?,
                },
            ))
        })?;
        for row in rows {
            let (user, held) = row?;
            addons.entry(user).or_default().push(held);
        }
        let mut stmt = self.conn.prepare(
            "SELECT id, name, extension, number, kind, profile, profile_seq FROM users ORDER BY id",
        )?;
        let users = stmt.query_map([], |r| {
            let kind: String = r.get(4)?;
            let kind = UserKind::parse(&kind).ok_or_else(|| {
                rusqlite::Error::FromSqlConversionFailure(
                    4,
                    Type::Text,
                    format!("unknown user kind {kind:?}").into(),
                )
            })?;
            let profile: Option<String> = r.get(5)?;
            let profile_seq: Option<i64> = r.get(6)?;
            Ok(User {
                id: r.get(0)?,
                name: r.get(1)?,
                extension: r.get(2)?,
                number: r.get(3)?,
                kind,
                // The table's CHECK keeps both or neither.
                profile: profile
                    .zip(profile_seq)
                    .map(|(code, seq)| Held { code, seq }),
                addons: Vec::new(),
            })
        })?;
        let mut out = Vec::new();
        for user in users {
            let mut user = user?;
            user.addons = addons.remove(&user.id).unwrap_or_default();
            out.push(user);
        }
        Ok(out)
    }

    /// Writes one planned change: users replaced or inserted whole (with
    /// their add-ons), users deleted, audit rows appended, all in one
    /// transaction. Returns the audit ids.
    pub fn save_users(
        &mut self,
        upserts: &[User],
        deletes: &[String],
        audit: &[AuditRecord],
    ) -> Result<Vec<i64>, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        {
            let mut delete = tx.prepare_cached("DELETE FROM users WHERE id = ?1")?;
            for id in deletes {
                delete.execute([id])?;
            }
            // Clear the user's extension first: a change that swaps two
            // users' extensions must not trip the UNIQUE index midway.
            let mut park =
                tx.prepare_cached("UPDATE users SET extension = char(1) || id WHERE id = ?1")?;
            for u in upserts {
                park.execute([&u.id])?;
            }
            let mut upsert = tx.prepare_cached(
                "INSERT INTO users (id, name, extension, number, kind, profile, profile_seq)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (id) DO UPDATE SET
                    name = excluded.name, extension = excluded.extension,
                    number = excluded.number, kind = excluded.kind,
                    profile = excluded.profile, profile_seq = excluded.profile_seq",
            )?;
            let mut clear = tx.prepare_cached("DELETE FROM user_addons WHERE user_id = ?1")?;
            let mut addon = tx.prepare_cached(
                "INSERT INTO user_addons (user_id, code, seq) VALUES (?1, ?2, ?3)",
            )?;
            for u in upserts {
                upsert.execute(params![
                    u.id,
                    u.name,
                    u.extension,
                    u.number,
                    u.kind.as_str(),
                    u.profile.as_ref().map(|h| &h.code),
                    u.profile.as_ref().map(|h| h.seq),
                ])?;
                clear.execute([&u.id])?;
                for h in &u.addons {
                    addon.execute(params![u.id, h.code, h.seq])?;
                }
            }
        }
        let ids = insert_audit(&tx, audit)?;
        tx.commit()?;
        Ok(ids)
    }

    /// Audit rows matching `q`, newest first.
    /// Appends one audit row that changes no user (test mode sessions).
    pub fn append_audit(&mut self, record: &AuditRecord) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        insert_audit(&tx, std::slice::from_ref(record))?;
        tx.commit()?;
        Ok(())
    }

    pub fn seat_audit(&self, q: &AuditQuery) -> Result<Vec<AuditEntry>, StoreError> {
        let limit = match q.limit {
            0 => MAX_AUDIT_ROWS,
            n => n.min(MAX_AUDIT_ROWS),
        };
        // The code filter looks into both JSON snapshots (SQLite's JSON
        // functions): the profile, or any of the add-ons.
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, at, caller_uid, action, user_id, before, after, totals
             FROM seat_audit AS a
             WHERE (?1 IS NULL OR user_id = ?1)
               AND (?2 IS NULL OR id < ?2)
               AND (?3 IS NULL
                    OR json_extract(before, '$.profile') = ?3
                    OR json_extract(after, '$.profile') = ?3
                    OR EXISTS (SELECT 1 FROM json_each(a.before, '$.addons') WHERE value = ?3)
                    OR EXISTS (SELECT 1 FROM json_each(a.after, '$.addons') WHERE value = ?3))
             ORDER BY id DESC
             LIMIT ?4",
        )?;
        let rows = stmt.query_map(params![q.user_id, q.before_id, q.code, limit], |r| {
            let action: String = r.get(3)?;
            let action = AuditAction::parse(&action).ok_or_else(|| {
                rusqlite::Error::FromSqlConversionFailure(
                    3,
                    Type::Text,
                    format!("unknown audit action {action:?}").into(),
                )
            })?;
            let snapshot = |col: usize| -> rusqlite::Result<_> {
                let text: Option<String> = r.get(col)?;
                text.map(|t| serde_json::from_str(&t).map_err(|e| json_err(col, e)))
                    .transpose()
            };
            let totals: String = r.get(7)?;
            Ok(AuditEntry {
                id: r.get(0)?,
                record: AuditRecord {
                    at: r.get(1)?,
                    caller_uid: r.get(2)?,
                    action,
                    user_id: r.get(4)?,
                    before: snapshot(5)?,
                    after: snapshot(6)?,
                    totals: serde_json::from_str(&totals).map_err(|e| json_err(7, e))?,
                },
            })
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// The highest sequence number any holding has (0 if none).
    pub fn max_seat_seq(&self) -> Result<i64, StoreError> {
        let seq = self
            .conn
            .query_row(
                "SELECT max(s) FROM (SELECT max(profile_seq) AS s FROM users
                                     UNION ALL SELECT max(seq) FROM user_addons)",
                [],
                |r| r.get::<_, Option<i64>>(0),
            )
            .optional()?;
        Ok(seq.flatten().unwrap_or(0))
    }
}

fn insert_audit(
    tx: &rusqlite::Transaction<'_>,
    audit: &[AuditRecord],
) -> Result<Vec<i64>, StoreError> {
    let mut insert = tx.prepare_cached(
        "INSERT INTO seat_audit (at, caller_uid, action, user_id, before, after, totals)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) RETURNING id",
    )?;
    let mut ids = Vec::with_capacity(audit.len());
    for a in audit {
        let before = a.before.as_ref().map(to_json).transpose()?;
        let after = a.after.as_ref().map(to_json).transpose()?;
        let totals = to_json(&a.totals)?;
        let id = insert.query_row(
            params![
                a.at,
                a.caller_uid,
                a.action.as_str(),
                a.user_id,
                before,
                after,
                totals
            ],
            |r| r.get(0),
        )?;
        ids.push(id);
    }
    Ok(ids)
}

/// Serialises an audit column; a failure (serde_json reports one only for
/// maps with non-string keys, impossible here) becomes an error, not a panic.
fn to_json<T: Serialize>(v: &T) -> rusqlite::Result<String> {
    serde_json::to_string(v).map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::seats::{SeatTotal, UserSnapshot};

    fn open(dir: &tempfile::TempDir) -> Store {
        Store::open(&dir.path().join("licagent.db")).unwrap().0
    }

    fn user(id: &str, ext: &str, profile: Option<(&str, i64)>, addons: &[(&str, i64)]) -> User {
        User {
            id: id.into(),
            name: format!("User {id}"),
            extension: ext.into(),
            number: None,
            kind: UserKind::Regular,
            profile: profile.map(|(c, s)| Held {
                code: c.into(),
                seq: s,
            }),
            addons: addons
                .iter()
                .map(|(c, s)| Held {
                    code: (*c).into(),
                    seq: *s,
                })
                .collect(),
        }
    }

    fn record(
        user: &str,
        action: AuditAction,
        before: Option<&str>,
        after: Option<&str>,
    ) -> AuditRecord {
        let snap = |p: &str| UserSnapshot {
            name: "N".into(),
            extension: "1".into(),
            number: None,
            kind: UserKind::Regular,
            profile: Some(p.into()),
            addons: vec!["mobile".into()],
        };
        AuditRecord {
            at: 1_700_000_000,
            caller_uid: 1000,
            action,
            user_id: user.into(),
            before: before.map(snap),
            after: after.map(snap),
            totals: BTreeMap::from([(
                "premium".to_string(),
                SeatTotal {
                    used: 3,
                    purchased: Some(5),
                },
            )]),
        }
    }

    #[test]
    fn users_round_trip_with_addons_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(&dir);
        let mut a = user(
            "a",
            "201",
            Some(("premium", 3)),
            &[("mobile", 4), ("team_chat", 9)],
        );
        a.number = Some("+41 1".into());
        let b = user("b", "202", None, &[]);
        store.save_users(&[a.clone(), b.clone()], &[], &[]).unwrap();
        drop(store);
        let store = open(&dir);
        assert_eq!(store.load_users().unwrap(), vec![a, b]);
        assert_eq!(store.max_seat_seq().unwrap(), 9);
    }

    #[test]
    fn upsert_replaces_addons_and_delete_cascades() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(&dir);
        store
            .save_users(
                &[user("a", "201", Some(("basic", 1)), &[("mobile", 2)])],
                &[],
                &[],
            )
            .unwrap();
        let a2 = user("a", "201", Some(("premium", 5)), &[("team_chat", 6)]);
        store
            .save_users(std::slice::from_ref(&a2), &[], &[])
            .unwrap();
        assert_eq!(store.load_users().unwrap(), vec![a2]);
        store.save_users(&[], &["a".to_string()], &[]).unwrap();
        assert!(store.load_users().unwrap().is_empty());
        let orphans: i64 = store
            .conn
            .query_row("SELECT count(*) FROM user_addons", [], |r| r.get(0))
            .unwrap();
        assert_eq!(orphans, 0);
        assert_eq!(store.max_seat_seq().unwrap(), 0);
    }

    #[test]
    fn two_users_may_swap_extensions_in_one_change() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(&dir);
        store
            .save_users(
                &[user("a", "201", None, &[]), user("b", "202", None, &[])],
                &[],
                &[],
            )
            .unwrap();
        store
            .save_users(
                &[user("a", "202", None, &[]), user("b", "201", None, &[])],
                &[],
                &[],
            )
            .unwrap();
        let exts: Vec<String> = store
            .load_users()
            .unwrap()
            .into_iter()
            .map(|u| u.extension)
            .collect();
        assert_eq!(exts, ["202", "201"]);
    }

    #[test]
    fn the_schema_refuses_duplicate_extensions_and_a_second_admin() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(&dir);
        store
            .save_users(&[user("a", "201", None, &[])], &[], &[])
            .unwrap();
        let err = store.save_users(&[user("b", "201", None, &[])], &[], &[]);
        assert!(err.is_err());
        let mut admin1 = user("x", "1", None, &[]);
        admin1.kind = UserKind::Admin;
        let mut admin2 = user("y", "2", None, &[]);
        admin2.kind = UserKind::Admin;
        store.save_users(&[admin1], &[], &[]).unwrap();
        assert!(store.save_users(&[admin2], &[], &[]).is_err());
        assert_eq!(store.load_users().unwrap().len(), 2);
    }

    #[test]
    fn a_failed_change_writes_no_audit_row() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(&dir);
        store
            .save_users(&[user("a", "201", None, &[])], &[], &[])
            .unwrap();
        let err = store.save_users(
            &[user("b", "201", None, &[])],
            &[],
            &[record("b", AuditAction::Create, None, Some("basic"))],
        );
        assert!(err.is_err());
        assert!(store.seat_audit(&AuditQuery::default()).unwrap().is_empty());
    }

    #[test]
    fn audit_rows_read_back_newest_first_and_filter() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(&dir);
        let recs = [
            record("a", AuditAction::Create, None, Some("basic")),
            record("b", AuditAction::Create, None, Some("premium")),
            record("a", AuditAction::Assign, Some("basic"), Some("business")),
            record("c", AuditAction::Delete, Some("essential"), None),
        ];
        let ids = store.save_users(&[], &[], &recs).unwrap();
        assert_eq!(ids.len(), 4);
        assert!(ids.windows(2).all(|w| w[0] < w[1]));

        let all = store.seat_audit(&AuditQuery::default()).unwrap();
        assert_eq!(all.len(), 4);
        assert_eq!(all[0].id, ids[3]);
        assert_eq!(all[3].record, recs[0]);

        let a = store
            .seat_audit(&AuditQuery {
                user_id: Some("a".into()),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(a.iter().map(|e| e.id).collect::<Vec<_>>(), [ids[2], ids[0]]);

        let premium = store
            .seat_audit(&AuditQuery {
                code: Some("premium".into()),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(premium.iter().map(|e| e.id).collect::<Vec<_>>(), [ids[1]]);
        // Add-ons match too; every snapshot here holds mobile.
        let mobile = store
            .seat_audit(&AuditQuery {
                code: Some("mobile".into()),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(mobile.len(), 4);

        let page = store
            .seat_audit(&AuditQuery {
                before_id: Some(ids[2]),
                limit: 1,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(page.iter().map(|e| e.id).collect::<Vec<_>>(), [ids[1]]);
    }

    #[test]
    fn audit_ids_are_not_reused_after_pruning() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(&dir);
        let rec = record("a", AuditAction::Create, None, Some("basic"));
        let first = store
            .save_users(&[], &[], std::slice::from_ref(&rec))
            .unwrap()[0];
        store.conn.execute("DELETE FROM seat_audit", []).unwrap();
        let second = store.save_users(&[], &[], &[rec]).unwrap()[0];
        assert!(second > first);
    }
}
