//! What a customer bought for one PBX, as the admin types it: the term and
//! its arithmetic, seat and add-on counts checked against the catalog, and
//! the identifiers the portal hands out (system serials, license ids).

use std::collections::BTreeMap;

use data_encoding::HEXLOWER;
use licagent::license::{CatalogEntry, Enforcement, EntryKind, LicensePayload, TermKind};
use ring::rand::{SecureRandom, SystemRandom};

const DAY: i64 = 24 * 60 * 60;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OrderError {
    #[error("unknown term {0:?}; use monthly, yearly, 5y or lifetime")]
    Term(String),
    #[error("unknown enforcement {0:?}; use soft or hard")]
    Enforcement(String),
    #[error("{0:?} is not of the form code=count (e.g. premium=5,essential=10)")]
    Count(String),
    #[error("{what} {code:?} is not in the catalog; valid codes are: {valid}")]
    UnknownCode {
        what: &'static str,
        code: String,
        valid: String,
    },
    #[error("the code {0:?} is given twice")]
    Duplicate(String),
    #[error("the system's random number generator failed; try again")]
    Random,
}

/// Parses `monthly|yearly|5y|lifetime`.
pub fn parse_term(s: &str) -> Result<TermKind, OrderError> {
    match s.trim().to_ascii_lowercase().as_str() {
        "monthly" => Ok(TermKind::Monthly),
        "yearly" => Ok(TermKind::Yearly),
        "5y" => Ok(TermKind::FiveYears),
        "lifetime" => Ok(TermKind::Lifetime),
        _ => Err(OrderError::Term(s.to_string())),
    }
}

/// The name people type for a term (inverse of [`parse_term`]).
pub fn term_name(kind: TermKind) -> &'static str {
    match kind {
        TermKind::Monthly => "monthly",
        TermKind::Yearly => "yearly",
        TermKind::FiveYears => "5y",
        TermKind::Lifetime => "lifetime",
    }
}

/// Length of a term: months are 30 days and years 365, so that an order's
/// end is easy to check by hand; lifetime has no end.
pub fn term_secs(kind: TermKind) -> Option<i64> {
    match kind {
        TermKind::Monthly => Some(30 * DAY),
        TermKind::Yearly => Some(365 * DAY),
        TermKind::FiveYears => Some(5 * 365 * DAY),
        TermKind::Lifetime => None,
    }
}

/// When a term started at `start` ends.
pub fn term_ends_at(kind: TermKind, start: i64) -> Option<i64> {
    term_secs(kind).map(|len| start.saturating_add(len))
}

pub fn parse_enforcement(s: &str) -> Result<Enforcement, OrderError> {
    match s.trim().to_ascii_lowercase().as_str() {
        "soft" => Ok(Enforcement::Soft),
        "hard" => Ok(Enforcement::Hard),
        _ => Err(OrderError::Enforcement(s.to_string())),
    }
}

pub fn enforcement_name(e: Enforcement) -> &'static str {
    match e {
        Enforcement::Soft => "soft",
        Enforcement::Hard => "hard",
    }
}

/// Which catalog entries a count list may name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CountKind {
    /// User profiles (`--seats`).
    Seats,
    /// Add-on and system licenses (`--addons`).
    Addons,
}

impl CountKind {
    fn accepts(self, kind: EntryKind) -> bool {
        match self {
            CountKind::Seats => kind == EntryKind::Base,
            CountKind::Addons => matches!(kind, EntryKind::AddOn | EntryKind::System),
        }
    }
    fn what(self) -> &'static str {
        match self {
            CountKind::Seats => "the profile",
            CountKind::Addons => "the add-on",
        }
    }
}

/// Parses `premium=5,essential=10` (an empty string is an empty list) and
/// refuses codes the catalog does not have for that use.
pub fn parse_counts(
    s: &str,
    kind: CountKind,
    catalog: &[CatalogEntry],
) -> Result<BTreeMap<String, u32>, OrderError> {
    let mut out = BTreeMap::new();
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (code, count) = item
            .split_once('=')
            .ok_or_else(|| OrderError::Count(item.to_string()))?;
        let code = code.trim().to_ascii_lowercase();
        let count: u32 = count
            .trim()
            .parse()
            .map_err(|_| OrderError::Count(item.to_string()))?;
        if !catalog
            .iter()
            .any(|e| e.code == code && kind.accepts(e.kind))
        {
            let valid: Vec<&str> = catalog
                .iter()
                .filter(|e| kind.accepts(e.kind))
                .map(|e| e.code.as_str())
                .collect();
            return Err(OrderError::UnknownCode {
                what: kind.what(),
                code,
                valid: valid.join(", "),
            });
        }
        if out.insert(code.clone(), count).is_some() {
            return Err(OrderError::Duplicate(code));
        }
    }
    Ok(out)
}

/// `premium=5,essential=10`, for people.
pub fn format_counts(counts: &BTreeMap<String, u32>) -> String {
    if counts.is_empty() {
        return "-".to_string();
    }
    counts
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The catalog every license carries.
pub fn catalog() -> Vec<CatalogEntry> {
    LicensePayload::demo_catalog()
}

/// The last second of year 9999, the end of what RFC 3339 can show.
const RFC3339_MAX: i64 = 253_402_300_799;

/// A time for people: RFC 3339, or raw seconds when out of its range
/// (`licagent::time::rfc3339` cannot format those, and some times here come
/// from outside: a device's `sent_at`, an admin's `--ends-at`).
pub fn when(secs: i64) -> String {
    if (0..=RFC3339_MAX).contains(&secs) {
        licagent::time::rfc3339(secs)
    } else {
        format!("{secs} (Unix seconds)")
    }
}

fn random_bytes<const N: usize>() -> Result<[u8; N], OrderError> {
    let mut b = [0u8; N];
    SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| OrderError::Random)?;
    Ok(b)
}

/// Crockford's base32 alphabet: no I, L, O or U, so that a serial read over
/// the phone is not mistaken.
const SERIAL_ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// `PREFIX-XXXX-XXXX` from 8 bytes, 5 bits of each.
pub fn system_id(prefix: &str, bytes: &[u8; 8]) -> String {
    let chars: String = bytes
        .iter()
        .map(|b| SERIAL_ALPHABET[(*b & 31) as usize] as char)
        .collect();
    format!("{prefix}-{}-{}", &chars[..4], &chars[4..])
}

/// A new system serial, `SYS-XXXX-XXXX`.
pub fn new_serial() -> Result<String, OrderError> {
    Ok(system_id("SYS", &random_bytes::<8>()?))
}

/// A new license id; every issued license has its own.
pub fn new_license_id() -> Result<String, OrderError> {
    Ok(format!("lic-{}", HEXLOWER.encode(&random_bytes::<12>()?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn term_lengths() {
        assert_eq!(term_ends_at(TermKind::Monthly, 1000), Some(1000 + 30 * DAY));
        assert_eq!(term_ends_at(TermKind::Yearly, 1000), Some(1000 + 365 * DAY));
        assert_eq!(
            term_ends_at(TermKind::FiveYears, 1000),
            Some(1000 + 5 * 365 * DAY)
        );
        assert_eq!(term_ends_at(TermKind::Lifetime, 1000), None);
        // No overflow panic at the far end of time.
        assert_eq!(term_ends_at(TermKind::Yearly, i64::MAX), Some(i64::MAX));
    }

    #[test]
    fn term_names_round_trip() {
        for kind in [
            TermKind::Monthly,
            TermKind::Yearly,
            TermKind::FiveYears,
            TermKind::Lifetime,
        ] {
            assert_eq!(parse_term(term_name(kind)), Ok(kind));
        }
        assert_eq!(parse_term(" Yearly "), Ok(TermKind::Yearly));
        assert!(matches!(parse_term("weekly"), Err(OrderError::Term(_))));
    }

    #[test]
    fn enforcement_parses() {
        assert_eq!(parse_enforcement("HARD"), Ok(Enforcement::Hard));
        assert_eq!(parse_enforcement("soft"), Ok(Enforcement::Soft));
        assert!(parse_enforcement("strict").is_err());
    }

    fn test_catalog() -> Vec<CatalogEntry> {
        let entry = |code: &str, kind| CatalogEntry {
            code: code.into(),
            name: code.into(),
            kind,
            tier: 1,
            free: false,
            requires: vec![],
            units_per_seat: 1,
        };
        vec![
            entry("essential", EntryKind::Base),
            entry("premium", EntryKind::Base),
            entry("mobile", EntryKind::AddOn),
            entry("datasource", EntryKind::System),
        ]
    }

    #[test]
    fn counts_parse_and_normalize() {
        let c = parse_counts(
            " Premium=5, essential = 10 ,",
            CountKind::Seats,
            &test_catalog(),
        )
        .unwrap();
        assert_eq!(
            c,
            BTreeMap::from([("essential".into(), 10), ("premium".into(), 5)])
        );
        assert_eq!(format_counts(&c), "essential=10,premium=5");
        assert!(parse_counts("", CountKind::Addons, &test_catalog())
            .unwrap()
            .is_empty());
    }

    #[test]
    fn counts_refuse_unknown_codes_and_list_valid_ones() {
        let err = parse_counts("platinum=1", CountKind::Seats, &test_catalog()).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("platinum") && msg.contains("essential, premium"),
            "{msg}"
        );
        // An add-on is not a seat profile, and a profile is not an add-on.
        assert!(parse_counts("mobile=1", CountKind::Seats, &test_catalog()).is_err());
        assert!(parse_counts("premium=1", CountKind::Addons, &test_catalog()).is_err());
        assert!(parse_counts("datasource=2,mobile=1", CountKind::Addons, &test_catalog()).is_ok());
    }

    #[test]
    fn counts_refuse_bad_syntax_and_duplicates() {
        let cat = test_catalog();
        assert!(matches!(
            parse_counts("premium", CountKind::Seats, &cat),
            Err(OrderError::Count(_))
        ));
        assert!(matches!(
            parse_counts("premium=-1", CountKind::Seats, &cat),
            Err(OrderError::Count(_))
        ));
        assert!(matches!(
            parse_counts("premium=1,PREMIUM=2", CountKind::Seats, &cat),
            Err(OrderError::Duplicate(_))
        ));
    }

    #[test]
    fn times_outside_rfc3339_do_not_panic() {
        assert_eq!(when(0), "1970-01-01T00:00:00Z");
        assert_eq!(when(RFC3339_MAX), "9999-12-31T23:59:59Z");
        assert_eq!(when(i64::MAX), format!("{} (Unix seconds)", i64::MAX));
        assert_eq!(when(-1), "-1 (Unix seconds)");
    }

    #[test]
    fn serials_have_the_documented_shape() {
        let s = new_serial().unwrap();
        assert_eq!(s.len(), 13);
        assert!(s.starts_with("SYS-") && s.as_bytes()[8] == b'-');
        assert!(s[4..]
            .chars()
            .filter(|c| *c != '-')
            .all(|c| SERIAL_ALPHABET.contains(&(c as u8))));
        assert_ne!(s, new_serial().unwrap());
        assert_ne!(new_license_id().unwrap(), new_license_id().unwrap());
    }
}
