//! The SQLite store: license files (current and history), the clock
//! high-water mark, small settings, and the seat accounting's users,
//! holdings and audit (`users.rs`).
//!
//! It owns the database file's life cycle too: creating it private (0600),
//! migrating the schema forward by `PRAGMA user_version`, and moving a corrupt
//! file aside so that the agent can start (unlicensed) instead of crash-looping.

mod readonly;
mod schema;
mod sessions;
mod users;

pub use sessions::TestSessionRow;
pub use users::AuditQuery;

use std::fs::{self, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{params, Connection, ErrorCode, OpenFlags, OptionalExtension, TransactionBehavior};

/// How long a statement waits for another connection's lock before failing.
/// Every transaction here is a few rows, so 5 s means something is stuck.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The database holds signed licenses and the clock mark: only its owner
/// (the daemon's user) may read or write it.
const FILE_MODE: u32 = 0o600;

/// SQLite's companion files, renamed together with the database. `-journal`
/// is included although the store runs in WAL mode: a hot rollback journal
/// left next to a fresh database would be played into it.
const COMPANIONS: [&str; 3] = ["-wal", "-shm", "-journal"];

/// How many lines of `PRAGMA integrity_check` output go into the report.
const REPORTED_PROBLEMS: usize = 5;

/// A license file as kept in the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredLicense {
    pub license_id: String,
    /// The armored text, exactly as verified.
    pub armored: String,
    /// Unix seconds.
    pub installed_at: i64,
}

/// What happened while opening.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OpenReport {
    /// Set when a corrupt database was moved aside to this path.
    pub moved_aside: Option<PathBuf>,
    /// Why it was judged corrupt.
    pub corruption: Option<String>,
    /// Opened for reading only: the file system is read-only.
    pub read_only: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the database {path}: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("database error: {0}")]
    Sql(rusqlite::Error),
    /// A write on a store opened read-only (the sentence names the file
    /// system; see `readonly.rs`).
    #[error("{0}")]
    ReadOnly(String),
    #[error("the database {path} has schema {found} and needs migrating to {known}, but its file system is read-only; make it writable and restart licagent")]
    ReadOnlyMigration {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    #[error("cannot move the corrupt database {path} aside: {source}")]
    MoveAside {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the database {path} was written by a newer licagent (schema {found}, this one knows {known})")]
    TooNew {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    #[error("cannot create the database {path} (check that its directory exists and is writable): {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot migrate the database {path} to schema {version}: {source}")]
    Migrate {
        path: PathBuf,
        version: i64,
        source: rusqlite::Error,
    },
    #[error("the database {path} is corrupt ({reason}); move it aside or restore a backup")]
    Corrupt { path: PathBuf, reason: String },
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> StoreError {
        if e.sqlite_error_code() == Some(ErrorCode::ReadOnly) {
            return StoreError::ReadOnly(readonly::refusal());
        }
        StoreError::Sql(e)
    }
}

/// Earlier licenses kept for inspection; older ones are dropped at install.
pub const HISTORY_KEPT: i64 = 50;

/// The schema version this build writes (`PRAGMA user_version`).
pub const SCHEMA_VERSION: usize = schema::MIGRATIONS.len();

pub struct Store {
    conn: rusqlite::Connection,
    path: PathBuf,
    read_only: bool,
}

impl Store {
    /// Opens (creating if needed), migrates, and checks integrity. A corrupt
    /// file is moved aside and a fresh one created; the report says so.
    pub fn open(path: &Path) -> Result<(Store, OpenReport), StoreError> {
        let err = match Self::open_once(path) {
            Ok(store) => return Ok((store, OpenReport::default())),
            Err(err) => err,
        };
        // A read-only file system: serve what is there rather than nothing.
        if readonly::on_read_only_fs(path) {
            let conn = readonly::open(path, schema::MIGRATIONS.len() as i64)?;
            let store = Store {
                conn,
                path: path.to_path_buf(),
                read_only: true,
            };
            let report = OpenReport {
                read_only: true,
                ..OpenReport::default()
            };
            return Ok((store, report));
        }
        // Only corruption is worth a new file. Anything else (permissions, a
        // missing directory, a newer schema) would come back after the move,
        // or would throw away data that is fine, so it goes to the caller.
        let Some(reason) = corruption_reason(&err) else {
            return Err(err);
        };
        // `open_once` has dropped (closed) its connection by now, so no
        // handle still points at the files being renamed.
        let moved = move_aside(path)?;
        let store = Self::open_once(path)?;
        Ok((
            store,
            OpenReport {
                moved_aside: Some(moved),
                corruption: Some(reason),
                read_only: false,
            },
        ))
    }

    /// One attempt: create, configure, check, migrate. Corruption comes back
    /// as an error that [`corruption_reason`] recognises.
    fn open_once(path: &Path) -> Result<Store, StoreError> {
        create_private(path)?;
        let open_err = |source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        };
        // No SQLITE_OPEN_CREATE: `create_private` made the file with the right
        // mode, and if it vanished since, failing beats a world-readable file.
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let mut conn = Connection::open_with_flags(path, flags).map_err(open_err)?;
        configure(&conn).map_err(open_err)?;
        let problems = integrity_problems(&conn).map_err(open_err)?;
        if !problems.is_empty() {
            return Err(StoreError::Corrupt {
                path: path.to_path_buf(),
                reason: problems.join("; "),
            });
        }
        migrate(&mut conn, schema::MIGRATIONS, path)?;
        Ok(Store {
            conn,
            path: path.to_path_buf(),
            read_only: false,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opened for reading only (read-only file system).
    pub fn read_only(&self) -> bool {
        self.read_only
    }

    /// The installed license, if any.
    pub fn current_license(&self) -> Result<Option<StoredLicense>, StoreError> {
        let lic = self
            .conn
            .query_row(
                "SELECT license_id, armored, installed_at FROM licenses WHERE current = 1",
                [],
                license_from_row,
            )
            .optional()?;
        Ok(lic)
    }

    /// Makes `lic` the current license in one transaction; the previous one
    /// moves to the history.
    pub fn install_license(&mut self, lic: &StoredLicense) -> Result<(), StoreError> {
        // IMMEDIATE takes the write lock up front, so a concurrent writer waits
        // at BEGIN (under the busy timeout) instead of failing at the UPDATE.
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute(
            "UPDATE licenses SET current = 0, replaced_at = ?1 WHERE current = 1",
            [lic.installed_at],
        )?;
        tx.execute(
            "INSERT INTO licenses (license_id, armored, installed_at, current)
             VALUES (?1, ?2, ?3, 1)",
            params![lic.license_id, lic.armored, lic.installed_at],
        )?;
        // Every refresh installs a license: keep the history bounded.
        tx.execute(
            "DELETE FROM licenses WHERE current = 0 AND id NOT IN
               (SELECT id FROM licenses WHERE current = 0 ORDER BY id DESC LIMIT ?1)",
            [HISTORY_KEPT],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Removes the current license (to history); the agent becomes unlicensed.
    pub fn remove_license(&mut self, now: i64) -> Result<(), StoreError> {
        // One statement is its own transaction; with no current row it is a
        // no-op, so removing twice is harmless.
        self.conn.execute(
            "UPDATE licenses SET current = 0, replaced_at = ?1 WHERE current = 1",
            [now],
        )?;
        Ok(())
    }

    /// Earlier licenses, newest first.
    pub fn license_history(&self) -> Result<Vec<StoredLicense>, StoreError> {
        // By row id, not by time: the wall clock may have been moved, the
        // insertion order is what actually happened.
        let mut stmt = self.conn.prepare(
            "SELECT license_id, armored, installed_at FROM licenses
             WHERE current = 0 ORDER BY id DESC",
        )?;
        let rows = stmt.query_map([], license_from_row)?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// The highest wall-clock time ever seen (Unix seconds; 0 if none).
    pub fn clock_mark(&self) -> Result<i64, StoreError> {
        let mark = self
            .conn
            .query_row("SELECT high_water FROM clock_mark WHERE id = 1", [], |r| {
                r.get(0)
            })
            .optional()?;
        Ok(mark.unwrap_or(0))
    }

    /// Raises the mark to `now` if `now` is later; returns the mark after.
    pub fn advance_clock_mark(&mut self, now: i64) -> Result<i64, StoreError> {
        if self.read_only {
            // Kept in memory by the caller; nothing can be saved, and a
            // warning every few minutes would say nothing new.
            return Ok(self.clock_mark()?.max(now));
        }
        // max() in SQL, in the same statement as the write: a clock moved
        // backwards can never lower the mark, whatever the caller passes.
        let mark = self.conn.query_row(
            "INSERT INTO clock_mark (id, high_water) VALUES (1, ?1)
             ON CONFLICT (id) DO UPDATE SET high_water = max(high_water, excluded.high_water)
             RETURNING high_water",
            [now],
            |r| r.get(0),
        )?;
        Ok(mark)
    }

    pub fn setting(&self, key: &str) -> Result<Option<String>, StoreError> {
        let value = self
            .conn
            .query_row("SELECT value FROM settings WHERE key = ?1", [key], |r| {
                r.get(0)
            })
            .optional()?;
        Ok(value)
    }

    /// Sets `key` to `value`; `None` deletes the key.
    pub fn set_setting(&mut self, key: &str, value: Option<&str>) -> Result<(), StoreError> {
        match value {
            Some(value) => self.conn.execute(
                "INSERT INTO settings (key, value) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                [key, value],
            )?,
            None => self
                .conn
                .execute("DELETE FROM settings WHERE key = ?1", [key])?,
        };
        Ok(())
    }
}

fn license_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<StoredLicense> {
    Ok(StoredLicense {
        license_id: row.get(0)?,
        armored: row.get(1)?,
        installed_at: row.get(2)?,
    })
}

/// Creates the database file with mode 0600 if it does not exist. The parent
/// directory is not created: it comes from systemd's `StateDirectory=` or the
/// config, and a missing one is a configuration error to report.
fn create_private(path: &Path) -> Result<(), StoreError> {
    let create_err = |source| StoreError::Create {
        path: path.to_path_buf(),
        source,
    };
    // create_new + mode: the file never exists with wider permissions, not
    // even for an instant.
    let file = match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(path)
    {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(create_err(e)),
    };
    // The umask may have narrowed the mode above; set it exactly. SQLite gives
    // the -wal and -shm files the database file's mode, so they follow.
    file.set_permissions(Permissions::from_mode(FILE_MODE))
        .map_err(create_err)
}

/// Per-connection settings. The first of them to touch the file is also the
/// first to notice a file that is not a database.
fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // WAL: the API's readers never wait for a writer, and a crash mid-write
    // leaves the database as of the last commit.
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        // Some file systems (no shared memory) refuse WAL; the rollback
        // journal SQLite keeps instead is just as safe, only slower.
        tracing::warn!(journal_mode = %mode, "the database could not switch to WAL mode");
    }
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // FULL, not NORMAL: in WAL mode NORMAL can lose the last commits on power
    // loss. A license install is rare and follows an admin's action; after
    // "activated" it must survive the appliance being unplugged, and one fsync
    // per commit costs nothing at this rate.
    conn.pragma_update(None, "synchronous", "FULL")?;
    Ok(())
}

/// The problems `PRAGMA integrity_check` reports (the first few); empty when
/// the database is fine.
fn integrity_problems(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare("PRAGMA integrity_check")?;
    let lines = stmt
        .query_map([], |r| r.get::<_, String>(0))?
        .take(REPORTED_PROBLEMS)
        .collect::<rusqlite::Result<Vec<_>>>()?;
    if lines.len() == 1 && lines[0] == "ok" {
        return Ok(Vec::new());
    }
    Ok(lines)
}

/// Brings the schema up to `steps.len()`, one transaction per step with its
/// version bump, so that a crash or a failing step leaves a database at a
/// known version rather than half migrated.
fn migrate(conn: &mut Connection, steps: &[&str], path: &Path) -> Result<(), StoreError> {
    let known = steps.len() as i64;
    loop {
        // The version is read inside the write transaction: two processes
        // opening the same file cannot both apply the same step.
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let found: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if found > known {
            // Refuse rather than move aside: a downgraded agent must leave the
            // newer data alone for the upgrade that will follow.
            return Err(StoreError::TooNew {
                path: path.to_path_buf(),
                found,
                known,
            });
        }
        let Some(step) = usize::try_from(found).ok().and_then(|i| steps.get(i)) else {
            // Up to date (the transaction rolls back; it changed nothing).
            return Ok(());
        };
        let version = found + 1;
        let migrate_err = |source| StoreError::Migrate {
            path: path.to_path_buf(),
            version,
            source,
        };
        tx.execute_batch(step).map_err(migrate_err)?;
        tx.pragma_update(None, "user_version", version)
            .map_err(migrate_err)?;
        tx.commit().map_err(migrate_err)?;
    }
}

/// Why `err` means the file is damaged (and should be moved aside), or None
/// when it is some other failure.
fn corruption_reason(err: &StoreError) -> Option<String> {
    let source = match err {
        StoreError::Corrupt { reason, .. } => return Some(reason.clone()),
        StoreError::Open { source, .. }
        | StoreError::Migrate { source, .. }
        | StoreError::Sql(source) => source,
        _ => return None,
    };
    match source.sqlite_error_code() {
        Some(ErrorCode::NotADatabase) => Some(format!("not a database: {source}")),
        Some(ErrorCode::DatabaseCorrupt) => Some(format!("corrupt: {source}")),
        _ => None,
    }
}

/// `path` with `suffix` appended to its file name.
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Renames the database to `<name>.corrupt-<unix seconds>` and its companions
/// to `<name>.corrupt-<unix seconds>-wal` and so on: SQLite's own naming, so
/// that opening the moved file for a post-mortem picks up its WAL.
fn move_aside(path: &Path) -> Result<PathBuf, StoreError> {
    let stamp = format!(".corrupt-{}", crate::time::now());
    let taken = |p: &Path| {
        fs::symlink_metadata(p).is_ok()
            || COMPANIONS
                .iter()
                .any(|c| fs::symlink_metadata(with_suffix(p, c)).is_ok())
    };
    // Never overwrite an earlier post-mortem copy from the same second.
    let mut target = with_suffix(path, &stamp);
    let mut n = 1;
    while taken(&target) {
        target = with_suffix(path, &format!("{stamp}.{n}"));
        n += 1;
    }
    // Companions first: a WAL left beside the fresh database would be
    // replayed into it. If one cannot be moved, the database stays put.
    for companion in COMPANIONS {
        let from = with_suffix(path, companion);
        match fs::rename(&from, with_suffix(&target, companion)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => return Err(StoreError::MoveAside { path: from, source }),
        }
    }
    fs::rename(path, &target).map_err(|source| StoreError::MoveAside {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(target)
}

#[cfg(test)]
mod tests;
