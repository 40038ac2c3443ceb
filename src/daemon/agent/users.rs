//! The agent's seat accounting: users, assignments, add-ons, bulk import and
//! the audit, through the ledger kept in memory and in step with the store.
//! Checks read memory only; changes go to the store first.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::Agent;
use crate::seats::{
    self, ImportPreview, Op, OverUse, SeatError, SeatSummary, UserQuery, UserReport,
};
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
        Some(e.report())
    }

    pub fn search_users(&self, q: &UserQuery) -> Vec<UserReport> {
        self.lock().ledger.search(q)
    }

    pub fn seat_summary(&self) -> Vec<SeatSummary> {
        self.lock().ledger.summary()
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
    let child = Command::new(hook)
        .arg(arg)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            warn!(hook = %hook.display(), "the notice hook could not be started: {e}");
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
                    warn!(hook = %name, "the notice hook failed: {status}");
                    return;
                }
                Ok(None) if start.elapsed() > HOOK_TIMEOUT => {
                    let _ = child.kill();
                    let _ = child.wait();
                    warn!(hook = %name, "the notice hook ran longer than {HOOK_TIMEOUT:?} and was stopped");
                    return;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(100)),
                Err(e) => {
                    warn!(hook = %name, "cannot wait for the notice hook: {e}");
                    return;
                }
            }
        }
    });
}
