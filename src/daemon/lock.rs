//! One daemon per state directory: `licagent run` takes an exclusive lock
//! on `licagent.lock` there before it touches anything else (the store, the
//! device key, the socket, the notice hook), and a second one is refused
//! with a sentence naming the running one's pid and socket. The kernel
//! drops the lock when the process ends, however it ends, so a crash never
//! leaves a stale lock behind.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

pub const LOCK_FILE: &str = "licagent.lock";

/// Held for the daemon's life; dropping it (or exiting) releases the lock.
#[derive(Debug)]
pub struct Lock {
    _file: File,
}

/// Takes the lock in `state_dir`, writing this pid and `socket` into it.
/// `Ok(None)`: the directory is on a read-only file system and holds no
/// lock file yet (nothing can be changed there, so nothing to guard).
pub fn acquire(state_dir: &Path, socket: &Path) -> Result<Option<Lock>, String> {
    let path = state_dir.join(LOCK_FILE);
    let ro = |e: &std::io::Error| e.raw_os_error() == Some(libc::EROFS);
    if let Err(e) = std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(state_dir)
    {
        if !ro(&e) {
            return Err(format!(
                "cannot create the state directory {}: {e}",
                state_dir.display()
            ));
        }
    }
    let (mut file, writable) = match OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
    {
        Ok(f) => (f, true),
        Err(e) if ro(&e) => match File::open(&path) {
            Ok(f) => (f, false),
            Err(_) => return Ok(None),
        },
        Err(e) => return Err(format!("cannot open the lock file {}: {e}", path.display())),
    };
    // SAFETY: flock on a descriptor this function owns.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(format!("cannot lock {}: {err}", path.display()));
        }
        let mut text = String::new();
        let _ = file.read_to_string(&mut text);
        let field = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key))
                .map(str::to_string)
        };
        let pid = field("pid=").unwrap_or_else(|| "unknown".into());
        let sock = field("socket=").unwrap_or_else(|| "unknown".into());
        return Err(format!(
            "another licagent (pid {pid}) is already running with the state directory {}; it listens on {sock}; stop it first (systemctl stop licagent)",
            state_dir.display()
        ));
    }
    if writable {
        let text = format!("pid={}\nsocket={}\n", std::process::id(), socket.display());
        // Best effort: the lock itself is what counts; the text only names
        // the holder for a second daemon's message.
        let _ = file
            .set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| file.write_all(text.as_bytes()));
    }
    Ok(Some(Lock { _file: file }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_naming_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let first = acquire(&state, Path::new("/run/x/api.sock"))
            .unwrap()
            .unwrap();
        let err = acquire(&state, Path::new("/other.sock")).unwrap_err();
        assert!(err.contains("/run/x/api.sock"), "{err}");
        assert!(
            err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        drop(first);
        assert!(acquire(&state, Path::new("/other.sock")).unwrap().is_some());
    }
}
