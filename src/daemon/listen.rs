//! The API socket: taken from systemd (socket activation) or bound here.
//! A socket systemd passed is never unlinked: systemd owns it.

use std::os::fd::FromRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener as StdListener;
use std::path::PathBuf;

use tokio::net::UnixListener;
use tracing::{info, warn};

use crate::config::Config;

pub struct Socket {
    pub listener: UnixListener,
    pub file: SocketFile,
}

/// The socket's path, and whether this process created it (and so removes
/// it at exit).
pub struct SocketFile {
    pub path: PathBuf,
    owned: bool,
}

/// The first socket systemd passed (LISTEN_FDS/LISTEN_PID), if any. Must run
/// before threads start: it unsets the variables.
pub fn take_passed_socket() -> Result<Option<StdListener>, String> {
    let mut fds =
        sd_notify::listen_fds().map_err(|e| format!("bad socket activation variables: {e}"))?;
    let Some(fd) = fds.next() else {
        return Ok(None);
    };
    // SAFETY: systemd passed this descriptor to us (LISTEN_PID matched) and
    // nothing else in the process owns it.
    let listener = unsafe { StdListener::from_raw_fd(fd) };
    Ok(Some(listener))
}

impl Socket {
    pub fn open(config: &Config, passed: Option<StdListener>) -> Result<Socket, String> {
        let path = config.paths.socket.clone();
        if let Some(std) = passed {
            std.set_nonblocking(true)
                .map_err(|e| format!("the socket passed by systemd is unusable: {e}"))?;
            let listener = UnixListener::from_std(std)
                .map_err(|e| format!("the socket passed by systemd is unusable: {e}"))?;
            info!("using the API socket passed by systemd");
            return Ok(Socket {
                listener,
                file: SocketFile { path, owned: false },
            });
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| {
                format!("cannot create the socket directory {}: {e}", dir.display())
            })?;
        }
        if path.exists() {
            if std::os::unix::net::UnixStream::connect(&path).is_ok() {
                return Err(format!(
                    "another licagent is already listening on {}",
                    path.display()
                ));
            }
            // Left over from a crash: nobody listens on it.
            std::fs::remove_file(&path)
                .map_err(|e| format!("cannot remove the stale socket {}: {e}", path.display()))?;
        }
        let listener = UnixListener::bind(&path)
            .map_err(|e| format!("cannot listen on {}: {e}", path.display()))?;
        let mode = config
            .socket_mode()
            .unwrap_or(crate::config::DEFAULT_SOCKET_MODE);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
            .map_err(|e| format!("cannot set the mode of {}: {e}", path.display()))?;
        if !config.api.socket_group.is_empty() {
            set_group(&path, &config.api.socket_group)?;
        }
        Ok(Socket {
            listener,
            file: SocketFile { path, owned: true },
        })
    }
}

impl SocketFile {
    pub fn cleanup(self) {
        if self.owned {
            if let Err(e) = std::fs::remove_file(&self.path) {
                warn!("cannot remove {}: {e}", self.path.display());
            }
        }
    }
}

fn set_group(path: &std::path::Path, name: &str) -> Result<(), String> {
    let group = nix::unistd::Group::from_name(name)
        .map_err(|e| format!("cannot look up the socket group {name:?}: {e}"))?
        .ok_or_else(|| format!("the socket group {name:?} (api.socket_group) does not exist"))?;
    nix::unistd::chown(path, None, Some(group.gid))
        .map_err(|e| format!("cannot give {} to group {name}: {e}", path.display()))
}
