//! The signed payload of a license file.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::hwid::Component;

/// Version of the payload layout; a verifier refuses any other.
pub const PAYLOAD_FORMAT: u32 = 1;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LicensePayload {
    pub format: u32,
    pub license_id: String,
    /// The software serial: names the PBX across hardware.
    pub system_id: String,
    pub pbx_name: String,
    pub hardware_id: String,
    pub hardware: Vec<Component>,
    pub kind: LicenseKind,
    /// Unix seconds.
    pub issued_at: i64,
    pub term: Term,
    /// Unix seconds; `None` for a license that never asks the portal again.
    pub refresh_due: Option<i64>,
    /// How long the license stays valid past `refresh_due` while the portal
    /// cannot be reached.
    pub grace_secs: i64,
    pub enforcement: Enforcement,
    /// Seats bought per profile code.
    pub seats: BTreeMap<String, u32>,
    /// Quantities of add-on and system licenses, by code.
    pub addons: BTreeMap<String, u32>,
    pub catalog: Vec<CatalogEntry>,
    /// Base64 Ed25519 public key of the device, registered at activation.
    pub device_public_key: Option<String>,
    /// The nonce of the request this license answers (activation, refresh).
    pub nonce: Option<String>,
    /// The vendor's test mode rules for this system; absent, the
    /// compiled-in [`TestModePolicy::DEFAULT`] applies. Left out of the
    /// JSON when absent, so that agents of protocol 1 (which refuse unknown
    /// fields) still read every license a portal sends them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_mode: Option<TestModePolicy>,
}

/// What the vendor allows of test mode on a system.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestModePolicy {
    /// `false` turns test mode off on this system.
    pub allowed: bool,
    /// Longest session, seconds (never more than 8 hours).
    pub max_secs: i64,
    /// Time between the end of a session and the start of the next, seconds.
    pub cooldown_secs: i64,
}

impl TestModePolicy {
    /// The policy of a box whose license names none, and of a box that was
    /// never licensed: 8 hours, repeatable at once (as the seeds have it).
    pub const DEFAULT: TestModePolicy = TestModePolicy {
        allowed: true,
        max_secs: 8 * 3600,
        cooldown_secs: 0,
    };
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LicenseKind {
    Full,
    Trial,
    Test,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TermKind {
    Monthly,
    Yearly,
    FiveYears,
    Lifetime,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Term {
    pub kind: TermKind,
    /// Unix seconds; `None` only for lifetime.
    pub ends_at: Option<i64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Enforcement {
    Soft,
    Hard,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    /// A user's base profile (basic, essential, ...).
    Base,
    /// On top of a user's base profile (mobile, call recording, ...).
    AddOn,
    /// For the whole system (server, data sources, ...).
    System,
}

/// One licensable item of the catalog the license carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogEntry {
    pub code: String,
    pub name: String,
    pub kind: EntryKind,
    /// Higher is more capable; orders profiles for people.
    pub tier: u32,
    /// Free entries are never counted against seats (service users).
    pub free: bool,
    /// Codes that must be held before this one can be.
    #[serde(default)]
    pub requires: Vec<String>,
    /// Units one bought seat grants (10 data sources per license).
    #[serde(default = "one")]
    pub units_per_seat: u32,
}

fn one() -> u32 {
    1
}

impl LicensePayload {
    /// The catalog of the seeds, for the demo and tests.
    ///
    /// Rules it encodes:
    /// - Base profiles are ordered by tier; `service` is tier 0 and free
    ///   (park orbits, virtual users without login are never counted).
    /// - Add-ons attach to a user on top of a base profile. That prerequisite
    ///   is carried by the kind (`AddOn` means "needs a base profile on the
    ///   same user"), not by `requires`, because any base will do; `requires`
    ///   names specific codes only.
    /// - System entries are for the whole PBX; `data_sources` needs `server`,
    ///   and one bought unit grants 10 data sources.
    pub fn demo_catalog() -> Vec<CatalogEntry> {
        fn entry(code: &str, name: &str, kind: EntryKind, tier: u32) -> CatalogEntry {
            CatalogEntry {
                code: code.to_string(),
                name: name.to_string(),
                kind,
                tier,
                free: false,
                requires: Vec::new(),
                units_per_seat: 1,
            }
        }
        use EntryKind::{AddOn, Base, System};
        vec![
            entry("basic", "Basic", Base, 1),
            entry("essential", "Essential", Base, 2),
            entry("business", "Business", Base, 3),
            entry("premium", "Premium", Base, 4),
            entry("wizyconf", "Wizyconf (conference rooms)", Base, 5),
            CatalogEntry {
                free: true,
                ..entry("service", "Service", Base, 0)
            },
            entry("mobile", "Mobile", AddOn, 0),
            entry("desktop_app", "Desktop app", AddOn, 0),
            entry("ip_phone", "IP phone", AddOn, 0),
            entry("web_phone", "Web phone", AddOn, 0),
            entry("call_recording", "Call recording", AddOn, 0),
            entry("team_chat", "Team chat", AddOn, 0),
            entry("number", "Phone number", AddOn, 0),
            entry("server", "Server", System, 0),
            CatalogEntry {
                requires: vec!["server".to_string()],
                units_per_seat: 10,
                ..entry("data_sources", "Data sources (10 per license)", System, 0)
            },
        ]
    }

    /// The catalog entry for `code`, if the license knows it.
    pub fn entry(&self, code: &str) -> Option<&CatalogEntry> {
        self.catalog.iter().find(|e| e.code == code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_catalog_holds_the_seeds_profiles_in_tier_order() {
        let cat = LicensePayload::demo_catalog();
        let bases: Vec<(&str, u32, bool)> = cat
            .iter()
            .filter(|e| e.kind == EntryKind::Base)
            .map(|e| (e.code.as_str(), e.tier, e.free))
            .collect();
        assert_eq!(
            bases,
            vec![
                ("basic", 1, false),
                ("essential", 2, false),
                ("business", 3, false),
                ("premium", 4, false),
                ("wizyconf", 5, false),
                ("service", 0, true),
            ]
        );
    }

    #[test]
    fn demo_catalog_addons_and_system_prerequisites() {
        let cat = LicensePayload::demo_catalog();
        let addons: Vec<&str> = cat
            .iter()
            .filter(|e| e.kind == EntryKind::AddOn)
            .map(|e| e.code.as_str())
            .collect();
        assert_eq!(
            addons,
            [
                "mobile",
                "desktop_app",
                "ip_phone",
                "web_phone",
                "call_recording",
                "team_chat",
                "number"
            ]
        );
        assert!(cat
            .iter()
            .filter(|e| e.kind == EntryKind::AddOn)
            .all(|e| e.requires.is_empty() && !e.free));
        let ds = cat.iter().find(|e| e.code == "data_sources").unwrap();
        assert_eq!(ds.kind, EntryKind::System);
        assert_eq!(ds.requires, vec!["server".to_string()]);
        assert_eq!(ds.units_per_seat, 10);
        let codes: std::collections::BTreeSet<&str> = cat.iter().map(|e| e.code.as_str()).collect();
        assert_eq!(codes.len(), cat.len(), "codes are unique");
        assert!(cat
            .iter()
            .all(|e| e.requires.iter().all(|r| codes.contains(r.as_str()))));
    }

    #[test]
    fn catalog_entry_defaults_when_fields_are_left_out() {
        let e: CatalogEntry = serde_json::from_str(
            r#"{"code":"x","name":"X","kind":"add_on","tier":0,"free":false}"#,
        )
        .unwrap();
        assert!(e.requires.is_empty());
        assert_eq!(e.units_per_seat, 1);
    }
}
