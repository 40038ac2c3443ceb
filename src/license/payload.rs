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
    pub fn demo_catalog() -> Vec<CatalogEntry> {
        unimplemented!()
    }
}
