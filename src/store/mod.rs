//! The SQLite store: license files (current and history), the clock
//! high-water mark, and small settings. Later: users, assignments, audit.

use std::path::{Path, PathBuf};

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
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the database {path}: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("database error: {0}")]
    Sql(#[from] rusqlite::Error),
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
}

pub struct Store {
    conn: rusqlite::Connection,
    path: PathBuf,
}

impl Store {
    /// Opens (creating if needed), migrates, and checks integrity. A corrupt
    /// file is moved aside and a fresh one created; the report says so.
    pub fn open(path: &Path) -> Result<(Store, OpenReport), StoreError> {
        let _ = path;
        unimplemented!()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The installed license, if any.
    pub fn current_license(&self) -> Result<Option<StoredLicense>, StoreError> {
        let _ = &self.conn;
        unimplemented!()
    }

    /// Makes `lic` the current license in one transaction; the previous one
    /// moves to the history.
    pub fn install_license(&mut self, lic: &StoredLicense) -> Result<(), StoreError> {
        let _ = lic;
        unimplemented!()
    }

    /// Removes the current license (to history); the agent becomes unlicensed.
    pub fn remove_license(&mut self, now: i64) -> Result<(), StoreError> {
        let _ = now;
        unimplemented!()
    }

    /// Earlier licenses, newest first.
    pub fn license_history(&self) -> Result<Vec<StoredLicense>, StoreError> {
        unimplemented!()
    }

    /// The highest wall-clock time ever seen (Unix seconds; 0 if none).
    pub fn clock_mark(&self) -> Result<i64, StoreError> {
        unimplemented!()
    }

    /// Raises the mark to `now` if `now` is later; returns the mark after.
    pub fn advance_clock_mark(&mut self, now: i64) -> Result<i64, StoreError> {
        let _ = now;
        unimplemented!()
    }

    pub fn setting(&self, key: &str) -> Result<Option<String>, StoreError> {
        let _ = key;
        unimplemented!()
    }

    pub fn set_setting(&mut self, key: &str, value: Option<&str>) -> Result<(), StoreError> {
        let _ = (key, value);
        unimplemented!()
    }
}
