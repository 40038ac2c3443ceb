//! What the license in force allows: its catalog indexed by code, the units
//! bought of each code, the prerequisites resolved to indexes, and the
//! enforcement mode. Built once per license, read on every check.

use std::collections::HashMap;

use crate::license::{Enforcement, EntryKind, LicenseKind, LicensePayload};

/// The limits of one license (or of none).
#[derive(Clone, Debug)]
pub struct Limits {
    pub(crate) licensed: bool,
    pub(crate) enforcement: Enforcement,
    pub(crate) entries: Vec<Entry>,
    pub(crate) index: HashMap<String, usize>,
    /// Add-on entries, each after the add-ons it requires, so that one pass
    /// in this order sees every prerequisite's status before its dependants.
    pub(crate) addon_order: Vec<usize>,
}

#[derive(Clone, Debug)]
pub(crate) struct Entry {
    pub code: String,
    pub name: String,
    pub kind: EntryKind,
    pub tier: u32,
    pub free: bool,
    /// Indexes into `Limits::entries`.
    pub requires: Vec<usize>,
    /// Units bought (seats × units per seat); `None` is unlimited.
    pub units: Option<u32>,
    /// System entries: bought and every prerequisite usable. Add-ons: their
    /// prerequisites do not form a cycle. Profiles: always.
    pub usable: bool,
    /// Stands for a code that `requires` names but the catalog lacks; never
    /// held, never usable, not shown in the summary.
    pub phantom: bool,
}

impl Limits {
    /// No license in force: every user is unlicensed and nothing can be
    /// assigned.
    pub fn none() -> Limits {
        Limits {
            licensed: false,
            enforcement: Enforcement::Hard,
            entries: Vec::new(),
            index: HashMap::new(),
            addon_order: Vec::new(),
        }
    }

    /// The limits a license sets. A test license (all features, no limits)
    /// makes every code unlimited; a code the catalog lists without seats has
    /// zero.
    pub fn from_payload(p: &LicensePayload) -> Limits {
        let unlimited = p.kind == LicenseKind::Test;
        let mut entries: Vec<Entry> = Vec::with_capacity(p.catalog.len());
        let mut index = HashMap::with_capacity(p.catalog.len());
        for e in &p.catalog {
            // A catalog with a code twice is a vendor bug; the first wins so
            // that the result does not depend on hash order.
            if index.contains_key(&e.code) {
                continue;
            }
            let bought = match e.kind {
                EntryKind::Base => p.seats.get(&e.code),
                EntryKind::AddOn | EntryKind::System => p.addons.get(&e.code),
            };
            let units = if e.free || unlimited {
                None
            } else {
                Some(
                    bought
                        .copied()
                        .unwrap_or(0)
                        .saturating_mul(e.units_per_seat),
                )
            };
            index.insert(e.code.clone(), entries.len());
            entries.push(Entry {
                code: e.code.clone(),
                name: e.name.clone(),
                kind: e.kind,
                tier: e.tier,
                free: e.free,
                requires: Vec::new(),
                units,
                usable: true,
                phantom: false,
            });
        }
        // Resolve prerequisites; unknown codes become phantom entries so that
        // a user who misses one can still be told its name.
        let mut resolved = vec![false; entries.len()];
        for e in &p.catalog {
            let Some(&at) = index.get(&e.code) else {
                continue;
            };
            // The first of duplicate codes keeps its prerequisites.
            if std::mem::replace(&mut resolved[at], true) {
                continue;
            }
            let mut reqs = Vec::with_capacity(e.requires.len());
            for r in &e.requires {
                let ri = match index.get(r) {
                    Some(&ri) => ri,
                    None => {
                        let ri = entries.len();
                        index.insert(r.clone(), ri);
                        entries.push(Entry {
                            code: r.clone(),
                            name: r.clone(),
                            kind: EntryKind::System,
                            tier: 0,
                            free: false,
                            requires: Vec::new(),
                            units: Some(0),
                            usable: false,
                            phantom: true,
                        });
                        ri
                    }
                };
                if ri != at && !reqs.contains(&ri) {
                    reqs.push(ri);
                }
            }
            entries[at].requires = reqs;
        }
        system_usability(&mut entries);
        let addon_order = addon_order(&mut entries);
        Limits {
            licensed: true,
            enforcement: p.enforcement,
            entries,
            index,
            addon_order,
        }
    }

    pub fn enforcement(&self) -> Enforcement {
        self.enforcement
    }

    /// Whether a license is in force.
    pub fn is_licensed(&self) -> bool {
        self.licensed
    }

    pub(crate) fn get(&self, code: &str) -> Option<usize> {
        self.index.get(code).copied()
    }

    /// The entry of `code` if it is of `kind` (and real).
    pub(crate) fn of_kind(&self, code: &str, kind: EntryKind) -> Option<usize> {
        self.get(code)
            .filter(|&i| self.entries[i].kind == kind && !self.entries[i].phantom)
    }

    /// The real codes of `kind`, comma-separated, for error messages.
    pub(crate) fn codes_of(&self, kind: EntryKind) -> String {
        let codes: Vec<&str> = self
            .entries
            .iter()
            .filter(|e| e.kind == kind && !e.phantom)
            .map(|e| e.code.as_str())
            .collect();
        if codes.is_empty() {
            "(none)".to_string()
        } else {
            codes.join(", ")
        }
    }

    /// The free profile of the lowest tier, if the catalog has one: what a
    /// new virtual user gets.
    pub(crate) fn free_profile(&self) -> Option<usize> {
        (0..self.entries.len())
            .filter(|&i| {
                let e = &self.entries[i];
                e.kind == EntryKind::Base && e.free && !e.phantom
            })
            .min_by_key(|&i| (self.entries[i].tier, i))
    }
}

/// A system entry is usable when units were bought and every prerequisite is
/// usable. Iterates to a fixed point; entries in a cycle never become usable.
fn system_usability(entries: &mut [Entry]) {
    for e in entries.iter_mut() {
        if e.kind == EntryKind::System {
            e.usable = false;
        }
    }
    loop {
        let mut changed = false;
        for i in 0..entries.len() {
            let e = &entries[i];
            if e.kind != EntryKind::System || e.usable || e.phantom || e.units == Some(0) {
                continue;
            }
            let ok = e.requires.iter().all(|&r| match entries[r].kind {
                EntryKind::System => entries[r].usable,
                // A system entry requiring a profile or add-on: the vendor
                // means "some user may hold it"; it is bought if it exists.
                _ => !entries[r].phantom,
            });
            if ok {
                entries[i].usable = true;
                changed = true;
            }
        }
        if !changed {
            return;
        }
    }
}

/// Orders the add-ons so that each comes after the add-ons it requires
/// (Kahn's algorithm, catalog order among equals). Add-ons caught in a cycle
/// go last and are marked unusable: no user can ever satisfy them.
fn addon_order(entries: &mut [Entry]) -> Vec<usize> {
    let addons: Vec<usize> = (0..entries.len())
        .filter(|&i| entries[i].kind == EntryKind::AddOn)
        .collect();
    let mut placed = vec![false; entries.len()];
    let mut order = Vec::with_capacity(addons.len());
    loop {
        let next = addons.iter().copied().find(|&a| {
            !placed[a]
                && entries[a]
                    .requires
                    .iter()
                    .all(|&r| entries[r].kind != EntryKind::AddOn || placed[r])
        });
        match next {
            Some(a) => {
                placed[a] = true;
                order.push(a);
            }
            None => break,
        }
    }
    for a in addons {
        if !placed[a] {
            entries[a].usable = false;
            order.push(a);
        }
    }
    order
}
