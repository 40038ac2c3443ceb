//! Unit tests of the accounting rules, on the engine alone and on the engine
//! with a real store in a temporary folder.

use std::collections::BTreeMap;
use std::sync::{Arc, Barrier, Mutex};

use super::*;
use crate::license::{
    CatalogEntry, Enforcement, EntryKind, LicenseKind, LicensePayload, Term, TermKind,
};
use crate::store::AuditQuery;

const ROOT: u32 = 0;
const NOW: i64 = 1_700_000_000;

fn payload(
    enforcement: Enforcement,
    seats: &[(&str, u32)],
    addons: &[(&str, u32)],
) -> LicensePayload {
    LicensePayload {
        format: crate::license::payload::PAYLOAD_FORMAT,
        license_id: "L1".into(),
        system_id: "S1".into(),
        pbx_name: "pbx".into(),
        hardware_id: "hw".into(),
        hardware: Vec::new(),
        kind: LicenseKind::Full,
        issued_at: NOW,
        term: Term {
            kind: TermKind::Lifetime,
            ends_at: None,
        },
        refresh_due: None,
        grace_secs: 0,
        enforcement,
        seats: seats.iter().map(|(c, n)| (c.to_string(), *n)).collect(),
        addons: addons.iter().map(|(c, n)| (c.to_string(), *n)).collect(),
        catalog: LicensePayload::demo_catalog(),
        device_public_key: None,
        nonce: None,
        test_mode: None,
    }
}

fn hard(seats: &[(&str, u32)], addons: &[(&str, u32)]) -> Limits {
    Limits::from_payload(&payload(Enforcement::Hard, seats, addons))
}

fn soft(seats: &[(&str, u32)], addons: &[(&str, u32)]) -> Limits {
    Limits::from_payload(&payload(Enforcement::Soft, seats, addons))
}

fn ledger(limits: Limits) -> Ledger {
    Ledger::new(limits, LedgerSettings::default())
}

fn new_user(id: &str, ext: &str, profile: Option<&str>) -> NewUser {
    NewUser {
        id: id.into(),
        name: format!("User {id}"),
        extension: ext.into(),
        number: None,
        kind: UserKind::Regular,
        profile: profile.map(str::to_string),
        addons: Vec::new(),
    }
}

/// Plans and commits without a store (the engine alone).
fn run(l: &mut Ledger, op: Op) -> Result<Outcome, SeatError> {
    let plan = l.plan(op, ROOT, NOW)?;
    l.commit(plan)
}

fn create(l: &mut Ledger, id: &str, ext: &str, profile: Option<&str>) {
    run(l, Op::Create(new_user(id, ext, profile))).unwrap();
}

fn assign(id: &str, profile: &str) -> Op {
    Op::Assign {
        id: id.into(),
        profile: profile.into(),
    }
}

fn add(id: &str, code: &str) -> Op {
    Op::AddAddon {
        id: id.into(),
        code: code.into(),
    }
}

/// Users licensed for `code`, sorted.
fn holders(l: &Ledger, code: &str) -> Vec<String> {
    let mut v: Vec<String> = l
        .users()
        .filter(|u| l.entitlement(&u.id).unwrap().has(code))
        .map(|u| u.id.clone())
        .collect();
    v.sort();
    v
}

fn summary(l: &Ledger, code: &str) -> SeatSummary {
    l.summary().into_iter().find(|s| s.code == code).unwrap()
}

fn store_in(dir: &tempfile::TempDir) -> crate::store::Store {
    crate::store::Store::open(&dir.path().join("licagent.db"))
        .unwrap()
        .0
}

// ---- limits from the license ----

#[test]
fn limits_multiply_units_per_seat_and_free_profiles_are_unlimited() {
    let l = ledger(hard(
        &[("premium", 2)],
        &[("data_sources", 3), ("server", 1)],
    ));
    let s = summary(&l, "data_sources");
    assert_eq!(s.purchased, Some(30));
    assert!(s.usable);
    assert_eq!(summary(&l, "premium").purchased, Some(2));
    // Listed in the catalog but not bought: zero, not unlimited.
    assert_eq!(summary(&l, "basic").purchased, Some(0));
    assert_eq!(summary(&l, "service").purchased, None);
}

#[test]
fn a_system_license_needs_its_prerequisite() {
    let l = ledger(hard(&[], &[("data_sources", 1)]));
    assert!(!summary(&l, "data_sources").usable, "no server license");
    let l = ledger(hard(&[], &[("data_sources", 1), ("server", 1)]));
    assert!(summary(&l, "data_sources").usable);
    assert!(summary(&l, "server").usable);
}

#[test]
fn a_test_license_is_unlimited() {
    let mut p = payload(Enforcement::Hard, &[], &[]);
    p.kind = LicenseKind::Test;
    let mut l = ledger(Limits::from_payload(&p));
    create(&mut l, "a", "201", Some("premium"));
    run(&mut l, add("a", "mobile")).unwrap();
    assert!(l.entitlement("a").unwrap().has("premium"));
    assert!(l.entitlement("a").unwrap().has("mobile"));
    assert_eq!(summary(&l, "premium").purchased, None);
}

// ---- allocation ----

#[test]
fn seats_go_to_the_earliest_assignments_and_the_others_name_the_missing_code() {
    let mut l = ledger(soft(&[("premium", 2)], &[]));
    for (id, ext) in [("c", "203"), ("a", "201"), ("b", "202")] {
        create(&mut l, id, ext, Some("premium"));
    }
    // Created c, a, b in that order: c and a hold the two seats.
    assert_eq!(holders(&l, "premium"), ["a", "c"]);
    let b = l.entitlement("b").unwrap();
    assert!(!b.licensed());
    assert_eq!(b.missing().collect::<Vec<_>>(), ["premium"]);
    assert_eq!(b.profile().unwrap().reason, Some(Reason::NoSeat));
    let report = b.report();
    assert_eq!(report.missing, ["premium"]);
    assert!(report
        .profile
        .unwrap()
        .note
        .unwrap()
        .contains("2 Premium seats"));
}

#[test]
fn equal_sequence_numbers_fall_back_to_the_user_id() {
    let users: Vec<User> = ["b", "c", "a"]
        .iter()
        .enumerate()
        .map(|(i, id)| User {
            id: id.to_string(),
            name: id.to_string(),
            extension: format!("20{i}"),
            number: None,
            kind: UserKind::Regular,
            profile: Some(Held {
                code: "premium".into(),
                seq: 7,
            }),
            addons: Vec::new(),
        })
        .collect();
    let l = Ledger::load(
        soft(&[("premium", 2)], &[]),
        LedgerSettings::default(),
        users,
    );
    assert_eq!(holders(&l, "premium"), ["a", "b"]);
}

#[test]
fn reassigning_the_same_profile_keeps_the_place_in_line() {
    let mut l = ledger(soft(&[("premium", 1)], &[]));
    create(&mut l, "a", "201", Some("premium"));
    create(&mut l, "b", "202", Some("premium"));
    let plan = l.plan(assign("a", "premium"), ROOT, NOW).unwrap();
    assert!(plan.is_empty());
    l.commit(plan).unwrap();
    assert_eq!(holders(&l, "premium"), ["a"]);
    // Moving away and back is a new assignment: it goes to the end.
    run(&mut l, assign("a", "basic")).unwrap();
    run(&mut l, assign("a", "premium")).unwrap();
    assert_eq!(holders(&l, "premium"), ["b"]);
}

#[test]
fn a_restart_hands_the_seats_to_the_same_users() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = store_in(&dir);
    let limits = || soft(&[("premium", 3), ("basic", 10)], &[("mobile", 2)]);
    let mut l = ledger(limits());
    for i in 0..8 {
        let op = Op::Create(new_user(
            &format!("u{i}"),
            &format!("{}", 300 - i),
            Some("premium"),
        ));
        apply(&mut l, &mut store, op, ROOT, NOW).unwrap();
    }
    for id in ["u7", "u0", "u5", "u1"] {
        apply(&mut l, &mut store, add(id, "mobile"), ROOT, NOW).unwrap();
    }
    // u1 moves away and back: it lines up behind everyone else.
    apply(&mut l, &mut store, assign("u1", "basic"), ROOT, NOW).unwrap();
    apply(&mut l, &mut store, assign("u1", "premium"), ROOT, NOW).unwrap();
    let before: Vec<UserReport> = l.search(&UserQuery::default());
    assert_eq!(holders(&l, "premium"), ["u0", "u2", "u3"]);
    // u7 holds no premium seat, so its mobile is not licensed and the
    // mobile units go to u0 and u5.
    assert_eq!(holders(&l, "mobile"), ["u0"]);
    assert_eq!(l.entitlement("u7").unwrap().report().missing, ["premium"]);
    drop(store);

    let store = store_in(&dir);
    let again = load(&store, limits(), LedgerSettings::default()).unwrap();
    assert_eq!(again.search(&UserQuery::default()), before);
    assert_eq!(again.summary(), l.summary());
}

#[test]
fn fewer_seats_in_a_new_license_drop_the_latest_assignments() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = store_in(&dir);
    let mut l = ledger(hard(&[("business", 4)], &[]));
    for (id, ext) in [("d", "204"), ("b", "202"), ("a", "201"), ("c", "203")] {
        let op = Op::Create(new_user(id, ext, Some("business")));
        apply(&mut l, &mut store, op, ROOT, NOW).unwrap();
    }
    let over = l.set_limits(hard(&[("business", 2)], &[]));
    assert_eq!(
        over,
        [OverUse {
            code: "business".into(),
            name: "Business".into(),
            purchased: 2,
            used: 4
        }]
    );
    assert_eq!(holders(&l, "business"), ["b", "d"]);
    for id in ["a", "c"] {
        assert_eq!(
            l.entitlement(id).unwrap().missing().collect::<Vec<_>>(),
            ["business"]
        );
    }
    // Hard mode: nobody new gets business while it is over-used.
    let err = run(&mut l, Op::Create(new_user("e", "205", Some("business")))).unwrap_err();
    assert!(
        matches!(
            err,
            SeatError::NoSeat {
                used: 4,
                purchased: 2,
                ..
            }
        ),
        "{err}"
    );
    drop(store);
    // A restart with the smaller license: same holders.
    let store = store_in(&dir);
    let again = load(
        &store,
        hard(&[("business", 2)], &[]),
        LedgerSettings::default(),
    )
    .unwrap();
    assert_eq!(holders(&again, "business"), ["b", "d"]);
}

#[test]
fn an_update_that_takes_no_seat_passes_while_over_used() {
    let mut l = ledger(soft(&[("business", 2)], &[]));
    for (id, ext) in [("a", "201"), ("b", "202"), ("c", "203")] {
        create(&mut l, id, ext, Some("business"));
    }
    l.set_limits(hard(&[("business", 2)], &[]));
    run(
        &mut l,
        Op::Update {
            id: "c".into(),
            update: UserUpdate {
                name: Some("Carl".into()),
                ..Default::default()
            },
        },
    )
    .unwrap();
    assert_eq!(l.user("c").unwrap().name, "Carl");
}

// ---- enforcement ----

#[test]
fn hard_enforcement_refuses_naming_the_profile_seats_bought_and_used() {
    let mut l = ledger(hard(&[("premium", 1), ("basic", 5)], &[]));
    create(&mut l, "a", "201", Some("premium"));
    create(&mut l, "b", "202", Some("basic"));
    let err = run(&mut l, assign("b", "premium")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "no Premium seat is free: 1 bought, 1 in use (hard enforcement); free a seat or buy more"
    );
    assert_eq!(l.user("b").unwrap().profile_code(), Some("basic"));
    // Freeing the seat lets the next one in.
    run(&mut l, assign("a", "basic")).unwrap();
    run(&mut l, assign("b", "premium")).unwrap();
    assert_eq!(holders(&l, "premium"), ["b"]);
}

#[test]
fn hard_enforcement_counts_addon_units() {
    let mut l = ledger(hard(&[("basic", 5)], &[("mobile", 1)]));
    create(&mut l, "a", "201", Some("basic"));
    create(&mut l, "b", "202", Some("basic"));
    run(&mut l, add("a", "mobile")).unwrap();
    let err = run(&mut l, add("b", "mobile")).unwrap_err();
    assert!(
        matches!(&err, SeatError::NoSeat { code, purchased: 1, used: 1, .. } if code == "mobile"),
        "{err}"
    );
}

#[test]
fn soft_enforcement_stores_the_assignment_and_reports_over_use() {
    let mut l = ledger(soft(&[("premium", 1)], &[]));
    let first = run(&mut l, Op::Create(new_user("a", "201", Some("premium")))).unwrap();
    assert!(first.over_use.is_empty());
    let second = run(&mut l, Op::Create(new_user("b", "202", Some("premium")))).unwrap();
    assert_eq!(
        second.over_use,
        [OverUse {
            code: "premium".into(),
            name: "Premium".into(),
            purchased: 1,
            used: 2
        }]
    );
    assert_eq!(l.over_use(), second.over_use);
    let s = summary(&l, "premium");
    assert_eq!(
        (s.used, s.licensed, s.available, s.over),
        (2, 1, Some(0), 1)
    );
    // Only the codes a change touches are reported with it.
    let third = run(&mut l, Op::Create(new_user("c", "203", Some("service")))).unwrap();
    assert!(third.over_use.is_empty());
}

#[test]
fn the_admin_is_never_counted_and_is_unique() {
    let mut l = ledger(hard(&[("premium", 1)], &[("mobile", 0)]));
    let mut admin = new_user("admin", "100", Some("premium"));
    admin.kind = UserKind::Admin;
    run(&mut l, Op::Create(admin)).unwrap();
    run(&mut l, add("admin", "mobile")).unwrap();
    create(&mut l, "a", "201", Some("premium"));
    assert_eq!(holders(&l, "premium"), ["a", "admin"]);
    assert!(l.entitlement("admin").unwrap().has("mobile"));
    let s = summary(&l, "premium");
    assert_eq!((s.used, s.uncounted, s.licensed), (1, 1, 2));
    assert_eq!(l.seats_in_use()["premium"], 1);

    let mut second = new_user("root2", "101", Some("basic"));
    second.kind = UserKind::Admin;
    let err = run(&mut l, Op::Create(second)).unwrap_err();
    assert!(matches!(err, SeatError::SecondAdmin { ref existing } if existing == "admin"));
    // Turning the admin into a regular user makes it count (and hard
    // enforcement refuses that when no seat is free).
    let err = run(
        &mut l,
        Op::Update {
            id: "admin".into(),
            update: UserUpdate {
                kind: Some(UserKind::Regular),
                ..Default::default()
            },
        },
    )
    .unwrap_err();
    assert!(matches!(err, SeatError::NoSeat { .. }), "{err}");
}

#[test]
fn service_seats_are_free_and_unlimited() {
    let mut l = ledger(hard(&[], &[]));
    for i in 0..50 {
        create(
            &mut l,
            &format!("v{i}"),
            &format!("8{i:02}"),
            Some("service"),
        );
    }
    assert_eq!(holders(&l, "service").len(), 50);
    let s = summary(&l, "service");
    assert_eq!((s.purchased, s.used, s.over), (None, 50, 0));
}

#[test]
fn new_users_get_the_default_profile_and_virtual_users_the_free_one() {
    let mut l = ledger(soft(&[("essential", 5)], &[]));
    create(&mut l, "a", "201", None);
    assert_eq!(l.user("a").unwrap().profile_code(), Some("essential"));
    let mut orbit = new_user("park1", "700", None);
    orbit.kind = UserKind::Virtual;
    run(&mut l, Op::Create(orbit)).unwrap();
    assert_eq!(l.user("park1").unwrap().profile_code(), Some("service"));

    let mut l = Ledger::new(
        soft(&[], &[]),
        LedgerSettings {
            default_profile: "platinum".into(),
        },
    );
    let err = run(&mut l, Op::Create(new_user("a", "201", None))).unwrap_err();
    assert!(matches!(err, SeatError::BadDefault { .. }), "{err}");
    // Naming a profile sidesteps the bad setting.
    create(&mut l, "a", "201", Some("basic"));
    let settings = LedgerSettings {
        default_profile: "basic".into(),
    };
    let mut l = Ledger::new(soft(&[], &[]), settings);
    create(&mut l, "a", "201", None);
    assert_eq!(l.user("a").unwrap().profile_code(), Some("basic"));
}

#[test]
fn without_a_license_nobody_is_licensed_and_nothing_can_be_assigned() {
    let mut l = ledger(soft(&[("premium", 5)], &[("mobile", 5)]));
    create(&mut l, "a", "201", Some("premium"));
    run(&mut l, add("a", "mobile")).unwrap();
    l.set_limits(Limits::none());
    let e = l.entitlement("a").unwrap();
    assert!(!e.licensed());
    assert_eq!(e.profile().unwrap().reason, Some(Reason::NoLicense));
    assert_eq!(e.addons().next().unwrap().reason, Some(Reason::NoLicense));
    assert!(matches!(
        run(&mut l, assign("a", "basic")),
        Err(SeatError::NoLicense)
    ));
    assert!(matches!(
        run(&mut l, Op::Create(new_user("b", "202", None))),
        Err(SeatError::NoLicense)
    ));
    // Deleting needs no license.
    run(&mut l, Op::Delete { id: "a".into() }).unwrap();
    assert!(l.is_empty());
}

#[test]
fn a_profile_the_new_license_dropped_is_reported_not_in_license() {
    let mut l = ledger(soft(&[("wizyconf", 1)], &[]));
    create(&mut l, "a", "201", Some("wizyconf"));
    let mut p = payload(Enforcement::Soft, &[], &[]);
    p.catalog.retain(|e| e.code != "wizyconf");
    l.set_limits(Limits::from_payload(&p));
    let g = l.entitlement("a").unwrap().profile().unwrap();
    assert_eq!(g.reason, Some(Reason::NotInLicense));
    assert_eq!(g.missing, Some("wizyconf"));
}

// ---- add-ons and prerequisites ----

/// The demo catalog plus add-ons with prerequisites: recording needs the
/// business profile (or higher) and the server system license; ai_notes
/// needs the recording add-on.
fn catalog_with_prereqs(enforcement: Enforcement, addons: &[(&str, u32)]) -> Limits {
    let mut p = payload(enforcement, &[("basic", 10), ("business", 10)], addons);
    let entry = |code: &str, requires: &[&str]| CatalogEntry {
        code: code.into(),
        name: code.into(),
        kind: EntryKind::AddOn,
        tier: 0,
        free: false,
        requires: requires.iter().map(|r| r.to_string()).collect(),
        units_per_seat: 1,
    };
    p.catalog.push(entry("recording", &["business", "server"]));
    p.catalog.push(entry("ai_notes", &["recording"]));
    Limits::from_payload(&p)
}

#[test]
fn an_addon_needs_a_profile() {
    let mut l = ledger(hard(&[("basic", 5)], &[("mobile", 5)]));
    create(&mut l, "a", "201", Some("basic"));
    run(&mut l, Op::Unassign { id: "a".into() }).unwrap();
    let err = run(&mut l, add("a", "mobile")).unwrap_err();
    assert!(matches!(err, SeatError::AddonNeedsProfile { .. }), "{err}");
    assert_eq!(l.entitlement("a").unwrap().profile().map(|g| g.code), None);
    assert_eq!(
        l.entitlement("a").unwrap().report().missing,
        Vec::<String>::new()
    );
}

#[test]
fn unassigning_a_profile_under_addons_is_refused() {
    let mut l = ledger(hard(&[("basic", 5)], &[("mobile", 5)]));
    create(&mut l, "a", "201", Some("basic"));
    run(&mut l, add("a", "mobile")).unwrap();
    let err = run(&mut l, Op::Unassign { id: "a".into() }).unwrap_err();
    assert_eq!(
        err.to_string(),
        "user 'a' still holds the add-ons mobile; remove them before unassigning the profile"
    );
}

#[test]
fn an_addon_of_a_user_without_a_profile_seat_is_not_licensed_and_frees_its_unit() {
    let mut l = ledger(soft(&[("premium", 1)], &[("mobile", 1)]));
    create(&mut l, "a", "201", Some("premium"));
    create(&mut l, "b", "202", Some("premium"));
    // b added mobile first, but b has no premium seat: the unit goes to a.
    run(&mut l, add("b", "mobile")).unwrap();
    run(&mut l, add("a", "mobile")).unwrap();
    let b = l.entitlement("b").unwrap();
    let g = b.addons().next().unwrap();
    assert_eq!(
        (g.reason, g.missing),
        (Some(Reason::NeedsProfile), Some("premium"))
    );
    assert!(l.entitlement("a").unwrap().has("mobile"));
    assert_eq!(summary(&l, "mobile").used, 2);
}

#[test]
fn addon_prerequisites_are_checked_when_adding() {
    let mut l = ledger(catalog_with_prereqs(
        Enforcement::Hard,
        &[("recording", 5), ("ai_notes", 5)],
    ));
    create(&mut l, "a", "201", Some("basic"));
    let err = run(&mut l, add("a", "recording")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "the add-on recording of user 'a' needs the profile business or a higher one, which the user's profile basic is not"
    );
    run(&mut l, assign("a", "business")).unwrap();
    // Business now, but the license has no server.
    let err = run(&mut l, add("a", "recording")).unwrap_err();
    assert!(
        err.to_string().contains("the system license server"),
        "{err}"
    );

    let mut l = ledger(catalog_with_prereqs(
        Enforcement::Hard,
        &[("recording", 5), ("ai_notes", 5), ("server", 1)],
    ));
    create(&mut l, "a", "201", Some("business"));
    let err = run(&mut l, add("a", "ai_notes")).unwrap_err();
    assert!(
        err.to_string().contains("needs the add-on recording"),
        "{err}"
    );
    run(&mut l, add("a", "recording")).unwrap();
    run(&mut l, add("a", "ai_notes")).unwrap();
    assert!(l.entitlement("a").unwrap().has("ai_notes"));
    // The prerequisites cannot be pulled away from under it.
    let err = run(
        &mut l,
        Op::RemoveAddon {
            id: "a".into(),
            code: "recording".into(),
        },
    )
    .unwrap_err();
    assert!(
        matches!(err, SeatError::BreaksPrerequisite { ref addon, .. } if addon == "ai_notes"),
        "{err}"
    );
    let err = run(&mut l, assign("a", "basic")).unwrap_err();
    assert!(
        matches!(err, SeatError::BreaksPrerequisite { ref addon, .. } if addon == "recording"),
        "{err}"
    );
    // A higher tier satisfies "business or higher" (soft mode: no premium
    // seat was bought, so the assignment is over-use, not a refusal).
    l.set_limits(catalog_with_prereqs(
        Enforcement::Soft,
        &[("recording", 5), ("ai_notes", 5), ("server", 1)],
    ));
    run(&mut l, assign("a", "premium")).unwrap();
    // Without a premium seat the add-ons wait for the profile.
    let e = l.entitlement("a").unwrap();
    let g = e.addons().find(|g| g.code == "recording").unwrap();
    assert_eq!(
        (g.reason, g.missing),
        (Some(Reason::NeedsProfile), Some("premium"))
    );
}

#[test]
fn a_missing_prerequisite_after_a_license_change_names_it() {
    let with_server = &[("recording", 5), ("ai_notes", 5), ("server", 1)];
    let mut l = ledger(catalog_with_prereqs(Enforcement::Soft, with_server));
    create(&mut l, "a", "201", Some("business"));
    run(&mut l, add("a", "recording")).unwrap();
    run(&mut l, add("a", "ai_notes")).unwrap();
    // The new license lacks the server: recording and, through it, ai_notes
    // stop; each says what it misses.
    l.set_limits(catalog_with_prereqs(
        Enforcement::Soft,
        &[("recording", 5), ("ai_notes", 5)],
    ));
    let e = l.entitlement("a").unwrap();
    let missing: BTreeMap<&str, Option<&str>> = e.addons().map(|g| (g.code, g.missing)).collect();
    assert_eq!(missing["recording"], Some("server"));
    assert_eq!(missing["ai_notes"], Some("recording"));
    assert!(e.licensed(), "the profile itself is fine");
    // Unrelated changes still go through.
    run(
        &mut l,
        Op::Update {
            id: "a".into(),
            update: UserUpdate {
                number: Some(Some("+41 44 000".into())),
                ..Default::default()
            },
        },
    )
    .unwrap();
}

#[test]
fn addon_units_per_seat_multiply() {
    let mut p = payload(Enforcement::Hard, &[("basic", 30)], &[("mobile", 2)]);
    for e in &mut p.catalog {
        if e.code == "mobile" {
            e.units_per_seat = 10;
        }
    }
    let mut l = ledger(Limits::from_payload(&p));
    for i in 0..21 {
        let id = format!("u{i}");
        create(&mut l, &id, &format!("{}", 200 + i), Some("basic"));
        let r = run(&mut l, add(&id, "mobile"));
        assert_eq!(r.is_ok(), i < 20, "user {i}");
    }
    assert_eq!(summary(&l, "mobile").licensed, 20);
}

#[test]
fn a_prerequisite_cycle_never_licenses_and_does_not_hang() {
    let mut p = payload(Enforcement::Soft, &[("basic", 5)], &[("x", 5), ("y", 5)]);
    let entry = |code: &str, req: &str| CatalogEntry {
        code: code.into(),
        name: code.into(),
        kind: EntryKind::AddOn,
        tier: 0,
        free: false,
        requires: vec![req.into(), "nowhere".into()],
        units_per_seat: 1,
    };
    p.catalog.push(entry("x", "y"));
    p.catalog.push(entry("y", "x"));
    let limits = Limits::from_payload(&p);
    let users = vec![User {
        id: "a".into(),
        name: "A".into(),
        extension: "201".into(),
        number: None,
        kind: UserKind::Regular,
        profile: Some(Held {
            code: "basic".into(),
            seq: 1,
        }),
        addons: vec![
            Held {
                code: "x".into(),
                seq: 2,
            },
            Held {
                code: "y".into(),
                seq: 2,
            },
        ],
    }];
    let l = Ledger::load(limits, LedgerSettings::default(), users);
    let e = l.entitlement("a").unwrap();
    assert!(e.addons().all(|g| g.reason == Some(Reason::Requires)));
    // The unknown code is not shown as a catalog entry.
    assert!(l.summary().iter().all(|s| s.code != "nowhere"));
}

// ---- bad input ----

#[test]
fn unknown_codes_users_and_duplicates_are_refused() {
    let mut l = ledger(soft(&[("basic", 5)], &[("mobile", 5)]));
    create(&mut l, "a", "201", Some("basic"));
    let err = run(&mut l, assign("a", "platinum")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "there is no profile 'platinum' in the license; its profiles are: basic, essential, business, premium, wizyconf, service"
    );
    // An add-on is not a profile, and a profile is not an add-on.
    assert!(matches!(
        run(&mut l, assign("a", "mobile")),
        Err(SeatError::UnknownProfile { .. })
    ));
    assert!(matches!(
        run(&mut l, add("a", "premium")),
        Err(SeatError::UnknownAddon { .. })
    ));
    assert!(matches!(
        run(&mut l, add("a", "fax")),
        Err(SeatError::UnknownAddon { .. })
    ));
    assert!(matches!(
        run(&mut l, assign("zz", "basic")),
        Err(SeatError::UnknownUser { ref id }) if id == "zz"
    ));
    assert!(l.entitlement("zz").is_none());
    assert!(matches!(
        run(&mut l, Op::Create(new_user("a", "299", Some("basic")))),
        Err(SeatError::DuplicateUser { .. })
    ));
    let err = run(&mut l, Op::Create(new_user("b", "201", Some("basic")))).unwrap_err();
    assert_eq!(err.to_string(), "extension 201 belongs to user 'a' already");
    create(&mut l, "b", "202", Some("basic"));
    assert!(matches!(
        run(
            &mut l,
            Op::Update {
                id: "b".into(),
                update: UserUpdate {
                    extension: Some("201".into()),
                    ..Default::default()
                }
            }
        ),
        Err(SeatError::DuplicateExtension { .. })
    ));
    assert!(matches!(
        run(
            &mut l,
            Op::RemoveAddon {
                id: "b".into(),
                code: "mobile".into()
            }
        ),
        Err(SeatError::AddonNotHeld { .. })
    ));
    for bad in [
        new_user("bad id", "203", None),
        new_user("c", "2 03", None),
        NewUser {
            name: " padded".into(),
            ..new_user("c", "203", None)
        },
        NewUser {
            number: Some("call me".into()),
            ..new_user("c", "203", None)
        },
    ] {
        let err = run(&mut l, Op::Create(bad)).unwrap_err();
        assert!(matches!(err, SeatError::Invalid { .. }), "{err}");
    }
}

#[test]
fn a_stale_plan_is_refused() {
    let mut l = ledger(soft(&[("basic", 5)], &[]));
    create(&mut l, "a", "201", Some("basic"));
    let stale = l.plan(assign("a", "premium"), ROOT, NOW).unwrap();
    create(&mut l, "b", "202", Some("basic"));
    assert!(matches!(l.commit(stale), Err(SeatError::StalePlan)));
    assert_eq!(l.user("a").unwrap().profile_code(), Some("basic"));
}

// ---- with the store ----

#[test]
fn two_callers_for_the_last_seat_exactly_one_wins() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = store_in(&dir);
    let mut l = ledger(hard(&[("premium", 3), ("basic", 10)], &[]));
    for (id, ext, p) in [
        ("a", "201", "premium"),
        ("b", "202", "premium"),
        ("x", "301", "basic"),
        ("y", "302", "basic"),
    ] {
        let op = Op::Create(new_user(id, ext, Some(p)));
        apply(&mut l, &mut store, op, ROOT, NOW).unwrap();
    }
    // The daemon's design: one lock around the ledger and the store.
    let shared = Arc::new(Mutex::new((l, store)));
    let start = Arc::new(Barrier::new(2));
    let threads: Vec<_> = ["x", "y"]
        .into_iter()
        .enumerate()
        .map(|(n, id)| {
            let shared = Arc::clone(&shared);
            let start = Arc::clone(&start);
            std::thread::spawn(move || {
                start.wait();
                let mut guard = shared.lock().unwrap();
                let (l, s) = &mut *guard;
                apply(l, s, assign(id, "premium"), 1000 + n as u32, NOW).map(|_| id)
            })
        })
        .collect();
    let results: Vec<Result<&str, SeatError>> =
        threads.into_iter().map(|t| t.join().unwrap()).collect();
    let winners: Vec<&str> = results
        .iter()
        .filter_map(|r| r.as_ref().ok().copied())
        .collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    let loser = results.iter().find_map(|r| r.as_ref().err()).unwrap();
    assert!(
        matches!(
            loser,
            SeatError::NoSeat {
                used: 3,
                purchased: 3,
                ..
            }
        ),
        "{loser}"
    );

    let (l, store) = &*shared.lock().unwrap();
    assert_eq!(summary(l, "premium").used, 3);
    // The store agrees with memory, and the audit names the winner.
    let reloaded = load(
        store,
        hard(&[("premium", 3), ("basic", 10)], &[]),
        LedgerSettings::default(),
    )
    .unwrap();
    assert_eq!(holders(&reloaded, "premium"), holders(l, "premium"));
    let last = store
        .seat_audit(&AuditQuery {
            code: Some("premium".into()),
            limit: 1,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(last[0].record.user_id, winners[0]);
}

#[test]
fn memory_is_unchanged_when_the_store_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = store_in(&dir);
    let mut l = ledger(soft(&[("basic", 5)], &[]));
    apply(
        &mut l,
        &mut store,
        Op::Create(new_user("a", "201", Some("basic"))),
        ROOT,
        NOW,
    )
    .unwrap();
    // Another writer breaks the table behind the agent's back.
    let conn = rusqlite::Connection::open(dir.path().join("licagent.db")).unwrap();
    conn.execute_batch("DROP TABLE user_addons").unwrap();
    drop(conn);
    let err = apply(&mut l, &mut store, assign("a", "premium"), ROOT, NOW).unwrap_err();
    assert!(matches!(err, SeatError::Store(_)), "{err}");
    assert_eq!(l.user("a").unwrap().profile_code(), Some("basic"));
}

#[test]
fn every_change_writes_an_audit_row_with_totals_after() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = store_in(&dir);
    let mut l = ledger(hard(&[("premium", 2), ("basic", 5)], &[("mobile", 3)]));
    apply(
        &mut l,
        &mut store,
        Op::Create(new_user("a", "201", Some("basic"))),
        1000,
        NOW,
    )
    .unwrap();
    apply(&mut l, &mut store, assign("a", "premium"), 1001, NOW + 1).unwrap();
    apply(&mut l, &mut store, add("a", "mobile"), 1002, NOW + 2).unwrap();
    apply(
        &mut l,
        &mut store,
        Op::Delete { id: "a".into() },
        1003,
        NOW + 3,
    )
    .unwrap();
    // An unchanged reassignment writes nothing.
    apply(
        &mut l,
        &mut store,
        Op::Create(new_user("b", "202", Some("basic"))),
        1004,
        NOW + 4,
    )
    .unwrap();
    apply(&mut l, &mut store, assign("b", "basic"), 1005, NOW + 5).unwrap();

    let rows = store.seat_audit(&AuditQuery::default()).unwrap();
    let actions: Vec<(AuditAction, u32, &str)> = rows
        .iter()
        .rev()
        .map(|e| {
            (
                e.record.action,
                e.record.caller_uid,
                e.record.user_id.as_str(),
            )
        })
        .collect();
    assert_eq!(
        actions,
        [
            (AuditAction::Create, 1000, "a"),
            (AuditAction::Assign, 1001, "a"),
            (AuditAction::AddAddon, 1002, "a"),
            (AuditAction::Delete, 1003, "a"),
            (AuditAction::Create, 1004, "b"),
        ]
    );
    let assign_row = &rows[3].record;
    assert_eq!(assign_row.at, NOW + 1);
    assert_eq!(
        assign_row.before.as_ref().unwrap().profile.as_deref(),
        Some("basic")
    );
    assert_eq!(
        assign_row.after.as_ref().unwrap().profile.as_deref(),
        Some("premium")
    );
    assert_eq!(
        assign_row.totals,
        BTreeMap::from([
            (
                "basic".to_string(),
                SeatTotal {
                    used: 0,
                    purchased: Some(5)
                }
            ),
            (
                "premium".to_string(),
                SeatTotal {
                    used: 1,
                    purchased: Some(2)
                }
            ),
        ])
    );
    let delete_row = &rows[1].record;
    assert!(delete_row.after.is_none());
    assert_eq!(delete_row.totals["premium"].used, 0);
    assert_eq!(delete_row.totals["mobile"].used, 0);
}

// ---- bulk import ----

const HEADER: &str = "extension,number,name,profile,mobile,team_chat\n";

#[test]
fn an_import_creates_and_updates_users_in_one_change() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = store_in(&dir);
    let mut l = ledger(hard(
        &[("basic", 5), ("premium", 2), ("essential", 5)],
        &[("mobile", 5), ("team_chat", 5)],
    ));
    apply(
        &mut l,
        &mut store,
        Op::Create(new_user("ann", "201", Some("basic"))),
        ROOT,
        NOW,
    )
    .unwrap();
    apply(&mut l, &mut store, add("ann", "team_chat"), ROOT, NOW).unwrap();
    let csv = format!(
        "{HEADER}201,+41 1,Ann Smith,premium,1,0\n202,,Bob,,yes,\n203,,\"Lee, Carl\",basic,0,0\n"
    );
    let import = l.plan_import(csv.as_bytes(), 1000, NOW).unwrap();
    assert_eq!(
        (
            import.preview.rows,
            import.preview.created,
            import.preview.updated,
            import.preview.unchanged
        ),
        (3, 2, 1, 0)
    );
    let premium = import
        .preview
        .summary
        .iter()
        .find(|s| s.code == "premium")
        .unwrap();
    assert_eq!(premium.used, 1);
    // A dry run is the plan without the commit: nothing changed.
    assert_eq!(l.len(), 1);
    assert_eq!(store.load_users().unwrap().len(), 1);

    commit(&mut l, &mut store, import.plan).unwrap();
    let ann = l.user("ann").unwrap();
    assert_eq!(ann.name, "Ann Smith");
    assert_eq!(ann.number.as_deref(), Some("+41 1"));
    assert_eq!(ann.profile_code(), Some("premium"));
    assert!(ann.holds_addon("mobile") && !ann.holds_addon("team_chat"));
    // New users get their extension as id; an empty profile is the default.
    assert_eq!(l.user("202").unwrap().profile_code(), Some("essential"));
    assert_eq!(l.user("203").unwrap().name, "Lee, Carl");
    assert_eq!(l.entitlement_by_extension("203").unwrap().user().id, "203");
    assert_eq!(store.load_users().unwrap().len(), 3);
    let audit = store.seat_audit(&AuditQuery::default()).unwrap();
    assert_eq!(
        audit
            .iter()
            .filter(|e| e.record.action == AuditAction::Import)
            .count(),
        3
    );

    // The same file again changes nothing.
    let again = l.plan_import(csv.as_bytes(), 1000, NOW).unwrap();
    assert_eq!(again.preview.unchanged, 3);
    assert!(again.plan.is_empty());
}

#[test]
fn a_bad_import_reports_every_bad_row_and_changes_nothing() {
    let mut l = ledger(hard(&[("basic", 5)], &[("mobile", 5), ("team_chat", 5)]));
    create(&mut l, "x", "300", Some("basic"));
    let csv = format!(
        "{HEADER}201,,Ann,basic,1,0\n\
         202,,Bob,platinum,0,0\n\
         203,,Carl,basic,maybe,0\n\
         300,,X,,0,0\n\
         204,,Dora,basic\n\
         201,,Ann twice,basic,0,0\n"
    );
    let err = l.plan_import(csv.as_bytes(), ROOT, NOW).unwrap_err();
    let lines: Vec<usize> = err.rows().iter().map(|r| r.line).collect();
    assert_eq!(lines, [3, 4, 6, 7], "{err}");
    assert!(err.rows()[0].reason.contains("no profile 'platinum'"));
    let msg = err.to_string();
    assert!(
        msg.starts_with("the import was refused and nothing was changed; 4 bad rows: line 3:"),
        "{msg}"
    );
    assert_eq!(l.len(), 1);
}

#[test]
fn an_import_with_an_unknown_addon_column_is_refused_whole() {
    let l = ledger(hard(&[("basic", 5)], &[]));
    let err = l
        .plan_import(
            b"extension,number,name,profile,fax\n201,,Ann,basic,1\n",
            ROOT,
            NOW,
        )
        .unwrap_err();
    assert!(
        matches!(err, ImportError::UnknownColumn { ref column, .. } if column == "fax"),
        "{err}"
    );
    let err = l.plan_import(b"ext,name\n", ROOT, NOW).unwrap_err();
    assert!(
        matches!(err, ImportError::Csv(csv::CsvError::BadHeader { .. })),
        "{err}"
    );
    let err = l
        .plan_import(
            b"extension,number,name,profile\n201,,M\xfcller,basic\n",
            ROOT,
            NOW,
        )
        .unwrap_err();
    assert!(
        matches!(
            err,
            ImportError::Csv(csv::CsvError::NotUtf8 { line: 2, .. })
        ),
        "{err}"
    );
}

#[test]
fn a_hard_mode_import_names_the_rows_beyond_the_seats_after_counting_releases() {
    let mut l = ledger(hard(&[("premium", 2), ("basic", 10)], &[]));
    create(&mut l, "a", "201", Some("premium"));
    create(&mut l, "b", "202", Some("premium"));
    // Row 2 takes premium before row 4 frees one: releases count first, so
    // row 2 fits; row 3 does not.
    let csv = "extension,number,name,profile\n\
               203,,C,premium\n\
               204,,D,premium\n\
               201,,A,basic\n";
    let err = l.plan_import(csv.as_bytes(), ROOT, NOW).unwrap_err();
    assert_eq!(err.rows().len(), 1, "{err}");
    assert_eq!(err.rows()[0].line, 3);
    assert!(err.rows()[0]
        .reason
        .contains("no Premium seat is free: 2 bought, 2 in use"));
    // In soft mode the same file passes, with the over-use in the preview.
    l.set_limits(soft(&[("premium", 2), ("basic", 10)], &[]));
    let ok = l.plan_import(csv.as_bytes(), ROOT, NOW).unwrap();
    assert_eq!(ok.preview.over_use.len(), 1);
    assert_eq!(ok.preview.over_use[0].used, 3);
}

#[test]
fn an_import_refuses_an_addon_without_its_prerequisite() {
    let l = ledger(catalog_with_prereqs(Enforcement::Soft, &[("recording", 5)]));
    let csv = "extension,number,name,profile,recording\n201,,Ann,basic,1\n202,,Bob,business,0\n";
    let err = l.plan_import(csv.as_bytes(), ROOT, NOW).unwrap_err();
    assert_eq!(err.rows().len(), 1);
    assert_eq!(err.rows()[0].line, 2);
    assert!(
        err.rows()[0].reason.contains("needs the profile business"),
        "{err}"
    );
}

#[test]
fn an_import_row_whose_new_id_is_taken_is_refused() {
    let mut l = ledger(soft(&[("basic", 5)], &[]));
    create(&mut l, "205", "999", Some("basic"));
    let err = l
        .plan_import(
            b"extension,number,name,profile\n205,,New,basic\n",
            ROOT,
            NOW,
        )
        .unwrap_err();
    assert!(
        err.rows()[0]
            .reason
            .contains("taken by the user with extension 999"),
        "{err}"
    );
}

// ---- queries ----

#[test]
fn search_filters_by_profile_addon_text_and_status() {
    let mut l = ledger(soft(&[("premium", 1), ("basic", 5)], &[("mobile", 5)]));
    create(&mut l, "a", "201", Some("premium"));
    create(&mut l, "b", "202", Some("premium"));
    create(&mut l, "c", "310", Some("basic"));
    run(&mut l, add("c", "mobile")).unwrap();
    run(
        &mut l,
        Op::Update {
            id: "c".into(),
            update: UserUpdate {
                name: Some("Carla Jones".into()),
                ..Default::default()
            },
        },
    )
    .unwrap();
    let ids = |q: UserQuery| -> Vec<String> { l.search(&q).into_iter().map(|r| r.id).collect() };
    assert_eq!(ids(UserQuery::default()), ["a", "b", "c"]);
    assert_eq!(
        ids(UserQuery {
            profile: Some("premium".into()),
            ..Default::default()
        }),
        ["a", "b"]
    );
    assert_eq!(
        ids(UserQuery {
            addon: Some("mobile".into()),
            ..Default::default()
        }),
        ["c"]
    );
    assert_eq!(
        ids(UserQuery {
            text: Some("JONES".into()),
            ..Default::default()
        }),
        ["c"]
    );
    assert_eq!(
        ids(UserQuery {
            text: Some("20".into()),
            ..Default::default()
        }),
        ["a", "b"]
    );
    assert_eq!(
        ids(UserQuery {
            licensed: Some(false),
            ..Default::default()
        }),
        ["b"]
    );
    assert_eq!(
        ids(UserQuery {
            offset: 1,
            limit: 1,
            ..Default::default()
        }),
        ["b"]
    );
    assert_eq!(
        l.seats_in_use(),
        BTreeMap::from([
            ("basic".to_string(), 1),
            ("business".to_string(), 0),
            ("call_recording".to_string(), 0),
            ("desktop_app".to_string(), 0),
            ("essential".to_string(), 0),
            ("ip_phone".to_string(), 0),
            ("mobile".to_string(), 1),
            ("number".to_string(), 0),
            ("premium".to_string(), 2),
            ("service".to_string(), 0),
            ("team_chat".to_string(), 0),
            ("web_phone".to_string(), 0),
            ("wizyconf".to_string(), 0),
        ])
    );
}

#[test]
fn deleting_a_user_frees_its_seats_and_its_extension() {
    let mut l = ledger(hard(&[("premium", 1)], &[]));
    create(&mut l, "a", "201", Some("premium"));
    create(&mut l, "z", "299", Some("service"));
    run(&mut l, Op::Delete { id: "a".into() }).unwrap();
    // The slot of "a" was reused by "z": its indexes must follow.
    assert_eq!(l.entitlement_by_extension("299").unwrap().user().id, "z");
    assert!(l.entitlement_by_extension("201").is_none());
    create(&mut l, "b", "201", Some("premium"));
    assert_eq!(holders(&l, "premium"), ["b"]);
}
