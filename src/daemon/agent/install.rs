//! Installing a verified license: the nonce and device checks of a portal
//! answer, the portal's time or the file's floor, and the rule that nothing
//! is switched to another system or downgraded without `replace`.

use tracing::info;

use super::{report, Inner, Loaded, REVOKED_KEY};
use crate::api::types::Status;
use crate::license::LicenseError;
use crate::license::{self, Event, LicenseKind, LicenseState};
use crate::store::{StoreError, StoredLicense};
use crate::time;

/// Why an import was refused; the API maps each to a status code.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{0}")]
    Invalid(#[from] LicenseError),
    #[error("the license {new} is older than the installed license {installed} of the same system; it was not installed")]
    Older { new: String, installed: String },
    #[error("the portal's license answers another request (nonce mismatch); it was not installed")]
    WrongNonce,
    #[error("the portal's license names another device key; it was not installed")]
    WrongDevice,
    #[error("this box holds the license of system {installed_system} ({installed_name}); the file is for system {new_system} ({new_name}). Installing it switches the box to {new_system}: its {users} users stay and are counted against {new_system}'s seats. Run it again with --replace to do that")]
    OtherSystem {
        installed_system: String,
        installed_name: String,
        new_system: String,
        new_name: String,
        users: usize,
    },
    #[error("this box holds the full license {installed} of system {system} ({name}); a {new_kind} license would replace it (trial and test licenses have fewer seats and end sooner). Run it again with --replace to do that")]
    Weaker {
        installed: String,
        system: String,
        name: String,
        new_kind: String,
    },
    #[error("the license could not be saved: {0}")]
    Store(#[from] StoreError),
}

/// What a license from the portal must carry to be installed: it answers
/// this request and names this device.
pub struct Expect<'a> {
    pub nonce: &'a str,
    pub device_public_key: &'a str,
    /// The portal's time (milliseconds) from its verified stamp; without
    /// one (a portal of protocol 1) the license's own issue time, which is
    /// signed and bound to the same nonce, stands in.
    pub portal_time_ms: Option<i64>,
}

impl Inner {
    pub(super) fn accept(
        &mut self,
        text: &str,
        expect: Option<Expect<'_>>,
        replace: bool,
    ) -> Result<Status, ImportError> {
        let payload = license::verify(text, &self.ring)?;
        if let Some(x) = &expect {
            if payload.nonce.as_deref() != Some(x.nonce) {
                return Err(ImportError::WrongNonce);
            }
            if payload.device_public_key.as_deref() != Some(x.device_public_key) {
                return Err(ImportError::WrongDevice);
            }
            // Signed and bound to our nonce: the portal's time, the truth.
            self.set_portal_time(
                x.portal_time_ms
                    .unwrap_or(payload.issued_at.saturating_mul(1000)),
            );
        }
        // A license file says it is at least its issue time (the floor is
        // taken once it is installed).
        let now = self.now().max(payload.issued_at);
        let validity = license::check(&payload, &self.hw.components, now)?;
        if let Some(cur) = &self.license {
            let p = &cur.payload;
            if p.system_id == payload.system_id && payload.issued_at < p.issued_at {
                return Err(ImportError::Older {
                    new: payload.license_id.clone(),
                    installed: p.license_id.clone(),
                });
            }
            // Nothing is switched or downgraded without being asked; an
            // expired or revoked license is no longer worth protecting.
            let protect = !matches!(self.state, LicenseState::Unlicensed);
            if protect && !replace && p.kind == LicenseKind::Full {
                if p.system_id != payload.system_id {
                    return Err(ImportError::OtherSystem {
                        installed_system: p.system_id.clone(),
                        installed_name: p.pbx_name.clone(),
                        new_system: payload.system_id.clone(),
                        new_name: payload.pbx_name.clone(),
                        users: self.ledger.len(),
                    });
                }
                if payload.kind != LicenseKind::Full {
                    return Err(ImportError::Weaker {
                        installed: p.license_id.clone(),
                        system: p.system_id.clone(),
                        name: p.pbx_name.clone(),
                        new_kind: report::kind_word(payload.kind).into(),
                    });
                }
            }
        }
        let stored = StoredLicense {
            license_id: payload.license_id.clone(),
            armored: text.trim().to_string() + "\n",
            installed_at: now,
        };
        self.store.install_license(&stored)?;
        self.store.set_setting(REVOKED_KEY, None)?;
        if expect.is_none() {
            let r = time::reading();
            if self.clock.floor(&r, payload.issued_at) {
                info!(
                    now = %time::rfc3339(payload.issued_at),
                    "trusted time moved forward to the license file's issue time"
                );
                self.persist_anchor(&r, true);
            }
        }
        info!(
            license_id = %payload.license_id,
            system_id = %payload.system_id,
            kind = ?payload.kind,
            "license installed"
        );
        let kind = payload.kind;
        self.license = Some(Loaded {
            payload,
            stored,
            hw: validity.hardware,
        });
        self.apply(Event::Installed(kind), None);
        // A license installed late may already be in grace.
        self.apply_time_events(now);
        // New seats take effect now, even when the state stayed the same.
        self.sync_limits(now);
        Ok(self.status(now))
    }
}
