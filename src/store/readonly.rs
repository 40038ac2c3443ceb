//! Opening the store on a read-only file system (a state directory mounted
//! read-only, a full-disk remount, an image booted read-only). The agent
//! must still serve the verdict from what it has: the database is opened
//! read-only, every write is answered with one sentence that names the
//! file system, and that is logged once, at start.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use rusqlite::{Connection, OpenFlags};

use super::{integrity_problems, StoreError, BUSY_TIMEOUT};

/// The state directory, once the store was opened read-only: named in the
/// sentence every refused write carries.
static READ_ONLY_DIR: OnceLock<PathBuf> = OnceLock::new();

/// Whether `path`'s directory sits on a file system mounted read-only.
pub(super) fn on_read_only_fs(path: &Path) -> bool {
    let dir = path.parent().unwrap_or(Path::new("."));
    nix::sys::statvfs::statvfs(dir)
        .map(|s| s.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY))
        .unwrap_or(false)
}

/// Opens an existing database for reading only, at the schema `known`.
///
/// With its `-wal` and `-shm` files present (the agent was killed), SQLite
/// reads them as they are, so every committed write is seen. After a clean
/// stop neither exists and neither can be created here, so the file is
/// opened as immutable: nothing else can change it on a read-only mount.
pub(super) fn open(path: &Path, known: i64) -> Result<Connection, StoreError> {
    let open_err = |source| StoreError::Open {
        path: path.to_path_buf(),
        source,
    };
    if !path.exists() {
        return Err(StoreError::Create {
            path: path.to_path_buf(),
            source: std::io::Error::from_raw_os_error(libc::EROFS),
        });
    }
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_URI;
    let wal = companion(path, "-wal").exists() && companion(path, "-shm").exists();
    let uri = if wal {
        format!("file:{}", uri_path(path))
    } else {
        format!("file:{}?immutable=1", uri_path(path))
    };
    let conn = Connection::open_with_flags(uri, flags).map_err(open_err)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
    let problems = integrity_problems(&conn).map_err(open_err)?;
    if !problems.is_empty() {
        // Nothing can be moved aside on this file system: refuse.
        return Err(StoreError::Corrupt {
            path: path.to_path_buf(),
            reason: problems.join("; "),
        });
    }
    let found: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(open_err)?;
    if found > known {
        return Err(StoreError::TooNew {
            path: path.to_path_buf(),
            found,
            known,
        });
    }
    if found < known {
        return Err(StoreError::ReadOnlyMigration {
            path: path.to_path_buf(),
            found,
            known,
        });
    }
    let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    tracing::warn!(
        state_dir = %dir.display(),
        "the state directory is on a read-only file system: the stored license and users are served, every change is refused until it is writable again (then restart licagent)"
    );
    let _ = READ_ONLY_DIR.set(dir);
    Ok(conn)
}

/// The sentence a refused write carries.
pub(super) fn refusal() -> String {
    let dir = READ_ONLY_DIR.get().map_or_else(
        || "the state directory".to_string(),
        |d| d.display().to_string(),
    );
    format!(
        "{dir} is on a read-only file system, so nothing can be changed; the stored license and users are still served (make it writable and restart licagent)"
    )
}

fn companion(path: &Path, suffix: &str) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(suffix);
    PathBuf::from(p)
}

/// `path` escaped for an SQLite URI (`?` and `#` would end the path).
fn uri_path(path: &Path) -> String {
    let mut out = String::new();
    for c in path.to_string_lossy().chars() {
        match c {
            '%' => out.push_str("%25"),
            '?' => out.push_str("%3f"),
            '#' => out.push_str("%23"),
            c => out.push(c),
        }
    }
    out
}
