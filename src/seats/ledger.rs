//! The users in memory and what each is entitled to under the current
//! limits. Every change ends in a full recomputation of who holds a seat
//! (a sort of the holders by sequence number, a few milliseconds for 10,000
//! users), so that the result never depends on the history of changes in
//! memory, only on what the store holds: a restart hands out the same seats.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::limits::Limits;
use super::{User, UserKind};
use crate::license::EntryKind;

/// The profile a new user gets when none is given, unless configured
/// otherwise.
pub const DEFAULT_PROFILE: &str = "essential";

/// Settings of the accounting that do not come from the license.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LedgerSettings {
    /// Profile code given to a new regular user created without one.
    pub default_profile: String,
}

impl Default for LedgerSettings {
    fn default() -> Self {
        LedgerSettings {
            default_profile: DEFAULT_PROFILE.to_string(),
        }
    }
}

/// Why a user is not licensed for a code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// No license is in force.
    NoLicense,
    /// The license's catalog has no such code (of that kind).
    NotInLicense,
    /// The user has no base profile.
    NoProfile,
    /// Every unit of the code went to earlier assignments.
    NoSeat,
    /// An add-on whose user's profile is not licensed.
    NeedsProfile,
    /// A prerequisite the catalog declares is missing.
    Requires,
}

/// Why a user's check is not clean, as one top-level code for the PBX (a
/// SIP server answers `403` from it). `None` when the user holds all it is
/// assigned. The box-wide codes (`box_unlicensed`, `expired`, `revoked`)
/// are set by the agent, which knows the license state; the ledger alone
/// says `box_unlicensed` for them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UserReason {
    /// The user has no base profile assigned.
    NoProfile,
    /// Every seat of the user's profile went to earlier assignments.
    NoSeat,
    /// The profile's code is not in the license's catalog.
    NotInLicense,
    /// A prerequisite of the profile or an add-on is missing.
    MissingPrerequisite,
    /// The profile is licensed, an add-on is not (the user may work).
    MissingAddon,
    /// No license is in force on the box.
    BoxUnlicensed,
    /// The box's license expired (term, or grace without the portal).
    Expired,
    /// The portal revoked the box's license.
    Revoked,
}

impl UserReason {
    /// The top-level reason from the profile's and the add-ons' states.
    fn of(base: Option<Reason>, has_profile: bool, addon_missing: bool) -> Option<UserReason> {
        if !has_profile {
            return Some(UserReason::NoProfile);
        }
        match base {
            Some(Reason::NoLicense) => Some(UserReason::BoxUnlicensed),
            Some(Reason::NotInLicense) => Some(UserReason::NotInLicense),
            Some(Reason::NoProfile) => Some(UserReason::NoProfile),
            Some(Reason::NoSeat) => Some(UserReason::NoSeat),
            Some(Reason::Requires) => Some(UserReason::MissingPrerequisite),
            Some(Reason::NeedsProfile) => Some(UserReason::NoSeat),
            None if addon_missing => Some(UserReason::MissingAddon),
            None => None,
        }
    }
}

/// The status of one holding, computed by [`Ledger::recompute`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum St {
    Licensed,
    Missing(Reason, Miss),
}

/// Which code a missing holding lacks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Miss {
    /// Nothing to name (the user has no profile).
    Nothing,
    /// The holding's own code.
    Itself,
    /// The user's profile.
    Profile,
    /// A catalog entry (a prerequisite).
    Entry(u32),
}

/// A user and the status of each of its holdings.
#[derive(Clone, Debug)]
pub(crate) struct Slot {
    pub user: User,
    pub base: St,
    /// Parallel to `user.addons`.
    pub addons: Vec<St>,
}

/// Per catalog entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Count {
    /// Holders counted against the units (everyone but the admin).
    pub used: u32,
    pub licensed: u32,
    /// Holders never counted (the admin).
    pub uncounted: u32,
}

/// Every user in memory, with their entitlements under the current limits.
#[derive(Clone, Debug)]
pub struct Ledger {
    pub(crate) limits: Limits,
    pub(crate) settings: LedgerSettings,
    pub(crate) slots: Vec<Slot>,
    pub(crate) by_id: HashMap<String, u32>,
    pub(crate) by_ext: HashMap<String, u32>,
    /// Parallel to `limits.entries`.
    pub(crate) counts: Vec<Count>,
    /// The sequence number the next change gets.
    pub(crate) next_seq: i64,
    /// Bumped by every commit and limits change; a plan made at another
    /// generation is stale.
    pub(crate) generation: u64,
}

/// One holding as a check sees it; borrows the ledger, allocates nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grant<'a> {
    pub code: &'a str,
    pub licensed: bool,
    pub reason: Option<Reason>,
    /// The code the user lacks for this holding to be licensed.
    pub missing: Option<&'a str>,
}

/// A user's entitlements; borrows the ledger, allocates nothing.
#[derive(Clone, Copy, Debug)]
pub struct Entitlement<'a> {
    limits: &'a Limits,
    counts: &'a [Count],
    slot: &'a Slot,
}

/// A user's entitlements, owned, for the API and the CLI.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserReport {
    pub id: String,
    pub name: String,
    pub extension: String,
    pub number: Option<String>,
    pub kind: UserKind,
    /// The user holds a licensed profile: it may work.
    pub licensed: bool,
    /// Why the check is not clean (`null` when the user holds everything
    /// it is assigned); docs/api.md lists the codes.
    #[serde(default)]
    pub reason: Option<UserReason>,
    pub profile: Option<GrantReport>,
    pub addons: Vec<GrantReport>,
    /// Every code the user lacks, each once.
    pub missing: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantReport {
    pub code: String,
    /// The catalog's display name (the code when the catalog lacks it).
    pub name: String,
    pub licensed: bool,
    pub reason: Option<Reason>,
    /// The codes this holding lacks (its own, the profile it needs, or a
    /// prerequisite); a list like the user's own `missing`.
    pub missing: Vec<String>,
    /// One sentence for people, when not licensed.
    pub note: Option<String>,
}

/// Seats of one catalog code.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeatSummary {
    pub code: String,
    pub name: String,
    pub kind: EntryKind,
    pub tier: u32,
    pub free: bool,
    /// Units bought; `None` is unlimited.
    pub purchased: Option<u32>,
    /// Holders counted against the units.
    pub used: u32,
    /// Holders licensed (counted or not).
    pub licensed: u32,
    /// Units left; `None` is unlimited.
    pub available: Option<u32>,
    /// Holders beyond the units.
    pub over: u32,
    /// Holders never counted (the admin).
    pub uncounted: u32,
    /// System entries: bought and every prerequisite usable.
    pub usable: bool,
}

/// A code with more holders than units.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverUse {
    pub code: String,
    pub name: String,
    pub purchased: u32,
    pub used: u32,
}

/// A search over users; every given criterion must match.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserQuery {
    /// Holds this profile.
    #[serde(default)]
    pub profile: Option<String>,
    /// Holds this add-on.
    #[serde(default)]
    pub addon: Option<String>,
    /// Part of the name (any case), the start of the extension, or the id.
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub licensed: Option<bool>,
    #[serde(default)]
    pub offset: usize,
    /// 0 is no limit.
    #[serde(default)]
    pub limit: usize,
}

impl Ledger {
    /// An empty ledger.
    pub fn new(limits: Limits, settings: LedgerSettings) -> Ledger {
        Ledger::load(limits, settings, Vec::new())
    }

    /// A ledger holding `users` (as read from the store).
    pub fn load(limits: Limits, settings: LedgerSettings, users: Vec<User>) -> Ledger {
        let mut ledger = Ledger {
            limits,
            settings,
            slots: Vec::with_capacity(users.len()),
            by_id: HashMap::with_capacity(users.len()),
            by_ext: HashMap::with_capacity(users.len()),
            counts: Vec::new(),
            next_seq: 1,
            generation: 0,
        };
        for user in users {
            ledger.put(user);
        }
        ledger.recompute();
        ledger
    }

    /// Replaces the limits (a new license, a seat change, expiry) and hands
    /// the seats out again. Returns the codes over-used afterwards.
    pub fn set_limits(&mut self, limits: Limits) -> Vec<OverUse> {
        self.limits = limits;
        self.generation += 1;
        self.recompute();
        self.over_use()
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn settings(&self) -> &LedgerSettings {
        &self.settings
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The hot path: one hash lookup, no allocation.
    pub fn entitlement(&self, user_id: &str) -> Option<Entitlement<'_>> {
        let &i = self.by_id.get(user_id)?;
        Some(self.view(i))
    }

    pub fn entitlement_by_extension(&self, extension: &str) -> Option<Entitlement<'_>> {
        let &i = self.by_ext.get(extension)?;
        Some(self.view(i))
    }

    pub fn user(&self, user_id: &str) -> Option<&User> {
        self.by_id
            .get(user_id)
            .map(|&i| &self.slots[i as usize].user)
    }

    /// Every user's entitlements, in no particular order.
    pub fn all(&self) -> impl Iterator<Item = Entitlement<'_>> + '_ {
        (0..self.slots.len()).map(|i| self.view(i as _))
    }

    /// Every user, in no particular order.
    pub fn users(&self) -> impl Iterator<Item = &User> + '_ {
        self.slots.iter().map(|s| &s.user)
    }

    /// Seats per catalog code, in catalog order.
    pub fn summary(&self) -> Vec<SeatSummary> {
        let lim = &self.limits;
        lim.entries
            .iter()
            .zip(&self.counts)
            .filter(|(e, _)| !e.phantom)
            .map(|(e, c)| SeatSummary {
                code: e.code.clone(),
                name: e.name.clone(),
                kind: e.kind,
                tier: e.tier,
                free: e.free,
                purchased: e.units,
                used: c.used,
                licensed: c.licensed,
                available: e.units.map(|u| u.saturating_sub(c.used)),
                over: e.units.map_or(0, |u| c.used.saturating_sub(u)),
                uncounted: c.uncounted,
                usable: e.usable,
            })
            .collect()
    }

    /// Seats while no license is in force (none installed, expired,
    /// revoked): who holds what still shows, and nothing is licensed. The
    /// codes are those of `catalog` (the installed license's, when there is
    /// one) and every code a user holds; `purchased` is what `catalog`
    /// says was bought (0 for codes it lacks), `used` the holders that
    /// would count, `licensed` and `available` 0.
    pub fn held_summary(&self, catalog: &Limits) -> Vec<SeatSummary> {
        let mut out: Vec<SeatSummary> = catalog
            .entries
            .iter()
            .filter(|e| !e.phantom)
            .map(|e| SeatSummary {
                code: e.code.clone(),
                name: e.name.clone(),
                kind: e.kind,
                tier: e.tier,
                free: e.free,
                purchased: e.units,
                used: 0,
                licensed: 0,
                available: Some(0),
                over: 0,
                uncounted: 0,
                usable: false,
            })
            .collect();
        for slot in &self.slots {
            let u = &slot.user;
            let held = u
                .profile
                .iter()
                .map(|h| (h, EntryKind::Base))
                .chain(u.addons.iter().map(|h| (h, EntryKind::AddOn)));
            for (h, kind) in held {
                let i = match out.iter().position(|s| s.code == h.code) {
                    Some(i) => i,
                    None => {
                        out.push(SeatSummary {
                            code: h.code.clone(),
                            name: h.code.clone(),
                            kind,
                            tier: 0,
                            free: false,
                            purchased: Some(0),
                            used: 0,
                            licensed: 0,
                            available: Some(0),
                            over: 0,
                            uncounted: 0,
                            usable: false,
                        });
                        out.len() - 1
                    }
                };
                if u.kind == UserKind::Admin {
                    out[i].uncounted += 1;
                } else {
                    out[i].used += 1;
                }
            }
        }
        for s in &mut out {
            s.over = s.purchased.map_or(0, |p| s.used.saturating_sub(p));
        }
        out
    }

    /// Codes with more holders than units (soft enforcement, or seats
    /// reduced by a new license).
    pub fn over_use(&self) -> Vec<OverUse> {
        self.over_use_of(0..self.limits.entries.len())
    }

    pub(crate) fn over_use_of(&self, entries: impl IntoIterator<Item = usize>) -> Vec<OverUse> {
        entries
            .into_iter()
            .filter_map(|i| {
                let e = &self.limits.entries[i];
                let used = self.counts[i].used;
                match e.units {
                    Some(units) if used > units && !e.phantom => Some(OverUse {
                        code: e.code.clone(),
                        name: e.name.clone(),
                        purchased: units,
                        used,
                    }),
                    _ => None,
                }
            })
            .collect()
    }

    /// Holders counted per profile and add-on code: what the portal is told
    /// on refresh.
    pub fn seats_in_use(&self) -> BTreeMap<String, u32> {
        self.limits
            .entries
            .iter()
            .zip(&self.counts)
            .filter(|(e, _)| !e.phantom && e.kind != EntryKind::System)
            .map(|(e, c)| (e.code.clone(), c.used))
            .collect()
    }

    /// Users matching `q`, sorted by extension.
    pub fn search(&self, q: &UserQuery) -> Vec<UserReport> {
        let text = q.text.as_deref().map(str::to_lowercase);
        let mut hits: Vec<&Slot> = self
            .slots
            .iter()
            .filter(|s| {
                let u = &s.user;
                q.profile
                    .as_deref()
                    .map_or(true, |p| u.profile_code() == Some(p))
                    && q.addon.as_deref().map_or(true, |a| u.holds_addon(a))
                    && q.licensed.map_or(true, |l| (s.base == St::Licensed) == l)
                    && text.as_deref().map_or(true, |t| {
                        u.id.eq_ignore_ascii_case(t)
                            || u.extension.starts_with(t)
                            || u.name.to_lowercase().contains(t)
                    })
            })
            .collect();
        hits.sort_by(|a, b| {
            a.user
                .extension
                .cmp(&b.user.extension)
                .then_with(|| a.user.id.cmp(&b.user.id))
        });
        let limit = if q.limit == 0 { usize::MAX } else { q.limit };
        hits.into_iter()
            .skip(q.offset)
            .take(limit)
            .map(|s| self.view_slot(s).report())
            .collect()
    }

    fn view(&self, i: u32) -> Entitlement<'_> {
        self.view_slot(&self.slots[i as usize])
    }

    fn view_slot<'a>(&'a self, slot: &'a Slot) -> Entitlement<'a> {
        Entitlement {
            limits: &self.limits,
            counts: &self.counts,
            slot,
        }
    }

    /// Inserts or replaces a user (no recomputation).
    pub(crate) fn put(&mut self, user: User) {
        let max_seq = user
            .profile
            .iter()
            .chain(&user.addons)
            .map(|h| h.seq)
            .max()
            .unwrap_or(0);
        self.next_seq = self.next_seq.max(max_seq.saturating_add(1));
        let slot = Slot {
            base: St::Missing(Reason::NoLicense, Miss::Itself),
            addons: Vec::new(),
            user,
        };
        match self.by_id.get(&slot.user.id) {
            Some(&i) => {
                let old = &mut self.slots[i as usize];
                if old.user.extension != slot.user.extension {
                    self.by_ext.remove(&old.user.extension);
                    self.by_ext.insert(slot.user.extension.clone(), i);
                }
                *old = slot;
            }
            None => {
                let i = self.slots.len() as u32;
                self.by_id.insert(slot.user.id.clone(), i);
                self.by_ext.insert(slot.user.extension.clone(), i);
                self.slots.push(slot);
            }
        }
    }

    /// Removes a user (no recomputation).
    pub(crate) fn remove(&mut self, user_id: &str) {
        let Some(i) = self.by_id.remove(user_id) else {
            return;
        };
        let gone = self.slots.swap_remove(i as usize);
        self.by_ext.remove(&gone.user.extension);
        // The last slot moved into the hole: point its keys at the new place.
        if let Some(moved) = self.slots.get(i as usize) {
            self.by_id.insert(moved.user.id.clone(), i);
            self.by_ext.insert(moved.user.extension.clone(), i);
        }
    }

    /// Hands out every seat again from scratch: profiles first, then add-ons
    /// in prerequisite order. Within a code, holders are ranked by the
    /// sequence number of the change that gave them the code, then by user
    /// id (byte order), and the first `units` are licensed.
    pub(crate) fn recompute(&mut self) {
        let lim = &self.limits;
        let mut counts = vec![Count::default(); lim.entries.len()];
        // (entry, seq, slot, position in the user's add-ons or u32::MAX)
        let mut cand: Vec<(u32, i64, u32, u32)> = Vec::new();
        // Per add-on entry: (slot, position).
        let mut holders: Vec<Vec<(u32, u32)>> = vec![Vec::new(); lim.entries.len()];

        for (si, slot) in self.slots.iter_mut().enumerate() {
            let admin = slot.user.kind == UserKind::Admin;
            slot.base = match &slot.user.profile {
                None => St::Missing(Reason::NoProfile, Miss::Nothing),
                Some(_) if !lim.licensed => St::Missing(Reason::NoLicense, Miss::Itself),
                Some(h) => match lim.of_kind(&h.code, EntryKind::Base) {
                    None => St::Missing(Reason::NotInLicense, Miss::Itself),
                    Some(e) => {
                        let c = &mut counts[e];
                        if admin {
                            c.uncounted += 1;
                            c.licensed += 1;
                            St::Licensed
                        } else if lim.entries[e].units.is_none() {
                            c.used += 1;
                            c.licensed += 1;
                            St::Licensed
                        } else {
                            c.used += 1;
                            cand.push((e as u32, h.seq, si as u32, u32::MAX));
                            St::Missing(Reason::NoSeat, Miss::Itself)
                        }
                    }
                },
            };
            slot.addons.clear();
            for (pos, h) in slot.user.addons.iter().enumerate() {
                let st = if !lim.licensed {
                    St::Missing(Reason::NoLicense, Miss::Itself)
                } else if let Some(e) = lim.of_kind(&h.code, EntryKind::AddOn) {
                    holders[e].push((si as u32, pos as u32));
                    // Decided in the add-on pass below.
                    St::Missing(Reason::NoSeat, Miss::Itself)
                } else {
                    St::Missing(Reason::NotInLicense, Miss::Itself)
                };
                slot.addons.push(st);
            }
        }
        grant(&mut cand, &mut self.slots, lim, &mut counts);

        for &a in &lim.addon_order {
            cand.clear();
            for &(si, pos) in &holders[a] {
                let slot = &self.slots[si as usize];
                let admin = slot.user.kind == UserKind::Admin;
                let c = &mut counts[a];
                if admin {
                    c.uncounted += 1;
                } else {
                    c.used += 1;
                }
                let st = match gate(lim, slot, a) {
                    Some(missing) => missing,
                    None if admin || lim.entries[a].units.is_none() => {
                        c.licensed += 1;
                        St::Licensed
                    }
                    None => {
                        let seq = slot.user.addons[pos as usize].seq;
                        cand.push((a as u32, seq, si, pos));
                        St::Missing(Reason::NoSeat, Miss::Itself)
                    }
                };
                self.slots[si as usize].addons[pos as usize] = st;
            }
            grant(&mut cand, &mut self.slots, lim, &mut counts);
        }
        self.counts = counts;
    }
}

/// Sorts the candidates of one or more codes into allocation order and
/// licenses the first `units` of each code.
fn grant(
    cand: &mut [(u32, i64, u32, u32)],
    slots: &mut [Slot],
    lim: &Limits,
    counts: &mut [Count],
) {
    cand.sort_unstable_by(|a, b| {
        a.0.cmp(&b.0).then(a.1.cmp(&b.1)).then_with(|| {
            // Equal sequence numbers: the user id decides (byte order).
            let (x, y) = (&slots[a.2 as usize].user.id, &slots[b.2 as usize].user.id);
            x.as_bytes().cmp(y.as_bytes())
        })
    });
    let mut given = 0u32;
    let mut current = u32::MAX;
    for &(e, _, si, pos) in cand.iter() {
        if e != current {
            current = e;
            given = 0;
        }
        let units = lim.entries[e as usize].units.unwrap_or(u32::MAX);
        if given < units {
            given += 1;
            counts[e as usize].licensed += 1;
            let slot = &mut slots[si as usize];
            if pos == u32::MAX {
                slot.base = St::Licensed;
            } else {
                slot.addons[pos as usize] = St::Licensed;
            }
        }
    }
}

/// Why the user of `slot` cannot have the add-on entry `a` whatever the
/// seats: its profile is not licensed, or a prerequisite is missing.
fn gate(lim: &Limits, slot: &Slot, a: usize) -> Option<St> {
    let entry = &lim.entries[a];
    if !entry.usable {
        // Caught in a prerequisite cycle: name the first prerequisite.
        let miss = entry
            .requires
            .first()
            .map_or(Miss::Itself, |&r| Miss::Entry(r as u32));
        return Some(St::Missing(Reason::Requires, miss));
    }
    if slot.base != St::Licensed {
        let miss = if slot.user.profile.is_some() {
            Miss::Profile
        } else {
            Miss::Nothing
        };
        return Some(St::Missing(Reason::NeedsProfile, miss));
    }
    let unmet = entry.requires.iter().copied().find(|&r| {
        let req = &lim.entries[r];
        match req.kind {
            EntryKind::Base => !profile_reaches(lim, &slot.user, r),
            EntryKind::AddOn => !slot
                .user
                .addons
                .iter()
                .zip(&slot.addons)
                .any(|(h, st)| h.code == req.code && *st == St::Licensed),
            EntryKind::System => !req.usable,
        }
    });
    unmet.map(|r| St::Missing(Reason::Requires, Miss::Entry(r as u32)))
}

/// Whether the user's profile is the profile entry `r` or of a higher tier.
pub(crate) fn profile_reaches(lim: &Limits, user: &User, r: usize) -> bool {
    user.profile_code()
        .and_then(|p| lim.of_kind(p, EntryKind::Base))
        .is_some_and(|p| p == r || lim.entries[p].tier >= lim.entries[r].tier)
}

impl<'a> Entitlement<'a> {
    pub fn user(&self) -> &'a User {
        &self.slot.user
    }

    /// The user holds a licensed profile: it may work.
    pub fn licensed(&self) -> bool {
        self.slot.base == St::Licensed
    }

    /// The top-level reason code of the check ([`UserReason`]).
    pub fn reason(&self) -> Option<UserReason> {
        let has_profile = self.slot.user.profile.is_some();
        let base = match self.slot.base {
            St::Licensed => None,
            St::Missing(r, _) => Some(r),
        };
        let addon_missing = self.slot.addons.iter().any(|st| *st != St::Licensed);
        if !has_profile && self.slot.base == St::Licensed {
            // Admins and free kinds are licensed without a profile.
            return addon_missing.then_some(UserReason::MissingAddon);
        }
        UserReason::of(base, has_profile, addon_missing)
    }

    pub fn profile(&self) -> Option<Grant<'a>> {
        let h = self.slot.user.profile.as_ref()?;
        Some(self.grant(&h.code, self.slot.base))
    }

    /// The add-ons, in code order.
    pub fn addons(&self) -> impl Iterator<Item = Grant<'a>> + 'a {
        let this = *self;
        self.slot
            .user
            .addons
            .iter()
            .zip(&self.slot.addons)
            .map(move |(h, &st)| this.grant(&h.code, st))
    }

    /// Whether the user is licensed for `code` (its profile or an add-on).
    pub fn has(&self, code: &str) -> bool {
        let u = &self.slot.user;
        if u.profile_code() == Some(code) {
            return self.slot.base == St::Licensed;
        }
        u.addons
            .iter()
            .zip(&self.slot.addons)
            .any(|(h, st)| h.code == code && *st == St::Licensed)
    }

    /// The codes the user lacks, in the order of its holdings (a code may
    /// repeat when several holdings lack it).
    pub fn missing(&self) -> impl Iterator<Item = &'a str> + 'a {
        self.profile()
            .into_iter()
            .chain(self.addons())
            .filter_map(|g| g.missing)
    }

    fn grant(&self, code: &'a str, st: St) -> Grant<'a> {
        match st {
            St::Licensed => Grant {
                code,
                licensed: true,
                reason: None,
                missing: None,
            },
            St::Missing(reason, miss) => Grant {
                code,
                licensed: false,
                reason: Some(reason),
                missing: match miss {
                    Miss::Nothing => None,
                    Miss::Itself => Some(code),
                    Miss::Profile => self.slot.user.profile_code(),
                    Miss::Entry(i) => Some(self.limits.entries[i as usize].code.as_str()),
                },
            },
        }
    }

    /// An owned copy for the API.
    pub fn report(&self) -> UserReport {
        let u = &self.slot.user;
        let mut missing: Vec<String> = Vec::new();
        for m in self.missing() {
            if !missing.iter().any(|x| x == m) {
                missing.push(m.to_string());
            }
        }
        UserReport {
            id: u.id.clone(),
            name: u.name.clone(),
            extension: u.extension.clone(),
            number: u.number.clone(),
            kind: u.kind,
            licensed: self.licensed(),
            reason: self.reason(),
            profile: self.profile().map(|g| self.grant_report(g)),
            addons: self.addons().map(|g| self.grant_report(g)).collect(),
            missing,
        }
    }

    fn grant_report(&self, g: Grant<'_>) -> GrantReport {
        let entry = self
            .limits
            .get(g.code)
            .map(|i| (i, &self.limits.entries[i]));
        let name = entry.map_or(g.code, |(_, e)| e.name.as_str());
        let note = g.reason.map(|r| match r {
            Reason::NoLicense => "no license is in force".to_string(),
            Reason::NotInLicense => format!("the license has no {}", g.code),
            Reason::NoProfile => "the user has no profile".to_string(),
            Reason::NoSeat => {
                let bought = entry.and_then(|(_, e)| e.units).unwrap_or(0);
                let used = entry.map_or(0, |(i, _)| self.counts[i].used);
                if bought == 0 {
                    format!("no {name} seats were bought ({used} assigned)")
                } else {
                    format!(
                        "all {bought} {name} seats went to earlier assignments ({used} assigned)"
                    )
                }
            }
            Reason::NeedsProfile => match g.missing {
                Some(p) => format!("needs a licensed profile; {p} has no seat for this user"),
                None => "needs a profile".to_string(),
            },
            Reason::Requires => format!("needs {}", g.missing.unwrap_or("a prerequisite")),
        });
        GrantReport {
            code: g.code.to_string(),
            name: name.to_string(),
            licensed: g.licensed,
            reason: g.reason,
            missing: g.missing.map(str::to_string).into_iter().collect(),
            note,
        }
    }
}
