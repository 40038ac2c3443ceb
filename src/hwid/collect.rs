//! Reading the hardware components from a sysfs/procfs/etc tree.
//!
//! Everything is read under a `root` ("/" in production) so that tests can
//! point it at a fixture tree. Raw values are hashed right here and dropped:
//! only hashes and interface names leave this file, never a MAC, serial or
//! UUID. What is read, what is skipped and why is in `docs/hwid.md`.

use std::collections::HashSet;
use std::fmt;
use std::fs;
use std::path::Path;

use super::{hardware_id, hash_component, Component, ComponentKind, HardwareInfo, HwidError};

/// `<if>/type` of an Ethernet interface (ARPHRD_ETHER in linux/if_arp.h).
const ARPHRD_ETHER: &str = "1";

/// `<if>/addr_assign_type` values (linux/netdevice.h) meaning the current
/// address is not the burned-in one: NET_ADDR_RANDOM and NET_ADDR_SET.
const ADDR_RANDOM: &str = "1";
const ADDR_SET: &str = "3";

/// Bit of the first octet that marks a locally administered MAC (IEEE 802).
const LOCALLY_ADMINISTERED: u8 = 0x02;

/// OUIs that hypervisors hand to virtual NICs; such a MAC belongs to the VM's
/// configuration, not to hardware, and may change on migration or re-creation.
const HYPERVISOR_OUIS: &[([u8; 3], &str)] = &[
    ([0x52, 0x54, 0x00], "QEMU/KVM"),
    ([0x00, 0x50, 0x56], "VMware"),
    ([0x00, 0x0c, 0x29], "VMware"),
    ([0x00, 0x05, 0x69], "VMware"),
    ([0x00, 0x1c, 0x14], "VMware"),
    ([0x08, 0x00, 0x27], "VirtualBox"),
    ([0x00, 0x15, 0x5d], "Hyper-V"),
    ([0x00, 0x16, 0x3e], "Xen"),
    ([0x00, 0x1c, 0x42], "Parallels"),
];

/// Values firmware writes into DMI and devicetree fields it did not fill in.
/// Compared case-insensitively after trimming; values made only of zeros or
/// only of Fs (dashes aside) are junk too, see [`is_placeholder`].
const PLACEHOLDERS: &[&str] = &[
    "",
    "not specified",
    "to be filled by o.e.m.",
    "default string",
    "none",
    "0",
    "03000200-0400-0500-0006-000700080009",
    "not applicable",
    "not available",
    "n/a",
    "unknown",
    "system serial number",
    "base board serial number",
];

/// Said by `hwid` and at start when nothing but the machine-id tells this
/// box from a copy of its disk image.
pub const MACHINE_ID_ALONE: &str = "The identity of this box rests on its machine-id alone (no DMI UUID, no board serial): boards made from one disk image share it, and the portal then sees one system on two boxes (a duplicate). Ship images with an empty /etc/machine-id so that each board makes its own at first boot (docs/hwid.md).";

/// Reads the components under `root` ("/" in production).
pub fn collect(root: &Path) -> Result<HardwareInfo, HwidError> {
    let mut components: Vec<Component> = Vec::new();
    let mut warnings: Vec<String> = Vec::new();

    let nics = physical_nics(root);
    if nics.is_empty() {
        warnings.push(
            "No physical network interface was found, so the hardware ID rests on the \
             machine-id, DMI data and CPU model alone."
                .to_string(),
        );
    }
    for nic in &nics {
        if let Some(warning) = nic.warning() {
            warnings.push(warning);
        }
        components.push(hash_component(ComponentKind::Mac, &nic.mac.to_string()));
    }

    let machine_id_path = root.join("etc/machine-id");
    match read_trimmed(&machine_id_path) {
        // systemd writes "uninitialized" during the first boot, before it has
        // committed the real ID: it is not an identity yet.
        Some(id) if !id.is_empty() && id != "uninitialized" => {
            components.push(hash_component(ComponentKind::MachineId, &id));
        }
        _ => warnings.push(format!(
            "No machine-id was found at {}, so the hardware ID cannot survive a NIC change \
             unless a DMI UUID is readable; run systemd-machine-id-setup to create one.",
            machine_id_path.display()
        )),
    }

    // DMI files are 0400 root on most machines: a failed read is an absent
    // component, silently, never an error (docs/hwid.md explains the
    // tmpfiles rule that grants the service group read access).
    let dmi = root.join("sys/class/dmi/id");
    if let Some(uuid) = read_trimmed(&dmi.join("product_uuid")).filter(|v| !is_placeholder(v)) {
        // The kernel prints it lower-case, but a firmware-side tool might not:
        // the same UUID must hash the same.
        let uuid = uuid.to_ascii_lowercase();
        components.push(hash_component(ComponentKind::DmiUuid, &uuid));
    }
    let board_serial = if dmi.exists() {
        read_trimmed(&dmi.join("board_serial"))
    } else {
        // ARM boards without DMI publish their serial in the devicetree.
        devicetree_serial(root)
    };
    if let Some(serial) = board_serial.filter(|v| !is_placeholder(v)) {
        components.push(hash_component(ComponentKind::BoardSerial, &serial));
    }

    if let Some(cpuinfo) = read_trimmed(&root.join("proc/cpuinfo")) {
        if let Some(model) = cpu_model(&cpuinfo) {
            components.push(hash_component(ComponentKind::Cpu, &model));
        }
    }

    if components.is_empty() {
        return Err(HwidError::NothingFound(root.display().to_string()));
    }
    let has = |k: ComponentKind| components.iter().any(|c| c.kind == k);
    if has(ComponentKind::MachineId)
        && !has(ComponentKind::DmiUuid)
        && !has(ComponentKind::BoardSerial)
    {
        warnings.push(MACHINE_ID_ALONE.to_string());
    }
    components.sort();
    components.dedup();
    Ok(HardwareInfo {
        hardware_id: hardware_id(&components),
        components,
        warnings,
    })
}

/// A MAC address in binary form; displayed as lower-case `aa:bb:cc:dd:ee:ff`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct Mac([u8; 6]);

impl Mac {
    /// Parses six colon-separated hex octets, any case; `None` for anything
    /// else (e.g. a 20-byte InfiniBand address).
    fn parse(text: &str) -> Option<Mac> {
        let mut octets = [0u8; 6];
        let mut parts = text.trim().split(':');
        for octet in &mut octets {
            let part = parts.next()?;
            if part.is_empty() || part.len() > 2 {
                return None;
            }
            *octet = u8::from_str_radix(part, 16).ok()?;
        }
        match parts.next() {
            Some(_) => None,
            None => Some(Mac(octets)),
        }
    }

    fn is_zero(&self) -> bool {
        self.0 == [0; 6]
    }

    fn is_locally_administered(&self) -> bool {
        self.0[0] & LOCALLY_ADMINISTERED != 0
    }

    fn hypervisor(&self) -> Option<&'static str> {
        HYPERVISOR_OUIS
            .iter()
            .find(|(oui, _)| self.0[..3] == oui[..])
            .map(|(_, vendor)| *vendor)
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

/// Deliberately hides the address: a `{:?}` in a log line must not leak it.
impl fmt::Debug for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Mac(..)")
    }
}

/// A physical NIC and what its warning needs to know.
#[derive(Debug)]
struct Nic {
    name: String,
    mac: Mac,
    /// The kernel reports the current address as random or set by software.
    /// Not checked for bond slaves read through `perm_hwaddr`: there the
    /// current address is the bond's, by design.
    assigned_by_software: bool,
}

impl Nic {
    /// One sentence per interface at most; the hypervisor case is the more
    /// specific one (a QEMU MAC is also locally administered).
    fn warning(&self) -> Option<String> {
        if let Some(vendor) = self.mac.hypervisor() {
            return Some(format!(
                "The MAC address of interface {} is a {vendor} virtual NIC address and may \
                 change when the VM is migrated or re-created; the license survives that under \
                 the tolerant match while the machine-id or DMI UUID stays the same, but a fixed \
                 MAC in the VM's settings is safer.",
                self.name
            ));
        }
        if self.mac.is_locally_administered() || self.assigned_by_software {
            return Some(format!(
                "The MAC address of interface {} may change; it is locally administered or set \
                 by software, so the hardware ID relies on the other components to recognise \
                 this machine.",
                self.name
            ));
        }
        None
    }
}

/// The physical NICs under `<root>/sys/class/net`, in name order, one per MAC.
fn physical_nics(root: &Path) -> Vec<Nic> {
    let dir = root.join("sys/class/net");
    // No /sys/class/net (a minimal container): no NICs, which collect reports.
    let Ok(entries) = fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .collect();
    // Sorted, so that of two interfaces sharing a MAC the same one is kept.
    names.sort();

    let mut seen = HashSet::new();
    let mut nics = Vec::new();
    for name in names {
        let ifdir = dir.join(&name);
        if name == "lo" {
            continue;
        }
        // Only interfaces backed by a bus device are hardware; bridges, veth,
        // tun/tap, wireguard, bond masters and container links have none.
        if !ifdir.join("device").exists() {
            tracing::debug!(interface = %name, "skipped: no device");
            continue;
        }
        let type_path = ifdir.join("type");
        if type_path.exists() && read_trimmed(&type_path).as_deref() != Some(ARPHRD_ETHER) {
            tracing::debug!(interface = %name, "skipped: not Ethernet");
            continue;
        }
        // A bond slave's `address` shows the bond's MAC; its own is kept in
        // perm_hwaddr.
        let perm = read_trimmed(&ifdir.join("bonding_slave/perm_hwaddr"))
            .as_deref()
            .and_then(Mac::parse);
        let (mac, assigned_by_software) = match perm {
            Some(mac) => (mac, false),
            None => {
                let Some(mac) = read_trimmed(&ifdir.join("address"))
                    .as_deref()
                    .and_then(Mac::parse)
                else {
                    tracing::debug!(interface = %name, "skipped: no readable MAC address");
                    continue;
                };
                let assign = read_trimmed(&ifdir.join("addr_assign_type"));
                let by_software = matches!(assign.as_deref(), Some(ADDR_RANDOM | ADDR_SET));
                (mac, by_software)
            }
        };
        if mac.is_zero() {
            tracing::debug!(interface = %name, "skipped: all-zero MAC address");
            continue;
        }
        if !seen.insert(mac) {
            continue;
        }
        nics.push(Nic {
            name,
            mac,
            assigned_by_software,
        });
    }
    nics
}

/// The devicetree serial number: NUL-terminated text.
fn devicetree_serial(root: &Path) -> Option<String> {
    let bytes = fs::read(root.join("sys/firmware/devicetree/base/serial-number")).ok()?;
    let text = String::from_utf8_lossy(&bytes);
    Some(text.trim_end_matches('\0').trim().to_string())
}

/// Whether a DMI or devicetree value is firmware filler rather than an identity.
fn is_placeholder(value: &str) -> bool {
    let value = value.trim();
    if PLACEHOLDERS.iter().any(|p| p.eq_ignore_ascii_case(value)) {
        return true;
    }
    // All-zero and all-F UUIDs (and serials) in any length and grouping.
    let mut digits = value.chars().filter(|c| *c != '-').peekable();
    match digits.peek() {
        Some('0') => digits.all(|c| c == '0'),
        Some('f' | 'F') => digits.all(|c| c == 'f' || c == 'F'),
        _ => false,
    }
}

/// The CPU model from /proc/cpuinfo, by the first field present of: "model
/// name" (x86), "Hardware" (32-bit ARM), "CPU implementer" + "CPU part"
/// (arm64), "Processor" (old ARM), "cpu model" (MIPS). Keys are compared
/// exactly: the lower-case "processor" is the CPU index on every architecture.
fn cpu_model(cpuinfo: &str) -> Option<String> {
    let field = |key: &str| {
        cpuinfo.lines().find_map(|line| {
            let (k, v) = line.split_once(':')?;
            let v = v.trim();
            (k.trim() == key && !v.is_empty()).then(|| v.to_string())
        })
    };
    field("model name")
        .or_else(|| field("Hardware"))
        .or_else(|| match (field("CPU implementer"), field("CPU part")) {
            (Some(implementer), Some(part)) => Some(format!("{implementer}:{part}")),
            _ => None,
        })
        .or_else(|| field("Processor"))
        .or_else(|| field("cpu model"))
}

/// The trimmed content of a text file; `None` when it cannot be read for any
/// reason (missing, permission, a directory, not UTF-8).
fn read_trimmed(path: &Path) -> Option<String> {
    fs::read_to_string(path).ok().map(|s| s.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    use crate::hwid::{compare, MatchVerdict};

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/hwid")
            .join(name)
    }

    fn collect_fixture(name: &str) -> HardwareInfo {
        collect(&fixture(name)).unwrap()
    }

    fn mac(raw: &str) -> Component {
        hash_component(ComponentKind::Mac, raw)
    }

    fn kinds(info: &HardwareInfo) -> Vec<ComponentKind> {
        info.components.iter().map(|c| c.kind).collect()
    }

    /// Writes `files` (path relative to the root, content) into a new tree.
    fn tree(files: &[(&str, &[u8])]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (path, content) in files {
            let path = dir.path().join(path);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, content).unwrap();
        }
        dir
    }

    // --- fixtures -------------------------------------------------------

    #[test]
    fn bare_metal_reads_physical_nics_only() {
        let info = collect_fixture("bare-metal");
        let macs: Vec<Component> = info
            .components
            .iter()
            .filter(|c| c.kind == ComponentKind::Mac)
            .cloned()
            .collect();
        let mut expected = [mac("3c:fd:fe:12:34:56"), mac("00:25:90:ab:cd:ef")];
        expected.sort();
        assert_eq!(macs, expected);
        assert_eq!(
            kinds(&info),
            [
                ComponentKind::MachineId,
                ComponentKind::DmiUuid,
                ComponentKind::BoardSerial,
                ComponentKind::Mac,
                ComponentKind::Mac,
                ComponentKind::Cpu,
            ]
        );
        assert!(info.warnings.is_empty(), "{:?}", info.warnings);
    }

    #[test]
    fn bare_metal_hashes_the_exact_values() {
        let info = collect_fixture("bare-metal");
        let has = |kind, raw| info.components.contains(&hash_component(kind, raw));
        assert!(has(
            ComponentKind::MachineId,
            "b7d3e0f2a41c4e6f9a8d2c1e5f6a7b8c"
        ));
        assert!(has(
            ComponentKind::DmiUuid,
            "4c4c4544-004a-3510-804b-b4c04f333132"
        ));
        assert!(has(ComponentKind::BoardSerial, ".7J5S3R2.CN7016361A0123."));
        assert!(has(
            ComponentKind::Cpu,
            "Intel(R) Xeon(R) E-2224 CPU @ 3.40GHz"
        ));
    }

    #[test]
    fn same_tree_gives_the_same_id_twice() {
        let one = collect_fixture("bare-metal");
        let two = collect_fixture("bare-metal");
        assert_eq!(one, two);
        assert_eq!(one.hardware_id, hardware_id(&one.components));
    }

    #[test]
    fn nic_swap_changes_the_id_but_matches_partially() {
        let bound = collect_fixture("bare-metal");
        let current = collect_fixture("nic-swapped");
        assert_ne!(bound.hardware_id, current.hardware_id);
        let m = compare(&bound.components, &current.components);
        assert_eq!(m.verdict, MatchVerdict::Partial);
        assert_eq!(m.missing, vec![mac("3c:fd:fe:12:34:56")]);
        assert_eq!(m.added, vec![mac("3c:fd:fe:98:76:54")]);
    }

    #[test]
    fn vm_warns_about_the_hypervisor_mac_by_interface_name() {
        let info = collect_fixture("vm-dynamic-mac");
        assert_eq!(
            kinds(&info),
            [
                ComponentKind::MachineId,
                ComponentKind::DmiUuid,
                ComponentKind::Mac,
                ComponentKind::Cpu,
            ]
        );
        assert_eq!(info.warnings.len(), 1, "{:?}", info.warnings);
        let w = &info.warnings[0];
        assert!(w.contains("interface enp1s0"), "{w}");
        assert!(w.contains("QEMU/KVM"), "{w}");
        assert!(w.contains("may change"), "{w}");
        assert!(!w.contains("52:54:00"), "{w}");
    }

    #[test]
    fn container_warns_about_no_nic_and_no_machine_id() {
        let info = collect_fixture("container");
        assert_eq!(kinds(&info), [ComponentKind::Cpu]);
        assert_eq!(info.warnings.len(), 2, "{:?}", info.warnings);
        assert!(info.warnings[0].starts_with("No physical network interface"));
        assert!(info.warnings[1].starts_with("No machine-id"));
    }

    #[test]
    fn arm_board_uses_the_devicetree_serial_and_cpu_part() {
        let info = collect_fixture("arm-board");
        assert_eq!(
            kinds(&info),
            [
                ComponentKind::MachineId,
                ComponentKind::BoardSerial,
                ComponentKind::Mac,
                ComponentKind::Cpu,
            ]
        );
        let has = |kind, raw| info.components.contains(&hash_component(kind, raw));
        // The trailing NUL of the devicetree string is not part of the serial.
        assert!(has(ComponentKind::BoardSerial, "10000000a1b2c3d4"));
        assert!(has(ComponentKind::Cpu, "0x41:0xd08"));
        assert!(has(ComponentKind::Mac, "dc:a6:32:01:02:03"));
        assert!(info.warnings.is_empty(), "{:?}", info.warnings);
    }

    #[test]
    fn raw_values_never_appear_in_debug_or_json() {
        let raw = [
            "3c:fd:fe:12:34:56",
            "00:25:90:ab:cd:ef",
            "b7d3e0f2a41c4e6f9a8d2c1e5f6a7b8c",
            "4c4c4544-004a-3510-804b-b4c04f333132",
            "7J5S3R2",
            "Xeon",
            "52:54:00",
            "5e1f0c9a7b2d4e38a6c1f0d2b3e4a5c6",
            "9d3f1a2b-6c4e-4f7a-8b1d-2e3f4a5b6c7d",
            "EPYC",
            "dc:a6:32",
            "0f1e2d3c4b5a69788796a5b4c3d2e1f0",
            "10000000a1b2c3d4",
            "0x41",
        ];
        for name in ["bare-metal", "vm-dynamic-mac", "arm-board", "container"] {
            let info = collect_fixture(name);
            let debug = format!("{info:?}").to_ascii_lowercase();
            let json = serde_json::to_string(&info).unwrap().to_ascii_lowercase();
            for value in raw {
                let value = value.to_ascii_lowercase();
                assert!(!debug.contains(&value), "{name}: {value} in {debug}");
                assert!(!json.contains(&value), "{name}: {value} in {json}");
            }
        }
    }

    #[test]
    fn mac_debug_hides_the_address() {
        let m = Mac::parse("3c:fd:fe:12:34:56").unwrap();
        assert_eq!(format!("{m:?}"), "Mac(..)");
    }

    // --- NIC rules on built trees ---------------------------------------

    const DEV: (&str, &[u8]) = ("sys/class/net/eth0/device/uevent", b"DRIVER=e1000e\n");

    #[test]
    fn nothing_found_only_when_no_component_at_all() {
        let empty = tempfile::tempdir().unwrap();
        let err = collect(empty.path()).unwrap_err();
        assert!(matches!(err, HwidError::NothingFound(_)));

        let machine_id_only = tree(&[("etc/machine-id", b"abc\n")]);
        let info = collect(machine_id_only.path()).unwrap();
        assert_eq!(kinds(&info), [ComponentKind::MachineId]);
    }

    #[test]
    fn mac_is_normalised_to_lower_case() {
        let t = tree(&[DEV, ("sys/class/net/eth0/address", b"3C:FD:FE:0A:0B:0C\n")]);
        let info = collect(t.path()).unwrap();
        assert!(info.components.contains(&mac("3c:fd:fe:0a:0b:0c")));
    }

    #[test]
    fn non_ethernet_type_is_skipped() {
        let t = tree(&[
            DEV,
            ("sys/class/net/eth0/address", b"3c:fd:fe:0a:0b:0c\n"),
            ("sys/class/net/eth0/type", b"32\n"),
        ]);
        let err = collect(t.path()).unwrap_err();
        assert!(matches!(err, HwidError::NothingFound(_)));
    }

    #[test]
    fn all_zero_mac_is_skipped() {
        let t = tree(&[
            DEV,
            ("sys/class/net/eth0/address", b"00:00:00:00:00:00\n"),
            ("etc/machine-id", b"abc\n"),
        ]);
        let info = collect(t.path()).unwrap();
        assert_eq!(kinds(&info), [ComponentKind::MachineId]);
        assert!(info.warnings[0].starts_with("No physical network interface"));
    }

    #[test]
    fn bond_slaves_use_their_permanent_address_and_are_deduplicated() {
        // Both slaves show the bond's MAC in `address`; eth1 has no
        // perm_hwaddr and falls back to it, eth2 shares eth0's permanent one.
        let bond_mac: &[u8] = b"3c:fd:fe:00:00:01\n";
        let t = tree(&[
            DEV,
            ("sys/class/net/eth0/address", bond_mac),
            ("sys/class/net/eth0/addr_assign_type", b"3\n"),
            (
                "sys/class/net/eth0/bonding_slave/perm_hwaddr",
                b"3c:fd:fe:00:00:0a\n",
            ),
            ("sys/class/net/eth1/device/uevent", b""),
            ("sys/class/net/eth1/address", bond_mac),
            ("sys/class/net/eth2/device/uevent", b""),
            ("sys/class/net/eth2/address", bond_mac),
            (
                "sys/class/net/eth2/bonding_slave/perm_hwaddr",
                b"3c:fd:fe:00:00:0a\n",
            ),
            ("sys/class/net/bond0/address", bond_mac),
        ]);
        let info = collect(t.path()).unwrap();
        let mut expected = vec![mac("3c:fd:fe:00:00:01"), mac("3c:fd:fe:00:00:0a")];
        expected.sort();
        assert_eq!(info.components, expected);
        // eth0's set-by-software flag describes the bond's address, not its own.
        assert!(
            info.warnings.iter().all(|w| !w.contains("eth0")),
            "{:?}",
            info.warnings
        );
    }

    #[test]
    fn locally_administered_mac_warns() {
        let t = tree(&[DEV, ("sys/class/net/eth0/address", b"02:11:22:33:44:55\n")]);
        let info = collect(t.path()).unwrap();
        assert!(
            info.warnings
                .iter()
                .any(|w| w.contains("interface eth0 may change;")),
            "{:?}",
            info.warnings
        );
    }

    #[test]
    fn random_or_set_address_warns() {
        for assign in ["1\n", "3\n"] {
            let t = tree(&[
                DEV,
                ("sys/class/net/eth0/address", b"3c:fd:fe:0a:0b:0c\n"),
                ("sys/class/net/eth0/addr_assign_type", assign.as_bytes()),
            ]);
            let info = collect(t.path()).unwrap();
            assert!(
                info.warnings
                    .iter()
                    .any(|w| w.contains("interface eth0 may change;")),
                "{assign:?}: {:?}",
                info.warnings
            );
        }
        // Permanent (0) and stolen (2) addresses do not.
        for assign in ["0\n", "2\n"] {
            let t = tree(&[
                DEV,
                ("sys/class/net/eth0/address", b"3c:fd:fe:0a:0b:0c\n"),
                ("sys/class/net/eth0/addr_assign_type", assign.as_bytes()),
                ("etc/machine-id", b"abc\n"),
            ]);
            let warnings = collect(t.path()).unwrap().warnings;
            assert_eq!(warnings, [MACHINE_ID_ALONE], "{assign:?}");
        }
    }

    #[test]
    fn every_hypervisor_oui_warns_with_its_vendor() {
        for (oui, vendor) in HYPERVISOR_OUIS {
            let address = format!("{:02x}:{:02x}:{:02x}:00:00:01\n", oui[0], oui[1], oui[2]);
            let t = tree(&[
                DEV,
                ("sys/class/net/eth0/address", address.as_bytes()),
                ("etc/machine-id", b"abc\n"),
            ]);
            let warnings = collect(t.path()).unwrap().warnings;
            assert_eq!(warnings.len(), 2, "{address}: {warnings:?}");
            assert_eq!(warnings[1], MACHINE_ID_ALONE);
            assert!(warnings[0].contains(vendor), "{warnings:?}");
            assert!(warnings[0].contains("interface eth0"), "{warnings:?}");
        }
    }

    // --- machine-id, DMI, devicetree -------------------------------------

    #[test]
    fn empty_or_uninitialized_machine_id_is_absent() {
        for content in [&b""[..], b"  \n", b"uninitialized\n"] {
            let t = tree(&[
                ("etc/machine-id", content),
                ("proc/cpuinfo", b"model name : X\n"),
            ]);
            let info = collect(t.path()).unwrap();
            assert_eq!(kinds(&info), [ComponentKind::Cpu], "{content:?}");
            assert!(info.warnings.iter().any(|w| w.starts_with("No machine-id")));
        }
    }

    #[test]
    fn unreadable_dmi_files_are_silently_absent() {
        // Tests may run as root, where mode 0400 does not stop a read; a
        // directory in place of the file fails the read the same way.
        let t = tree(&[
            ("etc/machine-id", b"abc\n"),
            ("sys/class/dmi/id/product_uuid/x", b""),
            ("sys/class/dmi/id/board_serial/x", b""),
        ]);
        let info = collect(t.path()).unwrap();
        assert_eq!(kinds(&info), [ComponentKind::MachineId]);
        // The missing NIC and the lone machine-id are reported; the DMI
        // files are not mentioned.
        assert_eq!(info.warnings.len(), 2, "{:?}", info.warnings);
        assert!(info.warnings[0].starts_with("No physical network interface"));
        assert_eq!(info.warnings[1], MACHINE_ID_ALONE);
    }

    #[test]
    fn an_identity_of_machine_id_alone_is_warned_about() {
        // A cloned board: machine-id, CPU and a MAC, nothing of its own.
        let t = tree(&[
            DEV,
            ("sys/class/net/eth0/address", b"3c:fd:fe:0a:0b:0c\n"),
            ("etc/machine-id", b"abc\n"),
            ("proc/cpuinfo", b"model name : X\n"),
        ]);
        assert_eq!(collect(t.path()).unwrap().warnings, [MACHINE_ID_ALONE]);
        // A DMI UUID is an identity of the board itself: no warning.
        let t = tree(&[
            DEV,
            ("sys/class/net/eth0/address", b"3c:fd:fe:0a:0b:0c\n"),
            ("etc/machine-id", b"abc\n"),
            (
                "sys/class/dmi/id/product_uuid",
                b"4c4c4544-0042-3510-8052-b7c04f4e3732\n",
            ),
        ]);
        assert!(collect(t.path()).unwrap().warnings.is_empty());
    }

    #[test]
    fn dmi_uuid_is_case_insensitive() {
        let upper = tree(&[(
            "sys/class/dmi/id/product_uuid",
            b"4C4C4544-004A-3510-804B-B4C04F333132\n",
        )]);
        let info = collect(upper.path()).unwrap();
        assert!(info.components.contains(&hash_component(
            ComponentKind::DmiUuid,
            "4c4c4544-004a-3510-804b-b4c04f333132"
        )));
    }

    #[test]
    fn placeholders_are_ignored() {
        for junk in [
            "",
            "Not Specified",
            "To be filled by O.E.M.",
            "TO BE FILLED BY O.E.M.",
            "Default string",
            "None",
            "0",
            "00000000-0000-0000-0000-000000000000",
            "FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF",
            "ffffffff-ffff-ffff-ffff-ffffffffffff",
            "03000200-0400-0500-0006-000700080009",
            "0000000000",
        ] {
            assert!(is_placeholder(junk), "{junk:?}");
        }
        for real in [
            "4c4c4544-004a-3510-804b-b4c04f333132",
            ".7J5S3R2.",
            "F00D",
            "0A1",
        ] {
            assert!(!is_placeholder(real), "{real:?}");
        }
    }

    #[test]
    fn placeholder_dmi_values_do_not_become_components() {
        let t = tree(&[
            ("etc/machine-id", b"abc\n"),
            (
                "sys/class/dmi/id/product_uuid",
                b"03000200-0400-0500-0006-000700080009\n",
            ),
            ("sys/class/dmi/id/board_serial", b"Default string\n"),
        ]);
        assert_eq!(
            kinds(&collect(t.path()).unwrap()),
            [ComponentKind::MachineId]
        );
    }

    #[test]
    fn devicetree_serial_is_ignored_when_dmi_exists() {
        let t = tree(&[
            (
                "sys/class/dmi/id/product_uuid",
                b"4c4c4544-004a-3510-804b-b4c04f333132\n",
            ),
            ("sys/firmware/devicetree/base/serial-number", b"abc123\0"),
        ]);
        assert_eq!(kinds(&collect(t.path()).unwrap()), [ComponentKind::DmiUuid]);
    }

    #[test]
    fn placeholder_devicetree_serial_is_ignored() {
        let t = tree(&[
            ("etc/machine-id", b"abc\n"),
            (
                "sys/firmware/devicetree/base/serial-number",
                b"0000000000000000\0",
            ),
        ]);
        assert_eq!(
            kinds(&collect(t.path()).unwrap()),
            [ComponentKind::MachineId]
        );
    }

    // --- parsing --------------------------------------------------------

    #[test]
    fn cpu_model_follows_the_documented_order() {
        let x86 = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel X\n";
        assert_eq!(cpu_model(x86).as_deref(), Some("Intel X"));
        let arm32 = "processor\t: 0\nmodel name\t: \nHardware\t: BCM2835\nCPU part\t: 0xd03\n";
        assert_eq!(cpu_model(arm32).as_deref(), Some("BCM2835"));
        let arm64 = "processor\t: 0\nCPU implementer\t: 0x41\nCPU part\t: 0xd08\n";
        assert_eq!(cpu_model(arm64).as_deref(), Some("0x41:0xd08"));
        let old_arm = "Processor\t: ARMv7 Processor rev 4 (v7l)\nprocessor\t: 0\n";
        assert_eq!(
            cpu_model(old_arm).as_deref(),
            Some("ARMv7 Processor rev 4 (v7l)")
        );
        let mips = "system type\t: MT7621\nprocessor\t: 0\ncpu model\t: MIPS 1004Kc V2.15\n";
        assert_eq!(cpu_model(mips).as_deref(), Some("MIPS 1004Kc V2.15"));
        // The lower-case "processor" index alone is no model.
        assert_eq!(cpu_model("processor\t: 0\nCPU part\t: 0xd08\n"), None);
    }

    #[test]
    fn mac_parse_rejects_what_is_not_six_octets() {
        assert!(Mac::parse("3c:fd:fe:0a:0b").is_none());
        assert!(Mac::parse("3c:fd:fe:0a:0b:0c:0d").is_none());
        assert!(Mac::parse("3c:fd:fe:0a:0b:zz").is_none());
        assert!(Mac::parse("3c:fd:fe:0a:0b:").is_none());
        assert!(Mac::parse("3cf:d:fe:0a:0b:0c").is_none());
        assert_eq!(
            Mac::parse(" 3C:fd:FE:0a:0b:0c\n").map(|m| m.to_string()),
            Some("3c:fd:fe:0a:0b:0c".to_string())
        );
    }
}
