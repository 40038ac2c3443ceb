//! The device key: an Ed25519 key pair made once per installation, whose
//! public half the portal registers at activation and whose private half
//! (0600 in the state directory) signs refresh and deactivation requests.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use tracing::{error, info};

use crate::license::SigningKey;

pub const DEVICE_KEY_FILE: &str = "device.key";

#[derive(Debug, thiserror::Error)]
#[error("the device key {path} cannot be {action}: {source}")]
pub struct DeviceKeyError {
    path: PathBuf,
    action: &'static str,
    source: std::io::Error,
}

/// Loads the device key, making it on first start. A damaged key file is
/// moved aside and replaced (the PBX then needs one activation again, which
/// is idempotent on the same hardware); a working PBX is never stopped by it.
pub fn load_or_create(state_dir: &Path) -> Result<SigningKey, DeviceKeyError> {
    let path = state_dir.join(DEVICE_KEY_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => match SigningKey::from_pkcs8(&bytes) {
            Ok(key) => return Ok(key),
            Err(e) => {
                let aside = path.with_extension(format!("key.damaged-{}", crate::time::now()));
                error!(
                    moved_to = %aside.display(),
                    "the device key is damaged ({e}); a new one is made and the PBX must be activated again"
                );
                std::fs::rename(&path, &aside).map_err(|source| DeviceKeyError {
                    path: path.clone(),
                    action: "moved aside",
                    source,
                })?;
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(DeviceKeyError {
                path,
                action: "read",
                source,
            })
        }
    }
    let (key, pkcs8) = SigningKey::try_generate().map_err(|e| DeviceKeyError {
        path: path.clone(),
        action: "generated",
        source: std::io::Error::other(e.to_string()),
    })?;
    match write_private(&path, &pkcs8) {
        Ok(()) => {}
        // A read-only state directory: the agent still serves what it has;
        // this key lives until exit (nothing it signs can be stored anyway).
        Err(e) if e.raw_os_error() == Some(libc::EROFS) => {
            tracing::warn!(
                "the device key cannot be saved ({}: read-only file system); using one in memory until the next start",
                path.display()
            );
            return Ok(key);
        }
        Err(source) => {
            return Err(DeviceKeyError {
                path: path.clone(),
                action: "written",
                source,
            })
        }
    }
    info!(key_id = %key.public_key().key_id(), "device key created");
    Ok(key)
}

/// Writes a 0600 file atomically: temp file, fsync, rename, fsync the folder.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("key.tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn made_once_private_and_stable() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_create(dir.path()).unwrap();
        let b = load_or_create(dir.path()).unwrap();
        assert_eq!(a.public_key(), b.public_key());
        let mode = std::fs::metadata(dir.path().join(DEVICE_KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn damaged_key_is_replaced_and_kept_aside() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(DEVICE_KEY_FILE), b"junk").unwrap();
        let key = load_or_create(dir.path()).unwrap();
        let again = load_or_create(dir.path()).unwrap();
        assert_eq!(key.public_key(), again.public_key());
        let aside = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .any(|e| e.file_name().to_string_lossy().contains("damaged"));
        assert!(aside);
    }
}
