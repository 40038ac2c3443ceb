//! Regression tests for sequence numbers at the edge of their range
//! (issue 10: an export with sequence `i64::MAX` made every later import
//! panic in debug builds and wrap in release builds).

use super::*;
use crate::license::{Enforcement, LicenseKind, LicensePayload, Term, TermKind};

fn limits() -> Limits {
    Limits::from_payload(&LicensePayload {
        format: crate::license::payload::PAYLOAD_FORMAT,
        license_id: "L1".into(),
        system_id: "S1".into(),
        pbx_name: "pbx".into(),
        hardware_id: "hw".into(),
        hardware: Vec::new(),
        kind: LicenseKind::Full,
        issued_at: 1_700_000_000,
        term: Term {
            kind: TermKind::Lifetime,
            ends_at: None,
        },
        refresh_due: None,
        grace_secs: 0,
        enforcement: Enforcement::Soft,
        seats: [("basic".to_string(), 5)].into_iter().collect(),
        addons: [("mobile".to_string(), 5)].into_iter().collect(),
        catalog: LicensePayload::demo_catalog(),
        device_public_key: None,
        nonce: None,
        test_mode: None,
    })
}

fn user(id: &str, ext: &str, seq: i64) -> User {
    User {
        id: id.into(),
        name: id.into(),
        extension: ext.into(),
        number: None,
        kind: UserKind::Regular,
        profile: Some(Held {
            code: "basic".into(),
            seq,
        }),
        addons: Vec::new(),
    }
}

#[test]
fn check_seq_takes_one_to_max_and_nothing_else() {
    assert!(check_seq(1).is_ok());
    assert!(check_seq(MAX_SEQ).is_ok());
    for bad in [0, -1, MAX_SEQ + 1, i64::MAX, i64::MIN] {
        let err = check_seq(bad).unwrap_err();
        assert!(err.contains(&bad.to_string()), "{err}");
    }
}

/// The reproducer: a holding at `i64::MAX` already in the ledger (as a
/// restore before the range check left it), then an import that changes
/// rows. It used to overflow `seq + 1`.
#[test]
fn an_import_after_a_holding_at_i64_max_does_not_overflow() {
    let mut l = Ledger::new(limits(), LedgerSettings::default());
    l.put(user("ann", "201", i64::MAX));
    l.put(user("bob", "202", 5));
    let csv = "extension,number,name,profile,mobile\n201,,Ann,basic,1\n202,,Bob B,basic,1\n203,,Cy,basic,0\n";
    let import = l.plan_import(csv.as_bytes(), 0, 1_700_000_000).unwrap();
    assert_eq!(import.preview.rows, 3);
    l.commit(import.plan).unwrap();
    // Nothing wrapped: no holding went negative (which would have put it
    // first in the seat order).
    assert!(l
        .users()
        .flat_map(|u| u.profile.iter().chain(&u.addons))
        .all(|h| h.seq > 0));
}
