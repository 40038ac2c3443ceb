//! The agent's seat accounting: users, assignments, add-ons, bulk import and
//! the audit, through the ledger kept in memory and in step with the store.
//! Checks read memory only; changes go to the store first.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::Agent;
use crate::license::LicenseState;
use crate::seats::{
    self, ImportPreview, Op, OverUse, SeatError, SeatSummary, UserQuery, UserReport,
};
use crate::seats::{Limits, UserReason};
use crate::store::{AuditQuery, StoreError};

/// How long a notice hook may run before it is killed.
const HOOK_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a bulk import was refused.
#[derive(Debug, thiserror::Error)]
pub enum BulkError {
    #[error("{0}")]
    Import(#[from] seats::ImportError),
    #[error("{0}")]
    Seat(#[from] SeatError),
}

impl Agent {
    /// One user's entitlements, by id or by extension: the PBX's hot path.
    pub fn entitlement(&self, id: Option<&str>, extension: Option<&str>) -> Option<UserReport> {
        let inner = self.lock();
        let e = match (id, extension) {
            (Some(id), _) => inner.ledger.entitlement(id),
            (None, Some(ext)) => inner.ledger.entitlement_by_extension(ext),
            (None, None) => None,
        }?;
        let mut report = e.report();
        report.reason = box_reason(inner.state).or(report.reason);
        Some(report)
    }

    /// Many checks under one lock: a PBX that starts registers thousands
    /// of users at once. `None` where a user is unknown.
    pub fn entitlements(&self, ids: &[String], extensions: &[String]) -> Vec<Option<UserReport>> {
        let inner = self.lock();
        let over = box_reason(inner.state);
        let by_id = ids.iter().map(|id| inner.ledger.entitlement(id));
        let by_ext = extensions
            .iter()
            .map(|ext| inner.ledger.entitlement_by_extension(ext));
        by_id
            .chain(by_ext)
            .map(|e| {
                e.map(|e| {
                    let mut r = e.report();
                    r.reason = over.or(r.reason);
                    r
                })
            })
            .collect()
    }

    pub fn search_users(&self, q: &UserQuery) -> Vec<UserReport> {
        let inner = self.lock();
        let mut found = inner.ledger.search(q);
        if let Some(reason) = box_reason(inner.state) {
            for r in &mut found {
                r.reason = Some(reason);
            }
        }
        found
    }

    /// Seats per code. While no license is in force the holdings still
    /// show (against the installed license's catalog, if any): that is
    /// when an admin most needs to see who holds what.
    pub fn seat_summary(&self) -> Vec<SeatSummary> {
        let inner = self.lock();
        if inner.ledger.limits().is_licensed() {
            return inner.ledger.summary();
        }
        let catalog = match &inner.license {
            Some(l) => Limits::from_payload(&l.payload),
            None => Limits::none(),
        };
        inner.ledger.held_summary(&catalog)
    }

    /// Whether `code` means anything here: in the installed license's
    /// catalog, or held by a user.
    pub fn knows_code(&self, code: &str) -> bool {
        let inner = self.lock();
        let in_catalog = inner
            .license
            .as_ref()
            .is_some_and(|l| l.payload.catalog.iter().any(|e| e.code == code));
        in_catalog
            || inner
                .ledger
                .users()
                .any(|u| u.profile_code() == Some(code) || u.addons.iter().any(|h| h.code == code))
    }

    /// Applies one change for the caller `uid`; returns the user after it
    /// (`None` when it was deleted).
    pub fn change_users(&self, op: Op, uid: u32) -> Result<Option<UserReport>, SeatError> {
        let id = match &op {
            Op::Create(u) => u.id.clone(),
            Op::Update { id, .. }
            | Op::Delete { id }
            | Op::Assign { id, .. }
            | Op::Unassign { id }
            | Op::AddAddon { id, .. }
            | Op::RemoveAddon { id, .. } => id.clone(),
        };
        let mut inner = self.lock();
        let now = inner.now();
        let inner = &mut *inner;
        let outcome = seats::apply(&mut inner.ledger, &mut inner.store, op, uid, now)?;
        for a in &outcome.audit {
            info!(uid, user = %a.user_id, action = a.action.as_str(), "users changed");
        }
        let over = inner.ledger.over_use();
        inner.note_over_use(over);
        Ok(inner.ledger.entitlement(&id).map(|e| e.report()))
    }

    /// Checks a CSV as a whole; unless `dry_run`, applies it in one
    /// transaction. All rows or none.
    pub fn import_users(
        &self,
        csv: &[u8],
        dry_run: bool,
        uid: u32,
    ) -> Result<ImportPreview, BulkError> {
        let mut inner = self.lock();
        let now = inner.now();
        let inner = &mut *inner;
        let planned = inner.ledger.plan_import(csv, uid, now)?;
        if dry_run {
            return Ok(planned.preview);
        }
        seats::commit(&mut inner.ledger, &mut inner.store, planned.plan)?;
        info!(
            uid,
            rows = planned.preview.rows,
            created = planned.preview.created,
            updated = planned.preview.updated,
            "users imported"
        );
        let over = inner.ledger.over_use();
        inner.note_over_use(over);
        Ok(planned.preview)
    }

    pub fn audit(&self, q: &AuditQuery) -> Result<Vec<seats::AuditEntry>, StoreError> {
        self.lock().store.seat_audit(q)
    }
}

/// Starts the hook with the over-use as JSON; a thread reaps it (and kills
/// it after [`HOOK_TIMEOUT`]) so the agent never waits on it.
pub(super) fn run_notice_hook(hook: &Path, over: &[OverUse]) {
    let arg = serde_json::json!({ "over_use": over }).to_string();
    run_hook(hook, &[arg], "notice hook");
}

/// Starts `hook` with `args` and does not wait for it: a thread reaps it,
/// logs a failure, and stops it after [`HOOK_TIMEOUT`]. `what` names it in
/// the log.
pub(super) fn run_hook(hook: &Path, args: &[String], what: &'static str) {
    let child = Command::new(hook)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            warn!(hook = %hook.display(), "the {what} could not be started: {e}");
            return;
        }
    };
    let name = hook.display().to_string();
    std::thread::spawn(move || {
        let start = Instant::now();
        loop {
            match child.try_wait() {
                Ok(Some(status)) if status.success() => return,
                Ok(Some(status)) => {
                    warn!(hook = %name, "the {what} failed: {status}");
                    return;
                }
                Ok(None) if start.elapsed() > HOOK_TIMEOUT => {
                    let _ = child.kill();
                    let _ = child.wait();
                    warn!(hook = %name, "the {what} ran longer than {HOOK_TIMEOUT:?} and was stopped");
                    return;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(100)),
                Err(e) => {
                    warn!(hook = %name, "cannot wait for the {what}: {e}");
                    return;
                }
            }
        }
    });
}

/// The users of a PBX as `licagent export` writes them: what an RMA
/// replacement needs to take over, bound to the system serial.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UsersExport {
    /// Layout version of this file.
    pub format: u32,
    pub system_id: String,
    pub pbx_name: String,
    /// RFC 3339.
    pub exported_at: String,
    pub users: Vec<seats::User>,
}

pub const EXPORT_FORMAT: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("no license is installed; activate this box (with --rehost after an RMA) before restoring its users")]
    NoLicense,
    #[error("this export is from system {found}, but this box is licensed as system {ours}; it was not restored")]
    OtherSystem { found: String, ours: String },
    #[error("this export has layout {0}; this licagent reads layout {EXPORT_FORMAT}")]
    Format(u32),
    #[error(
        "this box has {0} users already; restore only onto a box without users (remove them first)"
    )]
    NotEmpty(usize),
    #[error("user '{user}': {problem}; nothing was restored")]
    Bad { user: String, problem: String },
    #[error("{0}")]
    Store(#[from] StoreError),
}

impl Agent {
    /// Every user with its holdings, for the new box.
    pub fn export_users(&self) -> Result<UsersExport, RestoreError> {
        let inner = self.lock();
        let p = &inner
            .license
            .as_ref()
            .ok_or(RestoreError::NoLicense)?
            .payload;
        Ok(UsersExport {
            format: EXPORT_FORMAT,
            system_id: p.system_id.clone(),
            pbx_name: p.pbx_name.clone(),
            exported_at: crate::time::rfc3339(crate::time::now()),
            users: inner.ledger.users().cloned().collect(),
        })
    }

    /// Loads an export onto this box as it was, in one transaction: same
    /// ids, holdings and assignment order, so the same users hold the seats.
    pub fn restore_users(&self, export: UsersExport, uid: u32) -> Result<usize, RestoreError> {
        if export.format != EXPORT_FORMAT {
            return Err(RestoreError::Format(export.format));
        }
        let mut inner = self.lock();
        let now = inner.now();
        let p = &inner
            .license
            .as_ref()
            .ok_or(RestoreError::NoLicense)?
            .payload;
        if p.system_id != export.system_id {
            return Err(RestoreError::OtherSystem {
                found: export.system_id,
                ours: p.system_id.clone(),
            });
        }
        if !inner.ledger.is_empty() {
            return Err(RestoreError::NotEmpty(inner.ledger.len()));
        }
        let mut ids = std::collections::HashSet::new();
        let mut extensions = std::collections::HashSet::new();
        for u in &export.users {
            let bad = |problem: String| RestoreError::Bad {
                user: u.id.clone(),
                problem,
            };
            seats::check_id(&u.id).map_err(|e| bad(e.to_string()))?;
            seats::check_extension(&u.extension).map_err(|e| bad(e.to_string()))?;
            seats::check_name(&u.name).map_err(|e| bad(e.to_string()))?;
            if !ids.insert(u.id.as_str()) {
                return Err(bad("the id appears twice".into()));
            }
            if !extensions.insert(u.extension.as_str()) {
                return Err(bad(format!("extension {} appears twice", u.extension)));
            }
            for h in u.profile.iter().chain(&u.addons) {
                if p.entry(&h.code).is_none() {
                    return Err(bad(format!("{} is not in this box's license", h.code)));
                }
                seats::check_seq(h.seq).map_err(|e| bad(format!("{}: {e}", h.code)))?;
            }
        }
        let audit: Vec<seats::AuditRecord> = export
            .users
            .iter()
            .map(|u| seats::AuditRecord {
                at: now,
                caller_uid: uid,
                action: seats::AuditAction::Import,
                user_id: u.id.clone(),
                before: None,
                after: Some(u.snapshot()),
                totals: Default::default(),
            })
            .collect();
        let inner = &mut *inner;
        inner.store.save_users(&export.users, &[], &audit)?;
        let settings = inner.ledger.settings().clone();
        inner.ledger = seats::load(&inner.store, Limits::none(), settings)?;
        inner.sync_limits(now);
        info!(uid, users = export.users.len(), system_id = %export.system_id, "users restored");
        Ok(export.users.len())
    }
}

/// The reason every user shares when the box itself is not licensed.
pub fn box_reason(state: LicenseState) -> Option<UserReason> {
    match state {
        LicenseState::Unlicensed => Some(UserReason::BoxUnlicensed),
        LicenseState::Expired => Some(UserReason::Expired),
        LicenseState::Revoked => Some(UserReason::Revoked),
        LicenseState::Active | LicenseState::Grace | LicenseState::Trial | LicenseState::Test => {
            None
        }
    }
}
