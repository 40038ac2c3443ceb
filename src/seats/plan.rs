//! Planning a change against the ledger: validation of codes, users,
//! extensions and prerequisites, hard enforcement, the audit rows with their
//! seat totals, and the bulk import. A plan changes nothing; it is written to
//! the store and then committed to memory.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use super::csv::{self, CsvError};
use super::ledger::{profile_reaches, Ledger, OverUse, SeatSummary};
use super::{
    check_extension, check_id, check_name, check_number, AuditAction, AuditRecord, Held, Op,
    SeatError, SeatTotal, User, UserKind,
};
use crate::license::{Enforcement, EntryKind};

/// A change ready to be written: users to insert or replace, users to
/// delete, and one audit record per changed user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    generation: u64,
    upserts: Vec<User>,
    deletes: Vec<String>,
    audit: Vec<AuditRecord>,
    /// The touched catalog entries, to report over-use after the commit.
    touched: BTreeSet<usize>,
}

impl Plan {
    pub fn upserts(&self) -> &[User] {
        &self.upserts
    }

    pub fn deletes(&self) -> &[String] {
        &self.deletes
    }

    pub fn audit(&self) -> &[AuditRecord] {
        &self.audit
    }

    /// Nothing would change (assigning the profile a user has already).
    pub fn is_empty(&self) -> bool {
        self.upserts.is_empty() && self.deletes.is_empty()
    }
}

/// What a committed change did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    pub audit: Vec<AuditRecord>,
    /// Codes the change touched that have more holders than units now
    /// (soft enforcement): the daemon logs them and runs the notice hook.
    pub over_use: Vec<OverUse>,
}

/// A bulk import that passed every check.
#[derive(Clone, Debug)]
pub struct ImportPlan {
    pub plan: Plan,
    pub preview: ImportPreview,
}

/// What an import would do (the whole answer of a dry run).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportPreview {
    pub rows: usize,
    pub created: usize,
    pub updated: usize,
    pub unchanged: usize,
    /// Seats per code as they would be after the import.
    pub summary: Vec<SeatSummary>,
    pub over_use: Vec<OverUse>,
}

/// A bad row of an import.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowError {
    /// 1-based line of the file where the row starts.
    pub line: usize,
    pub reason: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error(transparent)]
    Csv(#[from] CsvError),
    #[error("no license is in force, so no profile or add-on can be assigned; import or activate a license first")]
    NoLicense,
    #[error(
        "column {column:?} of the header is not an add-on of the license; its add-ons are: {known}"
    )]
    UnknownColumn { column: String, known: String },
    #[error("{}", rows_message(.0))]
    Rows(Vec<RowError>),
}

impl ImportError {
    /// Every bad row (empty for a file-level error).
    pub fn rows(&self) -> &[RowError] {
        match self {
            ImportError::Rows(rows) => rows,
            _ => &[],
        }
    }
}

/// How many bad rows the error message itself lists; all are in the error.
const ROWS_IN_MESSAGE: usize = 5;

fn rows_message(rows: &[RowError]) -> String {
    let listed: Vec<String> = rows
        .iter()
        .take(ROWS_IN_MESSAGE)
        .map(|r| format!("line {}: {}", r.line, r.reason))
        .collect();
    let more = rows.len().saturating_sub(ROWS_IN_MESSAGE);
    let more = if more > 0 {
        format!("; and {more} more")
    } else {
        String::new()
    };
    format!(
        "the import was refused and nothing was changed; {} bad row{}: {}{more}",
        rows.len(),
        if rows.len() == 1 { "" } else { "s" },
        listed.join("; ")
    )
}

/// One user's change inside a plan.
struct Change<'a> {
    line: usize,
    action: AuditAction,
    before: Option<&'a User>,
    after: Option<User>,
}

impl Ledger {
    /// Whether `plan` was made against the ledger as it is now.
    pub fn is_current(&self, plan: &Plan) -> bool {
        plan.generation == self.generation
    }

    /// Plans one change. Checks everything the change depends on; nothing
    /// is changed until the plan is committed.
    pub fn plan(&self, op: Op, caller_uid: u32, now: i64) -> Result<Plan, SeatError> {
        let seq = self.next_seq;
        let user = |id: &str| {
            self.user(id)
                .ok_or_else(|| SeatError::UnknownUser { id: id.to_string() })
        };
        let (action, before, after) = match op {
            Op::Create(n) => {
                if !self.limits.licensed {
                    return Err(SeatError::NoLicense);
                }
                check_id(&n.id)?;
                if self.by_id.contains_key(&n.id) {
                    return Err(SeatError::DuplicateUser { id: n.id });
                }
                let profile = match n.profile {
                    Some(p) => p,
                    None => self.default_profile(n.kind)?,
                };
                let mut addons: Vec<Held> = n
                    .addons
                    .into_iter()
                    .map(|code| Held { code, seq })
                    .collect();
                addons.sort_by(|a, b| a.code.cmp(&b.code));
                addons.dedup_by(|a, b| a.code == b.code);
                let after = User {
                    id: n.id,
                    name: n.name,
                    extension: n.extension,
                    number: n.number,
                    kind: n.kind,
                    profile: Some(Held { code: profile, seq }),
                    addons,
                };
                (AuditAction::Create, None, Some(after))
            }
            Op::Update { id, update } => {
                let before = user(&id)?;
                let mut after = before.clone();
                if let Some(name) = update.name {
                    after.name = name;
                }
                if let Some(ext) = update.extension {
                    after.extension = ext;
                }
                if let Some(number) = update.number {
                    after.number = number;
                }
                if let Some(kind) = update.kind {
                    after.kind = kind;
                }
                (AuditAction::Update, Some(before), Some(after))
            }
            Op::Delete { id } => (AuditAction::Delete, Some(user(&id)?), None),
            Op::Assign { id, profile } => {
                let before = user(&id)?;
                let mut after = before.clone();
                // Reassigning the same profile keeps the holding's place in
                // the allocation order.
                if before.profile_code() != Some(profile.as_str()) {
                    after.profile = Some(Held { code: profile, seq });
                }
                (AuditAction::Assign, Some(before), Some(after))
            }
            Op::Unassign { id } => {
                let before = user(&id)?;
                let mut after = before.clone();
                after.profile = None;
                (AuditAction::Unassign, Some(before), Some(after))
            }
            Op::AddAddon { id, code } => {
                let before = user(&id)?;
                let mut after = before.clone();
                if let Err(at) = after.addons.binary_search_by(|h| h.code.cmp(&code)) {
                    after.addons.insert(at, Held { code, seq });
                }
                (AuditAction::AddAddon, Some(before), Some(after))
            }
            Op::RemoveAddon { id, code } => {
                let before = user(&id)?;
                let mut after = before.clone();
                let Ok(at) = after.addons.binary_search_by(|h| h.code.cmp(&code)) else {
                    return Err(SeatError::AddonNotHeld { user: id, code });
                };
                after.addons.remove(at);
                (AuditAction::RemoveAddon, Some(before), Some(after))
            }
        };
        if before.is_some() && before == after.as_ref() {
            return Ok(self.empty_plan());
        }
        self.check_change(before, after.as_ref())?;
        let changes = vec![Change {
            line: 0,
            action,
            before,
            after,
        }];
        if let Some((_, err)) = self.check_seats(&changes).into_iter().next() {
            return Err(err);
        }
        Ok(self.build(changes, caller_uid, now))
    }

    /// Parses and checks a bulk import (see [`csv`] for the format). Every
    /// bad row is reported; if there is one, nothing is planned. A dry run
    /// stops here and shows the preview.
    pub fn plan_import(
        &self,
        bytes: &[u8],
        caller_uid: u32,
        now: i64,
    ) -> Result<ImportPlan, ImportError> {
        if !self.limits.licensed {
            return Err(ImportError::NoLicense);
        }
        let table = csv::parse(bytes)?;
        for column in &table.addon_columns {
            if self.limits.of_kind(column, EntryKind::AddOn).is_none() {
                return Err(ImportError::UnknownColumn {
                    column: column.clone(),
                    known: self.limits.codes_of(EntryKind::AddOn),
                });
            }
        }
        let mut errors = table.errors;
        let mut changes: Vec<Change<'_>> = Vec::new();
        let mut seq = self.next_seq;
        let (mut created, mut unchanged) = (0, 0);
        for row in &table.rows {
            let before = self
                .by_ext
                .get(&row.extension)
                .map(|&i| &self.slots[i as usize].user);
            let after = match before {
                Some(b) => {
                    let mut a = b.clone();
                    a.name = row.name.clone();
                    a.number = row.number.clone();
                    if let Some(p) = &row.profile {
                        if a.profile_code() != Some(p.as_str()) {
                            a.profile = Some(Held {
                                code: p.clone(),
                                seq,
                            });
                        }
                    }
                    a
                }
                None => {
                    // A new user's id is its extension (documented).
                    if let Some(other) = self.user(&row.extension) {
                        errors.push(RowError {
                            line: row.line,
                            reason: format!(
                                "extension {} is new, but its id is taken by the user with extension {}",
                                row.extension, other.extension
                            ),
                        });
                        continue;
                    }
                    let profile = match &row.profile {
                        Some(p) => p.clone(),
                        None => match self.default_profile(UserKind::Regular) {
                            Ok(p) => p,
                            Err(e) => {
                                errors.push(RowError {
                                    line: row.line,
                                    reason: e.to_string(),
                                });
                                continue;
                            }
                        },
                    };
                    User {
                        id: row.extension.clone(),
                        name: row.name.clone(),
                        extension: row.extension.clone(),
                        number: row.number.clone(),
                        kind: UserKind::Regular,
                        profile: Some(Held { code: profile, seq }),
                        addons: Vec::new(),
                    }
                }
            };
            let mut after = after;
            for (code, &want) in table.addon_columns.iter().zip(&row.addons) {
                match after.addons.binary_search_by(|h| h.code.cmp(code)) {
                    Ok(at) if !want => {
                        after.addons.remove(at);
                    }
                    Err(at) if want => after.addons.insert(
                        at,
                        Held {
                            code: code.clone(),
                            seq,
                        },
                    ),
                    _ => {}
                }
            }
            if before == Some(&after) {
                unchanged += 1;
                continue;
            }
            if let Err(e) = self.check_change(before, Some(&after)) {
                errors.push(RowError {
                    line: row.line,
                    reason: e.to_string(),
                });
                continue;
            }
            if before.is_none() {
                created += 1;
            }
            // Each changed row is its own step in the allocation order, in
            // file order.
            // Saturating: restored sequences are at most MAX_SEQ, far below
            // the top, but a wrap would put this row first in seat order.
            seq = seq.saturating_add(1);
            changes.push(Change {
                line: row.line,
                action: AuditAction::Import,
                before,
                after: Some(after),
            });
        }
        for (line, err) in self.check_seats(&changes) {
            errors.push(RowError {
                line,
                reason: err.to_string(),
            });
        }
        if !errors.is_empty() {
            errors.sort_by_key(|e| e.line);
            return Err(ImportError::Rows(errors));
        }
        let rows = table.rows.len();
        let updated = changes.len() - created;
        let plan = self.build(changes, caller_uid, now);
        // The preview is exact: the plan committed to a copy.
        let mut after = self.clone();
        after.apply_plan(&plan);
        let preview = ImportPreview {
            rows,
            created,
            updated,
            unchanged,
            summary: after.summary(),
            over_use: after.over_use(),
        };
        Ok(ImportPlan { plan, preview })
    }

    /// Applies a plan to memory; the store must have it already.
    pub fn commit(&mut self, plan: Plan) -> Result<Outcome, SeatError> {
        if !self.is_current(&plan) {
            return Err(SeatError::StalePlan);
        }
        self.apply_plan(&plan);
        Ok(Outcome {
            over_use: self.over_use_of(plan.touched.iter().copied()),
            audit: plan.audit,
        })
    }

    fn apply_plan(&mut self, plan: &Plan) {
        if plan.is_empty() {
            return;
        }
        for id in &plan.deletes {
            self.remove(id);
        }
        for user in &plan.upserts {
            self.put(user.clone());
        }
        self.generation += 1;
        self.recompute();
    }

    fn empty_plan(&self) -> Plan {
        Plan {
            generation: self.generation,
            upserts: Vec::new(),
            deletes: Vec::new(),
            audit: Vec::new(),
            touched: BTreeSet::new(),
        }
    }

    /// The profile a new user of `kind` gets when none is given: a virtual
    /// user gets the catalog's free profile (lowest tier) if there is one,
    /// everybody else the configured default.
    fn default_profile(&self, kind: UserKind) -> Result<String, SeatError> {
        if kind == UserKind::Virtual {
            if let Some(i) = self.limits.free_profile() {
                return Ok(self.limits.entries[i].code.clone());
            }
        }
        let code = &self.settings.default_profile;
        match self.limits.of_kind(code, EntryKind::Base) {
            Some(_) => Ok(code.clone()),
            None => Err(SeatError::BadDefault { code: code.clone() }),
        }
    }

    /// Everything about one user's change except the seat counts.
    fn check_change(&self, before: Option<&User>, after: Option<&User>) -> Result<(), SeatError> {
        let Some(a) = after else {
            return Ok(());
        };
        let lim = &self.limits;
        let changed = |f: fn(&User) -> &str| before.map(f) != Some(f(a));
        if before.is_none() {
            check_id(&a.id)?;
        }
        if changed(|u| &u.name) {
            check_name(&a.name)?;
        }
        if changed(|u| &u.extension) {
            check_extension(&a.extension)?;
            if let Some(&i) = self.by_ext.get(&a.extension) {
                let holder = &self.slots[i as usize].user.id;
                if *holder != a.id {
                    return Err(SeatError::DuplicateExtension {
                        extension: a.extension.clone(),
                        holder: holder.clone(),
                    });
                }
            }
        }
        if before.map(|u| &u.number) != Some(&a.number) {
            if let Some(n) = &a.number {
                check_number(n)?;
            }
        }
        if a.kind == UserKind::Admin && before.map(|u| u.kind) != Some(UserKind::Admin) {
            if let Some(s) = self
                .slots
                .iter()
                .find(|s| s.user.kind == UserKind::Admin && s.user.id != a.id)
            {
                return Err(SeatError::SecondAdmin {
                    existing: s.user.id.clone(),
                });
            }
        }
        let profile_changed = before.map(|u| u.profile_code()) != Some(a.profile_code());
        if profile_changed {
            if let Some(p) = a.profile_code() {
                if !lim.licensed {
                    return Err(SeatError::NoLicense);
                }
                if lim.of_kind(p, EntryKind::Base).is_none() {
                    return Err(SeatError::UnknownProfile {
                        code: p.to_string(),
                        known: lim.codes_of(EntryKind::Base),
                    });
                }
            } else if !a.addons.is_empty() {
                return Err(SeatError::AddonsHeld {
                    user: a.id.clone(),
                    addons: codes(&a.addons),
                });
            }
        }
        for h in &a.addons {
            let added = before.map_or(true, |b| !b.holds_addon(&h.code));
            if added {
                if !lim.licensed {
                    return Err(SeatError::NoLicense);
                }
                let Some(e) = lim.of_kind(&h.code, EntryKind::AddOn) else {
                    return Err(SeatError::UnknownAddon {
                        code: h.code.clone(),
                        known: lim.codes_of(EntryKind::AddOn),
                    });
                };
                if a.profile.is_none() {
                    return Err(SeatError::AddonNeedsProfile {
                        user: a.id.clone(),
                        code: h.code.clone(),
                    });
                }
                if let Some(r) = self.unmet(a, e) {
                    let (requires, why) = self.describe_unmet(a, r);
                    return Err(SeatError::MissingPrerequisite {
                        user: a.id.clone(),
                        code: h.code.clone(),
                        requires,
                        why,
                    });
                }
            } else if let Some(e) = lim.of_kind(&h.code, EntryKind::AddOn) {
                // A kept add-on whose prerequisite this change removes. One
                // already unmet before (a new license) does not block
                // unrelated changes.
                let broken = self.unmet(a, e);
                let was = before.and_then(|b| self.unmet(b, e));
                if let (Some(r), None) = (broken, was) {
                    let (requires, _) = self.describe_unmet(a, r);
                    return Err(SeatError::BreaksPrerequisite {
                        user: a.id.clone(),
                        addon: h.code.clone(),
                        requires,
                    });
                }
            }
        }
        Ok(())
    }

    /// The first prerequisite of add-on entry `e` that `user` does not meet,
    /// by the user's holdings alone (seats aside).
    fn unmet(&self, user: &User, e: usize) -> Option<usize> {
        let lim = &self.limits;
        let entry = &lim.entries[e];
        entry.requires.iter().copied().find(|&r| {
            let req = &lim.entries[r];
            match req.kind {
                EntryKind::Base => !profile_reaches(lim, user, r),
                EntryKind::AddOn => !user.holds_addon(&req.code) || !lim.entries[r].usable,
                EntryKind::System => !req.usable,
            }
        })
    }

    fn describe_unmet(&self, user: &User, r: usize) -> (String, String) {
        let req = &self.limits.entries[r];
        match req.kind {
            EntryKind::Base => (
                format!("the profile {} or a higher one", req.code),
                format!(
                    "the user's profile {} is not",
                    user.profile_code().unwrap_or("(none)")
                ),
            ),
            EntryKind::AddOn => (
                format!("the add-on {}", req.code),
                "the user does not hold".to_string(),
            ),
            EntryKind::System if req.phantom => (
                format!("the license {}", req.code),
                "the license's catalog does not list".to_string(),
            ),
            EntryKind::System => (
                format!("the system license {}", req.code),
                "the license does not include (or its own prerequisite is missing)".to_string(),
            ),
        }
    }

    /// Catalog entries `user` is counted against (none for the admin).
    fn counted(&self, user: Option<&User>) -> Vec<usize> {
        let Some(u) = user.filter(|u| u.kind != UserKind::Admin) else {
            return Vec::new();
        };
        let lim = &self.limits;
        u.profile_code()
            .and_then(|p| lim.of_kind(p, EntryKind::Base))
            .into_iter()
            .chain(
                u.addons
                    .iter()
                    .filter_map(|h| lim.of_kind(&h.code, EntryKind::AddOn)),
            )
            .collect()
    }

    /// Hard enforcement over a list of changes. Seats the changes release
    /// are free for the others first; then the takes are served in list
    /// (file) order and each take beyond the units is refused. A code that
    /// is over-used already (seats reduced) refuses new takes, but does not
    /// block changes that take nothing.
    fn check_seats(&self, changes: &[Change<'_>]) -> Vec<(usize, SeatError)> {
        let lim = &self.limits;
        if lim.enforcement != Enforcement::Hard {
            return Vec::new();
        }
        let mut used: HashMap<usize, i64> = HashMap::new();
        let mut takes: Vec<(usize, Vec<usize>)> = Vec::new();
        for c in changes {
            let old = self.counted(c.before);
            let new = self.counted(c.after.as_ref());
            for e in old.iter().filter(|e| !new.contains(e)) {
                *used.entry(*e).or_insert(i64::from(self.counts[*e].used)) -= 1;
            }
            takes.push((
                c.line,
                new.into_iter().filter(|e| !old.contains(e)).collect(),
            ));
        }
        let mut errors = Vec::new();
        for (line, entries) in takes {
            let counts = &self.counts;
            let now_used = |used: &HashMap<usize, i64>, e: usize| {
                used.get(&e).copied().unwrap_or(i64::from(counts[e].used))
            };
            let refused = entries.iter().copied().find_map(|e| {
                let units = lim.entries[e].units?;
                let n = now_used(&used, e);
                (n >= i64::from(units)).then(|| SeatError::NoSeat {
                    code: lim.entries[e].code.clone(),
                    name: lim.entries[e].name.clone(),
                    purchased: units,
                    used: u32::try_from(n).unwrap_or(0),
                })
            });
            match refused {
                // A refused row takes nothing: later rows see the same seats.
                Some(err) => errors.push((line, err)),
                None => {
                    for e in entries {
                        let n = now_used(&used, e);
                        used.insert(e, n + 1);
                    }
                }
            }
        }
        errors
    }

    /// Turns checked changes into a plan with audit records. The totals are
    /// the seats of every code a change touched, after all the changes.
    fn build(&self, changes: Vec<Change<'_>>, caller_uid: u32, now: i64) -> Plan {
        let lim = &self.limits;
        let mut used: HashMap<usize, i64> = HashMap::new();
        let mut touched: BTreeSet<usize> = BTreeSet::new();
        for c in &changes {
            for u in c.before.iter().copied().chain(c.after.as_ref()) {
                touched.extend(
                    u.profile_code()
                        .and_then(|p| lim.get(p))
                        .into_iter()
                        .chain(u.addons.iter().filter_map(|h| lim.get(&h.code))),
                );
            }
            for (users, delta) in [
                (self.counted(c.before), -1),
                (self.counted(c.after.as_ref()), 1),
            ] {
                for e in users {
                    *used.entry(e).or_insert(i64::from(self.counts[e].used)) += delta;
                }
            }
        }
        let total = |e: usize| SeatTotal {
            used: u32::try_from(
                used.get(&e)
                    .copied()
                    .unwrap_or(i64::from(self.counts[e].used)),
            )
            .unwrap_or(0),
            purchased: lim.entries[e].units,
        };
        let mut plan = self.empty_plan();
        for c in changes {
            let mut totals = BTreeMap::new();
            for u in c.before.iter().copied().chain(c.after.as_ref()) {
                let entries = u
                    .profile_code()
                    .and_then(|p| lim.get(p))
                    .into_iter()
                    .chain(u.addons.iter().filter_map(|h| lim.get(&h.code)));
                for e in entries {
                    totals.insert(lim.entries[e].code.clone(), total(e));
                }
            }
            let id = c
                .after
                .as_ref()
                .or(c.before)
                .map(|u| u.id.clone())
                .unwrap_or_default();
            plan.audit.push(AuditRecord {
                at: now,
                caller_uid,
                action: c.action,
                user_id: id.clone(),
                before: c.before.map(User::snapshot),
                after: c.after.as_ref().map(User::snapshot),
                totals,
            });
            match c.after {
                Some(a) => plan.upserts.push(a),
                None => plan.deletes.push(id),
            }
        }
        plan.touched = touched;
        plan
    }
}

fn codes(held: &[Held]) -> String {
    held.iter()
        .map(|h| h.code.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}
