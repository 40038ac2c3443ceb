//! The hardware ID: which machine the agent runs on.
//!
//! Collection reads a sysfs/etc tree (the real `/` in production, a fixture
//! tree in tests); hashing and matching are pure.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// What a component was read from. Ordered so that sorted sets are stable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ComponentKind {
    MachineId,
    DmiUuid,
    BoardSerial,
    Mac,
    Cpu,
}

/// One hashed component. The raw value never leaves `collect`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Component {
    pub kind: ComponentKind,
    /// Lower-case hex SHA-256 of the salted raw value.
    pub hash: String,
}

/// What `collect` found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HardwareInfo {
    pub hardware_id: String,
    /// Sorted and deduplicated.
    pub components: Vec<Component>,
    /// Sentences for people: dynamic-looking MAC, no physical NIC, no machine-id.
    pub warnings: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum HwidError {
    #[error("no hardware component could be read under {0} (no physical NIC, machine-id, DMI data or CPU model)")]
    NothingFound(String),
}

/// Reads the components under `root` ("/" in production).
pub fn collect(root: &Path) -> Result<HardwareInfo, HwidError> {
    let _ = root;
    unimplemented!()
}

/// Hashes one raw component value.
pub fn hash_component(kind: ComponentKind, raw: &str) -> Component {
    let _ = (kind, raw);
    unimplemented!()
}

/// Derives the hardware ID from a component set (order does not matter).
pub fn hardware_id(components: &[Component]) -> String {
    let _ = components;
    unimplemented!()
}

/// The verdict of comparing a bound component set with the current one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MatchVerdict {
    Match,
    Partial,
    Mismatch,
}

/// The verdict and the detail behind it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HwMatch {
    pub verdict: MatchVerdict,
    /// Bound components that are no longer present.
    pub missing: Vec<Component>,
    /// Current components that were not bound.
    pub added: Vec<Component>,
}

/// Compares under the documented rule (docs/hwid.md).
pub fn compare(bound: &[Component], current: &[Component]) -> HwMatch {
    let _ = (bound, current);
    unimplemented!()
}
