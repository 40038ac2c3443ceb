//! The hardware ID: which machine the agent runs on.
//!
//! Collection ([`collect`], in `collect.rs`) reads a sysfs/procfs/etc tree (the
//! real `/` in production, a fixture tree in tests) and hashes every raw value
//! as soon as it is read; hashing (here) and matching ([`compare`], in
//! `matching.rs`) are pure. The format is described in `docs/hwid.md`; the
//! hashes and the ID are part of the license contract, so changing anything in
//! [`hash_component`] or [`hardware_id`] needs a new domain tag.

use data_encoding::{BASE32_NOPAD, HEXLOWER};
use ring::digest;
use serde::{Deserialize, Serialize};

mod collect;
mod matching;

pub use collect::collect;
pub use matching::compare;

/// Domain-separation tag in front of every hash, so that a component hash can
/// never collide with a hash some other part of the system computes.
const DOMAIN: &[u8] = b"licagent-hwid-v1\0";

/// Bytes of the final digest kept in the ID: 15 bytes are exactly 24 base32
/// characters (120 bits), with no padding.
const ID_BYTES: usize = 15;

/// Characters per dash-separated group of the ID.
const ID_GROUP: usize = 4;

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

impl ComponentKind {
    /// The serde name, which is also the name fed to the hashes.
    pub fn name(self) -> &'static str {
        match self {
            ComponentKind::MachineId => "machine_id",
            ComponentKind::DmiUuid => "dmi_uuid",
            ComponentKind::BoardSerial => "board_serial",
            ComponentKind::Mac => "mac",
            ComponentKind::Cpu => "cpu",
        }
    }

    /// Anchors identify the installation or the (virtual) mainboard itself;
    /// the tolerant match requires one of them to survive.
    pub fn is_anchor(self) -> bool {
        matches!(self, ComponentKind::MachineId | ComponentKind::DmiUuid)
    }
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

/// Hashes one raw component value.
pub fn hash_component(kind: ComponentKind, raw: &str) -> Component {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(DOMAIN);
    ctx.update(kind.name().as_bytes());
    // The NUL ends the kind name, so no other (kind, value) pair can produce
    // the same bytes.
    ctx.update(b"\0");
    ctx.update(raw.as_bytes());
    Component {
        kind,
        hash: HEXLOWER.encode(ctx.finish().as_ref()),
    }
}

/// Derives the hardware ID from a component set (order does not matter).
pub fn hardware_id(components: &[Component]) -> String {
    let mut set = components.to_vec();
    set.sort();
    set.dedup();

    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(DOMAIN);
    for c in &set {
        ctx.update(c.kind.name().as_bytes());
        ctx.update(b":");
        ctx.update(c.hash.as_bytes());
        ctx.update(b"\n");
    }
    let digest = ctx.finish();
    let plain = BASE32_NOPAD.encode(&digest.as_ref()[..ID_BYTES]);

    let mut id = String::with_capacity(plain.len() + plain.len() / ID_GROUP);
    for (i, ch) in plain.chars().enumerate() {
        if i > 0 && i % ID_GROUP == 0 {
            id.push('-');
        }
        id.push(ch);
    }
    id
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

#[cfg(test)]
mod tests {
    use super::*;

    const ALL_KINDS: [ComponentKind; 5] = [
        ComponentKind::MachineId,
        ComponentKind::DmiUuid,
        ComponentKind::BoardSerial,
        ComponentKind::Mac,
        ComponentKind::Cpu,
    ];

    #[test]
    fn kind_name_is_the_serde_name() {
        for kind in ALL_KINDS {
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{}\"", kind.name()));
        }
    }

    #[test]
    fn only_machine_id_and_dmi_uuid_are_anchors() {
        let anchors: Vec<_> = ALL_KINDS.into_iter().filter(|k| k.is_anchor()).collect();
        assert_eq!(anchors, [ComponentKind::MachineId, ComponentKind::DmiUuid]);
    }

    // Reference values computed outside Rust (Python hashlib/base64) from the
    // format in docs/hwid.md: they pin the format the portal relies on.
    const MAC_HASH: &str = "c596583e354e91afb10fb6752e800b2981f339bb74559c1be1513bacc6ad86b8";
    const MACHINE_ID_HASH: &str =
        "6ef40c7679db44048c61a5a73d59475fa894da5f8c4ca233b1a5bf46ac37fc25";

    #[test]
    fn hash_component_matches_the_documented_format() {
        let c = hash_component(ComponentKind::Mac, "aa:bb:cc:dd:ee:ff");
        assert_eq!(c.kind, ComponentKind::Mac);
        assert_eq!(c.hash, MAC_HASH);
        let c = hash_component(ComponentKind::MachineId, "0123456789abcdef0123456789abcdef");
        assert_eq!(c.hash, MACHINE_ID_HASH);
    }

    #[test]
    fn hash_component_separates_kinds() {
        let a = hash_component(ComponentKind::BoardSerial, "X1");
        let b = hash_component(ComponentKind::Cpu, "X1");
        assert_ne!(a.hash, b.hash);
    }

    #[test]
    fn hardware_id_matches_the_documented_format() {
        let set = [
            hash_component(ComponentKind::Mac, "aa:bb:cc:dd:ee:ff"),
            hash_component(ComponentKind::MachineId, "0123456789abcdef0123456789abcdef"),
        ];
        assert_eq!(hardware_id(&set), "FSK4-QNB6-FV6S-7RUF-HXDL-USAZ");
    }

    #[test]
    fn hardware_id_ignores_order_and_duplicates() {
        let a = hash_component(ComponentKind::Mac, "aa:bb:cc:dd:ee:ff");
        let b = hash_component(ComponentKind::Cpu, "Some CPU");
        let c = hash_component(ComponentKind::MachineId, "abc");
        let one = hardware_id(&[a.clone(), b.clone(), c.clone()]);
        let two = hardware_id(&[c.clone(), a.clone(), b.clone(), a.clone()]);
        assert_eq!(one, two);
        assert_ne!(one, hardware_id(&[a, b]));
    }

    #[test]
    fn hardware_id_is_six_groups_of_four_base32_characters() {
        let id = hardware_id(&[hash_component(ComponentKind::Cpu, "x")]);
        let groups: Vec<&str> = id.split('-').collect();
        assert_eq!(groups.len(), 6, "{id}");
        for g in groups {
            assert_eq!(g.len(), 4, "{id}");
            assert!(g
                .chars()
                .all(|c| c.is_ascii_uppercase() || ('2'..='7').contains(&c)));
        }
    }
}
