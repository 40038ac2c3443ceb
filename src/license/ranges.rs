//! Range checks on a verified payload. A signature proves who wrote the
//! numbers, not that they are sane: a vendor tool with a bug can sign
//! `issued_at = i64::MIN`. Every number the rest of the agent does
//! arithmetic on is held to a range here, where a license enters, so that
//! the timers, the refresh plan and the seat counts never see a value that
//! could overflow. See `docs/license-format.md`, "Ranges".

use super::payload::LicensePayload;

/// The earliest time a license may name (the Unix epoch).
pub const MIN_TIME: i64 = 0;
/// The latest time a license may name: 9999-12-31T23:59:59Z, the last
/// second RFC 3339 can write.
pub const MAX_TIME: i64 = 253_402_300_799;
/// The longest grace period: 100 years (a grace longer than the term is
/// allowed; it only means "never expires for lack of the portal").
pub const MAX_GRACE_SECS: i64 = 100 * 366 * 86_400;
/// The most seats or add-on units one code may carry.
pub const MAX_QUANTITY: u32 = 1_000_000;
/// The most units one bought seat may grant.
pub const MAX_UNITS_PER_SEAT: u32 = 1_000_000;
/// The most entries a catalog, and the most hardware components a license,
/// may list.
pub const MAX_ENTRIES: usize = 10_000;

/// `Err` names the first field out of range, its value and the range.
pub fn check(p: &LicensePayload) -> Result<(), String> {
    time("issued_at", p.issued_at)?;
    if let Some(end) = p.term.ends_at {
        time("term.ends_at", end)?;
    }
    if let Some(due) = p.refresh_due {
        time("refresh_due", due)?;
    }
    if !(0..=MAX_GRACE_SECS).contains(&p.grace_secs) {
        return Err(format!(
            "grace_secs = {} is outside 0..={MAX_GRACE_SECS}",
            p.grace_secs
        ));
    }
    for (what, map) in [("seats", &p.seats), ("addons", &p.addons)] {
        for (code, &n) in map {
            if n > MAX_QUANTITY {
                return Err(format!("{what}.{code} = {n} is outside 0..={MAX_QUANTITY}"));
            }
        }
    }
    if p.catalog.len() > MAX_ENTRIES || p.hardware.len() > MAX_ENTRIES {
        return Err(format!(
            "the catalog ({}) or the hardware list ({}) has more than {MAX_ENTRIES} entries",
            p.catalog.len(),
            p.hardware.len()
        ));
    }
    if let Some(t) = &p.test_mode {
        const MAX_SESSION: i64 = 8 * 3600;
        if !(0..=MAX_SESSION).contains(&t.max_secs) {
            return Err(format!(
                "test_mode.max_secs = {} is outside 0..={MAX_SESSION}",
                t.max_secs
            ));
        }
        if !(0..=MAX_GRACE_SECS).contains(&t.cooldown_secs) {
            return Err(format!(
                "test_mode.cooldown_secs = {} is outside 0..={MAX_GRACE_SECS}",
                t.cooldown_secs
            ));
        }
    }
    for e in &p.catalog {
        if !(1..=MAX_UNITS_PER_SEAT).contains(&e.units_per_seat) {
            return Err(format!(
                "catalog entry {}: units_per_seat = {} is outside 1..={MAX_UNITS_PER_SEAT}",
                e.code, e.units_per_seat
            ));
        }
    }
    Ok(())
}

fn time(field: &str, value: i64) -> Result<(), String> {
    if (MIN_TIME..=MAX_TIME).contains(&value) {
        Ok(())
    } else {
        Err(format!(
            "{field} = {value} is outside {MIN_TIME}..={MAX_TIME} (1970 to the year 9999)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::license::payload::{Enforcement, LicenseKind, Term, TermKind, PAYLOAD_FORMAT};
    use crate::license::{sign, verify, KeyRing, LicenseError, SigningKey};

    fn payload() -> LicensePayload {
        LicensePayload {
            format: PAYLOAD_FORMAT,
            license_id: "lic-range".into(),
            system_id: "SYS-1".into(),
            pbx_name: "Range".into(),
            hardware_id: "hw".into(),
            hardware: Vec::new(),
            kind: LicenseKind::Full,
            issued_at: 1_700_000_000,
            term: Term {
                kind: TermKind::Yearly,
                ends_at: Some(1_800_000_000),
            },
            refresh_due: Some(1_700_086_400),
            grace_secs: 14 * 86_400,
            enforcement: Enforcement::Soft,
            seats: BTreeMap::from([("basic".into(), 5)]),
            addons: BTreeMap::new(),
            catalog: LicensePayload::demo_catalog(),
            device_public_key: None,
            nonce: None,
            test_mode: None,
        }
    }

    fn verify_signed(p: &LicensePayload) -> Result<LicensePayload, LicenseError> {
        let (key, _) = SigningKey::generate();
        let mut ring = KeyRing::empty();
        ring.add(key.public_key());
        verify(&sign(p, &key), &ring)
    }

    /// The reproducer of issue 10: signed by a trusted key, `issued_at =
    /// i64::MIN` was installed and crashed every later start.
    #[test]
    fn a_signed_license_with_issued_at_min_is_refused_by_name() {
        let mut p = payload();
        p.issued_at = i64::MIN;
        let err = verify_signed(&p).unwrap_err();
        assert!(matches!(err, LicenseError::OutOfRange(_)), "{err:?}");
        assert!(err.to_string().contains("issued_at"), "{err}");
    }

    #[test]
    fn every_ranged_field_is_checked_at_both_ends() {
        assert!(verify_signed(&payload()).is_ok());
        type Change = Box<dyn Fn(&mut LicensePayload)>;
        let cases: Vec<(&str, Change)> = vec![
            ("issued_at", Box::new(|p| p.issued_at = -1)),
            ("issued_at", Box::new(|p| p.issued_at = MAX_TIME + 1)),
            (
                "term.ends_at",
                Box::new(|p| p.term.ends_at = Some(i64::MAX)),
            ),
            ("refresh_due", Box::new(|p| p.refresh_due = Some(i64::MIN))),
            ("grace_secs", Box::new(|p| p.grace_secs = -1)),
            ("grace_secs", Box::new(|p| p.grace_secs = i64::MAX)),
            (
                "seats.basic",
                Box::new(|p| {
                    p.seats.insert("basic".into(), u32::MAX);
                }),
            ),
            (
                "addons.mobile",
                Box::new(|p| {
                    p.addons.insert("mobile".into(), MAX_QUANTITY + 1);
                }),
            ),
            (
                "units_per_seat",
                Box::new(|p| p.catalog[0].units_per_seat = 0),
            ),
            (
                "units_per_seat",
                Box::new(|p| p.catalog[0].units_per_seat = u32::MAX),
            ),
            (
                "test_mode.max_secs",
                Box::new(|p| {
                    p.test_mode = Some(crate::license::payload::TestModePolicy {
                        max_secs: i64::MAX,
                        ..crate::license::payload::TestModePolicy::DEFAULT
                    })
                }),
            ),
            (
                "test_mode.cooldown_secs",
                Box::new(|p| {
                    p.test_mode = Some(crate::license::payload::TestModePolicy {
                        cooldown_secs: -1,
                        ..crate::license::payload::TestModePolicy::DEFAULT
                    })
                }),
            ),
        ];
        for (field, change) in cases {
            let mut p = payload();
            change(&mut p);
            let err = check(&p).unwrap_err();
            assert!(err.contains(field), "{field}: {err}");
        }
        // The edges themselves are in range.
        let mut p = payload();
        p.issued_at = MIN_TIME;
        p.term.ends_at = Some(MAX_TIME);
        p.grace_secs = MAX_GRACE_SECS;
        p.seats.insert("basic".into(), MAX_QUANTITY);
        assert_eq!(check(&p), Ok(()));
    }
}
